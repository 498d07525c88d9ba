"""The on-disk forms of an :class:`~zfwidgets.Atlas` and their validation.

Two forms load:

- **a directory** (written by ``atlas.save("atlas/")``)::

      atlas/
        manifest.json                  # format, k, input size, layers, fields, provenance, images
        tensors-<digest>.safetensors   # "<i>.values" (C, k) f32, "<i>.indices" (C, k) i64,
                                       # "<i>.positions" (C, k, 2) i64, for layer i
        tiles/<i>-<token>/00042.webp   # one sprite per unit (see SpriteLayout), after render()

  Each unit's sprite holds its k reconstructions (left block) and k image patches (right
  block), uint8, so a browser shows one unit with one ``<img>`` request and a 2,048-channel
  layer opens without reading any image. The manifest records, per layer, the tile layout, the
  file format, the backward rule and the display normalisation of both blocks.

- **a single ``.safetensors`` file** (the first format, ``zfwidgets.atlas/1``): the tensors
  plus the JSON metadata in the safetensors header, optionally float16 crops.

Every file is validated before anything sized by it is allocated: one schema check of the
JSON (types, lengths, finite numbers, bounded sizes), then the safetensors headers (shapes and
dtypes, read without the data) against it, then the values (indices and positions in range).
Each failure is a ``ValueError`` that names the field.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..base.codec import IMAGE_FORMATS
from ..base.files import write_atomic
from ..base.images import GridLayout, mosaic_columns
from ..engine.backprop import RULES
from ..engine.featurevis import OBJECTIVES, TRANSFORMS

__all__ = [
    "FORMAT_DIR",
    "FORMAT_FILE",
    "MANIFEST",
    "ImagesRecord",
    "SpriteLayout",
    "UnitImages",
]

FORMAT_FILE = "zfwidgets.atlas/1"
FORMAT_DIR = "zfwidgets.atlas-dir/1"
#: Also read: what the directories written between the package's move into folders and the
#: fix of its format string say (the same format).
FORMATS_DIR_READ = (FORMAT_DIR, "zfwidgets.atlas.core-dir/1")
MANIFEST = "manifest.json"

# Bounds that no real atlas reaches and that keep a hostile file cheap to reject.
MAX_MANIFEST_BYTES = 32 << 20
MAX_PROVENANCE_BYTES = 16 << 20
MAX_SIDE = 1 << 16  # input and output sizes, per axis
MAX_K = 10_000
MAX_LAYERS = 10_000
MAX_CHANNELS = 1 << 20
MAX_NAME = 1_000
MAX_TILE = 4_096
MAX_SPRITE = 16_383  # WebP's limit per side
MAX_CLASSES = 1 << 20

_TILE_DIR = re.compile(r"^tiles/[0-9]{1,6}-[0-9a-f]{8,32}$")
_TENSORS = re.compile(r"^tensors-[0-9a-f]{16,64}\.safetensors$")
_HEX = re.compile(r"^[0-9a-f]{16,64}$")
#: safetensors dtypes accepted for the values (and float16 crops) and for indices/positions.
FLOAT_DTYPES = {"F16", "BF16", "F32", "F64"}
INT_DTYPES = {"I64", "I32"}


def invalid(where: str, msg: str) -> ValueError:
    """The ``ValueError`` every check of a stored atlas raises: ``atlas: <where>: <msg>``."""
    return ValueError(f"atlas: {where}: {msg}")


# -- JSON schema helpers ----------------------------------------------------------------------
def _dict(v: Any, where: str, keys: tuple[str, ...] = ()) -> dict:
    if not isinstance(v, dict):
        raise invalid(where, f"expected an object, got {type(v).__name__}")
    missing = [k for k in keys if k not in v]
    if missing:
        raise invalid(where, f"missing key {missing[0]!r}")
    return v


def _list(v: Any, where: str, lo: int = 0, hi: int = MAX_LAYERS) -> list:
    if not isinstance(v, list):
        raise invalid(where, f"expected a list, got {type(v).__name__}")
    if not lo <= len(v) <= hi:
        raise invalid(where, f"expected {lo} to {hi} entries, got {len(v)}")
    return v


def _int(v: Any, where: str, lo: int, hi: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise invalid(where, f"expected an int, got {type(v).__name__} {_short(v)}")
    if not lo <= v <= hi:
        raise invalid(where, f"expected an int in [{lo}, {hi}], got {v}")
    return v


def _bool(v: Any, where: str) -> bool:
    if not isinstance(v, bool):
        raise invalid(where, f"expected true or false, got {type(v).__name__} {_short(v)}")
    return v


def _str(v: Any, where: str, hi: int = MAX_NAME, pattern: re.Pattern | None = None) -> str:
    if not isinstance(v, str) or not 1 <= len(v) <= hi:
        raise invalid(where, f"expected a string of 1 to {hi} characters, got {_short(v)}")
    if pattern is not None and not pattern.match(v):
        raise invalid(where, f"unexpected value {_short(v)} (expected {pattern.pattern})")
    return v


def _float(v: Any, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise invalid(where, f"expected a finite number, got {_short(v)}")
    return float(v)


def _pair(v: Any, where: str, lo: int, hi: int) -> tuple[int, int]:
    v = _list(v, where, 2, 2)
    return (_int(v[0], f"{where}[0]", lo, hi), _int(v[1], f"{where}[1]", lo, hi))


def _short(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def check_json(value: Any, where: str, *, max_bytes: int, max_depth: int = 16) -> Any:
    """``value`` if it holds only JSON types (finite numbers, string keys), at most
    ``max_depth`` deep and ``max_bytes`` once written; else ``ValueError``."""

    def walk(v: Any, depth: int, path: str) -> None:
        if depth > max_depth:
            raise invalid(path, f"nested deeper than {max_depth} levels")
        if v is None or isinstance(v, (bool, str)):
            return
        if isinstance(v, int):
            return
        if isinstance(v, float):
            if not math.isfinite(v):
                raise invalid(path, f"expected a finite number, got {v}")
            return
        if isinstance(v, (list, tuple)):
            for i, x in enumerate(v):
                walk(x, depth + 1, f"{path}[{i}]")
            return
        if isinstance(v, dict):
            for key, x in v.items():
                if not isinstance(key, str):
                    raise invalid(path, f"expected string keys, got {type(key).__name__}")
                walk(x, depth + 1, f"{path}.{key}")
            return
        raise invalid(path, f"expected JSON types only, got {type(v).__name__}")

    walk(value, 0, where)
    size = len(json.dumps(value, allow_nan=False))
    if size > max_bytes:
        raise invalid(where, f"{size} bytes once written; the limit is {max_bytes}")
    return value


def check_provenance(value: Any, where: str = "provenance") -> dict:
    """A provenance dict (JSON types, at most 16 MiB); ``data.n``, when present, an int >= 1."""
    if value is None:
        return {}
    _dict(value, where)
    check_json(value, where, max_bytes=MAX_PROVENANCE_BYTES)
    data = value.get("data")
    if data is not None:
        _dict(data, f"{where}.data")
        if "n" in data:
            _int(data["n"], f"{where}.data.n", 1, 1 << 50)
    return value


def data_count(provenance: dict) -> int | None:
    data = provenance.get("data")
    if isinstance(data, dict) and isinstance(data.get("n"), int):
        return data["n"]
    return None


# -- receptive fields -------------------------------------------------------------------------
def parse_field(d: Any, where: str, *, layer: str, input_size: tuple[int, int]):
    """A :class:`~zfwidgets.ReceptiveField` from its ``dataclasses.asdict`` form, every number
    bounded and ``rows``/``cols`` as long as the output size claims (so constructing it never
    allocates more than the JSON already holds)."""
    from ..engine.receptive import ReceptiveField

    d = _dict(
        d,
        where,
        ("input_size", "output_size", "stride", "offset", "size", "is_global", "rows", "cols"),
    )
    if d.get("layer", layer) != layer:
        raise invalid(f"{where}.layer", f"expected {layer!r}, got {_short(d.get('layer'))}")
    ins = _pair(d["input_size"], f"{where}.input_size", 1, MAX_SIDE)
    if ins != tuple(input_size):
        raise invalid(f"{where}.input_size", f"expected {list(input_size)}, got {list(ins)}")
    out = _pair(d["output_size"], f"{where}.output_size", 1, MAX_SIDE)
    stride = _pair(d["stride"], f"{where}.stride", 0, MAX_SIDE)
    offset = _pair(d["offset"], f"{where}.offset", -MAX_SIDE, MAX_SIDE)
    size = _pair(d["size"], f"{where}.size", 1, 4 * MAX_SIDE)
    is_global = _bool(d["is_global"], f"{where}.is_global")
    calls = _int(d.get("calls", 1), f"{where}.calls", 0, 1 << 20)
    channels = d.get("channels")
    if channels is not None:
        channels = _int(channels, f"{where}.channels", 1, MAX_CHANNELS)
    bounds = {}
    for name, axis in (("rows", 0), ("cols", 1)):
        v = _list(d[name], f"{where}.{name}", out[axis], out[axis])
        pairs = []
        for i, p in enumerate(v):
            a, b = _pair(p, f"{where}.{name}[{i}]", 0, ins[axis])
            if a > b:
                raise invalid(f"{where}.{name}[{i}]", f"start {a} after end {b}")
            pairs.append((a, b))
        bounds[name] = tuple(pairs)
    return ReceptiveField(
        layer=layer,
        input_size=ins,
        output_size=out,
        stride=stride,
        offset=offset,
        size=size,
        is_global=is_global,
        calls=calls,
        channels=channels,
        rows=bounds["rows"],
        cols=bounds["cols"],
    )


def crop_size(rf, input_size: tuple[int, int]) -> tuple[int, int]:
    return tuple(min(r, s) for r, s in zip(rf.size, input_size))


# -- tiles ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SpriteLayout:
    """Where the k reconstructions and k patches of one unit lie in its sprite.

    Two blocks side by side, ``blocks[0]`` (reconstructions) left, ``blocks[1]`` (patches)
    right, each ``columns`` x ``rows`` tiles of ``tile = (h, w)`` pixels, row-major, no padding:
    :func:`zfwidgets.base.images.pair_mosaic` with ``pad=0, gap=0``, each block on the
    :class:`~zfwidgets.base.images.GridLayout` :attr:`grid`.
    Hit ``j`` of block ``b`` is at ``x = b * columns * w + (j % columns) * w``,
    ``y = (j // columns) * h``. ``width = 2 * columns * w``, ``height = rows * h``.
    """

    k: int
    columns: int
    tile: tuple[int, int]
    blocks: tuple[str, str] = ("reconstructions", "patches")

    @property
    def grid(self) -> GridLayout:
        """The geometry of one block (both alike)."""
        return GridLayout(self.k, self.columns, self.tile[0], self.tile[1], pad=0)

    @property
    def rows(self) -> int:
        return self.grid.rows

    @property
    def width(self) -> int:
        return 2 * self.grid.width

    @property
    def height(self) -> int:
        return self.grid.height

    def rect(self, block: str, j: int) -> tuple[int, int, int, int]:
        """``(x, y, w, h)`` of hit ``j`` of ``block`` ("reconstructions" or "patches")."""
        b = self.blocks.index(block)
        if not 0 <= j < self.k:
            raise IndexError(f"hit {j} out of range [0, {self.k})")
        x, y, w, h = self.grid.rect(j)
        return (b * self.grid.width + x, y, w, h)

    @classmethod
    def for_tiles(cls, k: int, tile: tuple[int, int]) -> SpriteLayout:
        return cls(k=k, columns=mosaic_columns(k), tile=(int(tile[0]), int(tile[1])))

    def to_json(self) -> dict:
        return {
            "kind": "unit-sprite",
            "blocks": list(self.blocks),
            "k": self.k,
            "columns": self.columns,
            "rows": self.rows,
            "tile": list(self.tile),
            "width": self.width,
            "height": self.height,
        }

    @classmethod
    def from_json(cls, d: Any, where: str, *, k: int) -> SpriteLayout:
        """The layout of a manifest's ``layout`` object, validated; its ``k`` (the hits a
        sprite shows) at most the atlas's ``k``."""
        d = _dict(d, where, ("kind", "blocks", "k", "columns", "rows", "tile", "width", "height"))
        if d["kind"] != "unit-sprite":
            raise invalid(f"{where}.kind", f"expected 'unit-sprite', got {_short(d['kind'])}")
        if d["blocks"] != ["reconstructions", "patches"]:
            raise invalid(
                f"{where}.blocks",
                f"expected ['reconstructions', 'patches'], got {_short(d['blocks'])}",
            )
        # a sprite holds the unit's strongest hits: all k, or the first ``top`` rendered
        top = _int(d["k"], f"{where}.k", 1, k)
        layout = cls(
            k=top,
            columns=_int(d["columns"], f"{where}.columns", 1, top),
            tile=_pair(d["tile"], f"{where}.tile", 1, MAX_TILE),
        )
        for key in ("rows", "width", "height"):
            if _int(d[key], f"{where}.{key}", 1, 1 << 30) != getattr(layout, key):
                raise invalid(f"{where}.{key}", f"expected {getattr(layout, key)}, got {d[key]}")
        if max(layout.width, layout.height) > MAX_SPRITE:
            raise invalid(where, f"a sprite of {layout.width}x{layout.height} is too large")
        return layout


