"""zfwidgets.base.codec: tensors -> {view, dtype, shape} payloads and back."""

from __future__ import annotations

import base64
import json
import sys
import types

import numpy as np
import pytest
import torch
from ipywidgets.widgets.widget import _remove_buffers

from zfwidgets.base.codec import (
    DTYPES,
    decode,
    encode,
    get_transport,
    inline_payloads,
    is_payload,
    pack,
    set_transport,
    to_base64,
)

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
    with pytest.raises(ValueError, match="'dtype', 'shape' and 'view' or 'b64'"):
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


# -- inline (base64) payloads, for front ends that drop binary buffers ------------------------
@pytest.mark.parametrize("dtype", TORCH_DTYPES)
@pytest.mark.parametrize("shape", [(), (0,), (1,), (2,), (3,), (2, 3), (4, 5, 4)])
def test_base64_round_trip(dtype, shape):
    g = torch.Generator().manual_seed(1)
    x = (torch.rand(shape, generator=g) * 100).to(dtype)
    p = encode(x)
    b = to_base64(p)
    assert set(b) == {"b64", "dtype", "shape"} and "view" in p  # the original is untouched
    assert isinstance(b["b64"], str) and is_payload(b)
    np.testing.assert_array_equal(decode(b), x.numpy())
    assert json.loads(json.dumps(b)) == b


def test_base64_state_copies_only_what_holds_payloads():
    p = encode(torch.arange(6, dtype=torch.float32))
    plain = {"name": "x", "values": [1, 2]}
    state = {"frame": {"atlas": p, "layer": "conv1"}, "views": [{"map": p}, "x"], "plain": plain}
    out = to_base64(state)
    assert out["plain"] is plain and state["frame"]["atlas"] is p
    assert out["frame"]["layer"] == "conv1" and out["views"][1] == "x"
    np.testing.assert_array_equal(decode(out["views"][0]["map"]), np.arange(6, dtype="f4"))
    # nothing left for ipywidgets to lift into binary buffers
    _, paths, buffers = _remove_buffers(out)
    assert paths == [] and buffers == []
    assert to_base64(plain) is plain and to_base64(7) == 7


def test_base64_bad_payloads_are_refused_before_decoding():
    ok = base64.b64encode(np.array([1.0, 256.0], "<f4").tobytes()).decode()
    assert ok == "AACAPwAAgEM="  # the same bytes js/test/codec.test.js reads
    with pytest.raises(
        ValueError, match=r"12 base64 characters do not hold float32 of shape \[3\]"
    ):
        decode({"b64": ok, "dtype": "float32", "shape": [3]})
    with pytest.raises(ValueError, match="unsupported dtype"):
        decode({"b64": ok, "dtype": "int64", "shape": [1]})
    with pytest.raises(ValueError, match="do not hold"):
        decode({"b64": ok, "dtype": "uint8", "shape": [2**40, 2**40]})  # no overflow, no alloc
    with pytest.raises(ValueError, match="not valid base64"):
        decode({"b64": "AAC*PwAAgEM=", "dtype": "float32", "shape": [2]})
    with pytest.raises(ValueError, match="to be a str"):
        decode({"b64": b"AACAPwAAgEM=", "dtype": "float32", "shape": [2]})
    with pytest.raises(ValueError, match="shape of non-negative ints"):
        decode({"b64": ok, "dtype": "float32", "shape": [-2]})


def test_transport_switch(monkeypatch):
    monkeypatch.delenv("ZFWIDGETS_TRANSPORT", raising=False)
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    assert get_transport() == "auto"
    assert not inline_payloads() and inline_payloads(reported=True)
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    assert inline_payloads()  # Colab: automatic
    monkeypatch.setenv("ZFWIDGETS_TRANSPORT", "buffers")
    assert get_transport() == "buffers" and not inline_payloads(reported=True)
    monkeypatch.setenv("ZFWIDGETS_TRANSPORT", "Base64")
    assert get_transport() == "base64"
    monkeypatch.setenv("ZFWIDGETS_TRANSPORT", "json")
    with pytest.raises(ValueError, match=r"ZFWIDGETS_TRANSPORT: expected one of .* got 'json'"):
        get_transport()
    try:
        set_transport("buffers")  # the call wins over the variable
        assert get_transport() == "buffers"
        with pytest.raises(ValueError, match="transport: expected one of"):
            set_transport("b64")
        assert get_transport() == "buffers"
    finally:
        set_transport(None)
