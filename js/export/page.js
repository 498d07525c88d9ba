// The exported notebook page's runtime (zfwidgets.export; README "Sharing a notebook").
//
// The page holds, as JSON, the widgets' saved state (checked and cut down by
// zfwidgets/export/state.py) and the text of our widget bundles. This script draws every
// widget view of the notebook from that state with no kernel and no network:
//
// - a zfwidgets widget with the same bundle (its anywidget `render({model, el})`) the live
//   widget uses, given a read-only model: `get`, `on`, `off` work on the saved state; `set`,
//   `save_changes`, `send` change nothing and show "needs a running kernel" in the widget,
//   except for the traits a front end draws by itself from data already in the state
//   (LOCAL: the occlusion map's view and opacity);
// - core ipywidgets (boxes, labels, HTML, images, simple controls) as plain DOM, read-only;
// - anything else as a one-line note.
//
// Nothing from the state is executed or parsed as HTML except an HTML widget's value, which is
// parsed inertly and copied through an allowlist of tags and attributes.

/** What a widget shows when it is asked for something only the kernel can compute. */
export const KERNEL = "needs a running kernel";

/** Traits each bundle's front end draws by itself from the saved state (no kernel needed). */
export const LOCAL = {
  "occlusion_map.js": new Set(["view", "opacity"]),
};

/** Nesting deeper than this is not drawn (a damaged or hostile tree). */
const MAX_DEPTH = 32;

/**
 * @param {string} tag
 * @param {string} [className]
 * @param {string} [text]
 * @returns {HTMLElement}
 */