def check_display(d: Any, where: str) -> dict:
    """A block's display normalisation (``{"kind": "contrast" | "clip" | "minmax" |
    "unnormalize", ...}``), validated and copied with only its known keys."""
    d = _dict(d, where, ("kind",))
    kind = d["kind"]
    if kind == "contrast":
        if d.get("mode") not in ("symmetric", "minmax"):
            raise invalid(
                f"{where}.mode", f"expected 'symmetric' or 'minmax', got {_short(d.get('mode'))}"
            )
        return {"kind": kind, "mode": d["mode"]}
    if kind in ("clip", "minmax"):
        return {"kind": kind}
    if kind == "unnormalize":
        mean = [
            _float(v, f"{where}.mean[{i}]")
            for i, v in enumerate(_list(d.get("mean"), f"{where}.mean", 1, 4))
        ]
        std = [
            _float(v, f"{where}.std[{i}]")
            for i, v in enumerate(_list(d.get("std"), f"{where}.std", 1, 4))
        ]
        if any(s == 0 for s in std):
            raise invalid(f"{where}.std", "expected non-zero values")
        return {"kind": kind, "mean": mean, "std": std}
    raise invalid(
        f"{where}.kind",
        f"expected 'contrast', 'clip', 'minmax' or 'unnormalize', got {_short(kind)}",
    )


