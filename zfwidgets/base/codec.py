"""The one place tensors become browser payloads (and payloads become arrays again).

A payload is a small dict ``{"view": memoryview, "dtype": str, "shape": list[int]}``: raw
little-endian bytes in C order, sent by ipywidgets as a binary buffer (no base64, no JSON
number lists) and decoded in the browser by ``js/lib/codec.js``. Use payloads as trait
values (or nested inside a ``Dict`` trait): the widget manager lifts every ``memoryview`` out
of the JSON state into a binary message part.

:func:`pack` encodes several tensors with one device-to-host transfer: their bytes are
concatenated on the model's device, copied once, and split into views on the host.

:func:`encode_image` / :func:`decode_image` are the other form a browser reads: a uint8 image
as PNG or WebP file bytes (what a stored atlas keeps on disk and a static page shows with an
``<img>``), decoded back with the format and pixel count checked before any pixel is read.

**Front ends without binary buffers.** Colab's widget manager (and any front end that drops
the ``buffers`` of comm messages) never delivers a payload's ``view``. For those, a payload
travels inline instead: ``{"b64": str, "dtype", "shape"}``, the same bytes as base64 text in
the JSON state (:func:`to_base64`; ``js/lib/codec.js`` decodes both forms). Which form a
widget sends is the *transport* (:func:`set_transport`, or the ``ZFWIDGETS_TRANSPORT``
environment variable): ``"auto"`` (default) sends buffers except under Colab or after the front
end reported that it dropped them; ``"base64"`` always inlines; ``"buffers"`` never does.
"""

from __future__ import annotations

import base64
import math
import os
import sys
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

__all__ = [
    "DTYPES",
    "IMAGE_FORMATS",
    "TRANSPORTS",
    "Payload",
    "decode",
    "decode_image",
    "encode",
    "encode_image",
    "get_transport",
    "inline_payloads",
    "is_payload",
    "pack",
    "set_transport",
    "to_base64",
]

#: A ``{"view": memoryview, "dtype": str, "shape": list[int]}`` dict (or, inline, with a
#: base64 ``"b64": str`` in place of the view).
Payload = dict[str, Any]

#: dtype names understood by ``js/lib/codec.js`` (each has a JS typed array).
DTYPES: dict[str, np.dtype] = {
    "uint8": np.dtype("<u1"),
    "int8": np.dtype("<i1"),
    "uint16": np.dtype("<u2"),
    "int16": np.dtype("<i2"),
    "uint32": np.dtype("<u4"),
    "int32": np.dtype("<i4"),
    "float32": np.dtype("<f4"),
    "float64": np.dtype("<f8"),
}

_TORCH: dict[torch.dtype, str] = {
    torch.uint8: "uint8",
    torch.int8: "int8",
    torch.int16: "int16",
    torch.int32: "int32",
    torch.float32: "float32",
    torch.float64: "float64",
}
for _name in ("uint16", "uint32"):  # torch >= 2.3
    if hasattr(torch, _name):
        _TORCH[getattr(torch, _name)] = _name

if sys.byteorder != "little":  # pragma: no cover - every platform torch ships for
    raise ImportError("zfwidgets.base.codec assumes a little-endian host")


def _as_tensor(name: str, value: object) -> torch.Tensor:
    """A tensor of a dtype the browser can read (bool -> uint8, half -> float32, int64 ->
    int32 when the values fit)."""
    if isinstance(value, np.ndarray):
        if value.dtype.byteorder == ">":
            value = value.astype(value.dtype.newbyteorder("<"))
        value = torch.from_numpy(np.ascontiguousarray(value))
    if not isinstance(value, torch.Tensor):
        raise TypeError(
            f"{name}: expected a torch.Tensor or numpy.ndarray, got {type(value).__name__}"
        )
    t = value.detach()
    if t.is_complex():
        raise TypeError(f"{name}: complex tensors cannot be sent to the browser ({t.dtype})")
    if t.dtype == torch.bool:
        t = t.to(torch.uint8)
    elif t.dtype in (torch.float16, torch.bfloat16):
        t = t.to(torch.float32)
    elif t.dtype == torch.int64:
        if t.numel() and (int(t.min()) < -(2**31) or int(t.max()) >= 2**31):
            raise ValueError(f"{name}: int64 values outside the int32 range cannot be sent")
        t = t.to(torch.int32)
    if t.dtype not in _TORCH:
        raise TypeError(f"{name}: unsupported dtype {t.dtype}; supported: {sorted(DTYPES)}")
    return t.contiguous()


