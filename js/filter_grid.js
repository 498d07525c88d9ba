// FilterGrid front end: the filters of a convolution as tiles, dominating and dead ones
// outlined, a legend, and a slider over checkpoints when there are several.

import { createAtlasView } from "./lib/atlas_view.js";
import { decode } from "./lib/codec.js";
import { fmt, h, listen, onResize } from "./lib/dom.js";
import { noBuffersFallback } from "./lib/transport.js";

const DOMINATING = 1;
const DEAD = 2;

export default noBuffersFallback({
  /** @param {{model: any, el: HTMLElement}} ctx */
  render({ model, el }) {
    const root = h("div", "zf-widget zf-filter-grid");
    const slider = /** @type {HTMLInputElement} */ (h("input", "zf-slider"));
    slider.type = "range";
    slider.min = "0";
    slider.step = "1";
    const sliderLabel = h("span", "zf-slider-label");
    const sliderRow = h("div", "zf-toolbar zf-checkpoints");
    sliderRow.append(h("span", "zf-field-name", "checkpoint"), slider, sliderLabel);
    const legend = h("div", "zf-legend");
    const caption = h("div", "zf-caption");

    /** @type {Float32Array | null} */
    let rms = null;
    /** @type {Uint8Array | null} */
    let flags = null;

    const view = createAtlasView({
      maxWidth: () =>
        Math.min(model.get("max_width"), root.clientWidth > 0 ? root.clientWidth : Infinity),
      hoverText: (i) => {
        if (!rms || !flags) return null;
        const marks = [];
        if (flags[i] & DOMINATING) marks.push("dominating");
        if (flags[i] & DEAD) marks.push("dead");
        return `filter ${i} · RMS ${fmt(rms[i])}${marks.length ? ` · ${marks.join(", ")}` : ""}`;
      },
      onClick: (i) => {
        model.set("channel", model.get("channel") === i ? null : i);
        model.save_changes();
      },
    });
    root.append(sliderRow, view.stage, legend, caption);
    el.replaceChildren(root);

    /**
     * @param {string} className
     * @param {string} text
     */
    function legendItem(className, text) {
      const item = h("span", "zf-legend-item");
      item.append(h("span", `zf-swatch ${className}`), h("span", "", text));
      return item;
    }

    function drawFrame() {
      const frame = model.get("frame");
      if (!frame?.atlas) return;
      rms = /** @type {Float32Array} */ (decode(frame.rms).data);
      flags = /** @type {Uint8Array} */ (decode(frame.flags).data);
      view.draw(frame);
      /** @type {{index: number, className: string}[]} */
      const marks = [];
      let nDom = 0;
      let nDead = 0;
      flags.forEach((f, index) => {
        if (f & DOMINATING) {
          nDom += 1;
          marks.push({ index, className: "zf-mark-dominating" });
        }
        if (f & DEAD) {
          nDead += 1;
          marks.push({ index, className: "zf-mark-dead" });
        }
      });
      view.mark(marks);
      view.select(model.get("channel"));
      const items = [
        legendItem("zf-mark-dominating", `dominating, RMS > ${fmt(frame.radius)}: ${nDom}`),
      ];
      if (frame.dead_known) {
        items.push(legendItem("zf-mark-dead", `dead on the images: ${nDead}`));
      }
      legend.replaceChildren(...items);
    }

    function syncSlider() {
      const labels = model.get("checkpoint_labels") ?? [];
      sliderRow.hidden = labels.length < 2;
      slider.max = String(Math.max(0, labels.length - 1));
      slider.value = String(model.get("checkpoint"));
      sliderLabel.textContent = labels[model.get("checkpoint")] ?? "";
    }

    function onSlide() {
      const k = Number(slider.value);
      const labels = model.get("checkpoint_labels") ?? [];
      sliderLabel.textContent = labels[k] ?? "";
      if (k !== model.get("checkpoint")) {
        model.set("checkpoint", k);
        model.save_changes();
      }
    }
    slider.addEventListener("input", onSlide);

    const unlisten = listen(model, {
      "change:frame": drawFrame,
      "change:channel": () => view.select(model.get("channel")),
      "change:caption": () => {
        caption.textContent = model.get("caption");
      },
      "change:checkpoint": syncSlider,
      "change:checkpoint_labels": syncSlider,
      "change:max_width": () => view.fit(),
    });
    const unobserve = onResize(root, () => view.fit());

    syncSlider();
    drawFrame();
    caption.textContent = model.get("caption");

    return () => {
      unlisten();
      unobserve();
      slider.removeEventListener("input", onSlide);
      view.destroy();
      root.remove();
    };
  },
});
