// EvolutionSlider front end (docs/method.md Sec. 3.2, Fig. 4): a slider over training checkpoints.
// It only sets `index`; Python swaps the weights of the widgets linked to it.

import { h, listen } from "./lib/dom.js";

/**
 * The index a step from `index` lands on, kept inside [0, count).
 * @param {number} index
 * @param {number} step
 * @param {number} count
 * @returns {number}
 */
export function stepIndex(index, step, count) {
  if (!(count > 0)) return 0;
  return Math.max(0, Math.min(count - 1, Math.trunc(index + step)));
}

export default {
  /** @param {{model: any, el: HTMLElement}} ctx */
  render({ model, el }) {
    const root = h("div", "zf-widget zf-evolution");
    const row = h("div", "zf-toolbar zf-checkpoints");
    const name = h("span", "zf-field-name");
    const prev = /** @type {HTMLButtonElement} */ (h("button", "zf-step zf-prev", "‹"));
    const next = /** @type {HTMLButtonElement} */ (h("button", "zf-step zf-next", "›"));
    prev.type = "button";
    next.type = "button";
    prev.title = "previous checkpoint";
    next.title = "next checkpoint";
    const slider = /** @type {HTMLInputElement} */ (h("input", "zf-slider"));
    slider.type = "range";
    slider.min = "0";
    slider.step = "1";
    const label = h("span", "zf-slider-label");
    const count = h("span", "zf-field-name zf-slider-count");
    row.append(name, prev, slider, next, label, count);
    root.append(row);
    el.replaceChildren(root);

    function labels() {
      return /** @type {string[]} */ (model.get("labels") ?? []);
    }

    /** @param {number} i */
    function show(i) {
      const n = labels().length;
      slider.max = String(Math.max(0, n - 1));
      slider.value = String(i);
      label.textContent = labels()[i] ?? "";
      count.textContent = `${i + 1} / ${n}`;
      prev.disabled = i <= 0;
      next.disabled = i >= n - 1;
    }

    function sync() {
      name.textContent = model.get("description");
      show(model.get("index"));
    }

    /** @param {number} i */
    function request(i) {
      show(i);
      if (i !== model.get("index")) {
        model.set("index", i);
        model.save_changes();
      }
    }

    const onSlide = () => request(stepIndex(Number(slider.value), 0, labels().length));
    const onPrev = () => request(stepIndex(model.get("index"), -1, labels().length));
    const onNext = () => request(stepIndex(model.get("index"), 1, labels().length));
    slider.addEventListener("input", onSlide);
    prev.addEventListener("click", onPrev);
    next.addEventListener("click", onNext);
    const unlisten = listen(model, {
      "change:index": sync,
      "change:labels": sync,
      "change:description": sync,
    });
    sync();

    return () => {
      unlisten();
      slider.removeEventListener("input", onSlide);
      prev.removeEventListener("click", onPrev);
      next.removeEventListener("click", onNext);
      root.remove();
    };
  },
};
