// OcclusionMap front end: the image with one occlusion map over it as a heatmap (docs/method.md
// Sec. 3, Fig. 7). Python sends `frame` (the image as uint8 RGBA, the four maps and the square
// positions, one binary transfer per image); switching the map, the colour bar or legend, and
// the hover read-out with the square drawn at its position all happen here, with no round trip.

import { drawRGBA } from "./lib/atlas_view.js";
import { decode } from "./lib/codec.js";
import { colorbar } from "./lib/colormap.js";
import { fmtPercent, fmtValue, h, listen, onResize } from "./lib/dom.js";
import { fitScale } from "./lib/grid.js";
import {
  barPosition,
  categoricalRGBA,
  categories,
  categoryColors,
  cellAt,
  colorbarLabels,
  continuousRGBA,
  paint,
  pixelCells,
  rgb,
  squareCells,
  toImage,
  uniformCells,
} from "./lib/heatmap.js";
import { noBuffersFallback } from "./lib/transport.js";

const LEGEND_MAX = 12; // classes listed in the legend of (c); the rest are counted
const BAR_WIDTH = 200; // CSS pixels of the colour bar

/**
 * @typedef {object} Occlusion
 * @property {number} width   image width in pixels
 * @property {number} height
 * @property {boolean} hasMaps
 * @property {Int32Array} [rows]  top of the square at each row position
 * @property {Int32Array} [cols]
 * @property {number[]} [window]  (h, w)
 * @property {Record<string, ArrayLike<number>>} [maps]  activation, probability, top_class,
 *   top_probability: one value per position, row-major (R, Cc)
 * @property {import("./lib/heatmap.js").Cells} [rowCells]
 * @property {import("./lib/heatmap.js").Cells} [colCells]
 * @property {Int32Array} [rowOf]
 * @property {Int32Array} [colOf]
 * @property {any} frame
 */

const MAPS = ["activation", "probability", "top_class", "top_probability"];

/**
 * Decode a frame: the maps as typed arrays and the cells of every square position.
 * @param {any} frame
 * @returns {Occlusion | null}
 */
export function readFrame(frame) {
  if (!frame?.image || !Array.isArray(frame.size)) return null;
  const [height, width] = frame.size;
  if (!frame.probability) return { width, height, hasMaps: false, frame };
  const rows = /** @type {Int32Array} */ (decode(frame.rows).data);
  const cols = /** @type {Int32Array} */ (decode(frame.cols).data);
  /** @type {Record<string, ArrayLike<number>>} */
  const maps = {};
  for (const name of MAPS) {
    const m = decode(frame[name]);
    if (m.shape[0] !== rows.length || m.shape[1] !== cols.length) {
      throw new Error(
        `occlusion: ${name} is [${m.shape}], positions ${rows.length}x${cols.length}`,
      );
    }
    maps[name] = m.data;
  }
  const rowCells = squareCells(rows, frame.window[0], height);
  const colCells = squareCells(cols, frame.window[1], width);
  return {
    width,
    height,
    hasMaps: true,
    rows,
    cols,
    window: frame.window,
    maps,
    rowCells,
    colCells,
    rowOf: pixelCells(rowCells),
    colOf: pixelCells(colCells),
    frame,
  };
}

/**
 * The square position under image point (x, y): its indices and its rectangle in pixels.
 * @param {Occlusion} occ
 * @param {number} x
 * @param {number} y
 * @returns {{i: number, j: number, k: number, rect: {x: number, y: number, w: number, h: number}}}
 */
export function squareAt(occ, x, y) {
  const rows = /** @type {Int32Array} */ (occ.rows);
  const cols = /** @type {Int32Array} */ (occ.cols);
  const win = /** @type {number[]} */ (occ.window);
  const i = cellAt(/** @type {any} */ (occ.rowCells), y);
  const j = cellAt(/** @type {any} */ (occ.colCells), x);
  return {
    i,
    j,
    k: i * cols.length + j,
    rect: { x: cols[j], y: rows[i], w: win[1], h: win[0] },
  };
}

/**
 * Tooltip lines for square position k (text only; names are never parsed as HTML).
 * @param {Occlusion} occ
 * @param {number} k
 * @param {string[]} classes
 * @returns {string[]}
 */
export function hoverLines(occ, k, classes) {
  const m = /** @type {Record<string, ArrayLike<number>>} */ (occ.maps);
  const f = occ.frame;
  const top = m.top_class[k];
  const name = (/** @type {number} */ c) => classes[c] ?? `class ${c}`;
  const cols = /** @type {Int32Array} */ (occ.cols);
  const rows = /** @type {Int32Array} */ (occ.rows);
  const j = k % cols.length;
  const i = Math.floor(k / cols.length);
  return [
    `most probable: ${name(top)} · ${fmtPercent(m.top_probability[k])}`,
    `target ${name(f.target)}: ${fmtPercent(m.probability[k])}`,
    `activation ${fmtValue(m.activation[k])} (${f.layer} map ${f.channel})`,
    `square at x ${cols[j]}, y ${rows[i]}`,
  ];
}