@dataclass(frozen=True)
class ImagesRecord:
    """A layer's rendered tiles: where, how encoded, from which hits, how normalised."""

    dir: str
    format: str
    quality: int | None
    rule: str
    hits: str
    crop: tuple[int, int]
    layout: SpriteLayout
    mode: str
    display: dict
    #: The settings of the units' feature visualisations (``render(feature_vis=...)``), stored
    #: beside the sprites as ``<channel:05d>.fv.<format>``; None when none was rendered.
    feature_vis: dict | None = None

    def file(self, channel: int) -> str:
        """The unit's sprite, relative to the atlas directory."""
        return f"{self.dir}/{channel:05d}.{self.format}"

    def fv_file(self, channel: int) -> str:
        """The unit's feature visualisation, relative to the atlas directory."""
        return f"{self.dir}/{channel:05d}.fv.{self.format}"

    def settings(self) -> dict:
        """What decides the pixels: equal settings, equal tiles (used to skip finished work)."""
        return {
            "format": self.format,
            "quality": self.quality,
            "rule": self.rule,
            "hits": self.hits,
            "top": self.layout.k,
            "tile": list(self.layout.tile),
            "display": self.display,
        } | ({} if self.feature_vis is None else {"feature_vis": self.feature_vis})

    def to_json(self) -> dict:
        fv = {}
        if self.feature_vis is not None:
            fv = {"feature_vis": {"files": "{channel:05d}.fv." + self.format, **self.feature_vis}}
        return fv | {
            "dir": self.dir,
            "files": "{channel:05d}." + self.format,
            "format": self.format,
            "quality": self.quality,
            "rule": self.rule,
            "hits": self.hits,
            "crop": list(self.crop),
            "mode": self.mode,
            "layout": self.layout.to_json(),
            "display": self.display,
        }

    @classmethod
    def from_json(
        cls, d: Any, where: str, *, k: int, input_size: tuple[int, int], crop: tuple[int, int]
    ) -> ImagesRecord:
        d = _dict(d, where, ("dir", "format", "rule", "hits", "crop", "mode", "layout", "display"))
        fmt = d["format"]
        if fmt not in IMAGE_FORMATS:
            raise invalid(
                f"{where}.format", f"expected one of {list(IMAGE_FORMATS)}, got {_short(fmt)}"
            )
        quality = d.get("quality")
        if quality is not None:
            quality = _int(quality, f"{where}.quality", 1, 100)
        if d["rule"] not in RULES:
            raise invalid(
                f"{where}.rule", f"expected one of {list(RULES)}, got {_short(d['rule'])}"
            )
        got_crop = _pair(d["crop"], f"{where}.crop", 1, MAX_SIDE)
        if got_crop != tuple(crop):
            raise invalid(
                f"{where}.crop",
                f"expected the receptive-field crop {list(crop)}, got {list(got_crop)}",
            )
        layout = SpriteLayout.from_json(d["layout"], f"{where}.layout", k=k)
        if layout.tile[0] > crop[0] or layout.tile[1] > crop[1]:
            raise invalid(
                f"{where}.layout.tile",
                f"tiles {list(layout.tile)} larger than the crop {list(crop)}",
            )
        if d["mode"] not in ("RGB", "L"):
            raise invalid(f"{where}.mode", f"expected 'RGB' or 'L', got {_short(d['mode'])}")
        display = _dict(d["display"], f"{where}.display", ("reconstructions", "patches"))
        return cls(
            dir=_str(d["dir"], f"{where}.dir", 100, _TILE_DIR),
            format=fmt,
            quality=quality,
            rule=d["rule"],
            hits=_str(d["hits"], f"{where}.hits", 64, _HEX),
            crop=got_crop,
            layout=layout,
            mode=d["mode"],
            display={
                "reconstructions": check_display(
                    display["reconstructions"], f"{where}.display.reconstructions"
                ),
                "patches": check_display(display["patches"], f"{where}.display.patches"),
            },
            feature_vis=check_feature_vis(
                d.get("feature_vis"), f"{where}.feature_vis", input_size=input_size
            ),
        )


