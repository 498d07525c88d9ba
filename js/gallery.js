// Gallery front end: a row (or grid) of image tiles with captions; click selects one.
// Used by the Explorer for its image strip and for the unit projection of the current image.

import { createAtlasView } from "./lib/atlas_view.js";
import { h, listen, onResize } from "./lib/dom.js";
import { noBuffersFallback } from "./lib/transport.js";

export default noBuffersFallback({
  /** @param {{model: any, el: HTMLElement}} ctx */
  render({ model, el }) {
    const root = h("div", "zf-widget zf-gallery");
    const title = h("div", "zf-gallery-title");
    const caption = h("div", "zf-caption");
    const view = createAtlasView({
      maxWidth: () => {
        const room = root.clientWidth > 0 ? root.clientWidth : Infinity;
        return Math.min(model.get("max_width"), Math.max(room, 80));
      },
      hoverText: (i) => {
        const captions = model.get("captions") || [];
        return i >= 0 && i < captions.length ? captions[i] : null;
      },
      onClick: (i) => {
        if (!model.get("selectable")) return;
        model.set("selected", i);
        model.save_changes();
      },
    });
    root.append(title, view.stage, caption);
    el.replaceChildren(root);

    function drawFrame() {
      const frame = model.get("frame");
      if (!frame?.atlas) return;
      view.draw(frame);
      view.select(model.get("selectable") ? model.get("selected") : null);
    }
    function texts() {
      title.textContent = model.get("title");
      title.hidden = !model.get("title");
      caption.textContent = model.get("caption");
    }

    const unlisten = listen(model, {
      "change:frame": drawFrame,
      "change:selected": () => view.select(model.get("selected")),
      "change:title": texts,
      "change:caption": texts,
      "change:max_width": () => view.fit(),
    });
    const unobserve = onResize(root, () => view.fit());
    texts();
    drawFrame();
    return () => {
      unlisten();
      unobserve();
      view.destroy();
      root.remove();
    };
  },
});
