// @vitest-environment happy-dom
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import filterGrid from "../filter_grid.js";
import layerGrid from "../layer_grid.js";
import { fakeModel, payload } from "./fakes.js";

// 6 tiles of 2 x 3 in 3 columns, pad 1: atlas 13 x 7 (zfwidgets.base.images.GridLayout)
const GRID = { count: 6, columns: 3, rows: 2, tile: [2, 3], pad: 1, width: 13, height: 7 };
const EVIL = "<img src=x onerror=zfXSS=1>";

function frame(layer) {
  return {
    layer,
    shape: [6, 2, 3],
    grid: GRID,
    colormap: "viridis",
    scale: "map",
    atlas: payload(new Uint8Array(13 * 7 * 4).fill(200), "uint8", [7, 13, 4]),
    maxima: payload(new Float32Array([0, 1, 2, 3, 4.5, 5]), "float32", [6]),
  };
}

/** Make the canvas report a 13 x 7 CSS box at the origin (happy-dom has no layout). */
function atOrigin(canvas) {
  canvas.getBoundingClientRect = () => ({ left: 0, top: 0, width: 13, height: 7 });
}

const cleanups = [];
afterEach(() => {
  while (cleanups.length) cleanups.pop()();
});

describe("LayerGrid front end", () => {
  function setup() {
    const model = fakeModel({
      layers: ["features.0", EVIL],
      layer: "features.0",
      channel: null,
      colormap: "viridis",
      colormaps: ["viridis", "gray"],
      scale: "map",
      frame: frame("features.0"),
      thumbnail: payload(new Uint8Array(2 * 2 * 4).fill(9), "uint8", [2, 2, 4]),
      caption: `${EVIL} · 6 maps`,
      error: "",
      max_width: 720,
    });
    const el = document.createElement("div");
    document.body.append(el);
    const cleanup = layerGrid.render({ model, el });
    cleanups.push(() => el.remove());
    const canvas = el.querySelector("canvas.zf-atlas");
    atOrigin(canvas);
    return { model, el, cleanup, canvas };
  }

  it("renders Python's text as text", () => {
    const { el } = setup();
    const options = [...el.querySelectorAll("select.zf-layer-select option")];
    expect(options.map((o) => o.textContent)).toEqual(["features.0", EVIL]);
    expect(el.querySelector(".zf-caption").textContent).toBe(`${EVIL} · 6 maps`);
    expect(el.querySelectorAll("img").length).toBe(0);
    expect(globalThis.zfXSS).toBeUndefined();
  });

  it("lays out the atlas from the frame", () => {
    const { canvas } = setup();
    expect([canvas.width, canvas.height]).toEqual([13, 7]);
    expect(canvas.dataset.count).toBe("6");
    expect(canvas.dataset.draws).toBe("1");
  });

  it("hovers, clicks and picks layers through the model", () => {
    const { model, el, canvas } = setup();
    // tile 4: row 1, column 1 -> x 5..7, y 4..5
    canvas.dispatchEvent(new MouseEvent("pointermove", { clientX: 6, clientY: 5 }));
    const tip = el.querySelector(".zf-tooltip");
    expect(tip.hidden).toBe(false);
    expect(tip.textContent).toBe("channel 4 · max 4.5");
    canvas.dispatchEvent(new MouseEvent("click", { clientX: 6, clientY: 5 }));
    expect(model.get("channel")).toBe(4);
    expect(model.saved.length).toBe(1);
    model.emit("change:channel");
    expect(el.querySelector(".zf-select-box").hidden).toBe(false);
    canvas.dispatchEvent(new MouseEvent("click", { clientX: 0, clientY: 0 })); // padding
    expect(model.saved.length).toBe(1);

    const select = el.querySelector("select.zf-layer-select");
    select.value = EVIL;
    select.dispatchEvent(new Event("change"));
    expect(model.get("layer")).toBe(EVIL);
    expect(el.querySelector(".zf-layer-grid").classList.contains("zf-pending")).toBe(true);
    model.set("frame", frame(EVIL));
    model.emit("change:frame");
    expect(el.querySelector(".zf-layer-grid").classList.contains("zf-pending")).toBe(false);
    expect(canvas.dataset.draws).toBe("2");
  });

  it("shows errors from Python as text", () => {
    const { model, el } = setup();
    model.set("error", "<b>ValueError</b>");
    model.emit("change:error");
    const error = el.querySelector(".zf-error");
    expect(error.hidden).toBe(false);
    expect(error.textContent).toBe("<b>ValueError</b>");
    expect(error.querySelector("b")).toBeNull();
  });

  it("cleans up every listener", () => {
    const { model, el, cleanup, canvas } = setup();
    expect(model.listeners()).toBeGreaterThan(0);
    cleanup();
    expect(model.listeners()).toBe(0);
    expect(el.children.length).toBe(0);
    canvas.dispatchEvent(new MouseEvent("click", { clientX: 6, clientY: 5 }));
    expect(model.saved.length).toBe(0);
  });
});

describe("FilterGrid front end", () => {
  function setup(labels) {
    const model = fakeModel({
      layer: "features.0",
      frame: {
        ...frame("features.0"),
        shape: [6, 3, 2, 3],
        flags: payload(new Uint8Array([0, 1, 0, 2, 3, 0]), "uint8", [6]),
        rms: payload(new Float32Array([0.01, 0.2, 0.03, 0.04, 0.5, 0.06]), "float32", [6]),
        radius: 0.1,
        dead_known: true,
      },
      checkpoint: 0,
      checkpoint_labels: labels,
      channel: null,
      caption: "features.0 · 6 filters",
      max_width: 480,
    });
    const el = document.createElement("div");
    document.body.append(el);
    const cleanup = filterGrid.render({ model, el });
    cleanups.push(() => el.remove());
    atOrigin(el.querySelector("canvas.zf-atlas"));
    return { model, el, cleanup };
  }

  it("marks dominating and dead filters and counts them in the legend", () => {
    const { el } = setup([]);
    expect(el.querySelectorAll(".zf-mark.zf-mark-dominating").length).toBe(2);
    expect(el.querySelectorAll(".zf-mark.zf-mark-dead").length).toBe(2);
    const legend = el.querySelector(".zf-legend").textContent;
    expect(legend).toContain("dominating, RMS > 0.1: 2");
    expect(legend).toContain("dead on the images: 2");
    expect(el.querySelector(".zf-checkpoints").hidden).toBe(true);
  });

  it("drives the checkpoint slider and cleans up", () => {
    const { model, el, cleanup } = setup(["epoch 1", "epoch 2"]);
    const slider = el.querySelector("input.zf-slider");
    expect(el.querySelector(".zf-checkpoints").hidden).toBe(false);
    slider.value = "1";
    slider.dispatchEvent(new Event("input"));
    expect(model.get("checkpoint")).toBe(1);
    expect(el.querySelector(".zf-slider-label").textContent).toBe("epoch 2");
    cleanup();
    expect(model.listeners()).toBe(0);
  });
});

describe("front-end sources", () => {
  it("never parse strings as HTML or code", () => {
    const root = join(import.meta.dirname, "..");
    const files = [
      ...readdirSync(root).filter((f) => f.endsWith(".js")),
      ...readdirSync(join(root, "lib")).map((f) => join("lib", f)),
    ];
    expect(files.length).toBeGreaterThan(4);
    for (const f of files) {
      const src = readFileSync(join(root, f), "utf8");
      expect(src, f).not.toMatch(/innerHTML|outerHTML|insertAdjacentHTML|document\.write|eval\(/);
    }
  });
});
