// The small DOM and number-format helpers every widget's front end shares.

/**
 * Create an element with a class and, optionally, text (always as text, never as HTML).
 * @param {string} tag
 * @param {string} [className]
 * @param {string} [text]
 * @returns {HTMLElement}
 */
export function h(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

/**
 * Fill a <select> with options (text set as text, never parsed as HTML).
 * @param {HTMLSelectElement} select
 * @param {string[]} values
 * @param {string} current
 * @param {(v: string) => string} [label]
 */
export function setOptions(select, values, current, label = (v) => v) {
  const options = values.map((v) => {
    const o = /** @type {HTMLOptionElement} */ (h("option"));
    o.value = v;
    o.textContent = label(v);
    return o;
  });
  select.replaceChildren(...options);
  select.value = current;
}

/**
 * A control with its name before it.
 * @param {string} text
 * @param {HTMLElement} control
 * @returns {HTMLElement}
 */
export function labelled(text, control) {
  const label = h("label", "zf-field");
  label.append(h("span", "zf-field-name", text), control);
  return label;
}

/**
 * Subscribe to model events and return one function that unsubscribes them all.
 * @param {{on: Function, off: Function}} model
 * @param {Record<string, () => void>} handlers  event name -> callback
 * @returns {() => void}
 */
export function listen(model, handlers) {
  for (const [name, cb] of Object.entries(handlers)) model.on(name, cb);
  return () => {
    for (const [name, cb] of Object.entries(handlers)) model.off(name, cb);
  };
}

/**
 * Call `fn` when `element` changes size (no-op where ResizeObserver is missing).
 * @param {Element} element
 * @param {() => void} fn
 * @returns {() => void} disconnect
 */
export function onResize(element, fn) {
  if (typeof ResizeObserver === "undefined") return () => {};
  let last = -1;
  const observer = new ResizeObserver((entries) => {
    const w = Math.round(entries[0]?.contentRect.width ?? 0);
    if (w !== last) {
      last = w;
      fn();
    }
  });
  observer.observe(element);
  return () => observer.disconnect();
}

/**
 * A number for people: 4 significant digits, no trailing zeros.
 * @param {number} v
 * @returns {string}
 */
export function fmt(v) {
  if (!Number.isFinite(v)) return String(v);
  if (v !== 0 && (Math.abs(v) >= 1e5 || Math.abs(v) < 1e-3)) return v.toExponential(2);
  return String(Number(v.toPrecision(4)));
}

/**
 * A number for a colour-bar label or a tooltip: 3 significant digits, exponent when tiny.
 * @param {number} v
 * @returns {string}
 */
export function fmtValue(v) {
  if (!Number.isFinite(v)) return String(v);
  if (v === 0) return "0";
  const a = Math.abs(v);
  if (a >= 1e5 || a < 1e-3) return v.toExponential(2);
  return String(Number(v.toPrecision(3)));
}

/**
 * A probability as a percentage for people: one decimal, an exponent below 0.01 %.
 * @param {number} p
 * @returns {string}
 */
export function fmtPercent(p) {
  if (!Number.isFinite(p)) return String(p);
  const v = p * 100;
  if (v !== 0 && Math.abs(v) < 0.01) return `${v.toExponential(1)}%`;
  if (Math.abs(v) < 1) return `${Number(v.toPrecision(2))}%`;
  return `${v.toFixed(1)}%`;
}