#: What a manifest's feature-visualisation record holds (besides the ``files`` pattern).
FEATURE_VIS_KEYS = ("size", "mode", "steps", "lr", "transforms", "seed", "objective")


def check_feature_vis(d: Any, where: str, *, input_size: tuple[int, int]) -> dict | None:
    """A layer's feature-visualisation record (None when absent): the picture size (the
    atlas's input size), its mode and the optimisation settings; ``ValueError`` naming the
    first bad field."""
    if d is None:
        return None
    d = _dict(d, where, FEATURE_VIS_KEYS)
    size = _pair(d["size"], f"{where}.size", 1, MAX_SIDE)
    if size != tuple(input_size):
        raise invalid(
            f"{where}.size", f"expected the input size {list(input_size)}, got {list(size)}"
        )
    if d["mode"] not in ("RGB", "L"):
        raise invalid(f"{where}.mode", f"expected 'RGB' or 'L', got {_short(d['mode'])}")
    if d["transforms"] not in TRANSFORMS:
        raise invalid(
            f"{where}.transforms",
            f"expected one of {list(TRANSFORMS)}, got {_short(d['transforms'])}",
        )
    if d["objective"] not in OBJECTIVES:
        raise invalid(
            f"{where}.objective", f"expected 'max' or 'mean', got {_short(d['objective'])}"
        )
    return {
        "size": list(size),
        "mode": d["mode"],
        "steps": _int(d["steps"], f"{where}.steps", 1, 1 << 20),
        "lr": _float(d["lr"], f"{where}.lr"),
        "transforms": d["transforms"],
        "seed": _int(d["seed"], f"{where}.seed", 0, (1 << 63) - 1),
        "objective": d["objective"],
    }


