// @vitest-environment happy-dom
import { afterEach, describe, expect, it } from "vitest";
import occlusionMap, { hoverLines, legendEntries, readFrame, squareAt } from "../occlusion_map.js";
import predictions, { bars } from "../predictions.js";
import { fakeModel, payload } from "./fakes.js";

const EVIL = "<img src=x onerror=zfXSS=1>";
const CLASSES = ["cat", EVIL, "dog"];

// A 4 x 6 image, a 2 x 2 square with stride 2: rows [0, 2], cols [0, 2, 4] -> 2 x 3 positions
function frame() {
  return {
    size: [4, 6],
    image: payload(new Uint8Array(4 * 6 * 4).fill(120), "uint8", [4, 6, 4]),
    window: [2, 2],
    stride: [2, 2],
    layer: "features.10",
    channel: 37,
    target: 1,
    baseline: { activation: 50, probability: 0.6, top_class: 1 },
    rows: payload(new Int32Array([0, 2]), "int32", [2]),
    cols: payload(new Int32Array([0, 2, 4]), "int32", [3]),
    activation: payload(new Float32Array([10, 20, 30, 40, 50, 60]), "float32", [2, 3]),
    probability: payload(new Float32Array([0.1, 0.2, 0.3, 0.4, 0.5, 0.25]), "float32", [2, 3]),
    top_class: payload(new Int32Array([0, 1, 1, 2, 1, 1]), "int32", [2, 3]),
    top_probability: payload(new Float32Array([0.7, 0.6, 0.5, 0.4, 0.3, 0.9]), "float32", [2, 3]),
  };
}

const VIEWS = [
  { name: "activation", label: "(a) activation", colormap: "inferno", kind: "occlusion" },
  { name: "probability", label: "(b) probability", colormap: "viridis", kind: "occlusion" },
  { name: "top_class", label: "(c) top class", colormap: "categorical", kind: "occlusion" },
];

const cleanups = [];
afterEach(() => {
  while (cleanups.length) cleanups.pop()();
});

describe("occlusion frame logic", () => {
  it("maps a point to the square position with the nearest centre", () => {
    const occ = readFrame(frame());
    expect(occ.hasMaps).toBe(true);
    expect(squareAt(occ, 5, 3)).toEqual({ i: 1, j: 2, k: 5, rect: { x: 4, y: 2, w: 2, h: 2 } });
    expect(squareAt(occ, 0.2, 0.2).k).toBe(0);
    expect(squareAt(occ, 2.1, 1.9)).toMatchObject({ i: 0, j: 1, k: 1 });
  });

  it("reads out the class, probabilities and activation of a position", () => {
    const occ = readFrame(frame());
    expect(hoverLines(occ, 5, CLASSES)).toEqual([
      `most probable: ${EVIL} · 90.0%`,
      `target ${EVIL}: 25.0%`,
      "activation 60 (features.10 map 37)",
      "square at x 4, y 2",
    ]);
    expect(hoverLines(occ, 3, CLASSES)[0]).toBe("most probable: dog · 40.0%");
  });

  it("lists the classes that occur, most frequent first", () => {
    const occ = readFrame(frame());
    const { entries, more } = legendEntries(occ.maps.top_class, CLASSES, 2);
    expect(entries.map((e) => [e.name, e.share])).toEqual([
      [EVIL, 4 / 6],
      ["cat", 1 / 6],
    ]);
    expect(more).toBe(1);
  });

  it("knows a frame without maps (a new image being computed)", () => {
    const f = frame();
    const pending = { size: f.size, image: f.image };
    expect(readFrame(pending)).toMatchObject({ width: 6, height: 4, hasMaps: false });
    expect(readFrame({})).toBeNull();
  });
});

