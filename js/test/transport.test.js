// @vitest-environment happy-dom
import { afterEach, describe, expect, it } from "vitest";
import layerGrid from "../layer_grid.js";
import { bufferless, NO_BUFFERS } from "../lib/transport.js";
import { fakeModel, inline, payload, stripped } from "./fakes.js";

// 6 tiles of 2 x 3 in 3 columns, pad 1: atlas 13 x 7 (zfwidgets.base.images.GridLayout)
const GRID = { count: 6, columns: 3, rows: 2, tile: [2, 3], pad: 1, width: 13, height: 7 };

function frame(form) {
  return {
    layer: "features.0",
    shape: [6, 2, 3],
    grid: GRID,
    colormap: "viridis",
    scale: "map",
    atlas: form(payload(new Uint8Array(13 * 7 * 4).fill(200), "uint8", [7, 13, 4])),
    maxima: form(payload(new Float32Array([0, 1, 2, 3, 4.5, 5]), "float32", [6])),
  };
}

const cleanups = [];
afterEach(() => {
  while (cleanups.length) cleanups.pop()();
});

function render(form) {
  const model = fakeModel({
    layers: ["features.0"],
    layer: "features.0",
    channel: null,
    colormap: "viridis",
    colormaps: ["viridis"],
    scale: "map",
    frame: frame(form),
    thumbnail: form(payload(new Uint8Array(2 * 2 * 4).fill(9), "uint8", [2, 2, 4])),
    caption: "",
    error: "",
    max_width: 720,
  });
  const el = document.createElement("div");
  document.body.append(el);
  const cleanup = layerGrid.render({ model, el });
  cleanups.push(() => {
    cleanup();
    el.remove();
  });
  return { model, el, canvas: el.querySelector("canvas.zf-atlas") };
}

describe("front ends without binary buffers", () => {
  it("draws the inline base64 form like the binary one, and asks for nothing", () => {
    const binary = render((p) => p);
    const b64 = render(inline);
    for (const { canvas, model, el } of [binary, b64]) {
      expect([canvas.width, canvas.height]).toEqual([13, 7]);
      expect(canvas.dataset.draws).toBe("1");
      expect(model.sent).toEqual([]);
      expect(el.querySelector(".zf-error").hidden).toBe(true);
    }
    const tip = (el, canvas) => {
      canvas.getBoundingClientRect = () => ({ left: 0, top: 0, width: 13, height: 7 });
      canvas.dispatchEvent(new MouseEvent("pointermove", { clientX: 6, clientY: 5 }));
      return el.querySelector(".zf-tooltip").textContent;
    };
    expect(tip(b64.el, b64.canvas)).toBe(tip(binary.el, binary.canvas));
    expect(tip(b64.el, b64.canvas)).toBe("channel 4 · max 4.5");
  });

  it("reports payloads that arrive without bytes once, shows no error, then draws the inline state", () => {
    const { model, el, canvas } = render(stripped);
    expect(model.sent).toEqual([{ type: NO_BUFFERS }]);
    expect(canvas.dataset.draws).toBeUndefined();
    expect(el.querySelector(".zf-error").hidden).toBe(true);
    // a second stripped update does not ask again
    model.set("frame", frame(stripped));
    model.emit("change:frame");
    expect(model.sent.length).toBe(1);
    // the kernel re-sends the state inline
    model.set("frame", frame(inline));
    model.emit("change:frame");
    expect(canvas.dataset.draws).toBe("1");
    expect([canvas.width, canvas.height]).toEqual([13, 7]);
    expect(el.querySelector(".zf-error").hidden).toBe(true);
  });

  it("reads a stripped trait as an empty value of its kind and passes everything else", () => {
    const model = fakeModel({
      views: [{ name: "a", map: stripped(payload(new Uint8Array(4), "uint8", [4])) }],
      frame: { atlas: stripped(payload(new Uint8Array(4), "uint8", [4])) },
      caption: "text",
    });
    const m = bufferless(model);
    expect(m.get("caption")).toBe("text");
    expect(m.get("views")).toEqual([]);
    expect(m.get("frame")).toEqual({});
    expect(model.sent).toEqual([{ type: NO_BUFFERS }]);
    // several views of one model report once
    bufferless(model).get("frame");
    expect(model.sent.length).toBe(1);
    m.set("caption", "new");
    expect(model.get("caption")).toBe("new");
  });
});
