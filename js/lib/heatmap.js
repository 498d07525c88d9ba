// Heatmaps over an image: which image pixels belong to which map cell, and their colours.
//
// An occlusion map (zfwidgets.engine.occlusion) holds one value per position of the grey square:
// the square at [i, j] covers rows[i] .. rows[i] + window[0] and cols[j] .. cols[j] + window[1].
// Each image pixel shows the value of the square whose centre is nearest (cells meet halfway
// between neighbouring centres; the outer cells reach the image border), and the pointer picks
// the square the same way. A plain (h, w) map (show_map) covers the image in equal cells.

import { applyColormap } from "./colormap.js";
import { fmtValue } from "./dom.js";

/**
 * @typedef {object} Cells
 * @property {Float64Array} edges  n + 1 increasing boundaries in image pixels, 0 .. size
 * @property {number} size        image pixels along this axis
 */

/**
 * Cells of square positions along one axis: boundaries halfway between square centres.
 * @param {ArrayLike<number>} starts  top-left positions of the square, increasing
 * @param {number} window  side of the square along this axis
 * @param {number} size    image size along this axis
 * @returns {Cells}
 */
export function squareCells(starts, window, size) {
  const n = starts.length;
  if (n < 1) throw new Error("heatmap: no square positions");
  const edges = new Float64Array(n + 1);
  edges[0] = 0;
  for (let k = 1; k < n; k++) {
    edges[k] = (starts[k - 1] + starts[k] + window) / 2;
  }
  edges[n] = size;
  return { edges, size };
}

/**
 * n equal cells over size pixels (a map of n values stretched over the image).
 * @param {number} n
 * @param {number} size
 * @returns {Cells}
 */
export function uniformCells(n, size) {
  if (!(n >= 1)) throw new Error("heatmap: a map needs at least one cell");
  const edges = new Float64Array(n + 1);
  for (let k = 0; k <= n; k++) edges[k] = (k * size) / n;
  return { edges, size };
}

/**
 * Index of the cell holding coordinate u (image pixels, continuous), clamped to the cells.
 * @param {Cells} cells
 * @param {number} u
 * @returns {number}
 */
export function cellAt(cells, u) {
  const { edges } = cells;
  const n = edges.length - 1;
  let lo = 0;
  let hi = n - 1;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (edges[mid] <= u) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

/**
 * The cell of every pixel along one axis (by the pixel's centre).
 * @param {Cells} cells
 * @returns {Int32Array} length cells.size
 */
export function pixelCells(cells) {
  const out = new Int32Array(cells.size);
  for (let p = 0; p < cells.size; p++) out[p] = cellAt(cells, p + 0.5);
  return out;
}

/**
 * Image-sized RGBA pixels from one RGBA colour per cell.
 * @param {Uint8ClampedArray} cellRGBA  4 bytes per cell, row-major over (rows, columns)
 * @param {number} columns
 * @param {Int32Array} rowOf  cell row of each image row (length H)
 * @param {Int32Array} colOf  cell column of each image column (length W)
 * @returns {Uint8ClampedArray} H * W * 4 bytes
 */
export function paint(cellRGBA, columns, rowOf, colOf) {
  const h = rowOf.length;
  const w = colOf.length;
  const out = new Uint8ClampedArray(h * w * 4);
  const src = new Uint32Array(cellRGBA.buffer, cellRGBA.byteOffset, cellRGBA.length / 4);
  const dst = new Uint32Array(out.buffer);
  for (let y = 0; y < h; y++) {
    const base = rowOf[y] * columns;
    const line = y * w;
    for (let x = 0; x < w; x++) dst[line + x] = src[base + colOf[x]];
  }
  return out;
}

/**
 * Smallest and largest finite value (0, 0 when there is none).
 * @param {ArrayLike<number>} values
 * @returns {{lo: number, hi: number}}
 */
export function finiteRange(values) {
  let lo = Number.POSITIVE_INFINITY;
  let hi = Number.NEGATIVE_INFINITY;
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (Number.isFinite(v)) {
      if (v < lo) lo = v;
      if (v > hi) hi = v;
    }
  }
  return lo <= hi ? { lo, hi } : { lo: 0, hi: 0 };
}

/**
 * The two labels of a colour bar for values in [lo, hi], distinct where the numbers are.
 * @param {number} lo
 * @param {number} hi
 * @returns {[string, string]}
 */
