// Atlas geometry, identical to zfwidgets.base.images.GridLayout: tiles of tileH x tileW pixels in
// `columns` columns, row-major, with `pad` pixels between tiles and around the border.
//
//   width  = pad + columns * (tileW + pad)
//   height = pad + rows * (tileH + pad),  rows = ceil(count / columns)
//   tile i at x = pad + (i % columns) * (tileW + pad), y = pad + floor(i / columns) * (tileH + pad)

/**
 * @typedef {object} Layout
 * @property {number} count    number of tiles
 * @property {number} columns
 * @property {number} rows
 * @property {number} tileH
 * @property {number} tileW
 * @property {number} pad
 * @property {number} width    atlas width in pixels
 * @property {number} height   atlas height in pixels
 */

/**
 * @typedef {object} Rect
 * @property {number} x
 * @property {number} y
 * @property {number} w
 * @property {number} h
 */

/**
 * Build the layout of an atlas.
 *
 * @param {{count: number, columns: number, tileH: number, tileW: number, pad?: number}} spec
 * @returns {Layout}
 */
export function layout({ count, columns, tileH, tileW, pad = 1 }) {
  for (const [k, v] of Object.entries({ count, columns, tileH, tileW, pad })) {
    if (!Number.isInteger(v) || v < 0) {
      throw new Error(`grid: ${k} must be a non-negative integer, got ${v}`);
    }
  }
  if (columns < 1) throw new Error("grid: columns must be at least 1");
  const rows = Math.ceil(count / columns);
  return {
    count,
    columns,
    rows,
    tileH,
    tileW,
    pad,
    width: pad + columns * (tileW + pad),
    height: pad + rows * (tileH + pad),
  };
}

/**
 * Layout from the `grid` dict Python sends ({count, columns, rows, tile: [h, w], pad}).
 * @param {{count: number, columns: number, tile: number[], pad: number}} grid
 * @returns {Layout}
 */
export function fromPython(grid) {
  return layout({
    count: grid.count,
    columns: grid.columns,
    tileH: grid.tile[0],
    tileW: grid.tile[1],
    pad: grid.pad,
  });
}

/**
 * The rectangle of tile i in atlas pixels.
 * @param {Layout} g
 * @param {number} i
 * @returns {Rect}
 */
export function tileRect(g, i) {
  const col = i % g.columns;
  const row = Math.floor(i / g.columns);
  return {
    x: g.pad + col * (g.tileW + g.pad),
    y: g.pad + row * (g.tileH + g.pad),
    w: g.tileW,
    h: g.tileH,
  };
}

/**
 * Index of the tile under atlas pixel (x, y), or -1 over padding or an empty slot.
 * @param {Layout} g
 * @param {number} x
 * @param {number} y
 * @returns {number}
 */
export function tileAt(g, x, y) {
  const sx = g.tileW + g.pad;
  const sy = g.tileH + g.pad;
  const cx = x - g.pad;
  const cy = y - g.pad;
  if (cx < 0 || cy < 0) return -1;
  const col = Math.floor(cx / sx);
  const row = Math.floor(cy / sy);
  if (col >= g.columns || row >= g.rows) return -1;
  if (cx - col * sx >= g.tileW || cy - row * sy >= g.tileH) return -1;
  const i = row * g.columns + col;
  return i < g.count ? i : -1;
}

/**
 * Display scale for an atlas `width` pixels wide in `available` CSS pixels: an integer
 * >= 1 when it fits (crisp pixels), capped at `maxScale`, else the fraction that fits.
 * @param {number} width
 * @param {number} available
 * @param {number} [maxScale]
 * @returns {number}
 */
export function fitScale(width, available, maxScale = 4) {
  if (!(width > 0)) return 1;
  if (!(available > 0)) return 1;
  const s = available / width;
  if (s < 1) return s;
  return Math.max(1, Math.min(maxScale, Math.floor(s)));
}

/**
 * Atlas pixel under a pointer event position, given the element's bounding rect and the
 * canvas's pixel size.
 * @param {{left: number, top: number, width: number, height: number}} rect
 * @param {number} clientX
 * @param {number} clientY
 * @param {number} canvasW
 * @param {number} canvasH
 * @returns {{x: number, y: number}}
 */
export function toAtlas(rect, clientX, clientY, canvasW, canvasH) {
  return {
    x: Math.floor(((clientX - rect.left) * canvasW) / (rect.width || 1)),
    y: Math.floor(((clientY - rect.top) * canvasH) / (rect.height || 1)),
  };
}
