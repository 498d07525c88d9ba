// TopNine front end (docs/method.md Sec. 3.1, Fig. 2): the k strongest activations of one feature
// map, the deconvnet projections (left block) beside the image patches (right block).
// Python sends `frame`: one uint8 atlas of both blocks + the hits' values and dataset
// indices (one binary transfer) + class names and the unit's top classes with their counts
// (rendered as text). This module draws it,
// labels each patch, shows a tooltip on hover, sets `selected` on click and `channel` /
// `layer` from its controls, and shows `status` / `progress` while the kernel mines.

import { drawRGBA } from "./lib/atlas_view.js";
import { classList } from "./lib/classes.js";
import { decode } from "./lib/codec.js";
import { fmt, h, listen, onResize, setOptions } from "./lib/dom.js";
import { toAtlas } from "./lib/grid.js";
import { hitAt, hitRect, hitText, pairLayout, pairScale } from "./lib/top9_layout.js";
import { noBuffersFallback } from "./lib/transport.js";

/** Labels are drawn under patches at least this wide (CSS pixels). */
const MIN_LABEL_WIDTH = 44;

/**
 * @param {string} text
 * @param {...HTMLElement} controls
 * @returns {HTMLElement}
 */
function field(text, ...controls) {
  const label = h("span", "zf-field");
  label.append(h("span", "zf-field-name", text), ...controls);
  return label;
}

/**
 * Whether a frame shows what the model asks for now.
 * @param {any} model
 * @param {any} frame
 * @returns {boolean}
 */
export function isCurrent(model, frame) {
  return (
    !!frame?.atlas &&
    frame.layer === model.get("layer") &&
    frame.channel === model.get("channel") &&
    (frame.checkpoint ?? null) === (model.get("checkpoint") ?? null)
  );
}

