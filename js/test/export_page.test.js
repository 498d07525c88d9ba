// @vitest-environment happy-dom
// The exported page's runtime (js/export/page.js): the read-only model, buffers at their
// paths, core widgets drawn read-only, hostile state shown as text, notes for the rest.
import { afterEach, describe, expect, it } from "vitest";
import { drawPage, KERNEL, putBuffers, StaticModel, safeHTML } from "../export/page.js";

const EVIL = '<img src=x onerror="window.zfXSS=1"><script>window.zfXSS=2</script>';

afterEach(() => {
  document.body.replaceChildren();
  delete (/** @type {any} */ (window).zfXSS);
});

/** A page with one view per id; returns the view elements. */
function views(...ids) {
  return ids.map((id) => {
    const v = document.createElement("div");
    v.className = "zf-export-view";
    v.dataset.modelId = id;
    const fallback = document.createElement("pre");
    fallback.className = "zf-export-fallback";
    fallback.textContent = "Widget(...)";
    v.append(fallback);
    document.body.append(v);
    return v;
  });
}

const core = (name, state) => ({ kind: "core", name, label: name.replace(/Model$/, ""), state });

/** A stand-in bundle: draws the state's `text` and asks the model for things on click. */
function stubBundle(calls) {
  return {
    default: {
      render({ model, el }) {
        const p = document.createElement("p");
        p.className = "stub";
        const draw = () => {
          p.textContent = `${model.get("text")} · ${model.get("view")}`;
          calls.push(`draw ${model.get("view")}`);
        };
        draw();
        const b = document.createElement("button");
        b.className = "ask";
        b.onclick = () => {
          model.set("channel", 7);
          model.save_changes();
        };
        const local = document.createElement("button");
        local.className = "local";
        local.onclick = () => {
          model.set("view", "b");
          model.save_changes();
        };
        el.append(p, b, local);
        model.on("change:view", draw);
        model.on("change:channel", () => calls.push(`channel ${model.get("channel")}`));
        const bytes = model.get("frame").atlas.view;
        calls.push(`bytes ${bytes.byteLength} ${bytes.getUint8(0)}`);
        return () => model.off("change:view", draw);
      },
    },
  };
}

describe("StaticModel", () => {
  it("gives the saved state, refuses kernel work and re-shows the saved value", async () => {
    let asked = 0;
    const m = new StaticModel(
      { channel: 3, view: "a" },
      { local: new Set(["view"]), onKernel: () => asked++ },
    );
    const seen = [];
    m.on("change:channel", () => seen.push(m.get("channel")));
    m.on("change:view", () => seen.push(m.get("view")));
    m.set("channel", 9);
    m.save_changes();
    expect(m.get("channel")).toBe(3);
    expect(asked).toBe(1);
    await Promise.resolve();
    expect(seen).toEqual([3, "a"]); // the refused trait, then every other one, as saved
    m.set("view", "b");
    expect(m.get("view")).toBe("b");
    expect(seen).toEqual([3, "a", "b"]);
    m.send({});
    expect(asked).toBe(2);
    expect(m.listeners()).toBe(2);
  });

  it("ignores a set made while it re-shows the saved value (no loop)", async () => {
    let asked = 0;
    const m = new StaticModel({ layer: "a" }, { onKernel: () => asked++ });
    m.on("change:layer", () => {
      m.set("layer", "z");
      m.save_changes();
    });
    m.set("layer", "b");
    m.save_changes();
    await Promise.resolve();
    await Promise.resolve();
    expect(asked).toBe(1);
    expect(m.get("layer")).toBe("a");
  });
});

describe("putBuffers", () => {
  it("puts DataViews at nested paths, lists included", () => {
    const state = { frame: { atlas: { dtype: "uint8" } }, list: [{}, {}] };
    putBuffers(state, [
      { path: ["frame", "atlas", "view"], data: btoa("\x01\x02\x03") },
      { path: ["list", 1, "v"], data: "" },
    ]);
    expect(state.frame.atlas.view).toBeInstanceOf(DataView);
    expect(Array.from(new Uint8Array(state.frame.atlas.view.buffer))).toEqual([1, 2, 3]);
    expect(state.list[1].v.byteLength).toBe(0);
  });
});