@dataclass
class UnitImages:
    """One unit's stored sprite: the encoded file and its decoded blocks.

    Attributes
    ----------
    data : bytes -- the PNG/WebP file, as a browser would fetch it
    mime : str -- ``"image/png"`` or ``"image/webp"``
    layout : SpriteLayout
    display : dict -- how each block was normalised to [0, 255] (from the manifest)
    mode : "RGB" or "L" (grey: the arrays have no channel axis)
    """

    layer: str
    channel: int
    data: bytes
    mime: str
    layout: SpriteLayout
    display: dict
    mode: str = "RGB"
    _pixels: Any = None

    @property
    def sprite(self):
        """The whole sprite, uint8 ndarray (height, width, 3) or (height, width) for grey."""
        if self._pixels is None:
            from ..base.codec import decode_image

            px = decode_image(
                self.data, size=(self.layout.height, self.layout.width), max_pixels=1 << 28
            )
            if px.ndim == 3 and px.shape[2] == 4:
                px = px[:, :, :3]
            if self.mode == "L" and px.ndim == 3:  # WebP stores grey as colour
                px = px[:, :, :3].mean(2).round().astype(px.dtype)
            elif self.mode == "RGB" and px.ndim == 2:
                px = px[:, :, None].repeat(3, 2)
            self._pixels = px
        return self._pixels

    def _block(self, block: str):
        import numpy as np

        s = self.sprite
        out = []
        for j in range(self.layout.k):
            x, y, w, h = self.layout.rect(block, j)
            out.append(s[y : y + h, x : x + w])
        return np.stack(out)

    @property
    def reconstructions(self):
        """uint8 ndarray (k, h, w, 3) (or (k, h, w) for grey): the displayed projections."""
        return self._block("reconstructions")

    @property
    def patches(self):
        """uint8 ndarray (k, h, w, 3) (or (k, h, w) for grey): the displayed image patches."""
        return self._block("patches")