function h(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

/**
 * A one-line note in place of what cannot be drawn (text, never HTML).
 * @param {string} text
 * @returns {HTMLElement}
 */
export function note(text) {
  const n = h("div", "zf-x-note", text);
  n.setAttribute("role", "note");
  return n;
}

/**
 * Base64 text as a DataView over new bytes.
 * @param {string} text
 * @returns {DataView}
 */
export function base64View(text) {
  const bin = atob(text);
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  return new DataView(bytes.buffer);
}

/**
 * Put each buffer (base64) into `state` at its path as a DataView, as the widget manager does.
 * @param {Record<string, any>} state
 * @param {{path: (string|number)[], data: string}[]} buffers
 */
export function putBuffers(state, buffers) {
  for (const { path, data } of buffers ?? []) {
    /** @type {any} */
    let node = state;
    for (const key of path.slice(0, -1)) node = node[key];
    node[path[path.length - 1]] = base64View(data);
  }
}

/**
 * The model a bundle's `render` gets: the saved state, read-only.
 *
 * `set` of a LOCAL trait changes it and fires `change:<name>` as a live model does; any other
 * `set` (and `save_changes` after it, and `send`) changes nothing: `onKernel` is called (the
 * widget shows the note) and `change:<name>` fires with the saved value, then for every other
 * trait, so a control the user moved, and a view that marked itself as waiting, show the saved
 * state again.
 */
export class StaticModel {
  /**
   * @param {Record<string, any>} state
   * @param {{local?: Set<string>, onKernel?: () => void}} [options]
   */
  constructor(state, { local = new Set(), onKernel = () => {} } = {}) {
    this.state = state;
    this.local = local;
    this.onKernel = onKernel;
    /** @type {Map<string, Set<Function>>} */
    this.handlers = new Map();
    /** @type {Set<string>} */
    this.refused = new Set();
    this.resyncing = false;
  }

  /** @param {string} key */
  get(key) {
    return this.state[key];
  }

  /**
   * @param {string} key
   * @param {any} value
   */
  set(key, value) {
    if (this.resyncing) return;
    if (this.local.has(key)) {
      if (this.state[key] === value) return;
      this.state[key] = value;
      this.emit(`change:${key}`);
      return;
    }
    this.refused.add(key);
  }

  save_changes() {
    if (!this.refused.size) return;
    const keys = [...this.refused];
    this.refused.clear();
    this.onKernel();
    // then every trait: a front end that marked itself waiting for the kernel's answer (a
    // "computing…" state) redraws the saved state and is no longer waiting
    const rest = Object.keys(this.state).filter((k) => !keys.includes(k));
    queueMicrotask(() => {
      this.resyncing = true;
      try {
        for (const key of [...keys, ...rest]) this.emit(`change:${key}`);
        this.emit("change");
      } finally {
        this.resyncing = false;
      }
    });
  }

  send() {
    this.onKernel();
  }

  /**
   * @param {string} name
   * @param {Function} cb
   */
  on(name, cb) {
    if (!this.handlers.has(name)) this.handlers.set(name, new Set());
    this.handlers.get(name)?.add(cb);
  }

  /**
   * @param {string} [name]
   * @param {Function} [cb]
   */
  off(name, cb) {
    if (name === undefined) this.handlers.clear();
    else if (cb === undefined) this.handlers.delete(name);
    else this.handlers.get(name)?.delete(cb);
  }

  /** @param {string} name */
  emit(name) {
    for (const cb of [...(this.handlers.get(name) ?? [])]) cb();
  }

  /** The number of listeners registered (tests check a cleanup removes them all). */
  listeners() {
    let n = 0;
    for (const s of this.handlers.values()) n += s.size;
    return n;
  }
}

/**
 * A note in a widget's box, hidden until the user asks for something that needs the kernel.
 * @param {HTMLElement} box
 * @returns {() => void} show it
 */
function kernelNote(box) {
  const n = h("div", "zf-x-kernel", `${KERNEL}: this is an exported page`);
  n.setAttribute("role", "status");
  n.hidden = true;
  box.prepend(n);
  return () => {
    n.hidden = false;
  };
}

// ---------------------------------------------------------------------------------------------
// The page: the state, the bundles, the views.

/**
 * @typedef {{kind?: string, name?: string, label?: string, bundle?: string, note?: string,
 *   state?: Record<string, any>, buffers?: {path: any[], data: string}[]}} Entry
 * @typedef {{models: Record<string, Entry>, summary?: string,
 *   load: (name: string) => Promise<any>,
 *   loadScript: (name: string, global: string) => Promise<any>}} Page
 */

/**
 * The module of a bundle, from its text in the page, by a blob: URL (no network).
 * @param {Record<string, string>} bundles
 * @returns {(name: string) => Promise<any>}
 */
export function bundleLoader(bundles) {
  /** @type {Map<string, Promise<any>>} */
  const cache = new Map();
  return (name) => {
    let p = cache.get(name);
    if (!p) {
      const text = bundles[name];
      if (typeof text !== "string") return Promise.reject(new Error(`no bundle ${name}`));
      const url = URL.createObjectURL(new Blob([text], { type: "text/javascript" }));
      p = import(/* @vite-ignore */ url);
      cache.set(name, p);
    }
    return p;
  };
}

/**
 * A classic (UMD) script from its text in the page, by a blob: URL; the global it defines.
 * @param {Record<string, string>} bundles
 * @returns {(name: string, global: string) => Promise<any>}
 */
export function scriptLoader(bundles) {
  /** @type {Map<string, Promise<any>>} */
  const cache = new Map();
  return (name, global) => {
    let p = cache.get(name);
    if (!p) {
      const text = bundles[name];
      if (typeof text !== "string") return Promise.reject(new Error(`no bundle ${name}`));
      p = new Promise((resolve, reject) => {
        const script = document.createElement("script");
        script.src = URL.createObjectURL(new Blob([text], { type: "text/javascript" }));
        script.onload = () => resolve(/** @type {any} */ (window)[global]);
        script.onerror = () => reject(new Error(`${name} did not load`));
        document.head.append(script);
      });
      cache.set(name, p);
    }
    return p;
  };
}

/**
 * @param {any} value
 * @returns {string | null} the model id an "IPY_MODEL_<id>" reference names
 */
function ref(value) {
  return typeof value === "string" && value.startsWith("IPY_MODEL_") ? value.slice(10) : null;
}

/**
 * @param {any} value
 * @returns {string}
 */
function str(value) {
  return typeof value === "string" ? value : value == null ? "" : String(value);
}

/**
 * Draw the widget `id` into `el`.
 * @param {Page} page
 * @param {string} id
 * @param {HTMLElement} el
 * @param {string[]} [path] the ids above (a widget inside itself is refused)
 * @returns {Promise<void>}
 */
export async function drawModel(page, id, el, path = []) {
  const entry = Object.hasOwn(page.models, id) ? page.models[id] : undefined;
  if (!entry) {
    el.append(
      note(`widget not drawn: ${page.summary || "its state is not saved in the notebook"}`),
    );
    return;
  }
  if (entry.note) {
    el.append(note(`widget not drawn: ${entry.note}`));
    return;
  }
  if (path.includes(id) || path.length >= MAX_DEPTH) {
    el.append(note(`${entry.label}: widget not drawn (nested too deep, or inside itself)`));
    return;
  }
  try {
    if (entry.kind === "zf") await drawOurs(page, entry, el);
    else if (entry.kind === "plotly") await drawPlotly(page, entry, el);
    else await drawCore(page, entry, el, [...path, id]);
  } catch (e) {
    el.append(note(`${entry.label}: could not be drawn (${str(/** @type {any} */ (e)?.message)})`));
  }
}

/**
 * A zfwidgets widget, by its own bundle's render on a read-only model.
 * @param {Page} page
 * @param {Entry} entry
 * @param {HTMLElement} el
 */
async function drawOurs(page, entry, el) {
  const box = h("div", "zf-x-widget");
  el.append(box);
  const state = JSON.parse(JSON.stringify(entry.state ?? {}));
  putBuffers(state, entry.buffers ?? []);
  const showKernel = kernelNote(box);
  const model = new StaticModel(state, {
    local: LOCAL[/** @type {string} */ (entry.bundle)] ?? new Set(),
    onKernel: showKernel,
  });
  const mod = await page.load(/** @type {string} */ (entry.bundle));
  let widget = mod.default;
  if (typeof widget === "function") widget = await widget();
  const experimental = {
    invoke: () => {
      showKernel();
      return Promise.reject(new Error(KERNEL));
    },
  };
  const view = h("div");
  box.append(view);
  await widget.initialize?.({ model, experimental });
  await widget.render({ model, el: view, experimental });
}

/**
 * A plotly FigureWidget, by plotly.js (inlined from the plotly package) from its saved data,
 * layout and config: hover and zoom work; nothing goes back to a kernel.
 * @param {Page} page
 * @param {Entry} entry
 * @param {HTMLElement} el
 */
async function drawPlotly(page, entry, el) {
  const s = entry.state ?? {};
  const box = h("div", "zf-x-widget zf-x-plotly");
  decorate(page, s, box);
  el.append(box);
  const Plotly = await page.loadScript(/** @type {string} */ (entry.bundle), "Plotly");
  const data = Array.isArray(s._widget_data) ? s._widget_data : [];
  const layout = s._widget_layout && typeof s._widget_layout === "object" ? s._widget_layout : {};
  const config = s._config && typeof s._config === "object" ? s._config : {};
  await Plotly.newPlot(box, data, layout, { ...config, displaylogo: false, showLink: false });
}

// ---------------------------------------------------------------------------------------------
// Core ipywidgets, read-only.

/** Layout traits copied to CSS (values checked by SAFE_CSS). */
const LAYOUT = [
  "width",
  "height",
  "min_width",
  "max_width",
  "min_height",
  "max_height",
  "margin",
  "padding",
  "display",
  "flex",
  "flex_flow",
  "justify_content",
  "justify_items",
  "align_items",
  "align_content",
  "align_self",
  "grid_gap",
  "grid_template_columns",
  "grid_template_rows",
  "grid_template_areas",
  "grid_area",
  "grid_row",
  "grid_column",
  "overflow",
  "visibility",
  "order",
  "border_top",
  "border_right",
  "border_bottom",
  "border_left",
];
const SAFE_CSS = /^[-\w\s.,%#()"'/]*$/;
const SAFE_CLASS = /^[A-Za-z_][-\w]*$/;

/**
 * @param {string} name
 * @param {any} value
 * @returns {boolean}
 */
function safeCss(name, value) {
  return (
    typeof value === "string" &&
    value.length < 200 &&
    SAFE_CSS.test(value) &&
    !/url|expression|image|import|\\/i.test(value) &&
    (name !== "grid_template_areas" || !/[()]/.test(value))
  );
}

/**
 * Apply a model's layout, classes and tooltip to its element.
 * @param {Page} page
 * @param {Record<string, any>} s
 * @param {HTMLElement} node
 */
function decorate(page, s, node) {
  const layoutId = ref(s.layout);
  const layout = layoutId && Object.hasOwn(page.models, layoutId) ? page.models[layoutId] : null;
  if (layout?.name === "LayoutModel" && layout.state) {
    for (const key of LAYOUT) {
      const v = layout.state[key];
      if (v != null && safeCss(key, v)) {
        const prop = key === "grid_gap" ? "gap" : key.replaceAll("_", "-");
        if (key === "flex_flow") node.style.setProperty("flex-flow", v);
        else node.style.setProperty(prop, v);
      }
    }
  }
  if (Array.isArray(s._dom_classes)) {
    for (const c of s._dom_classes)
      if (typeof c === "string" && SAFE_CLASS.test(c)) node.classList.add(c);
  }
  if (typeof s.tooltip === "string" && s.tooltip) node.title = s.tooltip;
}

/**
 * A control that cannot act without the kernel: on use it shows the saved value again and
 * the note.
 * @param {HTMLElement} wrap
 * @param {HTMLElement} control
 * @param {() => void} restore
 * @param {string[]} events
 */
function readOnly(wrap, control, restore, events) {
  const show = kernelNote(wrap);
  for (const type of events) {
    control.addEventListener(type, (event) => {
      if (type === "click" || type === "keydown") {
        if (
          type === "keydown" &&
          !["Enter", " "].includes(/** @type {KeyboardEvent} */ (event).key)
        )
          return;
        event.preventDefault();
      }
      restore();
      show();
    });
  }
}

/**
 * @param {Record<string, any>} s
 * @param {HTMLElement} wrap
 */
function described(s, wrap) {
  const d = str(s.description);
  if (d) wrap.append(h("span", "zf-x-description", d));
}

/** @type {Record<string, string>} */
const IMAGE_TYPES = {
  png: "image/png",
  jpeg: "image/jpeg",
  jpg: "image/jpeg",
  gif: "image/gif",
  webp: "image/webp",
};

/**
 * @param {Page} page
 * @param {Entry} entry
 * @param {HTMLElement} el
 * @param {string[]} path
 */
async function drawCore(page, entry, el, path) {
  const s = entry.state ?? {};
  const name = /** @type {string} */ (entry.name);
  const label = entry.label ?? name;
  if (name === "LayoutModel") return;
  const wrap = h("div", `zf-x zf-x-${label.toLowerCase()}`);
  el.append(wrap);
  decorate(page, s, wrap);
  const children = Array.isArray(s.children) ? s.children : [];
  const drawChild = async (/** @type {any} */ c, /** @type {HTMLElement} */ into) => {
    const id = ref(c);
    if (id) await drawModel(page, id, into, path);
    else into.append(note("widget not drawn: a child that is not a widget reference"));
  };
  switch (name) {
    case "VBoxModel":
    case "HBoxModel":
    case "BoxModel":
    case "GridBoxModel":
      wrap.classList.add("zf-x-box");
      for (const c of children) await drawChild(c, wrap);
      return;
    case "AccordionModel":
    case "TabModel":
    case "StackModel": {
      const titles = Array.isArray(s.titles) ? s.titles : [];
      for (const [i, c] of children.entries()) {
        const details = /** @type {HTMLDetailsElement} */ (h("details", "zf-x-panel"));
        details.open = s.selected_index === i || name === "StackModel";
        details.append(h("summary", "", str(titles[i]) || `${i + 1}`));
        if (name === "StackModel" && s.selected_index !== i) continue;
        const body = h("div", "zf-x-panel-body");
        details.append(body);
        wrap.append(details);
        await drawChild(c, body);
        if (!body.textContent && !body.querySelector("canvas, img")) {
          const empty = note(`empty in the saved state: filling it ${KERNEL}`);
          empty.classList.add("zf-x-empty");
          body.append(empty);
        }
      }
      return;
    }
    case "LabelModel":
      described(s, wrap);
      wrap.append(h("span", "zf-x-label", str(s.value)));
      return;
    case "HTMLModel":
    case "HTMLMathModel":
      described(s, wrap);
      wrap.append(safeHTML(str(s.value)));
      return;
    case "ImageModel": {
      const type = IMAGE_TYPES[str(s.format).toLowerCase()];
      if (!type || !(s.value instanceof DataView)) {
        wrap.append(note(`${label}: not drawn (format ${str(s.format).slice(0, 20)})`));
        return;
      }
      const img = /** @type {HTMLImageElement} */ (h("img", "zf-x-image"));
      img.src = URL.createObjectURL(new Blob([s.value], { type }));
      for (const k of ["width", "height"]) {
        const v = str(s[k]);
        if (/^\d{1,5}(px|%)?$/.test(v)) img.setAttribute(k, v);
      }
      wrap.append(img);
      return;
    }
    default:
      drawControl(s, name, wrap);
  }
}

/**
 * @param {Record<string, any>} s
 * @param {string} name
 * @param {HTMLElement} wrap
 */
function drawControl(s, name, wrap) {
  wrap.classList.add("zf-x-control");
  const labels = Array.isArray(s._options_labels) ? s._options_labels.map(str) : [];
  if (["DropdownModel", "SelectModel", "RadioButtonsModel"].includes(name)) {
    described(s, wrap);
    const select = /** @type {HTMLSelectElement} */ (h("select", "zf-x-select"));
    for (const [i, l] of labels.entries()) {
      const o = /** @type {HTMLOptionElement} */ (h("option", "", l));
      o.value = String(i);
      select.append(o);
    }
    const restore = () => {
      select.value = String(s.index ?? "");
    };
    restore();
    wrap.append(select);
    readOnly(wrap, select, restore, ["change"]);
    return;
  }
  if (name === "ToggleButtonsModel") {
    described(s, wrap);
    const group = h("span", "zf-x-toggles");
    group.setAttribute("role", "group");
    const buttons = labels.map((l, i) => {
      const b = /** @type {HTMLButtonElement} */ (h("button", "zf-x-toggle", l));
      b.type = "button";
      b.setAttribute("aria-pressed", String(s.index === i));
      group.append(b);
      return b;
    });
    wrap.append(group);
    for (const b of buttons) readOnly(wrap, b, () => {}, ["click"]);
    return;
  }
  if (/Slider|Progress|Text/.test(name)) {
    described(s, wrap);
    const shown =
      name === "SelectionSliderModel"
        ? str(labels[s.index])
        : Array.isArray(s.value)
          ? s.value.map(str).join(" – ")
          : str(s.value);
    if (/Progress/.test(name)) {
      const bar = h("progress", "zf-x-input");
      bar.setAttribute("max", str(s.max ?? 100));
      bar.setAttribute("value", shown);
      wrap.append(bar);
      return;
    }
    const input = /** @type {HTMLInputElement} */ (
      h(name === "TextareaModel" ? "textarea" : "input", "zf-x-input")
    );
    const range = /Slider/.test(name) && typeof s.value === "number";
    if (range) {
      input.type = "range";
      for (const k of ["min", "max", "step"]) {
        if (typeof s[k] === "number") input.setAttribute(k, String(s[k]));
      }
    }
    input.value = range ? String(s.value) : shown;
    const saved = input.value;
    wrap.append(input);
    if (/Slider/.test(name)) wrap.append(h("span", "zf-x-readout", shown));
    readOnly(
      wrap,
      input,
      () => {
        input.value = saved;
      },
      ["input", "change"],
    );
    return;
  }
  if (["ButtonModel", "ToggleButtonModel", "FileUploadModel", "PlayModel"].includes(name)) {
    const text =
      name === "PlayModel"
        ? "▶"
        : str(s.description) || (name === "FileUploadModel" ? "upload" : "");
    const b = /** @type {HTMLButtonElement} */ (h("button", "zf-x-button", text));
    b.type = "button";
    if (name === "ToggleButtonModel") b.setAttribute("aria-pressed", String(Boolean(s.value)));
    wrap.append(b);
    readOnly(wrap, b, () => {}, ["click"]);
    return;
  }
  if (name === "CheckboxModel") {
    const box = /** @type {HTMLInputElement} */ (h("input", "zf-x-checkbox"));
    box.type = "checkbox";
    box.checked = Boolean(s.value);
    const lab = h("label", "zf-x-description");
    lab.append(box, document.createTextNode(str(s.description)));
    wrap.append(lab);
    readOnly(
      wrap,
      box,
      () => {
        box.checked = Boolean(s.value);
      },
      ["change"],
    );
    return;
  }
  wrap.append(note(`${name}: not drawn in an exported page`));
}

// ---------------------------------------------------------------------------------------------
// HTML widgets' values: parsed inertly, copied through an allowlist.

const TAGS = new Set(
  "b i em strong small sub sup u s code pre kbd br hr p div span ul ol li dl dt dd table caption thead tbody tfoot tr th td h1 h2 h3 h4 h5 h6 blockquote".split(
    " ",
  ),
);
const ATTRS = new Set(["class", "title", "colspan", "rowspan", "style"]);

/**
 * An HTML widget's value as DOM: allowlisted tags and attributes; everything else as text.
 * @param {string} html
 * @returns {HTMLElement}
 */
export function safeHTML(html) {
  const out = h("span", "zf-x-html");
  const doc = new DOMParser().parseFromString(`<body>${html}</body>`, "text/html");
  /**
   * @param {Node} from
   * @param {Node} to
   * @param {number} depth
   */
  const copy = (from, to, depth) => {
    for (const child of Array.from(from.childNodes)) {
      if (child.nodeType === 3) {
        to.appendChild(document.createTextNode(child.textContent ?? ""));
      } else if (child.nodeType === 1 && depth < MAX_DEPTH) {
        const tag = /** @type {Element} */ (child).tagName.toLowerCase();
        if (!TAGS.has(tag)) {
          if (tag !== "script" && tag !== "style") copy(child, to, depth + 1);
          continue;
        }
        const node = document.createElement(tag);
        for (const attr of Array.from(/** @type {Element} */ (child).attributes)) {
          const n = attr.name.toLowerCase();
          if (!ATTRS.has(n)) continue;
          const v = attr.value;
          if (
            n === "style" &&
            (!SAFE_CSS.test(v.replaceAll(/[:;]/g, "")) || /url|expression|image|import|\\/i.test(v))
          )
            continue;
          if ((n === "colspan" || n === "rowspan") && !/^\d{1,3}$/.test(v)) continue;
          node.setAttribute(n, v);
        }
        to.appendChild(node);
        copy(child, node, depth + 1);
      }
    }
  };
  copy(doc.body, out, 0);
  return out;
}

// ---------------------------------------------------------------------------------------------

/**
 * @param {string} id
 * @returns {any}
 */
function readJSON(id) {
  const node = document.getElementById(id);
  if (!node) return null;
  try {
    return JSON.parse(node.textContent ?? "");
  } catch {
    return null;
  }
}

/**
 * Draw every widget view on the page (`.zf-export-view[data-model-id]`).
 * @param {Document} doc
 * @param {{models?: Record<string, Entry>, summary?: string} | null} data
 * @param {(name: string) => Promise<any>} load
 * @param {(name: string, global: string) => Promise<any>} [loadScript]
 * @returns {Promise<void>}
 */
export async function drawPage(
  doc,
  data,
  load,
  loadScript = () => Promise.reject(new Error("no loader")),
) {
  const page = {
    models: data?.models && typeof data.models === "object" ? data.models : {},
    summary: typeof data?.summary === "string" ? data.summary : "",
    load,
    loadScript,
  };
  const views = Array.from(doc.querySelectorAll(".zf-export-view[data-model-id]"));
  await Promise.all(
    views.map(async (view) => {
      const el = /** @type {HTMLElement} */ (view);
      const fallback = el.querySelector(".zf-export-fallback");
      const box = h("div", "zf-export-drawn");
      el.append(box);
      await drawModel(page, el.dataset.modelId ?? "", box);
      fallback?.remove();
      el.dataset.drawn = "true";
    }),
  );
  doc.documentElement.dataset.zfExport = "drawn";
}

if (typeof document !== "undefined" && document.getElementById("zf-export-state")) {
  const bundles = readJSON("zf-export-bundles") ?? {};
  const start = () =>
    drawPage(document, readJSON("zf-export-state"), bundleLoader(bundles), scriptLoader(bundles));
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
}