describe("drawPage", () => {
  it("draws a zfwidgets widget with its bundle on the read-only model", async () => {
    const calls = [];
    const [v] = views("w");
    const models = {
      w: {
        kind: "zf",
        name: "AnyModel",
        label: "OcclusionMap",
        bundle: "occlusion_map.js",
        state: { text: EVIL, view: "a", channel: 1, frame: { atlas: {} } },
        buffers: [{ path: ["frame", "atlas", "view"], data: btoa("\x05\x06") }],
      },
    };
    const loaded = [];
    await drawPage(document, { models }, async (name) => {
      loaded.push(name);
      return stubBundle(calls);
    });
    expect(loaded).toEqual(["occlusion_map.js"]);
    expect(v.querySelector(".zf-export-fallback")).toBeNull();
    expect(v.querySelector(".stub")?.textContent).toBe(`${EVIL} · a`); // text, not HTML
    expect(v.querySelector("img")).toBeNull();
    expect(calls).toContain("bytes 2 5");
    const note = /** @type {HTMLElement} */ (v.querySelector(".zf-x-kernel"));
    expect(note.hidden).toBe(true);
    /** @type {HTMLElement} */ (v.querySelector(".local")).click(); // data in the state: works
    expect(v.querySelector(".stub")?.textContent).toBe(`${EVIL} · b`);
    expect(note.hidden).toBe(true);
    /** @type {HTMLElement} */ (v.querySelector(".ask")).click(); // needs the kernel: says so
    expect(note.hidden).toBe(false);
    expect(note.textContent).toContain(KERNEL);
    await Promise.resolve();
    expect(calls).toContain("channel 1");
    expect(document.documentElement.dataset.zfExport).toBe("drawn");
  });

  it("draws boxes, labels and controls read-only; text stays text", async () => {
    const [v] = views("box");
    const models = {
      box: core("VBoxModel", {
        children: [
          "IPY_MODEL_lab",
          "IPY_MODEL_dd",
          "IPY_MODEL_btn",
          "IPY_MODEL_html",
          "IPY_MODEL_sl",
        ],
        layout: "IPY_MODEL_lay",
        _dom_classes: ["zf-explorer", 'x" onclick="1'],
      }),
      lay: core("LayoutModel", { width: "50%", margin: "url(http://x)", display: "flex" }),
      lab: core("LabelModel", { value: EVIL }),
      dd: core("DropdownModel", {
        _options_labels: ["a", "<b>b</b>"],
        index: 0,
        description: "layer",
      }),
      btn: core("FileUploadModel", { description: "upload image" }),
      html: core("HTMLModel", { value: `<b class="k">bold</b>${EVIL}<a href="http://x">link</a>` }),
      sl: core("IntSliderModel", { value: 3, min: 0, max: 9, step: 1, description: "k" }),
    };
    await drawPage(document, { models }, async () => ({}));
    const box = /** @type {HTMLElement} */ (v.querySelector(".zf-x-vbox"));
    expect(box.classList.contains("zf-explorer")).toBe(true);
    expect(box.className).not.toContain("onclick");
    expect(box.style.width).toBe("50%");
    expect(box.style.margin).toBe("");
    expect(v.querySelector(".zf-x-label")?.textContent).toBe(EVIL);
    expect(v.querySelectorAll("img, script, a").length).toBe(0);
    expect(v.querySelector(".zf-x-html b.k")?.textContent).toBe("bold");
    expect(v.querySelector(".zf-x-html")?.textContent).toContain("link");
    const select = /** @type {HTMLSelectElement} */ (v.querySelector("select"));
    expect([...select.options].map((o) => o.textContent)).toEqual(["a", "<b>b</b>"]);
    select.value = "1";
    select.dispatchEvent(new Event("change"));
    expect(select.value).toBe("0"); // back to the saved choice
    const dd = /** @type {HTMLElement} */ (select.closest(".zf-x"));
    expect(dd.querySelector(".zf-x-kernel")?.hasAttribute("hidden")).toBe(false);
    const upload = /** @type {HTMLElement} */ (v.querySelector(".zf-x-button"));
    expect(upload.textContent).toBe("upload image");
    upload.click();
    expect(upload.closest(".zf-x")?.querySelector(".zf-x-kernel")?.textContent).toContain(KERNEL);
    const slider = /** @type {HTMLInputElement} */ (v.querySelector("input[type=range]"));
    slider.value = "7";
    slider.dispatchEvent(new Event("input"));
    expect(slider.value).toBe("3");
    expect(/** @type {any} */ (window).zfXSS).toBeUndefined();
  });

  it("gives one-line notes for what it cannot draw", async () => {
    const [missing, foreign, cyclic, bad, broken, noid] = views("nope", "f", "c1", "bad", "br", "");
    const models = {
      f: { note: "Figure (bqplot): a widget of another library; it needs a running kernel" },
      c1: core("HBoxModel", { children: ["IPY_MODEL_c2"] }),
      c2: core("VBoxModel", { children: ["IPY_MODEL_c1", 5] }),
      bad: core("LabelModel", { value: { not: "text" }, _dom_classes: "x" }),
      br: { kind: "zf", name: "AnyModel", label: "TopNine", bundle: "top_nine.js", state: {} },
    };
    await drawPage(
      document,
      { models, summary: "no widget state saved in this notebook" },
      async () => {
        throw new Error("<b>boom</b>");
      },
    );
    const text = (el) => el.querySelector(".zf-x-note")?.textContent;
    expect(text(missing)).toBe("widget not drawn: no widget state saved in this notebook");
    expect(text(foreign)).toContain("another library");
    expect(cyclic.textContent).toContain("inside itself");
    expect(cyclic.textContent).toContain("not a widget reference");
    expect(bad.querySelector(".zf-x-label")?.textContent).toBe("[object Object]");
    expect(text(broken)).toBe("TopNine: could not be drawn (<b>boom</b>)");
    expect(broken.querySelector("b")).toBeNull();
    expect(text(noid)).toContain("widget not drawn");
    for (const v of [missing, foreign, cyclic, bad, broken, noid])
      expect(v.dataset.drawn).toBe("true");
  });

  it("survives a page with no state at all", async () => {
    const [v] = views("x");
    await drawPage(document, null, async () => ({}));
    expect(v.textContent).toContain("widget not drawn");
  });
});