describe("OcclusionMap front end", () => {
  function setup(extra = {}) {
    const model = fakeModel({
      frame: frame(),
      classes: CLASSES,
      view: "probability",
      views: VIEWS,
      overlays: {},
      opacity: 0.6,
      busy: false,
      progress: 1,
      caption: `(b) ${EVIL}: 0.6 unoccluded`,
      error: "",
      max_width: 480,
      ...extra,
    });
    const el = document.createElement("div");
    document.body.append(el);
    const cleanup = occlusionMap.render({ model, el });
    cleanups.push(() => el.remove());
    const image = el.querySelector("canvas.zf-occ-image");
    // happy-dom has no layout: the image shows at the origin at its pixel size
    image.getBoundingClientRect = () => ({ left: 0, top: 0, width: 6, height: 4 });
    const heat = el.querySelector("canvas.zf-occ-heat");
    const stage = el.querySelector(".zf-occ-stage");
    return { model, el, cleanup, heat, stage };
  }

  it("draws the heatmap of the current view with its colour bar", () => {
    const { el, heat } = setup();
    expect([heat.width, heat.height]).toEqual([6, 4]);
    expect(heat.hidden).toBe(false);
    expect(heat.dataset.view).toBe("probability");
    expect(heat.dataset.draws).toBe("1");
    expect(heat.style.opacity).toBe("0.6");
    expect(el.querySelector(".zf-occ-lo").textContent).toBe("0.1");
    expect(el.querySelector(".zf-occ-hi").textContent).toBe("0.5");
    expect(el.querySelector(".zf-occ-scale-title").textContent).toBe(
      `probability of ${EVIL} · unoccluded 0.6`,
    );
    expect(el.querySelector(".zf-occ-tick").hidden).toBe(false);
    expect(el.querySelector(".zf-caption").textContent).toBe(`(b) ${EVIL}: 0.6 unoccluded`);
  });

  it("switches views with the buttons, in the browser", () => {
    const { model, el, heat } = setup();
    const buttons = [...el.querySelectorAll("button.zf-occ-view")];
    expect(buttons.map((b) => b.textContent)).toEqual(VIEWS.map((v) => v.label));
    expect(buttons.map((b) => b.getAttribute("aria-pressed"))).toEqual(["false", "true", "false"]);
    buttons[0].click();
    expect(model.get("view")).toBe("activation");
    expect(model.saved.length).toBe(1);
    expect(heat.dataset.view).toBe("activation");
    expect(heat.dataset.draws).toBe("2");
    expect(buttons[0].getAttribute("aria-pressed")).toBe("true");
    expect(el.querySelector(".zf-occ-hi").textContent).toBe("60");
    // (c): a legend of class names instead of a colour bar, as text
    buttons[2].click();
    expect(heat.dataset.view).toBe("top_class");
    const legend = el.querySelector(".zf-occ-legend");
    expect(legend.hidden).toBe(false);
    expect(el.querySelector(".zf-occ-scale-row").hidden).toBe(true);
    const names = [...legend.querySelectorAll(".zf-occ-class")].map((n) => n.textContent);
    expect(names).toEqual([EVIL, "cat", "dog"]);
    expect(legend.textContent).toContain("67%, unoccluded");
    expect(el.querySelectorAll("img").length).toBe(0);
    // a change from Python is followed too
    model.set("view", "probability");
    model.emit("change:view");
    expect(heat.dataset.view).toBe("probability");
  });

  it("shows the square and the read-out under the pointer, as text", () => {
    const { el, stage } = setup();
    stage.dispatchEvent(new MouseEvent("pointermove", { clientX: 5, clientY: 3 }));
    const tip = el.querySelector(".zf-tooltip");
    expect(tip.hidden).toBe(false);
    expect([...tip.children].map((n) => n.textContent)).toEqual([
      `most probable: ${EVIL} · 90.0%`,
      `target ${EVIL}: 25.0%`,
      "activation 60 (features.10 map 37)",
      "square at x 4, y 2",
    ]);
    expect(el.querySelectorAll("img").length).toBe(0);
    expect(globalThis.zfXSS).toBeUndefined();
    const square = el.querySelector(".zf-occ-square");
    expect(square.hidden).toBe(false);
    // 8 CSS pixels per image pixel (6 px wide, up to 8x)
    expect([square.style.left, square.style.top, square.style.width, square.style.height]).toEqual([
      "32px",
      "16px",
      "16px",
      "16px",
    ]);
    stage.dispatchEvent(new MouseEvent("pointerleave"));
    expect(tip.hidden).toBe(true);
    expect(square.hidden).toBe(true);
  });

  it("shows the busy state and a new image before its maps", () => {
    const { model, el, heat } = setup();
    const root = el.querySelector(".zf-occlusion");
    model.set("busy", true);
    model.set("progress", 0.4);
    model.emit("change:busy");
    expect(root.classList.contains("zf-pending")).toBe(true);
    expect(el.querySelector(".zf-busy").textContent).toBe("computing… 40%");
    expect(el.querySelector(".zf-occ-progress-bar").style.width).toBe("40%");
    const f = frame();
    model.set("frame", { size: f.size, image: f.image });
    model.emit("change:frame");
    expect(heat.hidden).toBe(true);
    model.set("frame", frame());
    model.set("busy", false);
    model.emit("change:frame");
    model.emit("change:busy");
    expect(heat.hidden).toBe(false);
    expect(root.classList.contains("zf-pending")).toBe(false);
    expect(el.querySelector(".zf-busy").textContent).toBe("");
  });

  it("adds views for other maps (show_map)", () => {
    const { model, el, heat, stage } = setup();
    model.set("overlays", {
      cam: payload(new Float32Array([0, 1, 2, 3]), "float32", [2, 2]),
    });
    model.set("views", [
      ...VIEWS,
      { name: "cam", label: "Grad-CAM", colormap: "inferno", kind: "map" },
    ]);
    model.set("view", "cam");
    model.emit("change:overlays");
    model.emit("change:views");
    model.emit("change:view");
    expect(heat.dataset.view).toBe("cam");
    expect(el.querySelectorAll("button.zf-occ-view").length).toBe(4);
    expect(el.querySelector(".zf-occ-scale-title").textContent).toBe("Grad-CAM");
    // cell [1, 1] covers x 3..6, y 2..4
    stage.dispatchEvent(new MouseEvent("pointermove", { clientX: 4, clientY: 3 }));
    expect(el.querySelector(".zf-tooltip").textContent).toBe("Grad-CAM: 3");
    expect(el.querySelector(".zf-occ-square").style.left).toBe("24px");
  });

  it("follows the opacity slider and cleans up every listener", () => {
    const { model, el, heat, cleanup, stage } = setup();
    const slider = el.querySelector("input.zf-occ-opacity");
    slider.value = "0.3";
    slider.dispatchEvent(new Event("input"));
    expect(model.get("opacity")).toBe(0.3);
    expect(heat.style.opacity).toBe("0.3");
    expect(model.listeners()).toBeGreaterThan(0);
    cleanup();
    expect(model.listeners()).toBe(0);
    expect(el.children.length).toBe(0);
    stage.dispatchEvent(new MouseEvent("pointermove", { clientX: 5, clientY: 3 }));
    slider.dispatchEvent(new Event("input"));
    expect(model.saved.length).toBe(1);
  });
});

