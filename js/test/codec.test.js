import { describe, expect, it } from "vitest";
import { DTYPES, decode, decodeRGBA, encode, numel } from "../lib/codec.js";

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
});
