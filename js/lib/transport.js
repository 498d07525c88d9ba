// Front ends that drop binary buffers (Colab's widget manager, googlecolab/colab-cdn-widget-
// manager #33): every widget entry is wrapped in `noBuffersFallback`, which hands `render` a
// model whose `get` reads a trait holding a payload without bytes as empty (what a widget
// shows before its first frame) and tells the kernel once, with the custom message
// {type: "zf-no-buffers"}. The kernel (zfwidgets/widgets/_base.py) then re-sends that
// widget's payloads inline as base64 ({b64, dtype, shape}, decoded by codec.js), and the
// change event draws them: no user action, no other code path in the widgets.

import { missingBytes } from "./codec.js";

/** The custom message the kernel's ZFWidget listens for. */
export const NO_BUFFERS = "zf-no-buffers";

/** Models that already reported (several views may share one model). */
const reported = new WeakSet();

/**
 * The model a widget's render sees: `get` of a trait whose payloads arrived without bytes
 * returns an empty value of the same kind ([] or {}) and reports it to the kernel once.
 *
 * @param {any} model  anywidget's model
 * @returns {any}
 */
export function bufferless(model) {
  /** @param {string} name */
  function get(name) {
    const value = model.get(name);
    if (!missingBytes(value)) return value;
    if (!reported.has(model)) {
      reported.add(model);
      model.send({ type: NO_BUFFERS });
    }
    return Array.isArray(value) ? [] : {};
  }
  return new Proxy(model, {
    get(target, prop) {
      if (prop === "get") return get;
      const v = Reflect.get(target, prop);
      return typeof v === "function" ? v.bind(target) : v;
    },
  });
}

/**
 * A widget entry (`{render}`) whose render gets the model of `bufferless`.
 *
 * @template {{render: (ctx: {model: any, el: HTMLElement}) => any}} W
 * @param {W} widget
 * @returns {W}
 */
export function noBuffersFallback(widget) {
  return {
    ...widget,
    render: (ctx) => widget.render({ ...ctx, model: bufferless(ctx.model) }),
  };
}
