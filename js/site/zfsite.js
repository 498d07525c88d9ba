// The static atlas site: layers, a whole-layer overview and one unit's top-k (the paper's
// Fig. 2), drawn from the files beside index.html. A classic script (esbuild --format=iife):
// module scripts do not load from file://. Every text from the atlas (layer and class names,
// the title) goes into the page as text (textContent), never as HTML. Nothing is requested
// outside the folder.

import { classList, countClasses } from "../lib/classes.js";
import { fmt, h } from "../lib/dom.js";
import {
  featureUrl,
  fitSize,
  formatHash,
  PER_PAGE,
  pageCount,
  pageOf,
  parseHash,
  SHOWS,
  spriteRect,
  tileUrl,
  unitOrder,
  unscale,
} from "./route.js";

/**
 * @typedef {object} Tiles
 * @property {string} dir
 * @property {string} ext
 * @property {number} digits
 * @property {number} k
 * @property {number} columns
 * @property {number} rows
 * @property {number[]} tile  [h, w]
 * @property {number[]} missing
 *
 * @typedef {object} LayerEntry
 * @property {string} name
 * @property {number} channels
 * @property {string} data
 * @property {Tiles | null} tiles
 * @property {{size: number[], stride: number[], output: number[]}} [field]
 *
 * @typedef {object} LayerData
 * @property {number[]} v  values, channels * k (as sent: integers times 10 ** e)
 * @property {number} [e]  decimal exponent of v
 * @property {number[]} i  image indices, channels * k
 * @property {number[]} [y]  index into manifest.classes, -1 for none
 */

const SHOW_LABELS = {
  strongest: "strongest reconstruction",
  reconstructions: "top-k reconstructions",
  patches: "top-k patches",
  features: "feature visualisations",
};

/**
 * @param {string} text
 * @param {string} href
 * @param {string} [className]
 * @returns {HTMLAnchorElement}
 */
function link(text, href, className) {
  const a = /** @type {HTMLAnchorElement} */ (h("a", className, text));
  a.href = href;
  return a;
}

// -- loading ----------------------------------------------------------------------------------
/** @type {Map<number, Promise<LayerData>>} */
const layerData = new Map();
/** @type {Map<number, (d: LayerData) => void>} */
const layerWaiting = new Map();

/** Called by layers/<i>.js. */
window.zfSiteLayer = (pair) => {
  const [i, data] = pair;
  if (typeof data.e === "number") data.v = unscale(data.v, data.e);
  const done = layerWaiting.get(i);
  if (done) {
    layerWaiting.delete(i);
    done(data);
  }
};

/**
 * A layer's hits, read once by a script tag (works from file://).
 * @param {number} i
 * @param {LayerEntry} entry
 * @returns {Promise<LayerData>}
 */
function loadLayer(i, entry) {
  let p = layerData.get(i);
  if (p) return p;
  p = new Promise((resolve, reject) => {
    layerWaiting.set(i, resolve);
    const s = document.createElement("script");
    s.src = entry.data;
    s.onerror = () => {
      layerWaiting.delete(i);
      layerData.delete(i);
      reject(new Error(`could not read ${entry.data} (is the site folder complete?)`));
    };
    document.head.appendChild(s);
  });
  layerData.set(i, p);
  return p;
}

/** Decoded sprites, most recent last (a few hundred at most). */
/** @type {Map<string, Promise<HTMLImageElement>>} */
const sprites = new Map();
const MAX_SPRITES = 400;

/**
 * @param {string} url
 * @returns {Promise<HTMLImageElement>}
 */
function sprite(url) {
  let p = sprites.get(url);
  if (p) {
    sprites.delete(url);
    sprites.set(url, p);
    return p;
  }
  p = new Promise((resolve, reject) => {
    const img = new Image();
    img.decoding = "async";
    img.onload = () => resolve(img);
    img.onerror = () => {
      sprites.delete(url);
      reject(new Error(`could not read ${url}`));
    };
    img.src = url;
  });
  sprites.set(url, p);
  while (sprites.size > MAX_SPRITES) sprites.delete(sprites.keys().next().value);
  return p;
}

/**
 * A canvas that will show `rect` of the sprite `url`, fitted in `side` CSS pixels.
 * `data-drawn` is set once the pixels are on it (`data-failed` when the file is missing).
 * @param {string} url
 * @param {number[]} rect
 * @param {number} side
 * @param {string} label  accessible name
 * @returns {HTMLCanvasElement}
 */
