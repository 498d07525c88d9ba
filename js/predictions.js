// Predictions front end: the top-k classes of the current image as bars. Python sends the k
// probabilities and class indices as one binary payload pair and the k names as text.

import { decode } from "./lib/codec.js";
import { fmtPercent, h, listen } from "./lib/dom.js";
import { noBuffersFallback } from "./lib/transport.js";

/**
 * The bars to draw: name, probability and bar width (percent of the track), best first.
 * @param {any} top  {probability: payload float32 (k,), index: payload int32 (k,)}
 * @param {string[]} labels  the k names
 * @returns {{name: string, index: number, probability: number, width: number}[]}
 */
export function bars(top, labels) {
  if (!top?.probability) return [];
  const p = decode(top.probability).data;
  const idx = decode(top.index).data;
  return Array.from(p, (v, i) => ({
    name: labels[i] ?? `class ${idx[i]}`,
    index: idx[i],
    probability: v,
    width: Math.min(100, Math.max(0, v * 100)),
  }));
}

export default noBuffersFallback({
  /** @param {{model: any, el: HTMLElement}} ctx */
  render({ model, el }) {
    const root = h("div", "zf-widget zf-predictions");
    const list = h("div", "zf-pred-list");
    const caption = h("div", "zf-caption");
    const error = h("div", "zf-error");
    root.append(list, caption, error);
    el.replaceChildren(root);

    function draw() {
      const rows = bars(model.get("top"), model.get("labels") ?? []).flatMap((b, i) => {
        const name = h("span", `zf-pred-name zf-pred-row-${i}`, b.name);
        name.title = b.name;
        const track = h("div", `zf-pred-track zf-pred-row-${i}`);
        const fill = h("div", "zf-pred-bar");
        fill.style.width = `${b.width}%`;
        fill.dataset.index = String(b.index);
        track.append(fill);
        return [name, track, h("span", "zf-pred-value", fmtPercent(b.probability))];
      });
      list.replaceChildren(...rows);
    }

    function showError() {
      const text = model.get("error") ?? "";
      error.textContent = text;
      error.hidden = !text;
    }

    const unlisten = listen(model, {
      "change:error": showError,
      "change:top": draw,
      "change:labels": draw,
      "change:caption": () => {
        caption.textContent = model.get("caption");
      },
    });
    draw();
    showError();
    caption.textContent = model.get("caption");

    return () => {
      unlisten();
      root.remove();
    };
  },
});
