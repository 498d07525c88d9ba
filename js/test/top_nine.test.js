// @vitest-environment happy-dom
import { afterEach, describe, expect, it } from "vitest";
import evolution, { stepIndex } from "../evolution.js";
import { fmt } from "../lib/dom.js";
import { blockX, hitAt, hitRect, hitText, pairLayout, pairScale } from "../lib/top9_layout.js";
import topNine, { isCurrent } from "../top_nine.js";
import { fakeModel, payload } from "./fakes.js";

const EVIL = "<img src=x onerror=zfXSS=1>";

// k = 4 hits in 2 columns, tiles 4 x 4, pad 1, gap 2: each block 11 x 11, atlas 24 x 11
const GRID = { count: 4, columns: 2, rows: 2, tile: [4, 4], pad: 1, gap: 2, width: 24, height: 11 };

describe("TopNine geometry", () => {
  const p = pairLayout(GRID);

  it("matches the atlas Python packs", () => {
    expect([p.width, p.height, p.block.width, p.gap]).toEqual([24, 11, 11, 2]);
    expect(blockX(p, 1)).toBe(13);
    expect(hitRect(p, 0, 3)).toEqual({ x: 6, y: 6, w: 4, h: 4 });
    expect(hitRect(p, 1, 0)).toEqual({ x: 14, y: 1, w: 4, h: 4 });
  });

  it("finds the hit under a pixel, and none over padding or the gap", () => {
    expect(hitAt(p, 1, 1)).toEqual({ block: 0, rank: 0 });
    expect(hitAt(p, 7, 7)).toEqual({ block: 0, rank: 3 });
    expect(hitAt(p, 14, 1)).toEqual({ block: 1, rank: 0 });
    expect(hitAt(p, 20, 8)).toEqual({ block: 1, rank: 3 });
    expect(hitAt(p, 0, 0)).toBeNull(); // border padding
    expect(hitAt(p, 5, 1)).toBeNull(); // between tiles
    expect(hitAt(p, 11, 2)).toBeNull(); // the gap
    expect(hitAt(p, 12, 2)).toBeNull();
    expect(hitAt(p, 24, 2)).toBeNull(); // outside
  });

  it("blows small atlases up by an integer and shrinks large ones", () => {
    expect(pairScale(24, 640)).toBe(12);
    expect(pairScale(76, 640)).toBe(8);
    expect(pairScale(600, 640)).toBe(1);
    expect(pairScale(1280, 640)).toBe(0.5);
    expect(pairScale(0, 640)).toBe(1);
  });

  it("rejects a bad gap", () => {
    expect(() => pairLayout({ ...GRID, gap: -1 })).toThrow(/gap/);
  });

  it("writes a hit's text", () => {
    const t = hitText({ rank: 2, value: 12.3456, index: 17, name: "cat", fmt });
    expect(t).toEqual({
      short: "12.35 · cat",
      long: "#3 · image 17 · activation 12.35 · cat",
    });
    expect(hitText({ rank: 0, value: 1, index: 0, name: "", fmt }).short).toBe("1");
  });
});

const cleanups = [];
afterEach(() => {
  while (cleanups.length) cleanups.pop()();
});

function frame(channel, checkpoint = null) {
  return {
    layer: "features.3",
    channel,
    checkpoint,
    checkpoint_label: checkpoint === null ? null : `epoch ${checkpoint}`,
    k: 4,
    grid: GRID,
    crop: [3, 3],
    classes: ["cat", EVIL, "", "dog"],
    atlas: payload(new Uint8Array(24 * 11 * 4).fill(90), "uint8", [11, 24, 4]),
    values: payload(new Float32Array([4.5, 3, 2.25, 1]), "float32", [4]),
    indices: payload(new Int32Array([7, 3, 11, 0]), "int32", [4]),
  };
}

