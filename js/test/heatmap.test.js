import { describe, expect, it } from "vitest";
import { fmtPercent, fmtValue } from "../lib/dom.js";
import {
  barPosition,
  categoricalRGBA,
  categories,
  categoryColors,
  cellAt,
  colorbarLabels,
  continuousRGBA,
  finiteRange,
  OTHER,
  PALETTE,
  paint,
  pixelCells,
  squareCells,
  toImage,
  uniformCells,
} from "../lib/heatmap.js";

describe("square cells", () => {
  // zfwidgets.engine.occlusion positions for size 32, window 14, stride 8: 0, 8, 16, then 18 flush
  const cells = squareCells([0, 8, 16, 18], 14, 32);

  it("meet halfway between square centres and reach the border", () => {
    // centres 7, 15, 23, 25
    expect([...cells.edges]).toEqual([0, 11, 19, 24, 32]);
  });

  it("map a pointer to the square whose centre is nearest", () => {
    expect(cellAt(cells, 0)).toBe(0);
    expect(cellAt(cells, 10.99)).toBe(0);
    expect(cellAt(cells, 11)).toBe(1);
    expect(cellAt(cells, 23.5)).toBe(2);
    expect(cellAt(cells, 24)).toBe(3);
    expect(cellAt(cells, 31.9)).toBe(3);
    // outside the image: clamped to the outer squares
    expect(cellAt(cells, -5)).toBe(0);
    expect(cellAt(cells, 40)).toBe(3);
    // the nearest centre, checked against brute force
    const centres = [7, 15, 23, 25];
    for (let u = 0.25; u < 32; u += 0.5) {
      const d = centres.map((c) => Math.abs(c - u));
      const best = d.indexOf(Math.min(...d));
      expect(Math.abs(centres[cellAt(cells, u)] - u)).toBe(d[best]);
    }
  });

  it("give every pixel its cell by the pixel centre", () => {
    const of = pixelCells(cells);
    expect(of.length).toBe(32);
    expect(of[10]).toBe(0); // centre 10.5 < 11
    expect(of[11]).toBe(1);
    expect(of[23]).toBe(2); // centre 23.5 < 24
    expect(of[24]).toBe(3);
    expect(of[31]).toBe(3);
  });

  it("cover the image with one cell for a single position", () => {
    const one = squareCells([0], 32, 32);
    expect([...one.edges]).toEqual([0, 32]);
    expect(cellAt(one, 17)).toBe(0);
    expect(() => squareCells([], 3, 3)).toThrow(/no square positions/);
  });

  it("stretch a plain map uniformly", () => {
    const u = uniformCells(3, 12);
    expect([...u.edges]).toEqual([0, 4, 8, 12]);
    expect([...pixelCells(u)]).toEqual([0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2]);
  });
});

describe("painting", () => {
  it("copies each cell's colour to its pixels", () => {
    const cell = new Uint8ClampedArray([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]);
    // 2 x 2 cells over a 3 x 2 image: rows [0, 0, 1], cols [0, 1]
    const out = paint(cell, 2, new Int32Array([0, 0, 1]), new Int32Array([0, 1]));
    expect([...out]).toEqual([
      1, 2, 3, 4, 5, 6, 7, 8, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16,
    ]);
  });

  it("colours continuous maps over their finite range, NaN transparent", () => {
    const { rgba, lo, hi } = continuousRGBA(new Float32Array([2, Number.NaN, 4]), "gray");
    expect([lo, hi]).toEqual([2, 4]);
    expect([...rgba]).toEqual([0, 0, 0, 255, 0, 0, 0, 0, 255, 255, 255, 255]);
  });

  it("finds the finite range", () => {
    expect(finiteRange([3, Number.NaN, -1, Number.POSITIVE_INFINITY])).toEqual({ lo: -1, hi: 3 });
    expect(finiteRange([Number.NaN])).toEqual({ lo: 0, hi: 0 });
  });
});

describe("colour bar", () => {
  it("labels the ends with short numbers", () => {
    expect(colorbarLabels(0.0123456, 0.98765)).toEqual(["0.0123", "0.988"]);
    expect(colorbarLabels(12345.6, 45678.9)).toEqual(["12300", "45700"]);
    expect(colorbarLabels(123456, 456789)).toEqual(["1.23e+5", "4.57e+5"]);
    expect(colorbarLabels(0.00001234, 0.5)).toEqual(["1.23e-5", "0.5"]);
    expect(colorbarLabels(0, 0)).toEqual(["0", "0"]);
  });

  it("keeps the two labels distinct when the values are", () => {
    const [a, b] = colorbarLabels(0.30112, 0.30148);
    expect(a).not.toBe(b);
    expect([a, b]).toEqual(["0.3011", "0.3015"]);
  });

  it("places the unoccluded value on the bar", () => {
    expect(barPosition(5, 0, 10)).toBe(0.5);
    expect(barPosition(20, 0, 10)).toBe(1);
    expect(barPosition(-1, 0, 10)).toBe(0);
    expect(barPosition(3, 3, 3)).toBe(0.5);
  });

  it("formats values and percentages", () => {
    expect(fmtValue(0)).toBe("0");
    expect(fmtValue(123.456)).toBe("123");
    expect(fmtValue(Number.NaN)).toBe("NaN");
    expect(fmtPercent(0.4567)).toBe("45.7%");
    expect(fmtPercent(0.00346)).toBe("0.35%");
    expect(fmtPercent(0.00001234)).toBe("1.2e-3%");
    expect(fmtPercent(0)).toBe("0%");
  });
});

describe("class legend", () => {
  it("orders classes by area, then index, and colours them by rank", () => {
    const cats = categories(new Int32Array([7, 3, 3, 9, 7, 3, 1]));
    expect(cats).toEqual([
      { index: 3, count: 3 },
      { index: 7, count: 2 },
      { index: 1, count: 1 },
      { index: 9, count: 1 },
    ]);
    const colors = categoryColors(cats);
    expect(colors.get(3)).toBe(PALETTE[0]);
    expect(colors.get(9)).toBe(PALETTE[3]);
    const rgba = categoricalRGBA([3, 9], colors);
    expect([...rgba]).toEqual([...PALETTE[0], 255, ...PALETTE[3], 255]);
  });

  it("runs out of colours gracefully", () => {
    const many = Array.from({ length: 25 }, (_, i) => i);
    const colors = categoryColors(categories(many));
    expect(new Set(many.slice(0, 20).map((i) => colors.get(i))).size).toBe(20);
    expect(colors.get(24)).toBe(OTHER);
  });
});

describe("pointer", () => {
  it("maps client coordinates to image pixels at any display scale", () => {
    const rect = { left: 100, top: 50, width: 256, height: 128 };
    expect(toImage(rect, 100, 50, 64, 32)).toEqual({ x: 0, y: 0 });
    expect(toImage(rect, 228, 114, 64, 32)).toEqual({ x: 32, y: 16 });
  });
});
