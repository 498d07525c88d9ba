import { describe, expect, it } from "vitest";
import { applyColormap, CONTROL_POINTS, colorbar, cssColor, lut } from "../lib/colormap.js";

/** @param {Uint8ClampedArray} a */
const sum = (a) => a.reduce((s, v) => s + v, 0);

describe("colormap", () => {
  it("matches zfwidgets.base.images.colormap_lut entry for entry (same checksums)", () => {
    // Python: int(colormap_lut(name).long().sum()), and entries 0, 100, 255 (tests/test_images.py)
    const expected = {
      gray: [163200, [0, 0, 0, 255], [100, 100, 100, 255], [255, 255, 255, 255]],
      viridis: [149864, [68, 1, 84, 255], [42, 118, 142, 255], [253, 231, 37, 255]],
      inferno: [146229, [0, 0, 4, 255], [145, 37, 104, 255], [252, 255, 164, 255]],
      jet: [159040, [0, 0, 128, 255], [18, 255, 238, 255], [128, 0, 0, 255]],
    };
    for (const [name, [total, first, mid, last]] of Object.entries(expected)) {
      const table = lut(name);
      expect(table.length).toBe(1024);
      expect(sum(table)).toBe(total);
      expect(Array.from(table.subarray(0, 4))).toEqual(first);
      expect(Array.from(table.subarray(400, 404))).toEqual(mid);
      expect(Array.from(table.subarray(1020, 1024))).toEqual(last);
    }
  });

  it("starts and ends on the first and last control points", () => {
    for (const [name, points] of Object.entries(CONTROL_POINTS)) {
      const table = lut(name);
      expect(Array.from(table.subarray(0, 3))).toEqual(points[0]);
      expect(Array.from(table.subarray(1020, 1023))).toEqual(points[points.length - 1]);
    }
  });

  it("maps values through lo..hi, clips, and leaves NaN transparent", () => {
    const out = applyColormap([0, 5, 10, -1, 99, Number.NaN], "gray", 0, 10);
    expect(Array.from(out.subarray(0, 4))).toEqual([0, 0, 0, 255]);
    expect(Array.from(out.subarray(4, 8))).toEqual([128, 128, 128, 255]);
    expect(Array.from(out.subarray(8, 12))).toEqual([255, 255, 255, 255]);
    expect(out[12]).toBe(0);
    expect(out[16]).toBe(255);
    expect(Array.from(out.subarray(20, 24))).toEqual([0, 0, 0, 0]);
    expect(Array.from(applyColormap([3, 3], "gray", 3, 3).subarray(0, 4))).toEqual([0, 0, 0, 255]);
  });

  it("draws a colour bar low to high", () => {
    const bar = colorbar("viridis", 16, 2);
    expect(bar.length).toBe(16 * 2 * 4);
    expect(Array.from(bar.subarray(0, 4))).toEqual([68, 1, 84, 255]);
    expect(Array.from(bar.subarray(15 * 4, 16 * 4))).toEqual([253, 231, 37, 255]);
    expect(Array.from(bar.subarray(16 * 4, 17 * 4))).toEqual([68, 1, 84, 255]);
    expect(cssColor("gray", 1)).toBe("rgb(255, 255, 255)");
  });

  it("names the maps it knows when asked for another", () => {
    expect(() => lut("rainbow")).toThrow(/viridis/);
  });
});