export default noBuffersFallback({
  /** @param {{model: any, el: HTMLElement}} ctx */
  render({ model, el }) {
    const root = h("div", "zf-widget zf-top-nine");

    const layerSelect = /** @type {HTMLSelectElement} */ (h("select", "zf-select zf-layer-select"));
    const layerField = field("layer", layerSelect);
    const prev = /** @type {HTMLButtonElement} */ (h("button", "zf-step zf-prev", "‹"));
    const next = /** @type {HTMLButtonElement} */ (h("button", "zf-step zf-next", "›"));
    prev.type = "button";
    next.type = "button";
    prev.title = "previous feature map";
    next.title = "next feature map";
    const channelInput = /** @type {HTMLInputElement} */ (h("input", "zf-channel-input"));
    channelInput.type = "number";
    channelInput.min = "0";
    channelInput.step = "1";
    const channelCount = h("span", "zf-field-name zf-channel-count");
    const checkpointText = h("span", "zf-checkpoint-label");
    const progress = h("span", "zf-progress");
    const progressBar = h("span", "zf-progress-bar");
    progress.append(progressBar);
    const busy = h("span", "zf-busy");
    const toolbar = h("div", "zf-toolbar");
    toolbar.append(
      layerField,
      field("feature map", prev, channelInput, next, channelCount),
      checkpointText,
      progress,
      busy,
    );

    const heads = h("div", "zf-heads");
    const headRec = h("span", "zf-head", "deconvnet projections");
    const headPatch = h("span", "zf-head", "image patches");
    heads.append(headRec, headPatch);
    const stage = h("div", "zf-stage");
    const canvas = /** @type {HTMLCanvasElement} */ (h("canvas", "zf-atlas"));
    const labels = h("div", "zf-labels");
    const hoverBox = h("div", "zf-box zf-hover-box");
    const twinBox = h("div", "zf-box zf-twin-box");
    const selectBoxes = [h("div", "zf-box zf-select-box"), h("div", "zf-box zf-select-box")];
    const tooltip = h("div", "zf-tooltip");
    stage.append(canvas, labels, hoverBox, twinBox, ...selectBoxes, tooltip);
    const placeholder = h("div", "zf-placeholder");
    const caption = h("div", "zf-caption");
    const topClasses = h("div", "zf-top-classes");
    const error = h("div", "zf-error");
    for (const node of [hoverBox, twinBox, ...selectBoxes, tooltip, topClasses, error])
      node.hidden = true;
    root.append(toolbar, heads, stage, placeholder, topClasses, caption, error);
    el.replaceChildren(root);

    /** @type {import("./lib/top9_layout.js").PairLayout | null} */
    let pl = null;
    let scale = 1;
    /** @type {ArrayLike<number>} */
    let values = [];
    /** @type {ArrayLike<number>} */
    let indices = [];
    /** @type {string[]} */
    let names = [];
    let draws = 0;
    /** @type {string | null} */
    let hovered = null;

    /** @param {HTMLElement} box @param {number} block @param {number} rank */
    function place(box, block, rank) {
      if (!pl || rank < 0 || rank >= pl.block.count) {
        box.hidden = true;
        return;
      }
      const r = hitRect(pl, block, rank);
      box.hidden = false;
      box.style.left = `${r.x * scale}px`;
      box.style.top = `${r.y * scale}px`;
      box.style.width = `${r.w * scale}px`;
      box.style.height = `${r.h * scale}px`;
    }

    /** @param {number} rank */
    function textOf(rank) {
      return hitText({
        rank,
        value: values[rank],
        index: indices[rank],
        name: names[rank] ?? "",
        fmt,
      });
    }

    function placeLabels() {
      if (!pl) {
        labels.replaceChildren();
        return;
      }
      const layout = pl;
      const wide = layout.block.tileW * scale >= MIN_LABEL_WIDTH;
      const nodes = [];
      for (let rank = 0; wide && rank < layout.block.count; rank++) {
        const r = hitRect(layout, 1, rank);
        const node = h("div", "zf-hit-label", textOf(rank).short);
        node.style.left = `${r.x * scale}px`;
        node.style.top = `${(r.y + r.h) * scale}px`;
        node.style.maxWidth = `${r.w * scale}px`;
        nodes.push(node);
      }
      labels.replaceChildren(...nodes);
    }

    function placeSelection() {
      const sel = model.get("selected");
      let rank = -1;
      for (let i = 0; i < indices.length; i++) if (indices[i] === sel) rank = i;
      place(selectBoxes[0], 0, rank);
      place(selectBoxes[1], 1, rank);
    }

    function available() {
      const room = root.clientWidth > 0 ? root.clientWidth : Number.POSITIVE_INFINITY;
      return Math.max(120, Math.min(model.get("max_width"), room));
    }

    function refit() {
      if (!pl) return;
      scale = pairScale(pl.width, available());
      const w = pl.width * scale;
      const hgt = pl.height * scale;
      canvas.style.width = `${w}px`;
      canvas.style.height = `${hgt}px`;
      stage.style.width = `${w}px`;
      stage.style.height = `${hgt}px`;
      heads.style.width = `${w}px`;
      const bw = pl.block.width * scale;
      headRec.style.left = "0px";
      headRec.style.maxWidth = `${bw}px`;
      headPatch.style.left = `${bw + pl.gap * scale}px`;
      headPatch.style.maxWidth = `${bw}px`;
      placeLabels();
      placeSelection();
      hoverBox.hidden = true;
      twinBox.hidden = true;
      tooltip.hidden = true;
      hovered = null;
    }

    function syncStatus() {
      const status = model.get("status");
      const frame = model.get("frame");
      const current = isCurrent(model, frame);
      const mining = status === "mining";
      const pct = Math.round(100 * (model.get("progress") ?? 0));
      progress.hidden = !mining;
      progressBar.style.width = `${pct}%`;
      let text = "";
      if (mining) text = `mining the top ${model.get("k")}… ${pct}%`;
      else if (status === "computing" || (!current && status !== "error")) text = "computing…";
      busy.textContent = text;
      root.classList.toggle("zf-pending", !!frame?.atlas && (!current || mining));
      root.dataset.status = status;
      const empty = !frame?.atlas;
      stage.hidden = empty;
      heads.hidden = empty;
      placeholder.hidden = !empty;
      placeholder.textContent =
        status === "error" ? "" : mining ? `mining the dataset… ${pct}%` : "computing…";
    }

    function syncControls() {
      const layers = model.get("layers") ?? [];
      setOptions(layerSelect, layers, model.get("layer"));
      layerField.hidden = layers.length < 2;
      const n = model.get("channels");
      const c = model.get("channel");
      channelInput.max = String(Math.max(0, n - 1));
      if (document.activeElement !== channelInput) channelInput.value = String(c);
      channelCount.textContent = `/ ${n}`;
      prev.disabled = c <= 0;
      next.disabled = c >= n - 1;
      const cp = model.get("checkpoint");
      const cpLabels = model.get("checkpoint_labels") ?? [];
      checkpointText.hidden = cp === null || cp === undefined;
      checkpointText.textContent = cp === null || cp === undefined ? "" : (cpLabels[cp] ?? "");
    }

    function drawFrame() {
      const frame = model.get("frame");
      if (!frame?.atlas) {
        syncStatus();
        return;
      }
      try {
        const layout = pairLayout(frame.grid);
        const { width, height } = drawRGBA(canvas, frame.atlas);
        if (width !== layout.width || height !== layout.height) {
          throw new Error(
            `atlas is ${width}x${height}, its grid says ${layout.width}x${layout.height}`,
          );
        }
        pl = layout;
        values = decode(frame.values).data;
        indices = decode(frame.indices).data;
        names = Array.isArray(frame.classes) ? frame.classes.map(String) : [];
        showClasses(frame);
        draws += 1;
        canvas.dataset.draws = String(draws);
        canvas.dataset.layer = frame.layer;
        canvas.dataset.channel = String(frame.channel);
        canvas.dataset.checkpoint = String(frame.checkpoint ?? "");
        canvas.dataset.blockWidth = String(layout.block.width);
        refit();
      } catch (e) {
        showError(String(e));
      }
      syncStatus();
    }

    /** The classes the unit's hits belong to, with counts (none: hidden). @param {any} frame */
    function showClasses(frame) {
      const pairs = Array.isArray(frame.top_classes)
        ? frame.top_classes
            .filter((p) => Array.isArray(p) && p.length === 2)
            .map((p) => /** @type {[string, number]} */ ([String(p[0]), Number(p[1])]))
        : [];
      topClasses.hidden = pairs.length === 0;
      topClasses.replaceChildren(...(pairs.length ? [classList(pairs, frame.counted ?? 0)] : []));
    }

    /** @param {string} text */
    function showError(text) {
      error.textContent = text;
      error.hidden = !text;
    }

    /** @param {PointerEvent | MouseEvent} event */
    function hitOf(event) {
      if (!pl) return null;
      const rect = canvas.getBoundingClientRect();
      const p = toAtlas(rect, event.clientX, event.clientY, canvas.width, canvas.height);
      return hitAt(pl, p.x, p.y);
    }

    /** @param {PointerEvent | MouseEvent} event */
    function onMove(event) {
      const hit = hitOf(event);
      const key = hit ? `${hit.block}:${hit.rank}` : null;
      if (key !== hovered) {
        hovered = key;
        if (hit) {
          place(hoverBox, hit.block, hit.rank);
          place(twinBox, 1 - hit.block, hit.rank);
          tooltip.textContent = textOf(hit.rank).long;
          tooltip.hidden = false;
        } else {
          hoverBox.hidden = true;
          twinBox.hidden = true;
          tooltip.hidden = true;
        }
      }
      if (!tooltip.hidden) {
        const rect = stage.getBoundingClientRect();
        const x = event.clientX - rect.left;
        const flip = x > rect.width / 2;
        tooltip.style.left = flip ? "" : `${x + 12}px`;
        tooltip.style.right = flip ? `${rect.width - x + 12}px` : "";
        tooltip.style.top = `${event.clientY - rect.top + 14}px`;
      }
    }

    function onLeave() {
      hovered = null;
      hoverBox.hidden = true;
      twinBox.hidden = true;
      tooltip.hidden = true;
    }

    /** @param {MouseEvent} event */
    function onClick(event) {
      const hit = hitOf(event);
      if (!hit || hit.rank >= indices.length) return;
      model.set("selected", indices[hit.rank]);
      model.save_changes();
      placeSelection();
    }

    /** @param {number} c */
    function requestChannel(c) {
      const n = model.get("channels");
      const target = Math.max(0, Math.min(n - 1, Math.trunc(c)));
      if (!Number.isFinite(target) || target === model.get("channel")) {
        channelInput.value = String(model.get("channel"));
        return;
      }
      model.set("channel", target);
      model.save_changes();
      syncControls();
      syncStatus();
    }

    const onPrev = () => requestChannel(model.get("channel") - 1);
    const onNext = () => requestChannel(model.get("channel") + 1);
    const onInput = () => requestChannel(Number(channelInput.value));
    const onLayer = () => {
      if (layerSelect.value === model.get("layer")) return;
      model.set("layer", layerSelect.value);
      model.save_changes();
      syncStatus();
    };

    canvas.addEventListener("pointermove", onMove);
    canvas.addEventListener("pointerleave", onLeave);
    canvas.addEventListener("click", onClick);
    prev.addEventListener("click", onPrev);
    next.addEventListener("click", onNext);
    channelInput.addEventListener("change", onInput);
    layerSelect.addEventListener("change", onLayer);

    const unlisten = listen(model, {
      "change:frame": drawFrame,
      "change:status": syncStatus,
      "change:progress": syncStatus,
      "change:layers": syncControls,
      "change:layer": () => {
        syncControls();
        syncStatus();
      },
      "change:channel": () => {
        syncControls();
        syncStatus();
      },
      "change:channels": syncControls,
      "change:checkpoint": () => {
        syncControls();
        syncStatus();
      },
      "change:checkpoint_labels": syncControls,
      "change:selected": placeSelection,
      "change:caption": () => {
        caption.textContent = model.get("caption");
      },
      "change:error": () => showError(model.get("error")),
      "change:max_width": refit,
    });
    const unobserve = onResize(root, refit);

    syncControls();
    drawFrame();
    caption.textContent = model.get("caption");
    showError(model.get("error"));

    return () => {
      unlisten();
      unobserve();
      canvas.removeEventListener("pointermove", onMove);
      canvas.removeEventListener("pointerleave", onLeave);
      canvas.removeEventListener("click", onClick);
      prev.removeEventListener("click", onPrev);
      next.removeEventListener("click", onNext);
      channelInput.removeEventListener("change", onInput);
      layerSelect.removeEventListener("change", onLayer);
      root.remove();
    };
  },
});
