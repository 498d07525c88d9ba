// The static atlas site's state in the URL hash, and the unit orders it pages through.
// Pure functions (no DOM), so they are tested without a browser.

/** Units per overview page. */
export const PER_PAGE = 64;

/** What an overview cell shows. */
export const SHOWS = ["strongest", "reconstructions", "patches", "features"];

/** How the overview orders units. */
export const SORTS = ["index", "strength"];

/**
 * @typedef {object} Route
 * @property {string | null} layer  layer name, null for the list of layers
 * @property {number | null} unit   channel, null for the layer's overview
 * @property {string} sort          "index" | "strength"
 * @property {string} show          "strongest" | "reconstructions" | "patches" | "features"
 * @property {number} page          0-based overview page
 */

/**
 * Read a hash such as `#/features.10/37?sort=strength&page=2`.
 * Unknown or malformed parts fall back to the defaults.
 * @param {string} hash
 * @returns {Route}
 */
export function parseHash(hash) {
  /** @type {Route} */
  const route = { layer: null, unit: null, sort: "index", show: "strongest", page: 0 };
  let text = String(hash || "");
  if (text.startsWith("#")) text = text.slice(1);
  const q = text.indexOf("?");
  const path = q >= 0 ? text.slice(0, q) : text;
  const query = q >= 0 ? text.slice(q + 1) : "";
  const parts = path.split("/").filter((p) => p.length > 0);
  try {
    if (parts.length >= 1) route.layer = decodeURIComponent(parts[0]);
  } catch {
    route.layer = null;
  }
  if (parts.length >= 2 && /^[0-9]{1,7}$/.test(parts[1])) route.unit = Number(parts[1]);
  for (const pair of query.split("&")) {
    const [key, value = ""] = pair.split("=");
    if (key === "sort" && SORTS.includes(value)) route.sort = value;
    else if (key === "show" && SHOWS.includes(value)) route.show = value;
    else if (key === "page" && /^[0-9]{1,6}$/.test(value))
      route.page = Math.max(0, Number(value) - 1);
  }
  return route;
}

/**
 * The hash of a route (defaults left out, page 1-based).
 * @param {Partial<Route>} route
 * @returns {string}
 */
export function formatHash(route) {
  if (route.layer == null) return "#/";
  let text = `#/${encodeURIComponent(route.layer).replace(/%2E/gi, ".")}`;
  if (route.unit != null) text += `/${route.unit}`;
  const query = [];
  if (route.sort && route.sort !== "index") query.push(`sort=${route.sort}`);
  if (route.show && route.show !== "strongest") query.push(`show=${route.show}`);
  if (route.unit == null && route.page) query.push(`page=${route.page + 1}`);
  return query.length ? `${text}?${query.join("&")}` : text;
}

/**
 * Channel order of a layer: by index, or by the strongest activation (descending; ties by
 * index, so the order is the same everywhere).
 * @param {ArrayLike<number>} values  flat (channels * k) hit values, strongest first per unit
 * @param {number} channels
 * @param {number} k
 * @param {string} sort
 * @returns {number[]}
 */
export function unitOrder(values, channels, k, sort) {
  const order = Array.from({ length: channels }, (_, c) => c);
  if (sort !== "strength") return order;
  const top = (c) => {
    const v = values[c * k];
    return Number.isFinite(v) ? v : Number.NEGATIVE_INFINITY;
  };
  return order.sort((a, b) => top(b) - top(a) || a - b);
}

/**
 * Number of overview pages for `channels` units.
 * @param {number} channels
 * @param {number} [per]
 * @returns {number}
 */
export function pageCount(channels, per = PER_PAGE) {
  return Math.max(1, Math.ceil(channels / per));
}

/**
 * The page that shows the unit at position `position` of the order.
 * @param {number} position
 * @param {number} [per]
 * @returns {number}
 */
export function pageOf(position, per = PER_PAGE) {
  return Math.max(0, Math.floor(position / per));
}

/**
 * The file of a unit's sprite, relative to the site.
 * @param {{dir: string, digits: number, ext: string}} tiles
 * @param {number} unit
 * @returns {string}
 */
export function tileUrl(tiles, unit) {
  return `${tiles.dir}/${String(unit).padStart(tiles.digits, "0")}${tiles.ext}`;
}

/**
 * The file of a unit's feature visualisation, relative to the site (beside its sprite).
 * @param {{dir: string, digits: number, fv: {ext: string} | null}} tiles
 * @param {number} unit
 * @returns {string | null}  null when the layer has none
 */
export function featureUrl(tiles, unit) {
  if (!tiles.fv) return null;
  return `${tiles.dir}/${String(unit).padStart(tiles.digits, "0")}${tiles.fv.ext}`;
}

/**
 * Source rectangle `[x, y, w, h]` in a unit sprite: hit `j` of a block, or a whole block.
 * Layout: reconstructions left, patches right, each `columns` x `rows` tiles, row-major.
 * @param {{columns: number, rows: number, tile: number[]}} tiles
 * @param {"reconstructions" | "patches"} block
 * @param {number | null} j  hit index, null for the whole block
 * @returns {number[]}
 */
export function spriteRect(tiles, block, j) {
  const [th, tw] = tiles.tile;
  const x0 = block === "patches" ? tiles.columns * tw : 0;
  if (j == null) return [x0, 0, tiles.columns * tw, tiles.rows * th];
  return [x0 + (j % tiles.columns) * tw, Math.floor(j / tiles.columns) * th, tw, th];
}

/**
 * Canvas size and smoothing to show a `w` x `h` source within `side` CSS pixels: enlarged by
 * a whole factor (crisp pixels), or shrunk smoothly.
 * @param {number} w
 * @param {number} h
 * @param {number} side
 * @returns {{width: number, height: number, smooth: boolean}}
 */
export function fitSize(w, h, side) {
  const s = side / Math.max(w, h, 1);
  const f = s >= 1 ? Math.floor(s) : s;
  return {
    width: Math.max(1, Math.round(w * f)),
    height: Math.max(1, Math.round(h * f)),
    smooth: f < 1,
  };
}

/**
 * Values sent as integers times `10 ** e`, back as numbers (through their decimal text, so
 * `1234` and `e = -2` give exactly the double nearest 12.34).
 * @param {number[]} ints
 * @param {number} e
 * @returns {number[]}
 */
export function unscale(ints, e) {
  return ints.map((v) => Number(`${v}e${e}`));
}