/**
 * Legend entries of the top-class map: the classes that occur, most frequent first.
 * @param {ArrayLike<number>} topClass
 * @param {string[]} classes
 * @param {number} [max]
 * @returns {{entries: {index: number, name: string, share: number, color: readonly number[]}[],
 *   more: number, colors: Map<number, readonly number[]>}}
 */
export function legendEntries(topClass, classes, max = LEGEND_MAX) {
  const cats = categories(topClass);
  const colors = categoryColors(cats);
  const entries = cats.slice(0, max).map(({ index, count }) => ({
    index,
    name: classes[index] ?? `class ${index}`,
    share: count / topClass.length,
    color: /** @type {readonly number[]} */ (colors.get(index)),
  }));
  return { entries, more: Math.max(0, cats.length - max), colors };
}

export default noBuffersFallback({
  /** @param {{model: any, el: HTMLElement}} ctx */
  render({ model, el }) {
    const root = h("div", "zf-widget zf-occlusion");
    const buttons = h("div", "zf-occ-views");
    buttons.setAttribute("role", "group");
    const opacity = /** @type {HTMLInputElement} */ (h("input", "zf-slider zf-occ-opacity"));
    opacity.type = "range";
    opacity.min = "0";
    opacity.max = "1";
    opacity.step = "0.05";
    const opacityField = h("label", "zf-field");
    opacityField.append(h("span", "zf-field-name", "opacity"), opacity);
    const busy = h("span", "zf-busy", "");
    const toolbar = h("div", "zf-toolbar");
    toolbar.append(buttons, opacityField, busy);
    const progress = h("div", "zf-occ-progress");
    const progressBar = h("div", "zf-occ-progress-bar");
    progress.append(progressBar);

    const stage = h("div", "zf-stage zf-occ-stage");
    const image = /** @type {HTMLCanvasElement} */ (h("canvas", "zf-occ-image"));
    const heat = /** @type {HTMLCanvasElement} */ (h("canvas", "zf-occ-heat"));
    const square = h("div", "zf-box zf-occ-square");
    const tooltip = h("div", "zf-tooltip");
    stage.append(image, heat, square, tooltip);
    square.hidden = true;
    tooltip.hidden = true;
    heat.hidden = true;

    const scale = h("div", "zf-occ-scale");
    const scaleTitle = h("div", "zf-occ-scale-title");
    const scaleRow = h("div", "zf-occ-scale-row");
    const lo = h("span", "zf-occ-lo");
    const hi = h("span", "zf-occ-hi");
    const barWrap = h("div", "zf-occ-bar-wrap");
    const bar = /** @type {HTMLCanvasElement} */ (h("canvas", "zf-occ-colorbar"));
    const tick = h("div", "zf-occ-tick");
    barWrap.append(bar, tick);
    scaleRow.append(lo, barWrap, hi);
    const legend = h("div", "zf-legend zf-occ-legend");
    scale.append(scaleTitle, scaleRow, legend);
    scale.hidden = true;
    const caption = h("div", "zf-caption");
    const error = h("div", "zf-error");
    error.hidden = true;
    root.append(toolbar, progress, stage, scale, caption, error);
    el.replaceChildren(root);

    /** @type {Occlusion | null} */
    let occ = null;
    let px = 1; // CSS pixels per image pixel
    let draws = 0;
    /** @type {{x: number, y: number} | null} */
    let pointer = null;
    /** @type {Map<string, {values: ArrayLike<number>, rows: number, cols: number}>} */
    const overlayCache = new Map();

    const classes = () => /** @type {string[]} */ (model.get("classes") ?? []);
    const views = () => /** @type {any[]} */ (model.get("views") ?? []);
    const currentView = () => views().find((v) => v.name === model.get("view")) ?? views()[0];

    /** @param {string} name */
    function overlay(name) {
      const hit = overlayCache.get(name);
      if (hit) return hit;
      const payload = model.get("overlays")?.[name];
      if (!payload) return null;
      const d = decode(payload);
      const entry = { values: d.data, rows: d.shape[0], cols: d.shape[1] };
      overlayCache.set(name, entry);
      return entry;
    }

    function refit() {
      if (!occ) return;
      const room = root.clientWidth > 0 ? root.clientWidth : Number.POSITIVE_INFINITY;
      px = fitScale(occ.width, Math.max(1, Math.min(model.get("max_width"), room)), 8);
      const w = `${occ.width * px}px`;
      const hh = `${occ.height * px}px`;
      for (const node of [image, heat, stage]) {
        node.style.width = w;
        node.style.height = hh;
      }
      hover();
    }

    function syncButtons() {
      const current = model.get("view");
      const nodes = views().map((v) => {
        const b = /** @type {HTMLButtonElement} */ (h("button", "zf-occ-view", v.label));
        b.type = "button";
        b.dataset.view = v.name;
        b.setAttribute("aria-pressed", String(v.name === current));
        return b;
      });
      buttons.replaceChildren(...nodes);
    }

    /** @param {Event} event */
    function onButton(event) {
      const target = /** @type {HTMLElement} */ (event.target);
      const name = target.closest?.("button")?.dataset.view;
      if (!name || name === model.get("view")) return;
      model.set("view", name);
      model.save_changes();
      onView();
    }

    function onView() {
      const current = model.get("view");
      for (const b of buttons.querySelectorAll("button")) {
        b.setAttribute("aria-pressed", String(b.dataset.view === current));
      }
      paintHeat();
    }

    /**
     * @param {string} title
     * @param {string} colormap
     * @param {number} a
     * @param {number} b
     * @param {number | null} baseline
     */
    function showBar(title, colormap, a, b, baseline) {
      scaleTitle.textContent = title;
      const rgba = colorbar(colormap, 256, 1);
      bar.width = 256;
      bar.height = 1;
      bar.style.width = `${BAR_WIDTH}px`;
      bar.getContext("2d")?.putImageData(new ImageData(rgba, 256, 1), 0, 0);
      const [la, lb] = colorbarLabels(a, b);
      lo.textContent = la;
      hi.textContent = lb;
      tick.hidden = baseline === null;
      if (baseline !== null) tick.style.left = `${barPosition(baseline, a, b) * BAR_WIDTH}px`;
      scaleRow.hidden = false;
      legend.hidden = true;
    }

    function paintHeat() {
      const v = currentView();
      if (!occ?.hasMaps || !v) {
        heat.hidden = true;
        scale.hidden = true;
        square.hidden = true;
        tooltip.hidden = true;
        return;
      }
      const f = occ.frame;
      const maps = /** @type {Record<string, ArrayLike<number>>} */ (occ.maps);
      /** @type {Uint8ClampedArray} */
      let cellRGBA;
      let columns = /** @type {Int32Array} */ (occ.cols).length;
      let rowOf = /** @type {Int32Array} */ (occ.rowOf);
      let colOf = /** @type {Int32Array} */ (occ.colOf);
      if (v.kind === "map") {
        const o = overlay(v.name);
        if (!o) return;
        const c = continuousRGBA(o.values, v.colormap);
        cellRGBA = c.rgba;
        columns = o.cols;
        rowOf = pixelCells(uniformCells(o.rows, occ.height));
        colOf = pixelCells(uniformCells(o.cols, occ.width));
        showBar(v.label, v.colormap, c.lo, c.hi, null);
      } else if (v.name === "top_class") {
        const names = classes();
        const { entries, more, colors } = legendEntries(maps.top_class, names);
        cellRGBA = categoricalRGBA(maps.top_class, colors);
        scaleTitle.textContent = "most probable class with the square at each position";
        const items = entries.map((e) => {
          const item = h("span", "zf-legend-item");
          const swatch = h("span", "zf-swatch");
          swatch.style.background = rgb(e.color);
          const unoccluded = e.index === f.baseline.top_class ? ", unoccluded" : "";
          item.append(swatch, h("span", "zf-occ-class", e.name));
          item.append(h("span", "zf-occ-share", `${Math.round(e.share * 100)}%${unoccluded}`));
          return item;
        });
        if (more) items.push(h("span", "zf-legend-item", `+${more} more`));
        legend.replaceChildren(...items);
        legend.hidden = false;
        scaleRow.hidden = true;
      } else {
        const c = continuousRGBA(maps[v.name], v.colormap);
        cellRGBA = c.rgba;
        const base = f.baseline[v.name];
        const title =
          v.name === "activation"
            ? `total activation of ${f.layer}, map ${f.channel} · unoccluded ${fmtValue(base)}`
            : `probability of ${classes()[f.target] ?? `class ${f.target}`} · unoccluded ${fmtValue(base)}`;
        showBar(title, v.colormap, c.lo, c.hi, base);
      }
      const pixels = paint(cellRGBA, columns, rowOf, colOf);
      if (heat.width !== occ.width) heat.width = occ.width;
      if (heat.height !== occ.height) heat.height = occ.height;
      heat.getContext("2d")?.putImageData(new ImageData(pixels, occ.width, occ.height), 0, 0);
      draws += 1;
      heat.dataset.view = v.name;
      heat.dataset.draws = String(draws);
      heat.hidden = false;
      scale.hidden = false;
      hover();
    }

    function drawFrame() {
      overlayCache.clear();
      try {
        occ = readFrame(model.get("frame"));
        if (!occ) return;
        drawRGBA(image, occ.frame.image);
        image.dataset.width = String(occ.width);
        refit();
        paintHeat();
      } catch (e) {
        showError(String(e));
      }
    }

    /** The square (or map cell) and read-out under the last pointer position. */
    function hover() {
      if (!pointer || !occ?.hasMaps || heat.hidden) {
        square.hidden = true;
        tooltip.hidden = true;
        return;
      }
      const v = currentView();
      /** @type {{x: number, y: number, w: number, h: number}} */
      let rect;
      /** @type {string[]} */
      let lines;
      if (v?.kind === "map") {
        const o = overlay(v.name);
        if (!o) return;
        const rc = uniformCells(o.rows, occ.height);
        const cc = uniformCells(o.cols, occ.width);
        const i = cellAt(rc, pointer.y);
        const j = cellAt(cc, pointer.x);
        rect = {
          x: cc.edges[j],
          y: rc.edges[i],
          w: cc.edges[j + 1] - cc.edges[j],
          h: rc.edges[i + 1] - rc.edges[i],
        };
        lines = [`${v.label}: ${fmtValue(o.values[i * o.cols + j])}`];
      } else {
        const s = squareAt(occ, pointer.x, pointer.y);
        rect = s.rect;
        lines = hoverLines(occ, s.k, classes());
      }
      square.hidden = false;
      square.style.left = `${rect.x * px}px`;
      square.style.top = `${rect.y * px}px`;
      square.style.width = `${rect.w * px}px`;
      square.style.height = `${rect.h * px}px`;
      tooltip.replaceChildren(
        ...lines.map((text, n) => h("div", n === 0 ? "zf-tooltip-head" : "", text)),
      );
      tooltip.hidden = false;
      const sx = pointer.x * px;
      const sy = pointer.y * px;
      const flip = sx > (occ.width * px) / 2;
      tooltip.style.left = flip ? "" : `${sx + 14}px`;
      tooltip.style.right = flip ? `${occ.width * px - sx + 14}px` : "";
      tooltip.style.top = `${sy + 16}px`;
    }

    /** @param {PointerEvent | MouseEvent} event */
    function onMove(event) {
      if (!occ) return;
      const rect = image.getBoundingClientRect();
      pointer = toImage(rect, event.clientX, event.clientY, occ.width, occ.height);
      if (pointer.x < 0 || pointer.y < 0 || pointer.x >= occ.width || pointer.y >= occ.height) {
        pointer = null;
      }
      hover();
    }

    function onLeave() {
      pointer = null;
      hover();
    }

    function onOpacity() {
      const v = Number(opacity.value);
      heat.style.opacity = String(v);
      if (v !== model.get("opacity")) {
        model.set("opacity", v);
        model.save_changes();
      }
    }

    function syncOpacity() {
      opacity.value = String(model.get("opacity"));
      heat.style.opacity = String(model.get("opacity"));
    }

    function syncBusy() {
      const on = Boolean(model.get("busy"));
      const p = Number(model.get("progress") ?? 0);
      root.classList.toggle("zf-pending", on);
      busy.textContent = on ? `computing… ${Math.round(p * 100)}%` : "";
      progress.hidden = !on;
      progressBar.style.width = `${Math.round(p * 100)}%`;
    }

    /** @param {string} text */
    function showError(text) {
      error.textContent = text;
      error.hidden = !text;
    }

    buttons.addEventListener("click", onButton);
    opacity.addEventListener("input", onOpacity);
    stage.addEventListener("pointermove", onMove);
    stage.addEventListener("pointerleave", onLeave);

    const unlisten = listen(model, {
      "change:frame": drawFrame,
      "change:views": () => {
        syncButtons();
        paintHeat();
      },
      "change:view": onView,
      "change:overlays": () => {
        overlayCache.clear();
        paintHeat();
      },
      "change:classes": paintHeat,
      "change:opacity": syncOpacity,
      "change:busy": syncBusy,
      "change:progress": syncBusy,
      "change:caption": () => {
        caption.textContent = model.get("caption");
      },
      "change:error": () => showError(model.get("error")),
      "change:max_width": refit,
    });
    const unobserve = onResize(root, refit);

    syncButtons();
    syncOpacity();
    syncBusy();
    caption.textContent = model.get("caption");
    showError(model.get("error"));
    drawFrame();

    return () => {
      unlisten();
      unobserve();
      buttons.removeEventListener("click", onButton);
      opacity.removeEventListener("input", onOpacity);
      stage.removeEventListener("pointermove", onMove);
      stage.removeEventListener("pointerleave", onLeave);
      root.remove();
    };
  },
});
