"""zfwidgets.base.codec: tensors -> {view, dtype, shape} payloads and back."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from ipywidgets.widgets.widget import _remove_buffers

from zfwidgets.base.codec import DTYPES, decode, encode, is_payload, pack

TORCH_DTYPES = [torch.uint8, torch.int8, torch.int16, torch.int32, torch.float32, torch.float64]


@pytest.mark.parametrize("dtype", TORCH_DTYPES)
@pytest.mark.parametrize("shape", [(), (0,), (5,), (2, 3), (4, 5, 4), (2, 0, 3)])
def test_round_trip_tensor(dtype, shape):
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(shape, generator=g) * 50).to(dtype)
    p = encode(x)
    assert set(p) == {"view", "dtype", "shape"}
    assert isinstance(p["view"], memoryview)
    assert p["shape"] == list(shape)
    assert p["dtype"] == str(dtype).removeprefix("torch.")
    back = decode(p)
    assert back.dtype == DTYPES[p["dtype"]]
    np.testing.assert_array_equal(back, x.numpy())


@pytest.mark.parametrize("name", sorted(DTYPES))
def test_round_trip_numpy(name):
    x = np.arange(12, dtype=DTYPES[name]).reshape(3, 4)[:, ::2]  # not contiguous
    back = decode(encode(x))
    np.testing.assert_array_equal(back, x)


def test_conversions():
    assert encode(torch.tensor([True, False]))["dtype"] == "uint8"
    half = encode(torch.tensor([1.5, -2.0], dtype=torch.float16))
    assert half["dtype"] == "float32"
    np.testing.assert_array_equal(decode(half), [1.5, -2.0])
    assert encode(torch.tensor([1.0], dtype=torch.bfloat16))["dtype"] == "float32"
    i64 = encode(torch.tensor([-3, 2**31 - 1]))
    assert i64["dtype"] == "int32"
    np.testing.assert_array_equal(decode(i64), [-3, 2**31 - 1])
    big_endian = np.array([1.0, 256.0], dtype=">f4")
    np.testing.assert_array_equal(decode(encode(big_endian)), [1.0, 256.0])
    # numpy's "<f4" bytes of [1.0, 256.0] (js/test/codec.test.js reads the same bytes)
    assert bytes(encode(np.array([1.0, 256.0], dtype="<f4"))["view"]) == bytes(
        [0, 0, 128, 63, 0, 0, 128, 67]
    )


def test_bad_inputs():
    with pytest.raises(ValueError, match="int32 range"):
        encode(torch.tensor([2**40]))
    with pytest.raises(TypeError, match="complex"):
        encode(torch.zeros(2, dtype=torch.complex64))
    with pytest.raises(TypeError, match="torch.Tensor or numpy"):
        encode([1.0, 2.0])
    good = encode(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="do not hold"):
        decode({**good, "shape": [4, 3]})
    with pytest.raises(ValueError, match="unsupported dtype"):
        decode({**good, "dtype": "int64"})
    with pytest.raises(ValueError, match="shape"):
        decode({**good, "shape": [-6]})
    with pytest.raises(ValueError, match="bytes or memoryview"):
        decode({**good, "view": "AAAA"})
    with pytest.raises(ValueError, match="'view', 'dtype' and 'shape'"):
        decode({"view": b""})


def test_pack_one_buffer_and_no_alias():
    a = torch.arange(24, dtype=torch.uint8).reshape(2, 3, 4)
    b = torch.linspace(0, 1, 5)
    p = pack({"atlas": a, "maxima": b})
    assert list(p) == ["atlas", "maxima"]
    # both views point into one host buffer: one device-to-host transfer
    assert p["atlas"]["view"].obj is p["maxima"]["view"].obj
    a += 1
    b.mul_(2)
    np.testing.assert_array_equal(decode(p["atlas"]), np.arange(24).reshape(2, 3, 4))
    np.testing.assert_allclose(decode(p["maxima"]), np.linspace(0, 1, 5), rtol=1e-6)
    # a float32 view at an odd byte offset of the shared buffer (after 3 uint8 bytes) decodes
    q = pack({"odd": torch.zeros(3, dtype=torch.uint8), "f": torch.tensor([1.25, -2.5])})
    np.testing.assert_array_equal(decode(q["f"]), [1.25, -2.5])


def test_front_end_bytes_and_widget_buffers():
    x = torch.rand(4, 5)
    p = encode(x)
    # as a front end sends it back: plain bytes
    np.testing.assert_array_equal(decode({**p, "view": bytes(p["view"])}), x.numpy())
    assert is_payload(p) and not is_payload({"view": b""})
    # ipywidgets lifts the view out of the JSON state into a binary buffer: no base64, no lists
    state, paths, buffers = _remove_buffers({"frame": {"atlas": p, "layer": "conv1"}})
    assert paths == [["frame", "atlas", "view"]]
    assert buffers[0].nbytes == 4 * 5 * 4
    text = json.dumps(state)
    assert len(text) < 200 and "view" not in text


@pytest.mark.cuda
def test_pack_on_cuda_one_transfer():
    a = torch.randint(0, 255, (8, 8, 4), dtype=torch.uint8, device="cuda")
    b = torch.rand(8, device="cuda")
    p = pack({"a": a, "b": b})
    assert p["a"]["view"].obj is p["b"]["view"].obj
    np.testing.assert_array_equal(decode(p["a"]), a.cpu().numpy())
    np.testing.assert_array_equal(decode(p["b"]), b.cpu().numpy())


# -- image files ------------------------------------------------------------------------------
def test_encode_decode_image_png_is_exact_webp_close():
    from zfwidgets.base.codec import decode_image, encode_image

    rng = np.random.default_rng(0)
    rgb = np.repeat(np.repeat(rng.integers(0, 256, (8, 12, 3), dtype=np.uint8), 4, 0), 4, 1)
    png = encode_image(torch.from_numpy(rgb), "png")
    assert png[:4] == b"\x89PNG"
    np.testing.assert_array_equal(decode_image(png), rgb)
    grey = rgb[:, :, 0]
    np.testing.assert_array_equal(decode_image(encode_image(grey, "png")), grey)
    webp = encode_image(rgb, "webp", quality=95)
    assert webp[8:12] == b"WEBP"
    back = decode_image(webp, size=rgb.shape[:2])
    assert back.shape == rgb.shape and np.abs(back.astype(int) - rgb).mean() < 20


def test_decode_image_checks_the_header_first():
    from zfwidgets.base.codec import decode_image, encode_image

    png = encode_image(np.zeros((10, 20, 3), np.uint8), "png")
    with pytest.raises(ValueError, match=r"expected size \(H, W\) = \(20, 10\)"):
        decode_image(png, size=(20, 10))
    with pytest.raises(ValueError, match="limit"):
        decode_image(png, max_pixels=100)
    with pytest.raises(ValueError, match="not a readable"):
        decode_image(png, formats=("webp",))
    with pytest.raises(ValueError, match="not a readable"):
        decode_image(png[:30])
    with pytest.raises(ValueError, match="format"):
        encode_image(np.zeros((2, 2, 3), np.uint8), "gif")
    with pytest.raises(TypeError, match="uint8"):
        encode_image(np.zeros((2, 2, 3), np.float32))
    with pytest.raises(ValueError, match="quality"):
        encode_image(np.zeros((2, 2, 3), np.uint8), "webp", quality=101)