# -- the manifest -----------------------------------------------------------------------------
@dataclass
class LayerRecord:
    name: str
    channels: int
    spatial: bool
    hits: str
    field: Any
    images: ImagesRecord | None


@dataclass
class Manifest:
    k: int
    input_size: tuple[int, int]
    tensors: str
    layers: list[LayerRecord]
    provenance: dict
    classes: list[str] | None = None


def parse_manifest(obj: Any) -> Manifest:
    """Validate a directory manifest (see the module docstring); ``ValueError`` naming the
    first bad field."""
    obj = _dict(obj, "manifest", ("format", "k", "input_size", "tensors", "layers"))
    if obj["format"] not in FORMATS_DIR_READ:
        raise invalid("manifest.format", f"expected {FORMAT_DIR!r}, got {_short(obj['format'])}")
    k = _int(obj["k"], "manifest.k", 1, MAX_K)
    input_size = _pair(obj["input_size"], "manifest.input_size", 1, MAX_SIDE)
    tensors = _str(obj["tensors"], "manifest.tensors", 100, _TENSORS)
    provenance = check_provenance(obj.get("provenance", {}), "manifest.provenance")
    layers = []
    seen: set[str] = set()
    for i, d in enumerate(_list(obj["layers"], "manifest.layers", 1, MAX_LAYERS)):
        where = f"manifest.layers[{i}]"
        d = _dict(d, where, ("name", "channels", "spatial", "hits", "field"))
        name = _str(d["name"], f"{where}.name")
        if name in seen:
            raise invalid(f"{where}.name", f"layer {name!r} listed twice")
        seen.add(name)
        rf = parse_field(d["field"], f"{where}.field", layer=name, input_size=input_size)
        spatial = _bool(d["spatial"], f"{where}.spatial")
        hits = _str(d["hits"], f"{where}.hits", 64, _HEX)
        images = None
        if d.get("images") is not None:
            images = ImagesRecord.from_json(
                d["images"],
                f"{where}.images",
                k=k,
                input_size=input_size,
                crop=crop_size(rf, input_size),
            )
            if images.hits != hits:
                raise invalid(f"{where}.images.hits", "the tiles were rendered from other hits")
        layers.append(
            LayerRecord(
                name=name,
                channels=_int(d["channels"], f"{where}.channels", 1, MAX_CHANNELS),
                spatial=spatial,
                hits=hits,
                field=rf,
                images=images,
            )
        )
    return Manifest(
        k=k,
        input_size=input_size,
        tensors=tensors,
        layers=layers,
        provenance=provenance,
        classes=parse_classes(obj.get("classes"), "manifest.classes"),
    )


def parse_classes(v: Any, where: str) -> list[str] | None:
    """The class names recorded with an atlas (None, or a list of strings of at most
    ``MAX_NAME`` characters; an empty name is allowed: a flat image folder's class)."""
    if v is None:
        return None
    out = []
    for i, c in enumerate(_list(v, where, 1, MAX_CLASSES)):
        if not isinstance(c, str) or len(c) > MAX_NAME:
            raise invalid(f"{where}[{i}]", f"expected a string of at most {MAX_NAME} characters")
        out.append(c)
    return out


def parse_file_meta(meta: Any) -> tuple[list[str], int, tuple[int, int], dict, dict, str]:
    """Validate the JSON of a single-file atlas: ``(layers, k, input_size, fields, spatial,
    rule)``."""
    meta = _dict(meta, "metadata", ("format", "layers", "k", "input_size", "fields"))
    if meta["format"] != FORMAT_FILE:
        raise invalid("metadata.format", f"expected {FORMAT_FILE!r}, got {_short(meta['format'])}")
    layers = [
        _str(v, f"metadata.layers[{i}]")
        for i, v in enumerate(_list(meta["layers"], "metadata.layers", 1, MAX_LAYERS))
    ]
    if len(set(layers)) != len(layers):
        raise invalid("metadata.layers", "a layer is listed twice")
    k = _int(meta["k"], "metadata.k", 1, MAX_K)
    input_size = _pair(meta["input_size"], "metadata.input_size", 1, MAX_SIDE)
    fields_in = _dict(meta["fields"], "metadata.fields", tuple(layers))
    fields = {
        n: parse_field(fields_in[n], f"metadata.fields[{n!r}]", layer=n, input_size=input_size)
        for n in layers
    }
    spatial_in = _dict(meta.get("spatial", {}), "metadata.spatial")
    spatial = {n: _bool(spatial_in.get(n, True), f"metadata.spatial[{n!r}]") for n in layers}
    rule = meta.get("rule", "deconv")
    if rule not in RULES:
        raise invalid("metadata.rule", f"expected one of {list(RULES)}, got {_short(rule)}")
    return layers, k, input_size, fields, spatial, rule