describe("TopNine front end", () => {
  function setup(overrides = {}) {
    const model = fakeModel({
      layers: ["features.0", "features.3"],
      layer: "features.3",
      channel: 2,
      channels: 6,
      k: 4,
      checkpoint: null,
      checkpoint_labels: [],
      selected: null,
      status: "ready",
      progress: 1,
      frame: frame(2),
      caption: "features.3 · feature map 2 / 6",
      error: "",
      max_width: 640,
      ...overrides,
    });
    const el = document.createElement("div");
    document.body.append(el);
    const cleanup = topNine.render({ model, el });
    cleanups.push(() => el.remove());
    const canvas = el.querySelector("canvas.zf-atlas");
    // happy-dom has no layout: the canvas is 24 x 11 CSS pixels at the origin
    canvas.getBoundingClientRect = () => ({ left: 0, top: 0, width: 24, height: 11 });
    return { model, el, cleanup, canvas };
  }

  it("draws the frame and labels each patch with value and class, as text", () => {
    const { el, canvas } = setup();
    expect([canvas.width, canvas.height]).toEqual([24, 11]);
    expect(canvas.style.width).toBe("288px"); // blown up 12 times: 48 CSS pixels per tile
    expect(canvas.dataset.draws).toBe("1");
    expect(canvas.dataset.channel).toBe("2");
    const labels = [...el.querySelectorAll(".zf-hit-label")].map((n) => n.textContent);
    expect(labels).toEqual(["4.5 · cat", `3 · ${EVIL}`, "2.25", "1 · dog"]);
    expect(el.querySelectorAll("img").length).toBe(0);
    expect(globalThis.zfXSS).toBeUndefined();
    expect(el.querySelector(".zf-caption").textContent).toBe("features.3 · feature map 2 / 6");
    const heads = [...el.querySelectorAll(".zf-head")].map((n) => n.textContent);
    expect(heads).toEqual(["deconvnet projections", "image patches"]);
    expect(el.querySelector(".zf-top-nine").classList.contains("zf-pending")).toBe(false);
  });

  it("hovers a patch, shows its twin and text, and a click selects its image", () => {
    const { model, el, canvas } = setup();
    // patch of rank 1: block 1 at x 13, tile 1 at x 6..9 -> atlas x 19..22, y 1..4
    canvas.dispatchEvent(new MouseEvent("pointermove", { clientX: 20, clientY: 2 }));
    const tip = el.querySelector(".zf-tooltip");
    expect(tip.hidden).toBe(false);
    expect(tip.textContent).toBe(`#2 · image 3 · activation 3 · ${EVIL}`);
    expect(el.querySelector(".zf-twin-box").hidden).toBe(false);
    canvas.dispatchEvent(new MouseEvent("click", { clientX: 20, clientY: 2 }));
    expect(model.get("selected")).toBe(3);
    expect(model.saved.length).toBe(1);
    const boxes = [...el.querySelectorAll(".zf-select-box")];
    expect(boxes.every((b) => !b.hidden)).toBe(true);
    canvas.dispatchEvent(new MouseEvent("click", { clientX: 12, clientY: 2 })); // the gap
    expect(model.saved.length).toBe(1);
    canvas.dispatchEvent(new MouseEvent("pointerleave"));
    expect(tip.hidden).toBe(true);
  });

  it("steps and types channels within range, and shows the wait", () => {
    const { model, el } = setup();
    el.querySelector("button.zf-next").click();
    expect(model.get("channel")).toBe(3);
    expect(el.querySelector(".zf-top-nine").classList.contains("zf-pending")).toBe(true);
    expect(el.querySelector(".zf-busy").textContent).toBe("computing…");
    const input = el.querySelector("input.zf-channel-input");
    input.value = "99";
    input.dispatchEvent(new Event("change"));
    expect(model.get("channel")).toBe(5);
    expect(el.querySelector("button.zf-next").disabled).toBe(true);
    model.set("frame", frame(5));
    model.emit("change:frame");
    expect(el.querySelector(".zf-top-nine").classList.contains("zf-pending")).toBe(false);
    expect(el.querySelector("canvas.zf-atlas").dataset.draws).toBe("2");
    const select = el.querySelector("select.zf-layer-select");
    select.value = "features.0";
    select.dispatchEvent(new Event("change"));
    expect(model.get("layer")).toBe("features.0");
  });

  it("shows mining progress before the first frame", () => {
    const { model, el } = setup({ frame: {}, status: "mining", progress: 0.25 });
    expect(el.querySelector(".zf-stage").hidden).toBe(true);
    expect(el.querySelector(".zf-placeholder").textContent).toBe("mining the dataset… 25%");
    expect(el.querySelector(".zf-progress").hidden).toBe(false);
    expect(el.querySelector(".zf-progress-bar").style.width).toBe("25%");
    model.set("progress", 0.5);
    model.emit("change:progress");
    expect(el.querySelector(".zf-busy").textContent).toBe("mining the top 4… 50%");
    model.set("frame", frame(2));
    model.set("status", "ready");
    model.emit("change:frame");
    model.emit("change:status");
    expect(el.querySelector(".zf-stage").hidden).toBe(false);
    expect(el.querySelector(".zf-progress").hidden).toBe(true);
  });

  it("follows checkpoints and shows errors as text", () => {
    const { model, el } = setup({ checkpoint: 1, checkpoint_labels: ["a", EVIL] });
    expect(el.querySelector(".zf-checkpoint-label").textContent).toBe(EVIL);
    expect(isCurrent(model, model.get("frame"))).toBe(false); // frame is of the model's weights
    model.set("frame", frame(2, 1));
    expect(isCurrent(model, model.get("frame"))).toBe(true);
    model.set("error", "<b>RuntimeError</b>");
    model.emit("change:error");
    const error = el.querySelector(".zf-error");
    expect(error.hidden).toBe(false);
    expect(error.querySelector("b")).toBeNull();
  });

  it("cleans up every listener", () => {
    const { model, el, cleanup, canvas } = setup();
    expect(model.listeners()).toBeGreaterThan(0);
    cleanup();
    expect(model.listeners()).toBe(0);
    expect(el.children.length).toBe(0);
    canvas.dispatchEvent(new MouseEvent("click", { clientX: 20, clientY: 2 }));
    expect(model.saved.length).toBe(0);
  });
});

