// Geometry of a TopNine atlas (zfwidgets/widgets/top_nine.py): two blocks of `count` tiles,
// the deconvnet projections (block 0) and the image patches (block 1), each laid out as
// grid.js lays out an atlas, side by side with `gap` transparent pixels between them.
//
//   block width  = pad + columns * (tileW + pad)       (grid.js `layout(...).width`)
//   atlas width  = 2 * block width + gap
//   block b starts at x = b * (block width + gap)

import { layout, tileAt, tileRect } from "./grid.js";

/**
 * @typedef {object} PairLayout
 * @property {import("./grid.js").Layout} block  the layout of one block
 * @property {number} gap     pixels between the blocks
 * @property {number} width   atlas width in pixels
 * @property {number} height  atlas height in pixels
 */

/**
 * @typedef {object} Hit
 * @property {number} block  0: reconstruction, 1: image patch
 * @property {number} rank   0 = strongest
 */

/**
 * The layout from the `grid` dict Python sends
 * ({count, columns, tile: [h, w], pad, gap, width, height}).
 * @param {{count: number, columns: number, tile: number[], pad: number, gap: number}} grid
 * @returns {PairLayout}
 */
export function pairLayout(grid) {
  const block = layout({
    count: grid.count,
    columns: grid.columns,
    tileH: grid.tile[0],
    tileW: grid.tile[1],
    pad: grid.pad,
  });
  const gap = grid.gap;
  if (!Number.isInteger(gap) || gap < 0) {
    throw new Error(`top9: gap must be a non-negative integer, got ${gap}`);
  }
  return { block, gap, width: 2 * block.width + gap, height: block.height };
}

/**
 * Left edge of block `b` in atlas pixels.
 * @param {PairLayout} p
 * @param {number} b
 * @returns {number}
 */
export function blockX(p, b) {
  return b * (p.block.width + p.gap);
}

/**
 * The hit under atlas pixel (x, y), or null over padding, the gap or an empty slot.
 * @param {PairLayout} p
 * @param {number} x
 * @param {number} y
 * @returns {Hit | null}
 */
export function hitAt(p, x, y) {
  for (const b of [0, 1]) {
    const x0 = blockX(p, b);
    if (x >= x0 && x < x0 + p.block.width) {
      const rank = tileAt(p.block, x - x0, y);
      return rank >= 0 ? { block: b, rank } : null;
    }
  }
  return null;
}

/**
 * The rectangle of a hit's tile in atlas pixels.
 * @param {PairLayout} p
 * @param {number} block
 * @param {number} rank
 * @returns {import("./grid.js").Rect}
 */
export function hitRect(p, block, rank) {
  const r = tileRect(p.block, rank);
  return { ...r, x: r.x + blockX(p, block) };
}

/**
 * Display scale of the atlas: an integer up to `maxScale` when it fits (crisp pixels; small
 * receptive fields are blown up), the fraction that fits otherwise.
 * @param {number} width   atlas width in pixels
 * @param {number} available  CSS pixels
 * @param {number} [maxScale]
 * @returns {number}
 */
export function pairScale(width, available, maxScale = 12) {
  if (!(width > 0) || !(available > 0)) return 1;
  const s = available / width;
  if (s < 1) return s;
  return Math.max(1, Math.min(maxScale, Math.floor(s)));
}

/**
 * The text of one hit, for the label under its patch and the tooltip.
 * @param {{rank: number, value: number, index: number, name: string, fmt: (v: number) => string}} hit
 * @returns {{short: string, long: string}}
 */
export function hitText({ rank, value, index, name, fmt }) {
  const v = fmt(value);
  return {
    short: name ? `${v} · ${name}` : v,
    long: `#${rank + 1} · image ${index} · activation ${v}${name ? ` · ${name}` : ""}`,
  };
}
