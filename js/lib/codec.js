// The one decoder of everything zfwidgets/base/codec.py sends: {view, dtype, shape} payloads.
//
// A payload's `view` arrives from the widget manager as a DataView (often into a larger
// message buffer, at any byte offset), or as an ArrayBuffer / typed array in tests.
// Little-endian, C order, no JSON number lists.
//
// Front ends that drop binary buffers (Colab) get the inline form instead: {b64, dtype,
// shape}, the same bytes as base64 text in the JSON state (base/codec.py `to_base64`). Its
// length is checked against dtype and shape before a byte is decoded, and each payload object
// is decoded once (cached by identity).

/**
 * @typedef {Uint8Array | Uint8ClampedArray | Int8Array | Uint16Array | Int16Array
 *   | Uint32Array | Int32Array | Float32Array | Float64Array} NumericArray
 */

/**
 * @typedef {object} Payload
 * @property {DataView | ArrayBuffer | ArrayBufferView} [view]  the raw bytes
 * @property {string} [b64]  or the same bytes as base64 text (front ends without buffers)
 * @property {string} dtype  one of the keys of DTYPES
 * @property {number[]} shape  C-order shape; the product is the element count
 */

/**
 * @typedef {object} Decoded
 * @property {NumericArray} data  a typed array over the bytes (a copy only when misaligned)
 * @property {number[]} shape
 * @property {string} dtype
 */

/** Typed-array constructor of every dtype the Python codec may send. */
export const DTYPES = Object.freeze({
  uint8: Uint8Array,
  int8: Int8Array,
  uint16: Uint16Array,
  int16: Int16Array,
  uint32: Uint32Array,
  int32: Int32Array,
  float32: Float32Array,
  float64: Float64Array,
});

/**
 * Number of elements of a shape (1 for a scalar shape []).
 * @param {number[]} shape
 * @returns {number}
 */
export function numel(shape) {
  let n = 1;
  for (const d of shape) {
    if (!Number.isInteger(d) || d < 0) {
      throw new Error(`codec: bad shape ${JSON.stringify(shape)}`);
    }
    n *= d;
  }
  if (!Number.isSafeInteger(n)) {
    throw new Error(`codec: shape ${JSON.stringify(shape)} is too large`);
  }
  return n;
}

/** Bytes decoded from each inline payload object, so a redraw does not decode again. */
const inlineBytes = new WeakMap();

/**
 * The bytes of an inline payload's base64 text, its length checked first.
 * @param {unknown} b64
 * @param {number} want  bytes that dtype and shape call for
 * @param {string} what  dtype and shape, for messages
 * @returns {Uint8Array}
 */
function fromBase64(b64, want, what) {
  if (typeof b64 !== "string") {
    throw new Error(`codec: expected b64 to be a string, got ${typeof b64}`);
  }
  const chars = 4 * Math.ceil(want / 3);
  if (b64.length !== chars) {
    throw new Error(
      `codec: ${b64.length} base64 characters do not hold ${what} (${want} bytes = ${chars} characters)`,
    );
  }
  /** @type {Uint8Array} */
  let bytes;
  // Uint8Array.fromBase64 (Chromium 140+, Firefox 133+, Safari 18.2+) decodes natively
  const native = /** @type {any} */ (Uint8Array).fromBase64;
  try {
    if (typeof native === "function") {
      bytes = native(b64);
    } else {
      const text = atob(b64);
      bytes = new Uint8Array(text.length);
      for (let i = 0; i < text.length; i++) bytes[i] = text.charCodeAt(i);
    }
  } catch {
    throw new Error(`codec: b64 of ${what} is not valid base64`);
  }
  if (bytes.length !== want) {
    throw new Error(`codec: b64 holds ${bytes.length} bytes, ${what} needs ${want}`);
  }
  return bytes;
}

/**
 * Whether `value` (a trait value: payload, or dicts / lists holding payloads) has a payload
 * whose bytes did not arrive: a front end that drops the binary buffers of comm messages
 * delivers the dtype and shape without the view.
 * @param {unknown} value
 * @param {number} [depth]
 * @returns {boolean}
 */
export function missingBytes(value, depth = 0) {
  if (!value || typeof value !== "object" || depth > 4) return false;
  if (Array.isArray(value)) return value.some((v) => missingBytes(v, depth + 1));
  if (ArrayBuffer.isView(value) || value instanceof ArrayBuffer) return false;
  const o = /** @type {Record<string, unknown>} */ (value);
  if (typeof o.dtype === "string" && Array.isArray(o.shape) && o.dtype in DTYPES) {
    return o.view == null && o.b64 == null;
  }
  return Object.values(o).some((v) => missingBytes(v, depth + 1));
}

