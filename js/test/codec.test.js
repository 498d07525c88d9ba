import { describe, expect, it } from "vitest";
import { DTYPES, decode, decodeRGBA, encode, missingBytes, numel } from "../lib/codec.js";
import { inline, stripped } from "./fakes.js";

describe("codec", () => {
  it("decodes every dtype from a DataView without copying when aligned", () => {
    for (const [dtype, Ctor] of Object.entries(DTYPES)) {
      const src = new Ctor([1, 2, 3, 4, 5, 6]);
      const payload = { view: new DataView(src.buffer), dtype, shape: [2, 3] };
      const { data, shape } = decode(payload);
      expect(data).toBeInstanceOf(Ctor);
      expect(Array.from(data)).toEqual([1, 2, 3, 4, 5, 6]);
      expect(shape).toEqual([2, 3]);
      expect(data.buffer).toBe(src.buffer);
    }
  });

  it("copies a float32 view that starts at an odd byte offset (a message buffer)", () => {
    const values = new Float32Array([1.5, -2.25, 3e-7]);
    const message = new Uint8Array(3 + values.byteLength);
    message.set(new Uint8Array(values.buffer), 3);
    const view = new DataView(message.buffer, 3, values.byteLength);
    const { data } = decode({ view, dtype: "float32", shape: [3] });
    expect(Array.from(data)).toEqual(Array.from(values));
    expect(data.buffer).not.toBe(message.buffer);
  });

  it("reads little-endian bytes as written by numpy", () => {
    // numpy: np.array([1.0, 256.0], "<f4").tobytes()
    const bytes = new Uint8Array([0, 0, 128, 63, 0, 0, 128, 67]);
    const { data } = decode({ view: new DataView(bytes.buffer), dtype: "float32", shape: [2] });
    expect(Array.from(data)).toEqual([1, 256]);
  });

  it("round-trips through encode", () => {
    const src = new Int16Array([-3, 7, 1000, -32768]);
    const payload = encode(src, [2, 2]);
    expect(payload.dtype).toBe("int16");
    expect(payload.view).toBeInstanceOf(DataView);
    const { data, shape } = decode(payload);
    expect(Array.from(data)).toEqual([-3, 7, 1000, -32768]);
    expect(shape).toEqual([2, 2]);
    expect(encode(new Uint8ClampedArray([1, 2])).dtype).toBe("uint8");
  });

  it("gives RGBA pixels for ImageData", () => {
    const bytes = new Uint8Array(2 * 3 * 4).map((_, i) => i);
    const rgba = decodeRGBA({ view: new DataView(bytes.buffer), dtype: "uint8", shape: [2, 3, 4] });
    expect(rgba.width).toBe(3);
    expect(rgba.height).toBe(2);
    expect(rgba.pixels).toBeInstanceOf(Uint8ClampedArray);
    expect(rgba.pixels[23]).toBe(23);
  });

  it("rejects what it cannot read", () => {
    const view = new DataView(new ArrayBuffer(8));
    expect(() => decode({ view, dtype: "int64", shape: [1] })).toThrow(/unsupported dtype/);
    expect(() => decode({ view, dtype: "float32", shape: [3] })).toThrow(/do not hold/);
    expect(() => decode({ view, dtype: "uint8", shape: [-8] })).toThrow(/bad shape/);
    expect(() => decode(null)).toThrow(/payload/);
    expect(() => decodeRGBA({ view, dtype: "uint8", shape: [2, 4] })).toThrow(/RGBA/);
    expect(() => encode(new Uint8Array(4), [3])).toThrow(/does not match/);
    expect(numel([])).toBe(1);
    expect(numel([2, 0, 5])).toBe(0);
  });

  it("decodes the inline base64 form to the same values as the view, for every dtype", () => {
    for (const Ctor of Object.values(DTYPES)) {
      for (const values of [[], [1], [1, 2], [1, 2, 3], [1, 2, 3, 4, 5, 6, 7]]) {
        const p = encode(new Ctor(values));
        const b = inline(p);
        expect(b.view).toBeUndefined();
        const viaView = decode(p);
        const viaB64 = decode(b);
        expect(viaB64.data).toBeInstanceOf(Ctor);
        expect(Array.from(viaB64.data)).toEqual(Array.from(viaView.data));
        expect(viaB64.shape).toEqual(viaView.shape);
      }
    }
    const rgba = new Uint8Array(2 * 3 * 4).map((_, i) => 7 * i);
    const viaB64 = decodeRGBA(inline(encode(rgba, [2, 3, 4])));
    expect([viaB64.width, viaB64.height]).toEqual([3, 2]);
    expect(Array.from(viaB64.pixels)).toEqual(Array.from(rgba));
  });

  it("reads base64 written by Python (base/codec.py to_base64)", () => {
    // base64.b64encode(np.array([1.0, 256.0], "<f4").tobytes())
    expect(Array.from(decode({ b64: "AACAPwAAgEM=", dtype: "float32", shape: [2] }).data)).toEqual([
      1, 256,
    ]);
    const int16 = decode({ b64: "/f8HAOgDAIA=", dtype: "int16", shape: [2, 2] });
    expect(Array.from(int16.data)).toEqual([-3, 7, 1000, -32768]);
  });

  it("decodes an inline payload once, however often it is drawn", () => {
    const p = { b64: "AACAPwAAgEM=", dtype: "float32", shape: [2] };
    expect(decode(p).data.buffer).toBe(decode(p).data.buffer);
  });

  it("refuses bad inline payloads with a clear error, before decoding", () => {
    const ok = "AACAPwAAgEM="; // 8 bytes
    expect(() => decode({ b64: ok, dtype: "float32", shape: [3] })).toThrow(
      /12 base64 characters do not hold float32 of shape \[3\] \(12 bytes = 16 characters\)/,
    );
    expect(() => decode({ b64: `${ok}AAAA`, dtype: "float32", shape: [2] })).toThrow(
      /16 base64 characters do not hold/,
    );
    expect(() => decode({ b64: ok, dtype: "int64", shape: [1] })).toThrow(/unsupported dtype/);
    expect(() => decode({ b64: ok, dtype: "complex64", shape: [1] })).toThrow(/unsupported dtype/);
    expect(() => decode({ b64: ok, dtype: "float32", shape: [1e9, 1e9] })).toThrow(/too large/);
    expect(() => decode({ b64: ok, dtype: "uint8", shape: [2 ** 40] })).toThrow(/do not hold/);
    expect(() => decode({ b64: ok, dtype: "uint8", shape: [2.5] })).toThrow(/bad shape/);
    expect(() => decode({ b64: "AAC*PwAAgEM=", dtype: "float32", shape: [2] })).toThrow(
      /not valid base64/,
    );
    // right length in characters, but the padding says fewer bytes
    expect(() => decode({ b64: "AACAPwAAgE==", dtype: "float32", shape: [2] })).toThrow(
      /holds 7 bytes/,
    );
    expect(() => decode({ b64: 8, dtype: "uint8", shape: [8] })).toThrow(/b64 to be a string/);
    expect(() => decode({ dtype: "uint8", shape: [8] })).toThrow(/without its bytes/);
  });

  it("finds payloads whose bytes did not arrive", () => {
    const p = encode(new Float32Array([1, 2]));
    expect(missingBytes(p)).toBe(false);
    expect(missingBytes(inline(p))).toBe(false);
    expect(missingBytes(stripped(p))).toBe(true);
    expect(missingBytes({ layer: "x", atlas: stripped(p) })).toBe(true);
    expect(
      missingBytes([
        { name: "a", map: p },
        { name: "b", map: stripped(p) },
      ]),
    ).toBe(true);
    expect(missingBytes({ layer: "x", atlas: p, shape: [2], dtype: "nonsense" })).toBe(false);
    expect(missingBytes({})).toBe(false);
    expect(missingBytes(["a", 1, null])).toBe(false);
  });

  it("uses Uint8Array.fromBase64 where the browser has it, with the same checks", () => {
    const original = Uint8Array.fromBase64;
    const calls = [];
    // a stand-in with the native function's contract: throws SyntaxError on a bad character
    Uint8Array.fromBase64 = (s) => {
      calls.push(s);
      if (!/^[A-Za-z0-9+/\s]*={0,2}$/.test(s)) throw new SyntaxError("bad base64");
      return new Uint8Array(Buffer.from(s, "base64"));
    };
    try {
      const p = { b64: "AACAPwAAgEM=", dtype: "float32", shape: [2] };
      expect(Array.from(decode(p).data)).toEqual([1, 256]);
      expect(calls).toEqual(["AACAPwAAgEM="]);
      expect(() => decode({ b64: "AAC*PwAAgEM=", dtype: "float32", shape: [2] })).toThrow(
        /not valid base64/,
      );
      expect(() => decode({ b64: "AACAPwAAgE==", dtype: "float32", shape: [2] })).toThrow(
        /holds 7 bytes/,
      );
    } finally {
      if (original) Uint8Array.fromBase64 = original;
      else delete Uint8Array.fromBase64;
    }
  });
});
