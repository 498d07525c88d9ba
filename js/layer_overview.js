// LayerOverview front end: every unit of an atlas layer as a thumbnail on one canvas, a page
// at a time. Python sends `frame` (one uint8 atlas + the page's units and values); this module
// draws it, names the unit under the pointer, sets `selected` on click and `layer`, `sort`,
// `show`, `page` from its controls.

import { createAtlasView } from "./lib/atlas_view.js";
import { fmt, h, labelled, listen, onResize, setOptions } from "./lib/dom.js";
import { noBuffersFallback } from "./lib/transport.js";

const SHOW_LABELS = {
  strongest: "strongest reconstruction",
  reconstructions: "top-k reconstructions",
  patches: "top-k patches",
};

export default noBuffersFallback({
  /** @param {{model: any, el: HTMLElement}} ctx */
  render({ model, el }) {
    const root = h("div", "zf-widget zf-layer-overview");
    const layerSelect = /** @type {HTMLSelectElement} */ (h("select", "zf-select zf-layer-select"));
    const sortSelect = /** @type {HTMLSelectElement} */ (h("select", "zf-select zf-sort-select"));
    const showSelect = /** @type {HTMLSelectElement} */ (h("select", "zf-select zf-show-select"));
    const prev = /** @type {HTMLButtonElement} */ (h("button", "zf-button zf-prev", "\u2039"));
    const next = /** @type {HTMLButtonElement} */ (h("button", "zf-button zf-next", "\u203a"));
    prev.title = "previous page";
    next.title = "next page";
    const pageText = h("span", "zf-page", "");
    const busy = h("span", "zf-busy", "");
    const toolbar = h("div", "zf-toolbar");
    const pager = h("span", "zf-pager");
    pager.append(prev, pageText, next);
    toolbar.append(
      labelled("layer", layerSelect),
      labelled("sort", sortSelect),
      labelled("show", showSelect),
      pager,
      busy,
    );
    const caption = h("div", "zf-caption");
    const note = h("div", "zf-note");
    const error = h("div", "zf-error");
    note.hidden = true;
    error.hidden = true;

    /** @type {number[]} */
    let units = [];
    /** @type {number[]} */
    let values = [];

    const view = createAtlasView({
      maxWidth: () => {
        const room = root.clientWidth > 0 ? root.clientWidth : Infinity;
        return Math.min(model.get("max_width"), Math.max(room, 120));
      },
      hoverText: (i) =>
        i < units.length ? `unit ${units[i]} \u00b7 strongest ${fmt(values[i])}` : null,
      onClick: (i) => {
        if (i >= units.length) return;
        model.set("selected", units[i]);
        model.save_changes();
      },
    });
    root.append(toolbar, view.stage, caption, note, error);
    el.replaceChildren(root);

    function pending(on) {
      root.classList.toggle("zf-pending", on);
      busy.textContent = on ? "reading\u2026" : "";
    }

    function mark() {
      const i = units.indexOf(model.get("selected"));
      view.select(i >= 0 ? i : null);
    }

    function drawFrame() {
      const frame = model.get("frame");
      if (!frame?.atlas) {
        units = [];
        values = [];
        pending(false);
        return;
      }
      try {
        units = frame.units;
        values = frame.values;
        view.draw(frame);
        view.canvas.dataset.layer = frame.layer;
        view.canvas.dataset.page = String(frame.page);
        view.canvas.dataset.units = units.join(",");
        mark();
      } catch (e) {
        showText(error, String(e));
      }
      pending(false);
    }

    /** @param {HTMLElement} node @param {string} text */
    function showText(node, text) {
      node.textContent = text;
      node.hidden = !text;
      if (text && node === error) pending(false);
    }

    function syncPager() {
      const page = model.get("page");
      const pages = model.get("pages");
      pageText.textContent = ` page ${page + 1} of ${pages} `;
      prev.disabled = page <= 0;
      next.disabled = page >= pages - 1;
    }

    function syncMenus() {
      setOptions(layerSelect, model.get("layers"), model.get("layer"));
      setOptions(sortSelect, ["index", "strength"], model.get("sort"), (v) => `by ${v}`);
      setOptions(showSelect, Object.keys(SHOW_LABELS), model.get("show"), (v) => SHOW_LABELS[v]);
      syncPager();
    }

    /** @param {string} name @param {any} value */
    function send(name, value) {
      if (value === model.get(name)) return;
      pending(true);
      model.set(name, value);
      model.save_changes();
    }
    const onLayer = () => send("layer", layerSelect.value);
    const onSort = () => send("sort", sortSelect.value);
    const onShow = () => send("show", showSelect.value);
    const onPrev = () => send("page", Math.max(0, model.get("page") - 1));
    const onNext = () => send("page", Math.min(model.get("pages") - 1, model.get("page") + 1));
    layerSelect.addEventListener("change", onLayer);
    sortSelect.addEventListener("change", onSort);
    showSelect.addEventListener("change", onShow);
    prev.addEventListener("click", onPrev);
    next.addEventListener("click", onNext);

    const unlisten = listen(model, {
      "change:frame": drawFrame,
      "change:selected": mark,
      "change:caption": () => {
        caption.textContent = model.get("caption");
      },
      "change:note": () => showText(note, model.get("note")),
      "change:error": () => showText(error, model.get("error")),
      "change:layers": syncMenus,
      "change:layer": () => {
        layerSelect.value = model.get("layer");
      },
      "change:sort": () => {
        sortSelect.value = model.get("sort");
      },
      "change:show": () => {
        showSelect.value = model.get("show");
      },
      "change:page": syncPager,
      "change:pages": syncPager,
      "change:max_width": () => view.fit(),
    });
    const unobserve = onResize(root, () => view.fit());

    syncMenus();
    drawFrame();
    caption.textContent = model.get("caption");
    showText(note, model.get("note"));
    showText(error, model.get("error"));

    return () => {
      unlisten();
      unobserve();
      layerSelect.removeEventListener("change", onLayer);
      sortSelect.removeEventListener("change", onSort);
      showSelect.removeEventListener("change", onShow);
      prev.removeEventListener("click", onPrev);
      next.removeEventListener("click", onNext);
      view.destroy();
      root.remove();
    };
  },
});
