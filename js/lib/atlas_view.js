// An atlas drawn on a canvas, scaled to fit, with hover / selection / mark overlays.
// Shared by every grid widget; knows nothing about what the tiles mean.

import { decodeRGBA } from "./codec.js";
import { h } from "./dom.js";
import { fitScale, fromPython, tileAt, tileRect, toAtlas } from "./grid.js";

/**
 * Draw an RGBA payload on a canvas (resizing it only when the size changes).
 * @param {HTMLCanvasElement} canvas
 * @param {import("./codec.js").Payload} payload  uint8 (H, W, 4)
 * @returns {{width: number, height: number}}
 */
export function drawRGBA(canvas, payload) {
  const { pixels, width, height } = decodeRGBA(payload);
  if (canvas.width !== width) canvas.width = width;
  if (canvas.height !== height) canvas.height = height;
  const ctx = canvas.getContext("2d");
  if (ctx && typeof ImageData !== "undefined") {
    ctx.putImageData(new ImageData(pixels, width, height), 0, 0);
  }
  return { width, height };
}

/**
 * @typedef {object} AtlasViewOptions
 * @property {() => number} maxWidth   CSS pixels the atlas may take
 * @property {(i: number) => string | null} [hoverText]  tooltip of tile i (-1: none)
 * @property {(i: number) => void} [onClick]  a tile was clicked
 */

/**
 * @typedef {object} AtlasView
 * @property {HTMLElement} stage
 * @property {HTMLCanvasElement} canvas
 * @property {(frame: {atlas: any, grid: any}) => void} draw
 * @property {(i: number | null | undefined) => void} select
 * @property {(marks: {index: number, className: string}[]) => void} mark
 * @property {() => void} fit
 * @property {() => import("./grid.js").Layout | null} layout
 * @property {() => void} destroy
 */

/**
 * @param {AtlasViewOptions} options
 * @returns {AtlasView}
 */
export function createAtlasView({ maxWidth, hoverText, onClick }) {
  const stage = h("div", "zf-stage");
  const canvas = /** @type {HTMLCanvasElement} */ (h("canvas", "zf-atlas"));
  const hoverBox = h("div", "zf-box zf-hover-box");
  const selectBox = h("div", "zf-box zf-select-box");
  const marks = h("div", "zf-marks");
  const tooltip = h("div", "zf-tooltip");
  stage.append(canvas, marks, hoverBox, selectBox, tooltip);
  hoverBox.hidden = true;
  selectBox.hidden = true;
  tooltip.hidden = true;

  /** @type {import("./grid.js").Layout | null} */
  let grid = null;
  let scale = 1;
  /** @type {number | null} */
  let selected = null;
  /** @type {{index: number, className: string}[]} */
  let markList = [];
  let hovered = -1;
  let draws = 0;

  /** @param {HTMLElement} box @param {number} i */
  function place(box, i) {
    if (!grid || i < 0 || i >= grid.count) {
      box.hidden = true;
      return;
    }
    const r = tileRect(grid, i);
    box.hidden = false;
    box.style.left = `${r.x * scale}px`;
    box.style.top = `${r.y * scale}px`;
    box.style.width = `${r.w * scale}px`;
    box.style.height = `${r.h * scale}px`;
  }

  function placeMarks() {
    const nodes = markList.map(({ index, className }) => {
      const node = h("div", `zf-mark ${className}`);
      place(node, index);
      return node;
    });
    marks.replaceChildren(...nodes);
  }

  function refit() {
    if (!grid) return;
    scale = fitScale(grid.width, Math.max(1, maxWidth()));
    canvas.style.width = `${grid.width * scale}px`;
    canvas.style.height = `${grid.height * scale}px`;
    stage.style.width = `${grid.width * scale}px`;
    stage.style.height = `${grid.height * scale}px`;
    place(selectBox, selected ?? -1);
    place(hoverBox, hovered);
    placeMarks();
  }

  /** @param {{atlas: any, grid: any}} frame */
  function draw(frame) {
    const g = fromPython(frame.grid);
    const { width, height } = drawRGBA(canvas, frame.atlas);
    if (width !== g.width || height !== g.height) {
      throw new Error(`atlas is ${width}x${height}, its grid says ${g.width}x${g.height}`);
    }
    grid = g;
    draws += 1;
    canvas.dataset.count = String(g.count);
    canvas.dataset.columns = String(g.columns);
    canvas.dataset.tileH = String(g.tileH);
    canvas.dataset.tileW = String(g.tileW);
    canvas.dataset.pad = String(g.pad);
    canvas.dataset.draws = String(draws);
    hovered = -1;
    hoverBox.hidden = true;
    tooltip.hidden = true;
    refit();
  }

  /** @param {PointerEvent | MouseEvent} event */
  function indexAt(event) {
    if (!grid) return -1;
    const rect = canvas.getBoundingClientRect();
    const p = toAtlas(rect, event.clientX, event.clientY, canvas.width, canvas.height);
    return tileAt(grid, p.x, p.y);
  }

  /** @param {PointerEvent | MouseEvent} event */
  function onMove(event) {
    const i = indexAt(event);
    if (i !== hovered) {
      hovered = i;
      place(hoverBox, i);
      const text = i >= 0 && hoverText ? hoverText(i) : null;
      tooltip.hidden = !text;
      tooltip.textContent = text ?? "";
    }
    if (!tooltip.hidden) {
      const rect = stage.getBoundingClientRect();
      const x = event.clientX - rect.left;
      const y = event.clientY - rect.top;
      const flip = x > rect.width / 2;
      tooltip.style.left = flip ? "" : `${x + 12}px`;
      tooltip.style.right = flip ? `${rect.width - x + 12}px` : "";
      tooltip.style.top = `${y + 14}px`;
    }
  }

  function onLeave() {
    hovered = -1;
    hoverBox.hidden = true;
    tooltip.hidden = true;
  }

  /** @param {MouseEvent} event */
  function onClickEvent(event) {
    const i = indexAt(event);
    if (i >= 0 && onClick) onClick(i);
  }

  canvas.addEventListener("pointermove", onMove);
  canvas.addEventListener("pointerleave", onLeave);
  canvas.addEventListener("click", onClickEvent);

  return {
    stage,
    canvas,
    draw,
    fit: refit,
    select(i) {
      selected = i ?? null;
      place(selectBox, selected ?? -1);
    },
    mark(list) {
      markList = list;
      placeMarks();
    },
    layout: () => grid,
    destroy() {
      canvas.removeEventListener("pointermove", onMove);
      canvas.removeEventListener("pointerleave", onLeave);
      canvas.removeEventListener("click", onClickEvent);
      stage.remove();
    },
  };
}