def pack(arrays: Mapping[str, torch.Tensor | np.ndarray]) -> dict[str, Payload]:
    """Encode several arrays as payloads with one device-to-host copy per device.

    Parameters
    ----------
    arrays : mapping of name -> Tensor or ndarray
        Any shape. ``bool`` becomes uint8, float16/bfloat16 become float32, int64 becomes
        int32 (values must fit); other dtypes must be one of :data:`DTYPES`.

    Returns
    -------
    dict of name -> payload
        ``{"view": memoryview, "dtype": str, "shape": list[int]}`` per input, in order.
        The views share one host buffer per device.
    """
    tensors = {name: _as_tensor(name, value) for name, value in arrays.items()}
    by_device: dict[torch.device, list[str]] = {}
    for name, t in tensors.items():
        by_device.setdefault(t.device, []).append(name)
    out: dict[str, Payload] = {}
    for names in by_device.values():
        parts = [tensors[n].reshape(-1).view(torch.uint8) for n in names]
        # cat copies (also for one part, so the payload never aliases the caller's tensor)
        host = torch.cat(parts).cpu()
        buffer = memoryview(host.numpy())
        offset = 0
        for n, part in zip(names, parts):
            size = part.numel()
            t = tensors[n]
            out[n] = {
                "view": buffer[offset : offset + size],
                "dtype": _TORCH[t.dtype],
                "shape": list(t.shape),
            }
            offset += size
    return {name: out[name] for name in tensors}


def encode(array: torch.Tensor | np.ndarray) -> Payload:
    """Encode one array as a payload (see :func:`pack`)."""
    return pack({"array": array})["array"]


def is_payload(value: object) -> bool:
    """Whether ``value`` looks like a payload (a dict with dtype, shape and a view or b64)."""
    return (
        isinstance(value, Mapping)
        and {"dtype", "shape"} <= set(value)
        and ("view" in value or "b64" in value)
    )


def decode(payload: Mapping[str, Any]) -> np.ndarray:
    """The numpy array of a payload (read-only view of its bytes; no copy).

    Accepts what :func:`pack` returns, what a front end sends (``view`` as ``bytes``,
    ``bytearray`` or ``memoryview``) and the inline form of :func:`to_base64` (``b64``: its
    length is checked against dtype and shape before any byte is decoded; decoding copies).

    Raises
    ------
    ValueError
        For an unknown dtype, a bad shape, or a byte count that does not match the shape.
    """
    if not is_payload(payload):
        raise ValueError("payload: expected a dict with 'dtype', 'shape' and 'view' or 'b64'")
    dtype = payload["dtype"]
    if dtype not in DTYPES:
        raise ValueError(f"payload: unsupported dtype {dtype!r}; supported: {sorted(DTYPES)}")
    shape = payload["shape"]
    if not isinstance(shape, (list, tuple)) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise ValueError(f"payload: expected a shape of non-negative ints, got {shape!r}")
    want = math.prod(shape) * DTYPES[dtype].itemsize
    if "view" not in payload:
        raw = memoryview(_from_base64(payload["b64"], want, dtype, shape))
    else:
        view = payload["view"]
        if not isinstance(view, (bytes, bytearray, memoryview)):
            raise ValueError(f"payload: expected bytes or memoryview, got {type(view).__name__}")
        raw = memoryview(view).cast("B")
    if raw.nbytes != want:
        raise ValueError(
            f"payload: {raw.nbytes} bytes do not hold {dtype} of shape {list(shape)} ({want} bytes)"
        )
    return np.frombuffer(raw, dtype=DTYPES[dtype]).reshape(shape)