function tileCanvas(url, rect, side, label) {
  const canvas = /** @type {HTMLCanvasElement} */ (h("canvas", "zf-site-tile"));
  const { width, height, smooth } = fitSize(rect[2], rect[3], side);
  canvas.width = width;
  canvas.height = height;
  canvas.setAttribute("role", "img");
  canvas.setAttribute("aria-label", label);
  sprite(url).then(
    (img) => {
      const ctx = canvas.getContext("2d");
      if (!ctx) return;
      ctx.imageSmoothingEnabled = smooth;
      ctx.drawImage(img, rect[0], rect[1], rect[2], rect[3], 0, 0, width, height);
      canvas.dataset.drawn = "1";
    },
    () => {
      canvas.dataset.failed = "1";
      canvas.classList.add("zf-site-missing");
      canvas.title = "tile file missing";
    },
  );
  return canvas;
}

// -- the app ----------------------------------------------------------------------------------
/**
 * @param {HTMLElement} root
 * @param {any} manifest
 */
function start(root, manifest) {
  /** @type {LayerEntry[]} */
  const layers = manifest.layers;
  const index = new Map(layers.map((L, i) => [L.name, i]));
  const classes = Array.isArray(manifest.classes) ? manifest.classes : null;
  let token = 0;
  /** @type {import("./route.js").Route} */
  let route = parseHash(location.hash);
  /** @type {number[]} the units of the layer shown, in the current order */
  let order = [];
  /** @type {string | null} focus this unit's cell after drawing the overview */
  let focusUnit = null;

  document.title = manifest.title;
  const header = h("header", "zf-site-header");
  const title = h("h1", "zf-site-title");
  title.appendChild(link(manifest.title, "#/"));
  header.appendChild(title);
  const facts = [];
  if (manifest.model) facts.push(manifest.model);
  facts.push(`top ${manifest.k}`);
  facts.push(`input ${manifest.input_size.join("\u00d7")}`);
  if (manifest.images) facts.push(`${manifest.images} images`);
  header.appendChild(h("p", "zf-site-facts", facts.join(" \u00b7 ")));
  const nav = h("nav", "zf-site-layers");
  nav.setAttribute("aria-label", "layers");
  const navLinks = new Map();
  for (const L of layers) {
    const a = link(L.name, formatHash({ layer: L.name }), "zf-site-layer-link");
    a.appendChild(h("span", "zf-site-count", ` ${L.channels}`));
    if (!L.tiles) a.classList.add("zf-site-values-only");
    navLinks.set(L.name, a);
    nav.appendChild(a);
  }
  header.appendChild(nav);
  const main = h("main", "zf-site-main");
  main.tabIndex = -1;
  const status = h("p", "zf-site-status");
  status.setAttribute("role", "status");
  const help = h(
    "p",
    "zf-site-help",
    "Keys: \u2190 \u2192 \u2191 \u2193 move \u00b7 Enter open \u00b7 Esc back to the layer \u00b7 PgUp PgDn pages \u00b7 [ ] layers",
  );
  root.replaceChildren(header, status, main, help);

  function go(r) {
    const hash = formatHash(r);
    if (location.hash !== hash) location.hash = hash;
    else render();
  }

  function say(text) {
    status.textContent = text;
  }

  function render() {
    const my = ++token;
    route = parseHash(location.hash);
    for (const [name, a] of navLinks) {
      if (name === route.layer) a.setAttribute("aria-current", "page");
      else a.removeAttribute("aria-current");
    }
    if (route.layer == null) {
      say("");
      showLayers();
      return;
    }
    const i = index.get(route.layer);
    if (i === undefined) {
      say(`This atlas has no layer named \u201c${route.layer}\u201d.`);
      showLayers();
      return;
    }
    const entry = layers[i];
    say(`Reading ${entry.name}\u2026`);
    loadLayer(i, entry).then(
      (data) => {
        if (my !== token) return;
        say("");
        order = unitOrder(data.v, entry.channels, manifest.k, route.sort);
        if (route.unit != null && route.unit < entry.channels) showUnit(entry, data);
        else showOverview(entry, data);
      },
      (err) => {
        if (my === token) say(String(err.message || err));
      },
    );
  }

  function showLayers() {
    const table = h("table", "zf-site-table");
    const head = h("tr");
    for (const t of ["layer", "units", "receptive field", "pictures"])
      head.appendChild(h("th", "", t));
    table.appendChild(head);
    for (const L of layers) {
      const tr = h("tr");
      const td = h("td");
      td.appendChild(link(L.name, formatHash({ layer: L.name })));
      tr.appendChild(td);
      tr.appendChild(h("td", "", String(L.channels)));
      tr.appendChild(h("td", "", L.field ? `${L.field.size.join("\u00d7")} px` : ""));
      tr.appendChild(h("td", "", L.tiles ? "yes" : "values only (not rendered)"));
      table.appendChild(tr);
    }
    main.replaceChildren(h("h2", "zf-site-heading", "Layers"), table);
  }

  /**
   * @param {LayerEntry} entry
   * @param {LayerData} data
   */
  function showOverview(entry, data) {
    const k = manifest.k;
    const pages = pageCount(entry.channels);
    const page = Math.min(route.page, pages - 1);
    const heading = h("h2", "zf-site-heading", `${entry.name}: ${entry.channels} units`);
    const bar = h("div", "zf-site-bar");
    const sortGroup = h("span", "zf-site-group", "sort: ");
    for (const s of ["index", "strength"]) {
      const a = link(s, formatHash({ ...route, unit: null, sort: s, page: 0 }), "zf-site-choice");
      if (s === route.sort) a.setAttribute("aria-current", "true");
      sortGroup.appendChild(a);
    }
    const showGroup = h("span", "zf-site-group", "show: ");
    const hasFeatures = Boolean(entry.tiles?.fv);
    for (const s of SHOWS) {
      if (s === "features" && !hasFeatures) continue;
      const a = link(
        SHOW_LABELS[s],
        formatHash({ ...route, unit: null, show: s, page }),
        "zf-site-choice",
      );
      if (s === route.show) a.setAttribute("aria-current", "true");
      showGroup.appendChild(a);
    }
    const pager = h("span", "zf-site-group zf-site-pager");
    const prev = link(
      "\u2039 previous",
      formatHash({ ...route, unit: null, page: Math.max(0, page - 1) }),
    );
    const next = link(
      "next \u203a",
      formatHash({ ...route, unit: null, page: Math.min(pages - 1, page + 1) }),
    );
    if (page === 0) prev.setAttribute("aria-disabled", "true");
    if (page === pages - 1) next.setAttribute("aria-disabled", "true");
    pager.append(prev, h("span", "zf-site-page", ` page ${page + 1} of ${pages} `), next);
    bar.append(sortGroup, showGroup, pager);
    const parts = [heading, bar];
    if (!entry.tiles) {
      parts.push(
        h(
          "p",
          "zf-site-note",
          "This layer was not rendered: its units show their activations only. Render it with atlas.render(layers=[...]) and export the site again.",
        ),
      );
    }
    const grid = h("div", "zf-site-grid");
    grid.setAttribute("role", "list");
    const side = route.show === "strongest" ? 72 : 96;
    for (const c of order.slice(page * PER_PAGE, (page + 1) * PER_PAGE)) {
      const cell = link("", formatHash({ ...route, unit: c }), "zf-site-cell");
      cell.setAttribute("role", "listitem");
      cell.dataset.unit = String(c);
      const v = data.v[c * k];
      const fv = hasFeatures && route.show === "features" ? featureUrl(entry.tiles, c) : null;
      if (fv && !entry.tiles.fv.missing.includes(c)) {
        const [fh, fw] = entry.tiles.fv.size;
        cell.appendChild(tileCanvas(fv, [0, 0, fw, fh], side, `unit ${c} feature visualisation`));
      } else if (entry.tiles && !entry.tiles.missing.includes(c) && route.show !== "features") {
        const block = route.show === "patches" ? "patches" : "reconstructions";
        const rect = spriteRect(entry.tiles, block, route.show === "strongest" ? 0 : null);
        cell.appendChild(tileCanvas(tileUrl(entry.tiles, c), rect, side, `unit ${c}`));
      } else {
        const empty = h("span", "zf-site-empty", entry.tiles ? "missing" : "");
        empty.style.width = `${side}px`;
        empty.style.height = `${side}px`;
        cell.appendChild(empty);
      }
      cell.appendChild(h("span", "zf-site-caption", `${c} \u00b7 ${fmt(v)}`));
      cell.title = `unit ${c}, strongest activation ${fmt(v)}`;
      grid.appendChild(cell);
    }
    parts.push(grid);
    main.replaceChildren(...parts);
    if (focusUnit != null) {
      const cell = grid.querySelector(`[data-unit="${focusUnit}"]`);
      if (cell) /** @type {HTMLElement} */ (cell).focus();
      focusUnit = null;
    }
  }

  /**
   * @param {LayerEntry} entry
   * @param {LayerData} data
   */
  function showUnit(entry, data) {
    const k = manifest.k;
    const c = /** @type {number} */ (route.unit);
    const pos = order.indexOf(c);
    const back = formatHash({ ...route, unit: null, page: pageOf(pos) });
    const head = h("div", "zf-site-bar");
    head.appendChild(link(`\u2190 ${entry.name}`, back, "zf-site-back"));
    const prevUnit = order[(pos - 1 + order.length) % order.length];
    const nextUnit = order[(pos + 1) % order.length];
    head.appendChild(
      link("\u2039 previous unit", formatHash({ ...route, unit: prevUnit }), "zf-site-prev"),
    );
    head.appendChild(
      link("next unit \u203a", formatHash({ ...route, unit: nextUnit }), "zf-site-next"),
    );
    const heading = h("h2", "zf-site-heading", `${entry.name} \u00b7 unit ${c}`);
    heading.tabIndex = -1;
    const sub = [`${pos + 1} of ${entry.channels} by ${route.sort}`];
    if (entry.field) sub.push(`receptive field ${entry.field.size.join("\u00d7")} px`);
    const facts = h("p", "zf-site-facts", sub.join(" \u00b7 "));
    const figure = h("div", "zf-site-unit");
    const fvUrl = entry.tiles ? featureUrl(entry.tiles, c) : null;
    if (fvUrl && entry.tiles) {
      // what the unit responds to most (optimised input), first, as Microscope shows it
      const fig = h("figure", "zf-site-block zf-site-features");
      const [fh, fw] = entry.tiles.fv.size;
      if (entry.tiles.fv.missing.includes(c)) {
        fig.appendChild(h("span", "zf-site-empty", "missing"));
      } else {
        fig.appendChild(tileCanvas(fvUrl, [0, 0, fw, fh], 192, `unit ${c} feature visualisation`));
      }
      fig.appendChild(h("figcaption", "", "feature visualisation"));
      figure.appendChild(fig);
    }
    const hits = [];
    for (let j = 0; j < k; j++) {
      const y = data.y ? data.y[c * k + j] : -1;
      hits.push({
        value: data.v[c * k + j],
        image: data.i[c * k + j],
        label: classes && y >= 0 && y < classes.length ? String(classes[y]) : "",
      });
    }
    const tiles = entry.tiles;
    const drawn = tiles && !tiles.missing.includes(c);
    // a sprite may hold only the strongest few of the k hits (atlas.render(top=...))
    const shown = tiles ? Math.min(tiles.k, k) : k;
    for (const block of ["reconstructions", "patches"]) {
      const fig = h("figure", `zf-site-block zf-site-${block}`);
      const grid = h("div", "zf-site-nine");
      const columns = tiles ? tiles.columns : Math.ceil(Math.sqrt(k));
      grid.style.gridTemplateColumns = `repeat(${columns}, auto)`;
      for (let j = 0; j < shown; j++) {
        const hit = hits[j];
        const cell = h("div", "zf-site-hit");
        const text = `#${j + 1}: ${fmt(hit.value)}${hit.label ? `, ${hit.label}` : ""}, image ${hit.image}`;
        if (drawn) {
          const url = tileUrl(/** @type {Tiles} */ (tiles), c);
          const rect = spriteRect(/** @type {Tiles} */ (tiles), block, j);
          cell.appendChild(tileCanvas(url, rect, 96, `${block.slice(0, -1)} ${text}`));
        } else {
          const empty = h("span", "zf-site-empty", tiles ? "missing" : "");
          cell.appendChild(empty);
        }
        // one line under every tile, so both blocks stay aligned; the table has it all
        const caption =
          block === "reconstructions"
            ? `#${j + 1} \u00b7 ${fmt(hit.value)}`
            : hit.label || `image ${hit.image}`;
        cell.appendChild(h("span", "zf-site-value", caption));
        cell.title = text;
        grid.appendChild(cell);
      }
      fig.appendChild(grid);
      fig.appendChild(
        h(
          "figcaption",
          "",
          block === "reconstructions" ? "deconvnet reconstructions" : "image patches",
        ),
      );
      figure.appendChild(fig);
    }
    const table = h("table", "zf-site-table zf-site-hits");
    const tr0 = h("tr");
    for (const t of ["rank", "activation", "class", "image"]) tr0.appendChild(h("th", "", t));
    table.appendChild(tr0);
    hits.forEach((hit, j) => {
      const tr = h("tr");
      tr.append(
        h("td", "", String(j + 1)),
        h("td", "", fmt(hit.value)),
        h("td", "zf-site-label", hit.label),
        h("td", "", String(hit.image)),
      );
      table.appendChild(tr);
    });
    const parts = [head, heading, facts];
    if (data.y && classes) {
      // every one of the k hits counts, also those without a picture
      const counted = countClasses(data.y.slice(c * k, (c + 1) * k));
      /** @type {Array<[string, number]>} */
      const named = counted.map(([y, n]) => [
        y < classes.length ? String(classes[y]) : `class ${y}`,
        n,
      ]);
      parts.push(classList(named, k, "zf-site"));
    }
    if (!tiles)
      parts.push(h("p", "zf-site-note", "This layer was not rendered: activations only."));
    else if (!drawn)
      parts.push(h("p", "zf-site-note", "This unit's tile file is missing from the atlas."));
    parts.push(figure, table);
    main.replaceChildren(...parts);
    heading.focus({ preventScroll: true });
  }

  /**
   * Arrow keys among the overview cells, by their position on screen.
   * @param {HTMLElement} from
   * @param {string} key
   */
  function moveFocus(from, key) {
    const cells = /** @type {HTMLElement[]} */ (Array.from(main.querySelectorAll(".zf-site-cell")));
    if (!cells.length) return;
    let i = cells.indexOf(from);
    if (i < 0) {
      cells[0].focus();
      return;
    }
    const perRow = cells.filter((c) => c.offsetTop === cells[0].offsetTop).length || 1;
    if (key === "ArrowRight") i = Math.min(cells.length - 1, i + 1);
    else if (key === "ArrowLeft") i = Math.max(0, i - 1);
    else if (key === "ArrowDown") i = Math.min(cells.length - 1, i + perRow);
    else if (key === "ArrowUp") i = Math.max(0, i - perRow);
    cells[i].focus();
  }

  function onKey(e) {
    if (e.altKey || e.ctrlKey || e.metaKey) return;
    const target = /** @type {HTMLElement} */ (e.target);
    if (target && /^(INPUT|SELECT|TEXTAREA)$/.test(target.tagName)) return;
    const L = route.layer == null ? -1 : (index.get(route.layer) ?? -1);
    if (e.key === "[" || e.key === "]") {
      const j = Math.min(layers.length - 1, Math.max(0, L + (e.key === "]" ? 1 : -1)));
      go({ layer: layers[j].name, unit: null, sort: route.sort, show: route.show, page: 0 });
      e.preventDefault();
      return;
    }
    if (L < 0) return;
    const entry = layers[L];
    if (route.unit != null) {
      const pos = order.indexOf(route.unit);
      if (pos < 0) return;
      if (e.key === "ArrowRight" || e.key === "ArrowLeft") {
        const step = e.key === "ArrowRight" ? 1 : -1;
        go({ ...route, unit: order[(pos + step + order.length) % order.length] });
        e.preventDefault();
      } else if (e.key === "Escape" || e.key === "Backspace") {
        focusUnit = String(route.unit);
        go({ ...route, unit: null, page: pageOf(pos) });
        e.preventDefault();
      }
      return;
    }
    const pages = pageCount(entry.channels);
    if (e.key === "PageDown" || e.key === "PageUp") {
      const page = Math.min(pages - 1, Math.max(0, route.page + (e.key === "PageDown" ? 1 : -1)));
      go({ ...route, page });
      e.preventDefault();
    } else if (e.key.startsWith("Arrow")) {
      moveFocus(target, e.key);
      e.preventDefault();
    }
  }

  window.addEventListener("hashchange", render);
  document.addEventListener("keydown", onKey);
  render();
}

function boot() {
  const root = document.getElementById("zf-site");
  if (!root) return;
  const manifest = /** @type {any} */ (window).zfSiteManifest;
  if (manifest?.format !== "zfwidgets.site/1" || !Array.isArray(manifest.layers)) {
    root.replaceChildren(
      h(
        "p",
        "zf-site-status",
        "manifest.js is missing or not an atlas site manifest (zfwidgets.site/1).",
      ),
    );
    return;
  }
  start(root, manifest);
}

if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", boot);
else boot();
