// Colour maps, identical to zfwidgets/images.py (same control points, same integer
// interpolation), so a colour bar drawn here matches the pixels computed on the model's device.

/**
 * Evenly spaced RGB control points (0..255) of each colour map. viridis and inferno: 33
 * samples of matplotlib's tables (CC0); jet: its exact piecewise-linear knots.
 * @type {Readonly<Record<string, number[][]>>}
 */
// biome-ignore format: tables read better in rows
export const CONTROL_POINTS = Object.freeze({
  gray: [
    [0, 0, 0],
    [255, 255, 255],
  ],
  viridis: [
    [68, 1, 84], [71, 13, 96], [72, 24, 106], [72, 35, 116], [71, 45, 123], [69, 55, 129],
    [66, 64, 134], [62, 73, 137], [59, 82, 139], [55, 91, 141], [51, 99, 141], [47, 107, 142],
    [44, 114, 142], [41, 122, 142], [38, 130, 142], [35, 137, 142], [33, 145, 140],
    [31, 151, 139], [31, 159, 136], [33, 166, 133], [39, 173, 129], [49, 181, 123],
    [61, 188, 116], [76, 194, 108], [92, 200, 99], [110, 206, 88], [129, 211, 77],
    [149, 216, 64], [170, 220, 50], [192, 223, 37], [213, 226, 26], [234, 229, 26],
    [253, 231, 37],
  ],
  inferno: [
    [0, 0, 4], [4, 3, 18], [11, 7, 36], [21, 11, 55], [33, 12, 74], [47, 10, 91], [61, 9, 101],
    [74, 12, 107], [87, 16, 110], [100, 21, 110], [113, 25, 110], [125, 30, 109],
    [138, 34, 106], [151, 39, 102], [163, 44, 97], [176, 49, 91], [188, 55, 84], [198, 61, 77],
    [208, 69, 69], [218, 78, 60], [227, 89, 51], [235, 100, 41], [241, 113, 31],
    [246, 126, 20], [249, 140, 10], [251, 155, 6], [252, 170, 15], [251, 186, 31],
    [249, 201, 50], [245, 217, 73], [242, 232, 101], [243, 245, 134], [252, 255, 164],
  ],
  jet: [
    [0, 0, 128], [0, 0, 255], [0, 128, 255], [0, 255, 255], [128, 255, 128], [255, 255, 0],
    [255, 128, 0], [255, 0, 0], [128, 0, 0],
  ],
});

/** @type {Map<string, Uint8ClampedArray>} */
const cache = new Map();

/**
 * The 256-entry RGBA lookup table of a colour map (alpha 255).
 *
 * Entry i interpolates between control points k and k + 1 where i * (n - 1) = 255 k + r,
 * in integers: (c[k] * (255 - r) + c[k + 1] * r + 127) / 255, rounded down.
 *
 * @param {string} name  a key of CONTROL_POINTS
 * @returns {Uint8ClampedArray} length 1024
 */
export function lut(name) {
  const hit = cache.get(name);
  if (hit) return hit;
  const points = CONTROL_POINTS[name];
  if (!points) {
    throw new Error(
      `colormap: unknown name ${JSON.stringify(name)}; one of ${Object.keys(CONTROL_POINTS).join(", ")}`,
    );
  }
  const n = points.length;
  const out = new Uint8ClampedArray(256 * 4);
  for (let i = 0; i < 256; i++) {
    const num = i * (n - 1);
    const k = Math.min(Math.floor(num / 255), n - 2);
    const r = num - k * 255;
    for (let c = 0; c < 3; c++) {
      out[i * 4 + c] = Math.floor((points[k][c] * (255 - r) + points[k + 1][c] * r + 127) / 255);
    }
    out[i * 4 + 3] = 255;
  }
  cache.set(name, out);
  return out;
}

/**
 * Colour-map values: (v - lo) / (hi - lo) clipped to [0, 1], then looked up (NaN -> transparent).
 *
 * @param {ArrayLike<number>} values
 * @param {string} name
 * @param {number} lo
 * @param {number} hi  hi === lo maps everything to entry 0
 * @returns {Uint8ClampedArray} RGBA, 4 bytes per value
 */
export function applyColormap(values, name, lo, hi) {
  const table = lut(name);
  const out = new Uint8ClampedArray(values.length * 4);
  const span = hi - lo;
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (Number.isNaN(v)) continue;
    const t = span > 0 ? (v - lo) / span : 0;
    const j = Math.round(Math.min(Math.max(t, 0), 1) * 255) * 4;
    out[i * 4] = table[j];
    out[i * 4 + 1] = table[j + 1];
    out[i * 4 + 2] = table[j + 2];
    out[i * 4 + 3] = 255;
  }
  return out;
}

/**
 * RGBA pixels of a horizontal colour bar, low values on the left.
 *
 * @param {string} name
 * @param {number} width
 * @param {number} height
 * @returns {Uint8ClampedArray} width * height * 4 bytes
 */
export function colorbar(name, width, height) {
  const table = lut(name);
  const out = new Uint8ClampedArray(width * height * 4);
  for (let x = 0; x < width; x++) {
    const j = width > 1 ? Math.round((x / (width - 1)) * 255) * 4 : 0;
    for (let y = 0; y < height; y++) {
      out.set(table.subarray(j, j + 4), (y * width + x) * 4);
    }
  }
  return out;
}

/**
 * CSS colour of entry t in [0, 1] of a colour map, e.g. for a legend swatch.
 * @param {string} name
 * @param {number} t
 * @returns {string}
 */
export function cssColor(name, t) {
  const table = lut(name);
  const j = Math.round(Math.min(Math.max(t, 0), 1) * 255) * 4;
  return `rgb(${table[j]}, ${table[j + 1]}, ${table[j + 2]})`;
}