export function colorbarLabels(lo, hi) {
  let a = fmtValue(lo);
  let b = fmtValue(hi);
  for (let digits = 4; a === b && lo !== hi && digits <= 8; digits++) {
    a = String(Number(lo.toPrecision(digits)));
    b = String(Number(hi.toPrecision(digits)));
  }
  return [a, b];
}

/**
 * Where value v sits on a colour bar of [lo, hi], in [0, 1] (0.5 for a constant map).
 * @param {number} v
 * @param {number} lo
 * @param {number} hi
 * @returns {number}
 */
export function barPosition(v, lo, hi) {
  if (!(hi > lo)) return 0.5;
  return Math.min(1, Math.max(0, (v - lo) / (hi - lo)));
}

/** Tableau's 10 colours, then their light variants (matplotlib's tab20 order, regrouped). */
export const PALETTE = Object.freeze([
  [31, 119, 180],
  [255, 127, 14],
  [44, 160, 44],
  [214, 39, 40],
  [148, 103, 189],
  [140, 86, 75],
  [227, 119, 194],
  [127, 127, 127],
  [188, 189, 34],
  [23, 190, 207],
  [174, 199, 232],
  [255, 187, 120],
  [152, 223, 138],
  [255, 152, 150],
  [197, 176, 213],
  [196, 156, 148],
  [247, 182, 210],
  [199, 199, 199],
  [219, 219, 141],
  [158, 218, 229],
]);

/** Colour of the classes beyond the palette. */
export const OTHER = Object.freeze([60, 60, 60]);

/**
 * The classes that occur in a map, most frequent first (ties: lower index first).
 * @param {ArrayLike<number>} classes  one class index per cell
 * @returns {{index: number, count: number}[]}
 */
export function categories(classes) {
  /** @type {Map<number, number>} */
  const counts = new Map();
  for (let i = 0; i < classes.length; i++) {
    counts.set(classes[i], (counts.get(classes[i]) ?? 0) + 1);
  }
  return [...counts.entries()]
    .map(([index, count]) => ({ index, count }))
    .sort((a, b) => b.count - a.count || a.index - b.index);
}

/**
 * A colour per occurring class by rank: the palette in order, then OTHER.
 * @param {{index: number}[]} cats  from categories()
 * @returns {Map<number, readonly number[]>}
 */
export function categoryColors(cats) {
  const out = new Map();
  cats.forEach(({ index }, rank) => {
    out.set(index, rank < PALETTE.length ? PALETTE[rank] : OTHER);
  });
  return out;
}

/**
 * One RGBA colour per cell for a class map.
 * @param {ArrayLike<number>} classes
 * @param {Map<number, readonly number[]>} colors
 * @returns {Uint8ClampedArray}
 */
export function categoricalRGBA(classes, colors) {
  const out = new Uint8ClampedArray(classes.length * 4);
  for (let i = 0; i < classes.length; i++) {
    const c = colors.get(classes[i]) ?? OTHER;
    out[i * 4] = c[0];
    out[i * 4 + 1] = c[1];
    out[i * 4 + 2] = c[2];
    out[i * 4 + 3] = 255;
  }
  return out;
}

/**
 * One RGBA colour per cell for a continuous map, over its finite range (NaN: transparent).
 * @param {ArrayLike<number>} values
 * @param {string} colormap  a name of colormap.js
 * @returns {{rgba: Uint8ClampedArray, lo: number, hi: number}}
 */
export function continuousRGBA(values, colormap) {
  const { lo, hi } = finiteRange(values);
  return { rgba: applyColormap(values, colormap, lo, hi), lo, hi };
}

/**
 * CSS colour of an RGB triple.
 * @param {readonly number[]} c
 * @returns {string}
 */
export function rgb(c) {
  return `rgb(${c[0]}, ${c[1]}, ${c[2]})`;
}

/**
 * Image coordinates (continuous, in image pixels) under a pointer, given the bounding rect of
 * the element that shows the image and the image's size in pixels.
 * @param {{left: number, top: number, width: number, height: number}} rect
 * @param {number} clientX
 * @param {number} clientY
 * @param {number} width   image width in pixels
 * @param {number} height  image height in pixels
 * @returns {{x: number, y: number}}
 */
export function toImage(rect, clientX, clientY, width, height) {
  return {
    x: ((clientX - rect.left) * width) / (rect.width || 1),
    y: ((clientY - rect.top) * height) / (rect.height || 1),
  };
}