def _from_base64(text: object, want: int, dtype: str, shape: list[int]) -> bytes:
    """The bytes of an inline payload, its length checked against ``want`` first."""
    if not isinstance(text, str):
        raise ValueError(f"payload: expected 'b64' to be a str, got {type(text).__name__}")
    if len(text) != 4 * -(-want // 3):
        raise ValueError(
            f"payload: {len(text)} base64 characters do not hold {dtype} of shape "
            f"{list(shape)} ({want} bytes = {4 * -(-want // 3)} characters)"
        )
    try:
        return base64.b64decode(text, validate=True)
    except ValueError as e:  # binascii.Error
        raise ValueError(f"payload: 'b64' is not valid base64 ({e})") from e


def to_base64(state: object) -> Any:
    """``state`` with every payload's ``view`` replaced by its bytes as base64 text.

    The inline form for front ends that drop binary buffers: ``{"b64": str, "dtype",
    "shape"}``, decoded by ``js/lib/codec.js`` (and :func:`decode`) like a view. Dicts and
    lists are copied only where they hold a payload; everything else is returned as it is.

    Parameters
    ----------
    state : dict, list or any value
        A widget's state (trait name -> JSON value), or any part of it.

    Returns
    -------
    The same structure, JSON-serialisable where ``state`` was apart from its views.
    """
    if isinstance(state, Mapping):
        if "view" in state and is_payload(state):
            out = {k: v for k, v in state.items() if k != "view"}
            out["b64"] = base64.b64encode(memoryview(state["view"]).cast("B")).decode("ascii")
            return out
        items = {k: to_base64(v) for k, v in state.items()}
        return items if any(items[k] is not v for k, v in state.items()) else state
    if isinstance(state, (list, tuple)):
        seq = [to_base64(v) for v in state]
        return seq if any(a is not b for a, b in zip(seq, state)) else state
    return state


# -- transport: how payloads travel to the front end ---------------------------------------
#: The transports of :func:`set_transport`.
TRANSPORTS = ("auto", "buffers", "base64")

#: Environment variable read when :func:`set_transport` was not called.
TRANSPORT_ENV = "ZFWIDGETS_TRANSPORT"

_transport: str | None = None


def set_transport(transport: str | None) -> None:
    """Choose how widgets send images and maps to the front end.

    Parameters
    ----------
    transport : {"auto", "buffers", "base64"} or None
        ``"auto"`` (the default): binary buffers, except in Colab (``google.colab`` imported)
        and for a widget whose front end reported that it received no buffers (that widget
        then re-sends its state inline). ``"base64"``: always inline, as base64 text in the
        JSON state (about 4/3 the bytes; for front ends that drop buffers and cannot report
        it). ``"buffers"``: always binary buffers. ``None`` goes back to the
        ``ZFWIDGETS_TRANSPORT`` environment variable (default ``"auto"``).

        Applies to every state a widget sends from then on; a widget already shown keeps
        what it has until its next update.
    """
    global _transport
    if transport is not None and transport not in TRANSPORTS:
        raise ValueError(f"transport: expected one of {list(TRANSPORTS)}, got {transport!r}")
    _transport = transport


def get_transport() -> str:
    """The transport in force: :func:`set_transport`'s, else ``ZFWIDGETS_TRANSPORT``'s, else
    ``"auto"``."""
    if _transport is not None:
        return _transport
    value = os.environ.get(TRANSPORT_ENV, "").strip().lower() or "auto"
    if value not in TRANSPORTS:
        raise ValueError(
            f"{TRANSPORT_ENV}: expected one of {list(TRANSPORTS)}, got "
            f"{os.environ[TRANSPORT_ENV]!r}"
        )
    return value


def inline_payloads(reported: bool = False) -> bool:
    """Whether a widget should send its payloads inline (:func:`to_base64`).

    Parameters
    ----------
    reported : bool
        The widget's front end reported that it received no binary buffers.
    """
    transport = get_transport()
    if transport == "auto":
        return reported or "google.colab" in sys.modules
    return transport == "base64"


#: Image file formats of :func:`encode_image` (name -> MIME type).
IMAGE_FORMATS: dict[str, str] = {"png": "image/png", "webp": "image/webp"}


def encode_image(
    image: torch.Tensor | np.ndarray, format: str = "png", *, quality: int | None = None
) -> bytes:
    """A uint8 image as PNG or WebP file bytes.

    Parameters
    ----------
    image : Tensor or ndarray (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), uint8
        Grey, RGB or RGBA (any device; copied to the host).
    format : {"png", "webp"}
        PNG is lossless; WebP is lossy (at most 16383 pixels a side).
    quality : int, optional
        WebP only: 1-100 (default 85). Ignored for PNG.

    Returns
    -------
    bytes
    """
    import io

    from PIL import Image

    if format not in IMAGE_FORMATS:
        raise ValueError(f"format: expected one of {sorted(IMAGE_FORMATS)}, got {format!r}")
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8:
        raise TypeError(
            f"image: expected a uint8 tensor or array, got {getattr(image, 'dtype', type(image).__name__)}"
        )
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)):
        raise ValueError(f"image: expected (H, W), (H, W, 3) or (H, W, 4), got {image.shape}")
    if image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"image: expected a non-empty image, got {image.shape}")
    pil = Image.fromarray(np.ascontiguousarray(image))

    buf = io.BytesIO()
    if format == "png":
        pil.save(buf, format="PNG", compress_level=6)
    else:
        q = 85 if quality is None else quality
        if isinstance(q, bool) or not isinstance(q, int) or not 1 <= q <= 100:
            raise ValueError(f"quality: expected an int in [1, 100], got {quality!r}")
        if max(image.shape[:2]) > 16383:
            raise ValueError(
                f"image: WebP holds at most 16383 pixels a side, got {image.shape[:2]}"
            )
        pil.save(buf, format="WEBP", quality=q, method=4)
    return buf.getvalue()


