// Predictions front end: the top-k classes of the current image as bars. Python sends the k
// probabilities and class indices as one binary payload pair and the k names as text.

import { h, listen } from "./lib/atlas_view.js";
import { decode } from "./lib/codec.js";
import { fmtPercent } from "./lib/heatmap.js";

const CSS = `
.zf-widget.zf-predictions .zf-pred-list {
  display: grid; grid-template-columns: minmax(6em, max-content) 160px 4.5em;
  align-items: center; gap: 3px 8px; font-variant-numeric: tabular-nums;
}
.zf-widget.zf-predictions .zf-pred-name {
  overflow: hidden; text-overflow: ellipsis; white-space: nowrap; max-width: 22em;
}
.zf-widget.zf-predictions .zf-pred-track {
  height: 12px; background: #f1f3f5; border-radius: 2px; overflow: hidden;
}
.zf-widget.zf-predictions .zf-pred-bar { height: 100%; min-width: 1px; background: var(--zf-select); }
.zf-widget.zf-predictions .zf-pred-row-0 .zf-pred-bar { background: var(--zf-accent); }
.zf-widget.zf-predictions .zf-pred-value { text-align: right; color: var(--zf-muted); }
`;

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

export default {
  /** @param {{model: any, el: HTMLElement}} ctx */
  render({ model, el }) {
    const root = h("div", "zf-widget zf-predictions");
    const list = h("div", "zf-pred-list");
    const caption = h("div", "zf-caption");
    root.append(h("style", "", CSS), list, caption);
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

    const unlisten = listen(model, {
      "change:top": draw,
      "change:labels": draw,
      "change:caption": () => {
        caption.textContent = model.get("caption");
      },
    });
    draw();
    caption.textContent = model.get("caption");

    return () => {
      unlisten();
      root.remove();
    };
  },
};
