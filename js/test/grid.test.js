import { describe, expect, it } from "vitest";
import { fitScale, fromPython, layout, tileAt, tileRect, toAtlas } from "../lib/grid.js";

describe("grid layout", () => {
  // The same numbers as tests/test_images.py::test_grid_layout_matches_js
  const g = layout({ count: 10, columns: 4, tileH: 3, tileW: 5, pad: 1 });

  it("sizes the atlas like zfwidgets.base.images.GridLayout", () => {
    expect(g.rows).toBe(3);
    expect(g.width).toBe(25);
    expect(g.height).toBe(13);
    expect(tileRect(g, 0)).toEqual({ x: 1, y: 1, w: 5, h: 3 });
    expect(tileRect(g, 5)).toEqual({ x: 7, y: 5, w: 5, h: 3 });
    expect(tileRect(g, 9)).toEqual({ x: 7, y: 9, w: 5, h: 3 });
  });

  it("finds the tile under a pixel, and none over padding or empty slots", () => {
    for (let i = 0; i < g.count; i++) {
      const r = tileRect(g, i);
      expect(tileAt(g, r.x, r.y)).toBe(i);
      expect(tileAt(g, r.x + r.w - 1, r.y + r.h - 1)).toBe(i);
    }
    expect(tileAt(g, 0, 0)).toBe(-1); // border
    expect(tileAt(g, 6, 1)).toBe(-1); // between columns
    expect(tileAt(g, 1, 4)).toBe(-1); // between rows
    expect(tileAt(g, 13, 9)).toBe(-1); // slot 10 is empty
    expect(tileAt(g, 99, 1)).toBe(-1);
  });

  it("reads the grid dict Python sends", () => {
    const p = fromPython({ count: 10, columns: 4, rows: 3, tile: [3, 5], pad: 1 });
    expect(p).toEqual(g);
  });

  it("scales to 512 maps and beyond", () => {
    const big = layout({ count: 512, columns: 29, tileH: 13, tileW: 13, pad: 1 });
    expect(big.rows).toBe(18);
    expect(big.width).toBe(1 + 29 * 14);
    expect(tileAt(big, tileRect(big, 511).x, tileRect(big, 511).y)).toBe(511);
  });

  it("picks crisp integer scales when the atlas fits, a fraction when it does not", () => {
    expect(fitScale(100, 720)).toBe(4);
    expect(fitScale(100, 350)).toBe(3);
    expect(fitScale(100, 2000)).toBe(4);
    expect(fitScale(100, 150)).toBe(1);
    expect(fitScale(1000, 500)).toBe(0.5);
    expect(fitScale(0, 500)).toBe(1);
  });

  it("maps pointer positions to atlas pixels", () => {
    const rect = { left: 10, top: 20, width: 250, height: 130 };
    expect(toAtlas(rect, 10, 20, 25, 13)).toEqual({ x: 0, y: 0 });
    expect(toAtlas(rect, 259, 149, 25, 13)).toEqual({ x: 24, y: 12 });
  });

  it("rejects bad specs", () => {
    expect(() => layout({ count: 3, columns: 0, tileH: 1, tileW: 1 })).toThrow(/columns/);
    expect(() => layout({ count: 3, columns: 2, tileH: 1.5, tileW: 1 })).toThrow(/tileH/);
  });
});
