// @vitest-environment happy-dom
import { afterEach, describe, expect, it } from "vitest";
import layerOverview from "../layer_overview.js";
import { fakeModel, payload } from "./fakes.js";

// 5 thumbnails of 2 x 3 in 3 columns, pad 1: atlas 13 x 7 (zfwidgets.base.images.GridLayout)
const GRID = { count: 5, columns: 3, rows: 2, tile: [2, 3], pad: 1, width: 13, height: 7 };
const EVIL = "<img src=x onerror=zfXSS=1>";

function frame(page) {
  return {
    layer: EVIL,
    grid: GRID,
    units: [40, 7, 12, 3, 9],
    values: [5, 4.5, 3, 2, 1],
    page,
    atlas: payload(new Uint8Array(13 * 7 * 4).fill(120), "uint8", [7, 13, 4]),
  };
}

const cleanups = [];
afterEach(() => {
  while (cleanups.length) cleanups.pop()();
});

function setup() {
  const model = fakeModel({
    layers: ["features.0", EVIL],
    layer: EVIL,
    sort: "strength",
    show: "strongest",
    page: 0,
    pages: 3,
    page_size: 5,
    frame: frame(0),
    selected: null,
    caption: `${EVIL} · 41 units`,
    note: "",
    error: "",
    max_width: 720,
  });
  const el = document.createElement("div");
  document.body.append(el);
  const cleanup = layerOverview.render({ model, el });
  cleanups.push(() => el.remove());
  const canvas = el.querySelector("canvas.zf-atlas");
  canvas.getBoundingClientRect = () => ({ left: 0, top: 0, width: 13, height: 7 });
  return { model, el, cleanup, canvas };
}

describe("LayerOverview front end", () => {
  it("renders Python's text as text", () => {
    const { el } = setup();
    const options = [...el.querySelectorAll("select.zf-layer-select option")];
    expect(options.map((o) => o.textContent)).toEqual(["features.0", EVIL]);
    expect(el.querySelector(".zf-caption").textContent).toBe(`${EVIL} · 41 units`);
    expect(el.querySelectorAll("img").length).toBe(0);
    expect(globalThis.zfXSS).toBeUndefined();
  });

  it("names the unit under the pointer and selects it on click", () => {
    const { model, el, canvas } = setup();
    // tile 4 (unit 9): row 1, column 1 -> x 5..7, y 4..5
    canvas.dispatchEvent(new MouseEvent("pointermove", { clientX: 6, clientY: 5 }));
    expect(el.querySelector(".zf-tooltip").textContent).toBe("unit 9 · strongest 1");
    canvas.dispatchEvent(new MouseEvent("click", { clientX: 6, clientY: 5 }));
    expect(model.get("selected")).toBe(9);
    expect(model.saved.length).toBe(1);
    model.emit("change:selected");
    expect(el.querySelector(".zf-select-box").hidden).toBe(false);
    expect(canvas.dataset.units).toBe("40,7,12,3,9");
  });

  it("pages, sorts and shows through the model", () => {
    const { model, el } = setup();
    const [prev, next] = el.querySelectorAll(".zf-pager button");
    expect(prev.disabled).toBe(true);
    expect(el.querySelector(".zf-page").textContent).toBe(" page 1 of 3 ");
    next.dispatchEvent(new MouseEvent("click"));
    expect(model.get("page")).toBe(1);
    model.emit("change:page");
    expect(prev.disabled).toBe(false);
    const sort = el.querySelector("select.zf-sort-select");
    sort.value = "index";
    sort.dispatchEvent(new Event("change"));
    expect(model.get("sort")).toBe("index");
    const show = el.querySelector("select.zf-show-select");
    show.value = "patches";
    show.dispatchEvent(new Event("change"));
    expect(model.get("show")).toBe("patches");
    expect(el.querySelector(".zf-layer-overview").classList.contains("zf-pending")).toBe(true);
    model.set("frame", frame(1));
    model.emit("change:frame");
    expect(el.querySelector(".zf-layer-overview").classList.contains("zf-pending")).toBe(false);
  });

  it("shows notes and errors as text, and cleans up", () => {
    const { model, el, cleanup } = setup();
    model.set("note", "<b>computed</b>");
    model.emit("change:note");
    expect(el.querySelector(".zf-note").textContent).toBe("<b>computed</b>");
    expect(el.querySelector(".zf-note b")).toBeNull();
    cleanup();
    expect(model.listeners()).toBe(0);
    expect(el.children.length).toBe(0);
  });
});