/**
 * The bytes of a payload's view as {buffer, byteOffset, byteLength}.
 * @param {DataView | ArrayBuffer | ArrayBufferView} view
 * @returns {{buffer: ArrayBufferLike, byteOffset: number, byteLength: number}}
 */
function bytesOf(view) {
  if (view instanceof ArrayBuffer) {
    return { buffer: view, byteOffset: 0, byteLength: view.byteLength };
  }
  if (ArrayBuffer.isView(view)) {
    return { buffer: view.buffer, byteOffset: view.byteOffset, byteLength: view.byteLength };
  }
  throw new Error(`codec: expected a DataView, ArrayBuffer or typed array, got ${typeof view}`);
}

/**
 * Decode a payload into a typed array of its dtype.
 *
 * @param {Payload} payload
 * @returns {Decoded}
 */
export function decode(payload) {
  if (!payload || typeof payload !== "object") {
    throw new Error("codec: expected a {view, dtype, shape} payload");
  }
  const { view, dtype, shape } = payload;
  const Ctor = DTYPES[/** @type {keyof typeof DTYPES} */ (dtype)];
  if (!Ctor) {
    throw new Error(`codec: unsupported dtype ${JSON.stringify(dtype)}`);
  }
  if (!Array.isArray(shape)) {
    throw new Error("codec: payload has no shape");
  }
  const n = numel(shape);
  const size = Ctor.BYTES_PER_ELEMENT;
  if (view == null && "b64" in payload) {
    let bytes = inlineBytes.get(payload);
    if (!bytes) {
      bytes = fromBase64(payload.b64, n * size, `${dtype} of shape [${shape.join(", ")}]`);
      inlineBytes.set(payload, bytes);
    }
    return { data: new Ctor(bytes.buffer, 0, n), shape: [...shape], dtype };
  }
  if (view == null) {
    throw new Error(
      `codec: the ${dtype} payload of shape [${shape.join(", ")}] arrived without its bytes (binary buffers dropped by the front end?)`,
    );
  }
  const { buffer, byteOffset, byteLength } = bytesOf(view);
  if (byteLength !== n * size) {
    throw new Error(
      `codec: ${byteLength} bytes do not hold ${dtype} of shape [${shape.join(", ")}] (${n * size} bytes)`,
    );
  }
  if (byteOffset % size === 0) {
    return { data: new Ctor(buffer, byteOffset, n), shape: [...shape], dtype };
  }
  // Misaligned inside the message buffer: copy the bytes out once.
  const copy = new Uint8Array(byteLength);
  copy.set(new Uint8Array(buffer, byteOffset, byteLength));
  return { data: new Ctor(copy.buffer, 0, n), shape: [...shape], dtype };
}

/**
 * The bytes of a uint8 payload as a Uint8ClampedArray (no copy), for `new ImageData`.
 *
 * @param {Payload} payload  dtype uint8, shape (H, W, 4)
 * @returns {{pixels: Uint8ClampedArray, width: number, height: number}}
 */
export function decodeRGBA(payload) {
  const { data, shape } = decode(payload);
  if (payload.dtype !== "uint8" || shape.length !== 3 || shape[2] !== 4) {
    throw new Error(
      `codec: expected a uint8 (H, W, 4) RGBA image, got ${payload.dtype} [${shape.join(", ")}]`,
    );
  }
  const pixels = new Uint8ClampedArray(data.buffer, data.byteOffset, data.byteLength);
  return { pixels, width: shape[1], height: shape[0] };
}

/**
 * Encode a typed array as a payload (the front end -> Python direction; a DataView is what
 * the widget manager sends as a binary buffer).
 *
 * @param {NumericArray} array
 * @param {number[]} [shape]  default: [array.length]
 * @returns {{view: DataView, dtype: string, shape: number[]}}
 */
export function encode(array, shape) {
  const entry = Object.entries(DTYPES).find(([, C]) => array instanceof C);
  const dtype = array instanceof Uint8ClampedArray ? "uint8" : entry?.[0];
  if (!dtype) {
    throw new Error("codec: expected a typed array of a supported dtype");
  }
  const s = shape ?? [array.length];
  if (numel(s) !== array.length) {
    throw new Error(`codec: shape [${s.join(", ")}] does not match ${array.length} elements`);
  }
  return { view: new DataView(array.buffer, array.byteOffset, array.byteLength), dtype, shape: s };
}