describe("safeHTML", () => {
  it("keeps allowlisted tags and safe attributes only", () => {
    const out = safeHTML(
      '<table class="zf-c" style="color:#666;font-size:12px"><tr><td colspan="2" onclick="x()">1</td>' +
        '<td style="background:url(http://x)">2</td></tr></table><style>*{}</style><form action="x">t</form>',
    );
    expect(out.querySelector("table")?.getAttribute("style")).toBe("color:#666;font-size:12px");
    expect(out.querySelector("td")?.getAttribute("colspan")).toBe("2");
    expect(out.querySelector("td")?.hasAttribute("onclick")).toBe(false);
    expect(out.querySelectorAll("td")[1].hasAttribute("style")).toBe(false);
    expect(out.querySelector("style, form")).toBeNull();
    expect(out.textContent).toContain("t");
  });
});

describe("plotly figures", () => {
  it("are drawn by the plotly global from the inlined script, with the saved data", async () => {
    const [v] = views("fig");
    const models = {
      fig: {
        kind: "plotly",
        name: "AnyModel",
        label: "FigureWidget",
        bundle: "plotly.min.js",
        state: {
          _widget_data: [{ y: [1, 2], name: EVIL }],
          _widget_layout: { title: "t" },
          _config: {},
        },
      },
    };
    const calls = [];
    const Plotly = {
      newPlot: (el, data, layout, config) => {
        calls.push({ data, layout, config });
        el.append(document.createTextNode(data[0].name));
      },
    };
    await drawPage(
      document,
      { models },
      async () => ({}),
      async (name, global) => {
        calls.push(`${name} ${global}`);
        return Plotly;
      },
    );
    expect(calls[0]).toBe("plotly.min.js Plotly");
    expect(calls[1].data[0].name).toBe(EVIL);
    expect(calls[1].config.displaylogo).toBe(false);
    expect(v.querySelector(".zf-x-plotly")?.textContent).toBe(EVIL);
    expect(v.querySelector("img")).toBeNull();
  });
});