def decode_image(
    data: bytes | bytearray | memoryview,
    *,
    formats: tuple[str, ...] = ("png", "webp"),
    size: tuple[int, int] | None = None,
    max_pixels: int = 1 << 26,
) -> np.ndarray:
    """Decode PNG or WebP bytes (from :func:`encode_image`) to a uint8 array.

    The header is read first: a format outside ``formats``, a size other than ``size``
    (``(H, W)``, when given) or more than ``max_pixels`` pixels raise ``ValueError`` before
    any pixel is decoded.

    Returns
    -------
    ndarray (H, W) for grey, (H, W, 3) for RGB, (H, W, 4) for RGBA; uint8.
    """
    import io

    from PIL import Image, UnidentifiedImageError

    allowed = {f.upper() for f in formats}
    try:
        with Image.open(io.BytesIO(bytes(data)), formats=sorted(allowed)) as im:
            w, h = im.size
            if size is not None and (h, w) != tuple(size):
                raise ValueError(f"image: expected size (H, W) = {tuple(size)}, got {(h, w)}")
            if h * w > max_pixels:
                raise ValueError(f"image: {h}x{w} pixels is more than the limit {max_pixels}")
            if im.mode not in ("L", "RGB", "RGBA"):
                im = im.convert("RGBA" if "A" in im.getbands() else "RGB")
            im.load()
            return np.asarray(im).copy()
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise ValueError(f"image: not a readable {'/'.join(sorted(allowed))} image ({e})") from e