def read_manifest(root: Path) -> Manifest:
    path = root / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"atlas: no {MANIFEST} in {os.fspath(root)!r}")
    size = path.stat().st_size
    if size > MAX_MANIFEST_BYTES:
        raise invalid(MANIFEST, f"{size} bytes; the limit is {MAX_MANIFEST_BYTES}")
    try:
        obj = json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise invalid(MANIFEST, f"not valid JSON ({e})") from e
    return parse_manifest(obj)


# -- tensors ----------------------------------------------------------------------------------
def check_tensor_header(
    path: str | os.PathLike, expected: dict[str, tuple[tuple, set]]
) -> set[str]:
    """Check shapes and dtypes of a safetensors file from its header alone (no data read).

    ``expected`` maps a tensor name to ``(shape, dtypes)``; a shape entry ``None`` takes any
    size. Returns the names in the file. ``ValueError`` for a missing tensor, another shape or
    dtype, or a file that is not safetensors.
    """
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(os.fspath(path), framework="pt") as f:
            names = set(f.keys())
            for name, (shape, dtypes) in expected.items():
                if name not in names:
                    raise invalid(os.path.basename(path), f"missing tensor {name!r}")
                s = f.get_slice(name)
                got, dtype = tuple(s.get_shape()), s.get_dtype()
                if dtype not in dtypes:
                    raise invalid(
                        f"tensor {name!r}", f"expected dtype {sorted(dtypes)}, got {dtype}"
                    )
                if len(got) != len(shape) or any(
                    a is not None and a != b for a, b in zip(shape, got)
                ):
                    want = "(" + ", ".join("*" if a is None else str(a) for a in shape) + ")"
                    raise invalid(f"tensor {name!r}", f"expected shape {want}, got {got}")
    except (SafetensorError, OSError) as e:
        raise ValueError(
            f"atlas: {os.fspath(path)!r} is not a readable safetensors file ({e})"
        ) from e
    return names


def hits_expectation(i: int, channels: int | None, k: int) -> dict[str, tuple[tuple, set]]:
    return {
        f"{i}.values": ((channels, k), FLOAT_DTYPES),
        f"{i}.indices": ((channels, k), INT_DTYPES),
        f"{i}.positions": ((channels, k, 2), INT_DTYPES),
    }


def labels_expectation(i: int, channels: int | None, k: int) -> dict[str, tuple[tuple, set]]:
    """The optional ``"<i>.labels"`` tensor: (C, k) ints, the class label of each hit."""
    return {f"{i}.labels": ((channels, k), INT_DTYPES)}


def check_labels(name: str, labels: torch.Tensor) -> torch.Tensor:
    """A layer's stored hit labels as int64: each -1 (no label) or a class index below 2**31
    (an index without a recorded name is shown as ``"class y"``)."""
    if labels.numel() and (int(labels.min()) < -1 or int(labels.max()) >= 1 << 31):
        bad = int(labels.min()) if int(labels.min()) < -1 else int(labels.max())
        raise invalid(
            f"layer {name!r} labels",
            f"expected -1 (no label) or a class index in [0, {1 << 31}), found {bad}",
        )
    return labels.to(torch.int64)


def check_hits(
    name: str,
    values: torch.Tensor,
    indices: torch.Tensor,
    positions: torch.Tensor,
    *,
    field,
    n: int | None,
) -> None:
    """Values finite, indices in [0, n), positions inside the layer's output."""
    if not bool(torch.isfinite(values).all()):
        raise invalid(f"layer {name!r} values", "expected finite numbers (found NaN or inf)")
    if indices.numel() and int(indices.min()) < 0:
        raise invalid(f"layer {name!r} indices", f"negative image index {int(indices.min())}")
    if n is not None and indices.numel() and int(indices.max()) >= n:
        raise invalid(
            f"layer {name!r} indices",
            f"image index {int(indices.max())} not below the data size {n}",
        )
    h, w = field.output_size
    if positions.numel():
        y, x = positions[..., 0], positions[..., 1]
        if int(y.min()) < 0 or int(x.min()) < 0 or int(y.max()) >= h or int(x.max()) >= w:
            raise invalid(
                f"layer {name!r} positions", f"a position lies outside the layer's output {h}x{w}"
            )


