import { describe, expect, it } from "vitest";
import {
  fitSize,
  formatHash,
  PER_PAGE,
  pageCount,
  pageOf,
  parseHash,
  spriteRect,
  tileUrl,
  unitOrder,
  unscale,
} from "../site/route.js";

describe("site routes", () => {
  it("reads deep links", () => {
    expect(parseHash("#/features.10/37")).toMatchObject({ layer: "features.10", unit: 37 });
    expect(parseHash("#/layer4.2.conv3?sort=strength&page=3&show=patches")).toEqual({
      layer: "layer4.2.conv3",
      unit: null,
      sort: "strength",
      show: "patches",
      page: 2,
    });
    expect(parseHash("")).toMatchObject({ layer: null, unit: null, page: 0 });
    expect(parseHash("#/")).toMatchObject({ layer: null });
  });

  it("falls back to defaults on nonsense", () => {
    const r = parseHash("#/%E0%A4%A/x?sort=<b>&page=-1&show=evil");
    expect(r.layer).toBe(null);
    expect(r.unit).toBe(null);
    expect(r.sort).toBe("index");
    expect(r.show).toBe("strongest");
    expect(r.page).toBe(0);
  });

  it("writes what it reads", () => {
    for (const hash of [
      "#/",
      "#/features.10",
      "#/features.10/37",
      "#/features.10?sort=strength&page=2",
      "#/a%2Fb%20c/3?sort=strength&show=reconstructions",
    ]) {
      expect(formatHash(parseHash(hash))).toBe(hash);
    }
    // a unit's link leaves the page out
    expect(formatHash({ layer: "x", unit: 5, page: 3 })).toBe("#/x/5");
  });
});

describe("site orders and pages", () => {
  it("sorts by strength, ties by index", () => {
    const k = 2;
    const values = [1, 0, 3, 1, 3, 2, -1, -2, Number.NaN, 0];
    expect(unitOrder(values, 5, k, "index")).toEqual([0, 1, 2, 3, 4]);
    expect(unitOrder(values, 5, k, "strength")).toEqual([1, 2, 0, 3, 4]);
  });

  it("pages a 2,048-unit layer", () => {
    expect(pageCount(2048)).toBe(Math.ceil(2048 / PER_PAGE));
    expect(pageCount(0)).toBe(1);
    expect(pageOf(0)).toBe(0);
    expect(pageOf(PER_PAGE)).toBe(1);
    expect(pageOf(2047)).toBe(pageCount(2048) - 1);
  });
});

describe("site sprites", () => {
  // zfwidgets.atlas.store.SpriteLayout: k=9, 3 columns, tiles 5 (h) x 7 (w)
  const tiles = { dir: "tiles/3-ab", digits: 5, ext: ".webp", columns: 3, rows: 3, tile: [5, 7] };

  it("names a unit's file", () => {
    expect(tileUrl(tiles, 42)).toBe("tiles/3-ab/00042.webp");
  });

  it("finds hits and blocks like SpriteLayout.rect", () => {
    expect(spriteRect(tiles, "reconstructions", 0)).toEqual([0, 0, 7, 5]);
    expect(spriteRect(tiles, "reconstructions", 4)).toEqual([7, 5, 7, 5]);
    expect(spriteRect(tiles, "patches", 0)).toEqual([21, 0, 7, 5]);
    expect(spriteRect(tiles, "patches", 8)).toEqual([35, 10, 7, 5]);
    expect(spriteRect(tiles, "patches", null)).toEqual([21, 0, 21, 15]);
  });

  it("enlarges by whole factors and shrinks smoothly", () => {
    expect(fitSize(11, 11, 96)).toEqual({ width: 88, height: 88, smooth: false });
    expect(fitSize(224, 112, 96)).toEqual({ width: 96, height: 48, smooth: true });
  });
});

describe("site values", () => {
  it("reads integers times a power of ten", () => {
    expect(unscale([1234, -5, 0], -2)).toEqual([12.34, -0.05, 0]);
    expect(unscale([1234], 3)).toEqual([1234000]);
  });
});
