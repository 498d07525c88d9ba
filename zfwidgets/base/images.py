"""Tensors -> uint8 images on the model's device: what the widgets draw.

- :func:`unnormalize`: undo a ``Normalize(mean, std)`` so inputs are shown as photographs.
- :func:`contrast_normalize`: per-image contrast normalisation of deconvnet reconstructions,
  as the paper shows them (docs/method.md Sec. 2-3, Fig. 2: "contrast normalized" projections).
- :func:`colormap` / :func:`normalize_maps`: feature maps (activations) as colours.
- :func:`to_rgba`: [0, 1] images (grey or RGB) as uint8 RGBA.
- :func:`mosaic` / :class:`GridLayout`: the one mosaic layout, many tiles packed into one
  image, so a whole layer crosses to the browser as one transfer (``js/lib/grid.js`` has the
  same geometry); :func:`tile` packs RGBA tiles with it, :func:`pair_mosaic` /
  :func:`pair_atlas` the paper's Fig. 2 pair (the atlas's unit sprites are its ``pad=0`` form).
- :func:`feature_atlas`, :func:`filter_atlas`: the two atlases the grids draw.

Every function works on the device of its input and returns tensors there; nothing is moved
to the host until :mod:`zfwidgets.base.codec` packs the result.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

#: ImageNet's mean and standard deviation per RGB channel, the default normalisation for
#: photos (torchvision's pretrained models, the command line, the image folder, the Explorer).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "COLORMAPS",
    "FeatureAtlas",
    "GridLayout",
    "PairAtlas",
    "colormap",
    "colormap_lut",
    "contrast_normalize",
    "display_image",
    "display_stats",
    "fit_channels",
    "feature_atlas",
    "filter_atlas",
    "find_normalize",
    "grid_columns",
    "mean_std_of",
    "mosaic",
    "mosaic_columns",
    "normalize_maps",
    "pair_atlas",
    "pair_mosaic",
    "resize_to_fit",
    "tile",
    "to_rgba",
    "to_uint8",
    "unnormalize",
]

#: Evenly spaced RGB control points (0..255) of each colour map; ``js/lib/colormap.js`` holds
#: the same numbers. viridis and inferno: 33 samples of matplotlib's tables (CC0); jet: its
#: exact piecewise-linear knots.
# fmt: off
COLORMAPS: dict[str, tuple[tuple[int, int, int], ...]] = {
    "gray": ((0, 0, 0), (255, 255, 255)),
    "viridis": (
        (68, 1, 84), (71, 13, 96), (72, 24, 106), (72, 35, 116), (71, 45, 123), (69, 55, 129),
        (66, 64, 134), (62, 73, 137), (59, 82, 139), (55, 91, 141), (51, 99, 141),
        (47, 107, 142), (44, 114, 142), (41, 122, 142), (38, 130, 142), (35, 137, 142),
        (33, 145, 140), (31, 151, 139), (31, 159, 136), (33, 166, 133), (39, 173, 129),
        (49, 181, 123), (61, 188, 116), (76, 194, 108), (92, 200, 99), (110, 206, 88),
        (129, 211, 77), (149, 216, 64), (170, 220, 50), (192, 223, 37), (213, 226, 26),
        (234, 229, 26), (253, 231, 37),
    ),
    "inferno": (
        (0, 0, 4), (4, 3, 18), (11, 7, 36), (21, 11, 55), (33, 12, 74), (47, 10, 91),
        (61, 9, 101), (74, 12, 107), (87, 16, 110), (100, 21, 110), (113, 25, 110),
        (125, 30, 109), (138, 34, 106), (151, 39, 102), (163, 44, 97), (176, 49, 91),
        (188, 55, 84), (198, 61, 77), (208, 69, 69), (218, 78, 60), (227, 89, 51),
        (235, 100, 41), (241, 113, 31), (246, 126, 20), (249, 140, 10), (251, 155, 6),
        (252, 170, 15), (251, 186, 31), (249, 201, 50), (245, 217, 73), (242, 232, 101),
        (243, 245, 134), (252, 255, 164),
    ),
    "jet": (
        (0, 0, 128), (0, 0, 255), (0, 128, 255), (0, 255, 255), (128, 255, 128),
        (255, 255, 0), (255, 128, 0), (255, 0, 0), (128, 0, 0),
    ),
}
# fmt: on

_LUTS: dict[tuple[str, torch.device], torch.Tensor] = {}


def _check_colormap(name: object) -> str:
    if not isinstance(name, str) or name not in COLORMAPS:
        raise ValueError(f"colormap: expected one of {sorted(COLORMAPS)}, got {name!r}")
    return name


def colormap_lut(name: str = "viridis", device: torch.device | str | None = None) -> torch.Tensor:
    """The 256-entry RGBA lookup table of a colour map.

    Entry ``i`` interpolates control points ``k`` and ``k + 1`` where ``i * (n - 1) = 255 k + r``,
    in integers: ``(c[k] * (255 - r) + c[k + 1] * r + 127) // 255`` -- the same arithmetic as
    ``js/lib/colormap.js``, so both sides give identical colours.

    Returns
    -------
    Tensor (256, 4), uint8, alpha 255, on ``device`` (cached per device).
    """
    _check_colormap(name)
    device = torch.device(device) if device is not None else torch.device("cpu")
    key = (name, device)
    if key not in _LUTS:
        points = torch.tensor(COLORMAPS[name], dtype=torch.int64)
        n = len(points)
        i = torch.arange(256, dtype=torch.int64)
        num = i * (n - 1)
        k = torch.clamp(num // 255, max=n - 2)
        r = (num - k * 255).unsqueeze(1)
        rgb = (points[k] * (255 - r) + points[k + 1] * r + 127) // 255
        lut = torch.cat([rgb, torch.full((256, 1), 255, dtype=torch.int64)], 1)
        _LUTS[key] = lut.to(torch.uint8).to(device)
    return _LUTS[key]


def colormap(values: torch.Tensor, name: str = "viridis") -> torch.Tensor:
    """Colour-map values in [0, 1] (clipped); NaN becomes transparent.

    Parameters
    ----------
    values : Tensor (...), floating
    name : {"viridis", "inferno", "gray", "jet"}

    Returns
    -------
    Tensor (..., 4), uint8 RGBA, on the device of ``values``.
    """
    if not isinstance(values, torch.Tensor) or not values.is_floating_point():
        raise TypeError("values: expected a floating-point torch.Tensor in [0, 1]")
    lut = colormap_lut(name, values.device)
    idx = torch.floor(values.nan_to_num(0.0).clamp(0, 1) * 255 + 0.5).long()
    # no `if nan.any()`: that would wait for the device; zeroing NaNs always costs less
    return lut[idx].masked_fill_(torch.isnan(values).unsqueeze(-1), 0)


def normalize_maps(maps: torch.Tensor, scale: str = "map") -> torch.Tensor:
    """Min-max scale feature maps to [0, 1] for display.

    Parameters
    ----------
    maps : Tensor (C, H, W)
    scale : {"map", "layer"}
        ``"map"``: each map over its own range (weak maps become visible); ``"layer"``: one
        range for the whole layer (maps keep their relative strength; dead maps stay dark).
        A constant map (or layer) becomes 0.

    Returns
    -------
    Tensor (C, H, W), float32, in [0, 1].
    """
    if scale not in ("map", "layer"):
        raise ValueError(f"scale: expected 'map' or 'layer', got {scale!r}")
    if not isinstance(maps, torch.Tensor) or maps.dim() != 3:
        raise ValueError(
            f"maps: expected a (C, H, W) tensor, got {getattr(maps, 'shape', type(maps).__name__)}"
        )
    m = maps.detach().float()
    flat = m.reshape(m.shape[0], -1) if scale == "map" else m.reshape(1, -1)
    if flat.shape[1] == 0:
        return m.clone()
    lo = flat.amin(1, keepdim=True)
    span = flat.amax(1, keepdim=True) - lo
    out = torch.where(span > 0, (flat - lo) / torch.where(span > 0, span, 1.0), 0.0)
    return out.reshape(m.shape)


def unnormalize(
    images: torch.Tensor, mean: Sequence[float] | torch.Tensor, std: Sequence[float] | torch.Tensor
) -> torch.Tensor:
    """Undo ``Normalize(mean, std)``: ``images * std + mean``, clipped to [0, 1].

    Parameters
    ----------
    images : Tensor (N, C, H, W) or (C, H, W)
    mean, std : sequences of C floats (or one float for every channel)

    Returns
    -------
    Tensor of the same shape, float32, on the device of ``images``.
    """
    x = images.detach().float()
    c = x.shape[-3]
    m = torch.as_tensor(mean, dtype=torch.float32, device=x.device).reshape(-1)
    s = torch.as_tensor(std, dtype=torch.float32, device=x.device).reshape(-1)
    for name, t in (("mean", m), ("std", s)):
        if t.numel() not in (1, c):
            raise ValueError(f"{name}: expected 1 or {c} values (one per channel), got {t.numel()}")
    if bool((s == 0).any()):
        raise ValueError("std: expected non-zero values")
    shape = (-1, 1, 1)
    return (x * s.reshape(shape) + m.reshape(shape)).clamp_(0, 1)


def contrast_normalize(images: torch.Tensor, mode: str = "symmetric") -> torch.Tensor:
    """Per-image contrast normalisation of (signed) images such as deconvnet reconstructions.

    docs/method.md Sec. 3.1, Fig. 2 shows projections "contrast normalized" per image.

    Parameters
    ----------
    images : Tensor (N, C, H, W)
    mode : {"symmetric", "minmax"}
        ``"symmetric"``: ``0.5 + x / (2 max|x|)``, so zero stays mid-grey and the sign is kept;
        ``"minmax"``: ``(x - min) / (max - min)``. An all-zero (constant) image becomes 0.5.

    Returns
    -------
    Tensor (N, C, H, W), float32, in [0, 1], on the device of ``images``.
    """
    if mode not in ("symmetric", "minmax"):
        raise ValueError(f"mode: expected 'symmetric' or 'minmax', got {mode!r}")
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        raise ValueError(
            f"images: expected an (N, C, H, W) tensor, got {getattr(images, 'shape', type(images).__name__)}"
        )
    x = images.detach().float()
    flat = x.reshape(x.shape[0], -1)
    if mode == "symmetric":
        peak = flat.abs().amax(1, keepdim=True)
        out = torch.where(peak > 0, 0.5 + flat / (2 * torch.where(peak > 0, peak, 1.0)), 0.5)
    else:
        lo = flat.amin(1, keepdim=True)
        span = flat.amax(1, keepdim=True) - lo
        out = torch.where(span > 0, (flat - lo) / torch.where(span > 0, span, 1.0), 0.5)
    return out.clamp_(0, 1).reshape(x.shape)


def display_image(
    image: torch.Tensor,
    mean: Sequence[float] | torch.Tensor | None = None,
    std: Sequence[float] | torch.Tensor | None = None,
) -> torch.Tensor:
    """A model input as a [0, 1] image: :func:`unnormalize` with ``mean``/``std`` when given,
    else as is when already in [0, 1], else min-max per image.

    Parameters
    ----------
    image : Tensor (N, C, H, W)

    Returns
    -------
    Tensor (N, C, H, W), float32, in [0, 1].
    """
    if (mean is None) != (std is None):
        raise ValueError("mean and std: give both or neither")
    if mean is not None:
        return unnormalize(image, mean, std)
    x = image.detach().float()
    if x.numel() and float(x.min()) >= 0 and float(x.max()) <= 1:
        return x.clone()
    return contrast_normalize(x, mode="minmax")


def find_normalize(obj: Any, *, depth: int = 4) -> tuple[Any, Any] | None:
    """``(mean, std)`` of the first ``Normalize`` in ``obj`` or its nested ``transforms``
    (a ``Normalize``, a ``Compose`` holding one, ``weights.transforms()``, or any object with
    ``mean``/``std`` attributes, such as a dataset that normalises its images itself), as
    given there; ``None`` when there is none. Only numbers count: ``mean`` and ``std`` must
    be as many finite numbers, ``std`` non-zero (a tensor's ``mean`` method does not).

    The one finder: :func:`mean_std_of` (the widgets' ``transform=``) and the atlas's
    renderer (the data's own transform) both use it.
    """
    if obj is None or isinstance(obj, torch.Tensor):
        return None
    mean, std = getattr(obj, "mean", None), getattr(obj, "std", None)
    if mean is not None and std is not None and not callable(mean) and not callable(std):
        try:
            m = torch.as_tensor(mean, dtype=torch.float64).reshape(-1)
            s = torch.as_tensor(std, dtype=torch.float64).reshape(-1)
        except (TypeError, ValueError, RuntimeError):
            m = s = None
        if (
            m is not None
            and m.numel() >= 1
            and m.numel() == s.numel()
            and bool(torch.isfinite(m).all() and torch.isfinite(s).all() and (s != 0).all())
        ):
            return mean, std
    if depth > 0:
        for inner in getattr(obj, "transforms", None) or []:
            found = find_normalize(inner, depth=depth - 1)
            if found is not None:
                return found
    return None


def mean_std_of(transform: Any) -> tuple[Any, Any]:
    """``(mean, std)`` of the ``Normalize`` inside a torchvision transform (a ``Normalize``,
    a ``Compose`` holding one, or ``weights.transforms()``); see :func:`find_normalize`.

    Raises
    ------
    ValueError
        When the transform holds no ``Normalize``.
    """
    found = find_normalize(transform)
    if found is None:
        raise ValueError(
            f"transform: found no Normalize(mean, std) in {type(transform).__name__}; "
            "pass mean= and std= instead"
        )
    return found


def display_stats(transform: Any, mean: Any, std: Any) -> tuple[Any, Any]:
    """The ``(mean, std)`` to undo for display: from ``transform``'s ``Normalize`` or given
    directly (not both); ``(None, None)`` when neither is given."""
    if transform is not None:
        if mean is not None or std is not None:
            raise ValueError("give transform= or mean=/std=, not both")
        mean, std = mean_std_of(transform)
    if (mean is None) != (std is None):
        raise ValueError("mean and std: give both or neither")
    return mean, std


def fit_channels(images: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) images with 1 (grey) or 3 (RGB) channels as they are; any other channel
    count averaged to one grey channel. The one rule for showing a tensor as an image."""
    return images if images.shape[1] in (1, 3) else images.mean(1, keepdim=True)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """[0, 1] values (clipped) as uint8, rounded half up: ``floor(x * 255 + 0.5)``."""
    return torch.floor(images.detach().float().clamp(0, 1) * 255 + 0.5).to(torch.uint8)


def to_rgba(images: torch.Tensor) -> torch.Tensor:
    """[0, 1] images as uint8 RGBA (grey for one channel).

    Parameters
    ----------
    images : Tensor (N, C, H, W), C in {1, 3}, values clipped to [0, 1]

    Returns
    -------
    Tensor (N, H, W, 4), uint8, alpha 255, on the device of ``images``.
    """
    if not isinstance(images, torch.Tensor) or images.dim() != 4:
        raise ValueError(
            f"images: expected an (N, C, H, W) tensor, got {getattr(images, 'shape', type(images).__name__)}"
        )
    if images.shape[1] not in (1, 3):
        raise ValueError(f"images: expected 1 (grey) or 3 (RGB) channels, got {images.shape[1]}")
    x = to_uint8(images)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    alpha = torch.full_like(x[:, :1], 255)
    return torch.cat([x, alpha], 1).permute(0, 2, 3, 1).contiguous()


def resize_to_fit(maps: torch.Tensor, max_side: int | None) -> torch.Tensor:
    """Shrink (N, C, H, W) maps with area averaging so that max(H, W) <= ``max_side``
    (aspect kept); returned unchanged when they already fit or ``max_side`` is None."""
    if max_side is None:
        return maps
    if isinstance(max_side, bool) or not isinstance(max_side, int) or max_side < 1:
        raise ValueError(f"max_tile: expected a positive int or None, got {max_side!r}")
    h, w = maps.shape[-2:]
    if max(h, w) <= max_side:
        return maps
    f = max_side / max(h, w)
    size = (max(1, round(h * f)), max(1, round(w * f)))
    return F.interpolate(maps.float(), size=size, mode="area")


@dataclass(frozen=True)
class GridLayout:
    """Geometry of an atlas: ``count`` tiles of ``tile_h`` x ``tile_w`` pixels in ``columns``
    columns, row-major, ``pad`` pixels between tiles and around the border.

    ``width = pad + columns * (tile_w + pad)``, ``height = pad + rows * (tile_h + pad)``; tile
    ``i`` starts at ``x = pad + (i % columns) * (tile_w + pad)``,
    ``y = pad + (i // columns) * (tile_h + pad)``. ``js/lib/grid.js`` uses the same formulas.
    """

    count: int
    columns: int
    tile_h: int
    tile_w: int
    pad: int = 1

    @property
    def rows(self) -> int:
        return math.ceil(self.count / self.columns)

    @property
    def width(self) -> int:
        return self.pad + self.columns * (self.tile_w + self.pad)

    @property
    def height(self) -> int:
        return self.pad + self.rows * (self.tile_h + self.pad)

    def rect(self, i: int) -> tuple[int, int, int, int]:
        """``(x, y, w, h)`` of tile ``i`` in atlas pixels."""
        if not 0 <= i < self.count:
            raise IndexError(f"tile {i} out of range [0, {self.count})")
        col, row = i % self.columns, i // self.columns
        return (
            self.pad + col * (self.tile_w + self.pad),
            self.pad + row * (self.tile_h + self.pad),
            self.tile_w,
            self.tile_h,
        )

    def to_json(self) -> dict:
        """The dict the front end reads (``grid.fromPython`` in ``js/lib/grid.js``)."""
        return {
            "count": self.count,
            "columns": self.columns,
            "rows": self.rows,
            "tile": [self.tile_h, self.tile_w],
            "pad": self.pad,
            "width": self.width,
            "height": self.height,
        }


def grid_columns(count: int, tile_h: int, tile_w: int, aspect: float = 1.6) -> int:
    """Columns that make an atlas of ``count`` tiles about ``aspect`` times wider than tall."""
    if count <= 0:
        return 1
    cols = math.ceil(math.sqrt(count * aspect * max(tile_h, 1) / max(tile_w, 1)))
    return max(1, min(count, cols))


def tile(
    tiles: torch.Tensor,
    *,
    columns: int | None = None,
    pad: int = 1,
    background: tuple[int, int, int, int] = (0, 0, 0, 0),
) -> tuple[torch.Tensor, GridLayout]:
    """Pack RGBA tiles into one atlas image (see :class:`GridLayout` for the geometry).

    Parameters
    ----------
    tiles : Tensor (N, h, w, 4), uint8
    columns : int, optional
        Default: :func:`grid_columns` (about 16:10).
    pad : int
        Pixels between tiles and around the border, filled with ``background``.
    background : RGBA
        Colour of padding and empty slots; transparent by default, so the page shows through.

    Returns
    -------
    (atlas, layout)
        ``atlas`` (layout.height, layout.width, 4) uint8 on the device of ``tiles``.
    """
    if not isinstance(tiles, torch.Tensor) or tiles.dim() != 4 or tiles.shape[3] != 4:
        raise ValueError(
            f"tiles: expected an (N, h, w, 4) tensor, got {getattr(tiles, 'shape', type(tiles).__name__)}"
        )
    if tiles.dtype != torch.uint8:
        raise TypeError(f"tiles: expected uint8, got {tiles.dtype}")
    if isinstance(pad, bool) or not isinstance(pad, int) or pad < 0:
        raise ValueError(f"pad: expected a non-negative int, got {pad!r}")
    n, h, w, _ = tiles.shape
    if columns is None:
        columns = grid_columns(n, h, w)
    if isinstance(columns, bool) or not isinstance(columns, int) or columns < 1:
        raise ValueError(f"columns: expected a positive int, got {columns!r}")
    return mosaic(
        tiles.permute(0, 3, 1, 2), columns=columns, pad=pad, fill=background, channels_last=True
    )


def mosaic_columns(count: int) -> int:
    """Columns of a Fig. 2 block of ``count`` tiles: ``ceil(sqrt(count))`` (3 for nine)."""
    return max(1, math.ceil(math.sqrt(count)))


def mosaic(
    tiles: torch.Tensor,
    *,
    columns: int | None = None,
    pad: int = 0,
    fill: float | Sequence[float] = 0,
    channels_last: bool = False,
) -> tuple[torch.Tensor, GridLayout]:
    """Pack tiles into one channel-first image on the :class:`GridLayout` geometry: the one
    mosaic layout of the package (:func:`tile`, :func:`pair_mosaic`, the atlas's unit
    sprites, the layer overview).

    Parameters
    ----------
    tiles : Tensor (..., N, C, h, w), any dtype
        Leading dimensions, if any, make as many mosaics at once.
    columns : int, optional
        Default :func:`mosaic_columns` (the paper's Fig. 2 blocks: 3 x 3 for nine).
    pad : int
        Pixels between tiles and around the border, filled with ``fill``.
    fill : number or C numbers
        Value of padding and empty slots.
    channels_last : bool
        Return (..., H, W, C) (what image encoders and RGBA atlases want), written in place.

    Returns
    -------
    (image, layout)
        ``image`` (..., C, layout.height, layout.width), dtype and device of ``tiles``.
    """
    n, C, h, w = tiles.shape[-4:]
    layout = GridLayout(n, mosaic_columns(n) if columns is None else columns, h, w, pad)
    image = _filled(tiles, tiles.shape[:-4], C, layout.height, layout.width, fill, channels_last)
    _place(image.movedim(-1, -3) if channels_last else image, tiles, layout)
    return image, layout


def _filled(like, lead, C, H, W, fill, channels_last: bool) -> torch.Tensor:
    """A new (*lead, C, H, W) tensor, or (*lead, H, W, C), holding ``fill`` per channel."""
    bg = torch.as_tensor(fill, dtype=like.dtype, device=like.device).reshape(-1)
    if channels_last:
        return bg.expand(*lead, H, W, C).clone()
    return bg.reshape(-1, 1, 1).expand(*lead, C, H, W).clone()


def _place(image: torch.Tensor, tiles: torch.Tensor, layout: GridLayout) -> None:
    """Copy (..., N, C, h, w) ``tiles`` into (..., C, H, W) ``image`` (or a view of one) at
    ``layout``'s rects: one strided copy for the full rows, one for the last row."""
    nb = tiles.dim() - 4
    lead = list(range(nb))
    h, w, p, cols = layout.tile_h, layout.tile_w, layout.pad, layout.columns
    full, rest = divmod(layout.count, cols)
    if full:
        dst = image[..., p : p + full * (h + p), p : p + cols * (w + p)]
        dst = dst.unflatten(-2, (full, h + p)).unflatten(-1, (cols, w + p))[..., :h, :, :w]
        src = tiles[..., : full * cols, :, :, :].unflatten(-4, (full, cols))
        dst.copy_(src.permute(*lead, nb + 2, nb, nb + 3, nb + 1, nb + 4))
    if rest:
        y = p + full * (h + p)
        dst = image[..., y : y + h, p : p + rest * (w + p)].unflatten(-1, (rest, w + p))
        src = tiles[..., full * cols :, :, :, :]
        dst[..., :w].copy_(src.permute(*lead, nb + 1, nb + 2, nb, nb + 3))


def pair_mosaic(
    left: torch.Tensor,
    right: torch.Tensor,
    *,
    columns: int | None = None,
    pad: int = 0,
    gap: int = 0,
    fill: float | Sequence[float] = 0,
    channels_last: bool = False,
) -> tuple[torch.Tensor, GridLayout]:
    """The Fig. 2 pair (docs/method.md Sec. 3.1): two :func:`mosaic` blocks of the same
    geometry side by side, ``gap`` pixels of ``fill`` between them.

    Parameters
    ----------
    left, right : Tensor (..., k, C, h, w), the same shape
        E.g. reconstructions (left) and image patches (right).
    columns, pad, fill, channels_last
        As :func:`mosaic`.

    Returns
    -------
    (image, layout)
        ``image`` (..., C, layout.height, 2 * layout.width + gap); ``layout`` the geometry of
        each block, the right one starting ``layout.width + gap`` pixels from the left edge.
    """
    if left.shape != right.shape:
        raise ValueError(
            f"left, right: expected the same shape, got {tuple(left.shape)}, {tuple(right.shape)}"
        )
    k, C, h, w = left.shape[-4:]
    layout = GridLayout(k, mosaic_columns(k) if columns is None else columns, h, w, pad)
    W = layout.width
    image = _filled(left, left.shape[:-4], C, layout.height, 2 * W + gap, fill, channels_last)
    view = image.movedim(-1, -3) if channels_last else image
    _place(view[..., :W], left, layout)
    _place(view[..., W + gap :], right, layout)
    return image, layout


@dataclass
class FeatureAtlas:
    """Every feature map of a layer for one image, colour-mapped into one atlas.

    Attributes
    ----------
    image : Tensor (H, W, 4), uint8 -- the atlas, on the model's device
    layout : GridLayout
    maxima : Tensor (C,), float32 -- each map's largest raw value (before any resizing)
    """

    image: torch.Tensor
    layout: GridLayout
    maxima: torch.Tensor


def feature_atlas(
    maps: torch.Tensor,
    *,
    cmap: str = "viridis",
    scale: str = "map",
    columns: int | None = None,
    pad: int = 1,
    max_tile: int | None = 64,
) -> FeatureAtlas:
    """Colour-map every feature map of a layer and pack them into one atlas.

    Parameters
    ----------
    maps : Tensor (C, H, W)
        One image's activations at a layer (e.g. ``cap.activations[name][0]``).
    cmap : {"viridis", "inferno", "gray", "jet"}
    scale : {"map", "layer"}
        See :func:`normalize_maps`.
    columns : int, optional
        Default: about 16:10.
    pad : int
    max_tile : int or None
        Maps larger than this (either side) are shrunk by area averaging first, so a layer
        of 224 x 224 maps stays a small transfer.

    Returns
    -------
    FeatureAtlas
    """
    _check_colormap(cmap)
    if not isinstance(maps, torch.Tensor) or maps.dim() != 3:
        raise ValueError(
            f"maps: expected a (C, H, W) tensor, got {getattr(maps, 'shape', type(maps).__name__)}"
        )
    m = maps.detach()
    maxima = m.reshape(m.shape[0], -1).amax(1).float() if m.numel() else m.new_zeros(m.shape[0])
    unit = normalize_maps(m, scale)
    unit = resize_to_fit(unit.unsqueeze(0), max_tile)[0]
    image, layout = tile(colormap(unit, cmap), columns=columns, pad=pad)
    return FeatureAtlas(image=image, layout=layout, maxima=maxima.float())


def filter_atlas(
    weights: torch.Tensor, *, columns: int | None = None, pad: int = 1
) -> tuple[torch.Tensor, GridLayout]:
    """Filters scaled to [0, 1] (see :func:`zfwidgets.engine.filters.filters`) as one atlas: RGB
    tiles for 3 input channels, grey for 1, the mean over input channels otherwise.

    docs/method.md Sec. 3.4, Fig. 6 and Sec. 4 (layer-1 filters as images).

    Parameters
    ----------
    weights : Tensor (Cout, Cin, kh, kw), values in [0, 1]

    Returns
    -------
    (atlas, layout) as :func:`tile`.
    """
    if not isinstance(weights, torch.Tensor) or weights.dim() != 4:
        raise ValueError(
            f"weights: expected a (Cout, Cin, kh, kw) tensor, got {getattr(weights, 'shape', type(weights).__name__)}"
        )
    w = fit_channels(weights.detach().float())
    return tile(to_rgba(w), columns=columns, pad=pad)


@dataclass(frozen=True)
class PairAtlas:
    """Two blocks of tiles side by side (the paper's Fig. 2: projections | image patches).

    ``image`` (H, W, 4) uint8; ``layout`` the geometry of each block (both alike); the right
    block starts ``layout.width + gap`` pixels from the left edge.
    """

    image: torch.Tensor
    layout: GridLayout
    gap: int


def pair_atlas(
    left: torch.Tensor,
    right: torch.Tensor,
    *,
    columns: int | None = None,
    pad: int = 1,
    gap: int | None = None,
    max_tile: int | None = None,
) -> PairAtlas:
    """The Fig. 2 pair (docs/method.md Sec. 3.1): ``left`` tiles in one grid, ``right`` tiles in
    another of the same geometry beside it, as one uint8 RGBA image.

    Parameters
    ----------
    left, right : Tensor (k, C, h, w) in [0, 1]
        Same shapes (e.g. contrast-normalised reconstructions and display patches); channels
        follow :func:`fit_channels`.
    columns : int, optional
        Default ``ceil(sqrt(k))`` (3 for nine tiles).
    pad : int
        Pixels between tiles.
    gap : int, optional
        Pixels between the blocks; default about a sixth of a tile (at least 2).
    max_tile : int, optional
        Tiles larger than this (either side) are shrunk with area averaging.
    """
    if left.shape[0] != right.shape[0]:
        raise ValueError(
            f"left, right: expected as many tiles, got {left.shape[0]}, {right.shape[0]}"
        )
    if columns is None:
        columns = mosaic_columns(left.shape[0])

    def block(x: torch.Tensor) -> torch.Tensor:
        x = resize_to_fit(fit_channels(x.float()), max_tile)
        return to_rgba(x).permute(0, 3, 1, 2)

    a, b = block(left), block(right)
    if gap is None:
        gap = max(2, round(a.shape[3] / 6))
    image, layout = pair_mosaic(a, b, columns=columns, pad=pad, gap=gap, channels_last=True)
    return PairAtlas(image, layout, gap)
