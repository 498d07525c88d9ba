// LayerGrid front end: every feature map of a layer on one canvas.
// Python sends `frame` (atlas + per-map maxima, one binary transfer); this module draws it,
// shows channel and max on hover, and sets `channel` on click / `layer` from the menu.

import { createAtlasView, drawRGBA } from "./lib/atlas_view.js";
import { decode } from "./lib/codec.js";
import { fmt, h, labelled, listen, onResize, setOptions } from "./lib/dom.js";
import { noBuffersFallback } from "./lib/transport.js";

const THUMB = 160; // CSS width of the input image

export default noBuffersFallback({
  /** @param {{model: any, el: HTMLElement}} ctx */
  render({ model, el }) {
    const root = h("div", "zf-widget zf-layer-grid");
    const layerSelect = /** @type {HTMLSelectElement} */ (h("select", "zf-select zf-layer-select"));
    const cmapSelect = /** @type {HTMLSelectElement} */ (h("select", "zf-select zf-cmap-select"));
    const scaleSelect = /** @type {HTMLSelectElement} */ (h("select", "zf-select zf-scale-select"));
    const busy = h("span", "zf-busy", "");
    const toolbar = h("div", "zf-toolbar");
    toolbar.append(
      labelled("layer", layerSelect),
      labelled("colours", cmapSelect),
      labelled("range", scaleSelect),
      busy,
    );
    const thumb = /** @type {HTMLCanvasElement} */ (h("canvas", "zf-thumb"));
    const body = h("div", "zf-body");
    const caption = h("div", "zf-caption");
    const error = h("div", "zf-error");
    error.hidden = true;

    /** @type {Float32Array | null} */
    let maxima = null;

    const view = createAtlasView({
      maxWidth: () => {
        const room = root.clientWidth > 0 ? root.clientWidth - THUMB - 16 : Infinity;
        return Math.min(model.get("max_width"), Math.max(room, 120));
      },
      hoverText: (i) => {
        const v = maxima && i < maxima.length ? maxima[i] : Number.NaN;
        return `channel ${i} · max ${fmt(v)}`;
      },
      onClick: (i) => {
        model.set("channel", model.get("channel") === i ? null : i);
        model.save_changes();
      },
    });
    body.append(thumb, view.stage);
    root.append(toolbar, body, caption, error);
    el.replaceChildren(root);

    function pending(on) {
      root.classList.toggle("zf-pending", on);
      busy.textContent = on ? "computing…" : "";
    }

    function drawFrame() {
      const frame = model.get("frame");
      if (!frame?.atlas) return;
      try {
        const m = decode(frame.maxima);
        maxima = /** @type {Float32Array} */ (m.data);
        view.draw(frame);
        view.canvas.dataset.layer = frame.layer;
        view.select(model.get("channel"));
        error.hidden = true;
      } catch (e) {
        showError(String(e));
      }
      if (frame.layer === model.get("layer")) pending(false);
    }

    function drawThumb() {
      const payload = model.get("thumbnail");
      if (!payload?.shape) return;
      drawRGBA(thumb, payload);
      thumb.style.width = `${THUMB}px`;
      thumb.style.height = "auto";
    }

    /** @param {string} text */
    function showError(text) {
      error.textContent = text;
      error.hidden = !text;
      if (text) pending(false);
    }

    function syncMenus() {
      setOptions(layerSelect, model.get("layers"), model.get("layer"));
      setOptions(cmapSelect, model.get("colormaps"), model.get("colormap"));
      setOptions(scaleSelect, ["map", "layer"], model.get("scale"), (v) =>
        v === "map" ? "per map" : "per layer",
      );
    }

    /** @param {string} name @param {HTMLSelectElement} select */
    function sender(name, select) {
      return () => {
        if (select.value === model.get(name)) return;
        pending(true);
        model.set(name, select.value);
        model.save_changes();
      };
    }
    const onLayer = sender("layer", layerSelect);
    const onCmap = sender("colormap", cmapSelect);
    const onScale = sender("scale", scaleSelect);
    layerSelect.addEventListener("change", onLayer);
    cmapSelect.addEventListener("change", onCmap);
    scaleSelect.addEventListener("change", onScale);

    const unlisten = listen(model, {
      "change:frame": drawFrame,
      "change:thumbnail": drawThumb,
      "change:channel": () => view.select(model.get("channel")),
      "change:caption": () => {
        caption.textContent = model.get("caption");
      },
      "change:error": () => showError(model.get("error")),
      "change:layers": syncMenus,
      "change:layer": () => {
        layerSelect.value = model.get("layer");
      },
      "change:colormap": () => {
        cmapSelect.value = model.get("colormap");
      },
      "change:scale": () => {
        scaleSelect.value = model.get("scale");
      },
      "change:max_width": () => view.fit(),
    });
    const unobserve = onResize(root, () => view.fit());

    syncMenus();
    drawThumb();
    drawFrame();
    caption.textContent = model.get("caption");
    showError(model.get("error"));

    return () => {
      unlisten();
      unobserve();
      layerSelect.removeEventListener("change", onLayer);
      cmapSelect.removeEventListener("change", onCmap);
      scaleSelect.removeEventListener("change", onScale);
      view.destroy();
      root.remove();
    };
  },
});