def hits_digest(
    name: str, k: int, input_size, indices: torch.Tensor, positions: torch.Tensor
) -> str:
    """A 16-byte hex digest of which hits a layer holds (tiles are valid as long as it holds)."""
    h = hashlib.sha256()
    h.update(json.dumps([name, k, list(input_size)]).encode())
    h.update(indices.detach().to(torch.int64).cpu().contiguous().numpy().tobytes())
    h.update(positions.detach().to(torch.int64).cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:32]


# -- files ------------------------------------------------------------------------------------
def write_manifest(root: Path, obj: dict) -> None:
    write_atomic(root / MANIFEST, json.dumps(obj, indent=1, allow_nan=False).encode())


def new_tile_dir(i: int) -> str:
    return f"tiles/{i}-{secrets.token_hex(4)}"


def inside(root: Path, rel: str) -> Path:
    """``root / rel``, refusing anything that resolves outside ``root``."""
    path = (root / rel).resolve()
    if not path.is_relative_to(root.resolve()):
        raise invalid("path", f"{rel!r} points outside the atlas directory")
    return path


def remove_unreferenced(root: Path, keep_tensors: str, keep_dirs: set[str]) -> None:
    """Delete this store's own files that the manifest no longer names (old tensors, old
    tile folders, stray temporaries). Only names of the store's own patterns are touched."""
    for p in root.iterdir():
        if p.is_file() and (
            (_TENSORS.match(p.name) and p.name != keep_tensors)
            or (p.name.startswith((MANIFEST + ".", "tensors-")) and p.name.endswith(".tmp"))
        ):
            p.unlink()
    tiles = root / "tiles"
    if tiles.is_dir():
        for p in tiles.iterdir():
            rel = f"tiles/{p.name}"
            if p.is_dir() and _TILE_DIR.match(rel) and rel not in keep_dirs:
                shutil.rmtree(p)


def remove_stale_partials(root: Path, hits: list[str]) -> None:
    """Delete unfinished tile folders (``tiles/<i>.partial``) left by a render of other hits."""
    tiles = root / "tiles"
    if not tiles.is_dir():
        return
    for p in tiles.iterdir():
        m = re.match(r"^([0-9]{1,6})\.partial$", p.name)
        if not m or not p.is_dir():
            continue
        keep = False
        marker = p / "settings.json"
        i = int(m.group(1))
        if i < len(hits) and marker.is_file() and marker.stat().st_size < 1 << 16:
            try:
                keep = json.loads(marker.read_text()).get("hits") == hits[i]
            except (ValueError, AttributeError):
                keep = False
        if not keep:
            shutil.rmtree(p)


MAX_TILE_FILE = 64 << 20


class Store:
    """Where an atlas lives on disk: a directory (with its tile records) or a single file."""

    def __init__(
        self,
        root: Path,
        kind: str,
        images: dict[str, ImagesRecord] | None = None,
        tensors: str | None = None,
    ):
        self.root = Path(root)
        self.kind = kind
        self.images: dict[str, ImagesRecord] = dict(images or {})
        self.tensors = tensors

    def file(self, layer: str, channel: int) -> Path:
        return inside(self.root, self.images[layer].file(channel))

    def fv_file(self, layer: str, channel: int) -> Path:
        return inside(self.root, self.images[layer].fv_file(channel))

    def read(self, layer: str, channel: int, *, feature_vis: bool = False) -> bytes:
        rec = self.images[layer]
        path = inside(self.root, rec.fv_file(channel) if feature_vis else rec.file(channel))
        try:
            size = path.stat().st_size
        except FileNotFoundError as e:
            raise FileNotFoundError(
                f"atlas: the {'feature visualisation' if feature_vis else 'tile'} of {layer!r} "
                f"channel {channel} is missing ({os.fspath(path)!r}); render the layer again "
                "with atlas.render([layer])"
            ) from e
        if size > MAX_TILE_FILE:
            raise invalid(os.fspath(path), f"{size} bytes is more than a tile can hold")
        return path.read_bytes()
