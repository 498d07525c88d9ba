// Test doubles shared by the widget tests.

/**
 * A stand-in for anywidget's model: get/set/save_changes/on/off, and `emit` for tests.
 * @param {Record<string, any>} state
 */
export function fakeModel(state) {
  /** @type {Map<string, Set<() => void>>} */
  const handlers = new Map();
  const saved = [];
  /** custom messages the widget sent to the kernel */
  const sent = [];
  return {
    get: (k) => state[k],
    set: (k, v) => {
      state[k] = v;
    },
    save_changes: () => saved.push({ ...state }),
    send: (content) => sent.push(content),
    on: (name, cb) => {
      if (!handlers.has(name)) handlers.set(name, new Set());
      handlers.get(name).add(cb);
    },
    off: (name, cb) => handlers.get(name)?.delete(cb),
    emit: (name) => {
      for (const cb of handlers.get(name) ?? []) cb();
    },
    listeners: () => [...handlers.values()].reduce((n, s) => n + s.size, 0),
    saved,
    sent,
  };
}

/** A payload as the widget manager delivers it: a DataView at a non-zero offset. */
export function payload(array, dtype, shape) {
  const bytes = new Uint8Array(array.buffer, array.byteOffset, array.byteLength);
  const message = new Uint8Array(bytes.length + 8);
  message.set(bytes, 8);
  return { view: new DataView(message.buffer, 8, bytes.length), dtype, shape };
}

/** The inline form of a payload (base/codec.py `to_base64`): its bytes as base64 text. */
export function inline(p) {
  const { view, ...rest } = p;
  const bytes = new Uint8Array(view.buffer, view.byteOffset, view.byteLength);
  return { ...rest, b64: Buffer.from(bytes).toString("base64") };
}

/** A payload as a front end that drops binary buffers delivers it: no bytes at all. */
export function stripped(p) {
  const { view, ...rest } = p;
  return rest;
}
