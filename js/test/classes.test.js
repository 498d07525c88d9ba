// @vitest-environment happy-dom
import { describe, expect, it } from "vitest";
import { classList, countClasses, MAX_SHOWN } from "../lib/classes.js";

describe("which classes a unit serves", () => {
  it("counts every hit, most frequent first, ties by class index", () => {
    expect(countClasses([2, 0, 2, -1, 1, 0, 2])).toEqual([
      [2, 3],
      [0, 2],
      [1, 1],
    ]);
    expect(countClasses([3, 1])).toEqual([
      [1, 1],
      [3, 1],
    ]);
    expect(countClasses([-1, -1])).toEqual([]);
    expect(countClasses(new Int32Array([4, 4, 4]))).toEqual([[4, 3]]);
  });

  it("lists names as text with their counts", () => {
    const evil = '<img src=x onerror="window.__zfxss=1">';
    const box = classList(
      [
        [evil, 3],
        ["dog", 2],
      ],
      5,
    );
    expect(box.querySelector(".zf-classes-title")?.textContent).toBe("Top classes of its 5 hits:");
    const items = [...box.querySelectorAll(".zf-class")];
    expect(items.map((li) => li.querySelector(".zf-class-name")?.textContent)).toEqual([
      evil,
      "dog",
    ]);
    expect(items.map((li) => li.querySelector(".zf-class-count")?.textContent)).toEqual(["3", "2"]);
    expect(box.querySelector("img")).toBeNull();
  });

  it("shows the first few and sums the rest", () => {
    const pairs = Array.from({ length: MAX_SHOWN + 3 }, (_, i) => [`c${i}`, 20 - i]);
    const box = classList(/** @type {Array<[string, number]>} */ (pairs), 300, "zf-site");
    expect(box.querySelectorAll(".zf-site-class")).toHaveLength(MAX_SHOWN);
    const rest = pairs.slice(MAX_SHOWN).reduce((s, p) => s + Number(p[1]), 0);
    expect(box.querySelector(".zf-site-classes-more")?.textContent).toBe(
      `and 3 more (${rest} hits)`,
    );
  });
});
