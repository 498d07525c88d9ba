// Which classes a unit serves: the classes of its top-k hits with their counts
// (zfwidgets.base.classes.count_classes in Python; the same order). Class names are user text:
// they go into the page as text (textContent), never as HTML.

import { h } from "./dom.js";

/** Classes listed before "and N more". */
export const MAX_SHOWN = 8;

/**
 * Count the class of every hit: `[class index, count]`, most frequent first, ties by class
 * index. Negative entries (no label) are not counted.
 * @param {ArrayLike<number>} labels  one class index per hit
 * @returns {Array<[number, number]>}
 */
export function countClasses(labels) {
  /** @type {Map<number, number>} */
  const counts = new Map();
  for (let j = 0; j < labels.length; j++) {
    const y = labels[j];
    if (Number.isInteger(y) && y >= 0) counts.set(y, (counts.get(y) || 0) + 1);
  }
  return Array.from(counts.entries()).sort((a, b) => b[1] - a[1] || a[0] - b[0]);
}

/**
 * A line that lists a unit's top classes with their counts.
 * @param {Array<[string, number]>} pairs  [class name, count], most frequent first
 * @param {number} hits  how many hits were counted (all of the unit's k)
 * @param {string} [prefix]  CSS class prefix ("zf" in widgets, "zf-site" on the site)
 * @returns {HTMLElement}
 */
export function classList(pairs, hits, prefix = "zf") {
  const box = h("div", `${prefix}-classes`);
  box.appendChild(h("span", `${prefix}-classes-title`, `Top classes of its ${hits} hits:`));
  const list = h("ol", `${prefix}-classes-list`);
  for (const [name, count] of pairs.slice(0, MAX_SHOWN)) {
    const item = h("li", `${prefix}-class`);
    item.appendChild(h("span", `${prefix}-class-name`, name === "" ? "(unnamed)" : name));
    item.appendChild(h("span", `${prefix}-class-count`, String(count)));
    item.title = `${name}: ${count} of ${hits} hits`;
    list.appendChild(item);
  }
  box.appendChild(list);
  const rest = pairs.length - MAX_SHOWN;
  if (rest > 0) {
    const more = pairs.slice(MAX_SHOWN).reduce((s, p) => s + p[1], 0);
    box.appendChild(h("span", `${prefix}-classes-more`, `and ${rest} more (${more} hits)`));
  }
  if (!pairs.length) list.appendChild(h("li", `${prefix}-class`, "no labelled hits"));
  return box;
}