describe("Predictions front end", () => {
  function setup() {
    const model = fakeModel({
      top: {
        probability: payload(new Float32Array([0.5, 0.25, 0.125]), "float32", [3]),
        index: payload(new Int32Array([7, 2, 9]), "int32", [3]),
      },
      labels: [EVIL, "dog", "cat"],
      caption: "top 3 of 10 classes",
    });
    const el = document.createElement("div");
    document.body.append(el);
    const cleanup = predictions.render({ model, el });
    cleanups.push(() => el.remove());
    return { model, el, cleanup };
  }

  it("computes bar widths from the payload", () => {
    const b = bars(
      {
        probability: payload(new Float32Array([0.5, 0.01]), "float32", [2]),
        index: payload(new Int32Array([4, 1]), "int32", [2]),
      },
      ["a"],
    );
    expect(b).toEqual([
      { name: "a", index: 4, probability: 0.5, width: 50 },
      {
        name: "class 1",
        index: 1,
        probability: expect.closeTo(0.01, 6),
        width: expect.any(Number),
      },
    ]);
    expect(bars({}, [])).toEqual([]);
  });

  it("draws one bar per class with its name as text", () => {
    const { el } = setup();
    const names = [...el.querySelectorAll(".zf-pred-name")].map((n) => n.textContent);
    expect(names).toEqual([EVIL, "dog", "cat"]);
    const widths = [...el.querySelectorAll(".zf-pred-bar")].map((n) => n.style.width);
    expect(widths).toEqual(["50%", "25%", "12.5%"]);
    const values = [...el.querySelectorAll(".zf-pred-value")].map((n) => n.textContent);
    expect(values).toEqual(["50.0%", "25.0%", "12.5%"]);
    expect(el.querySelectorAll("img").length).toBe(0);
    expect(el.querySelector(".zf-caption").textContent).toBe("top 3 of 10 classes");
  });

  it("redraws on a new image and cleans up", () => {
    const { model, el, cleanup } = setup();
    model.set("labels", ["x", "y", "z"]);
    model.emit("change:labels");
    expect(el.querySelector(".zf-pred-name").textContent).toBe("x");
    cleanup();
    expect(model.listeners()).toBe(0);
    expect(el.children.length).toBe(0);
  });
});