describe("EvolutionSlider front end", () => {
  function setup() {
    const model = fakeModel({
      index: 0,
      labels: ["epoch 1", "epoch 5", EVIL],
      description: "training",
    });
    const el = document.createElement("div");
    document.body.append(el);
    const cleanup = evolution.render({ model, el });
    cleanups.push(() => el.remove());
    return { model, el, cleanup };
  }

  it("steps within range", () => {
    expect(stepIndex(0, -1, 3)).toBe(0);
    expect(stepIndex(1, 1, 3)).toBe(2);
    expect(stepIndex(2, 1, 3)).toBe(2);
    expect(stepIndex(5, 0, 0)).toBe(0);
  });

  it("sets index from the slider and buttons, labels as text, cleans up", () => {
    const { model, el, cleanup } = setup();
    expect(el.querySelector(".zf-slider-label").textContent).toBe("epoch 1");
    expect(el.querySelector(".zf-slider-count").textContent).toBe("1 / 3");
    const slider = el.querySelector("input.zf-slider");
    slider.value = "2";
    slider.dispatchEvent(new Event("input"));
    expect(model.get("index")).toBe(2);
    expect(el.querySelector(".zf-slider-label").textContent).toBe(EVIL);
    expect(el.querySelectorAll("img").length).toBe(0);
    el.querySelector("button.zf-prev").click();
    expect(model.get("index")).toBe(1);
    expect(model.saved.length).toBe(2);
    model.set("index", 0);
    model.emit("change:index");
    expect(slider.value).toBe("0");
    expect(el.querySelector("button.zf-prev").disabled).toBe(true);
    cleanup();
    expect(model.listeners()).toBe(0);
    expect(el.children.length).toBe(0);
  });
});
