"""A whole layer at once: every unit of an atlas layer as one thumbnail, a page at a time.

docs/method.md Sec. 3.1, the paper's Fig. 2 laid out for a whole layer: each feature map shown
by its strongest deconvnet reconstruction, or by its top-k mosaic (reconstructions or image
patches). A page is one uint8 RGBA image (:func:`zfwidgets.base.images.tile`), so a front end draws
it in one transfer and finds the unit under the pointer from the grid geometry; a unit's
top-k thumbnail is its Fig. 2 block (:func:`zfwidgets.base.images.mosaic`, as in the sprites).

Thumbnails come from the atlas's stored tiles (:meth:`Atlas.render`): a page of a
2,048-unit layer reads 64 small files and computes nothing. A layer without stored tiles is
computed from the attached model and data (:meth:`Atlas.reconstructions`,
:meth:`Atlas.patches`), only for the units of the page.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ..base.images import GridLayout, contrast_normalize, fit_channels, mosaic, tile, to_rgba

__all__ = ["SHOWS", "SORTS", "OverviewPage", "overview_page", "unit_order"]

SHOWS = ("strongest", "reconstructions", "patches")
SORTS = ("index", "strength")


@dataclass
class OverviewPage:
    """One page of a layer's overview.

    Attributes
    ----------
    layer : str
    units : list of int -- the channels shown, in order (tile ``i`` is ``units[i]``)
    values : list of float -- each unit's strongest activation
    image : Tensor (H, W, 4) uint8 -- the thumbnails packed as ``layout`` says
    layout : GridLayout
    page, pages : int -- this page (0-based) and the number of pages
    source : "stored" | "computed" -- read from the atlas's tiles, or computed from the model
    missing : list of int -- units whose stored tile file was missing (drawn blank)
    """

    layer: str
    units: list[int]
    values: list[float]
    image: torch.Tensor
    layout: GridLayout
    page: int
    pages: int
    source: str
    missing: list[int] = field(default_factory=list)


def unit_order(atlas, layer: str, sort: str = "index") -> list[int]:
    """Channels of ``layer`` by index, or by their strongest activation (descending; ties by
    index, as the static site orders them)."""
    if sort not in SORTS:
        raise ValueError(f"sort: expected one of {SORTS}, got {sort!r}")
    if layer not in atlas.values:
        raise ValueError(f"layer: {layer!r} is not in this atlas; it holds {atlas.layers}")
    C = int(atlas.values[layer].shape[0])
    if sort == "index":
        return list(range(C))
    top = atlas.values[layer][:, 0].float().cpu()
    top = torch.where(torch.isfinite(top), top, torch.full_like(top, -math.inf))
    # stable sort of (-value) keeps index order among ties
    return torch.sort(-top, stable=True).indices.tolist()


def _fit(x: torch.Tensor, side: int) -> torch.Tensor:
    """(C, h, w) float in [0, 1] -> (C, h', w') within ``side``: whole-factor enlargement
    (crisp) or area shrinking."""
    h, w = x.shape[1:]
    s = side / max(h, w)
    if s >= 1:
        f = int(s)
        return x.repeat_interleave(f, 1).repeat_interleave(f, 2) if f > 1 else x
    size = (max(1, round(h * s)), max(1, round(w * s)))
    return torch.nn.functional.interpolate(x[None], size=size, mode="area")[0]


def _rgba(x: torch.Tensor, side: int) -> torch.Tensor:
    """(C, h, w) in [0, 1] -> (side, side, 4) uint8, centred on transparent."""
    x = _fit(fit_channels(x[None].float())[0].clamp(0, 1), side)
    out = torch.zeros(side, side, 4, dtype=torch.uint8)
    h, w = x.shape[1:]
    top, left = (side - h) // 2, (side - w) // 2
    out[top : top + h, left : left + w] = to_rgba(x[None])[0]
    return out


def _stored_thumb(atlas, layer: str, channel: int, show: str) -> torch.Tensor:
    u = atlas.unit_images(layer, channel)
    px = torch.from_numpy(u.sprite.copy())
    if px.dim() == 2:
        px = px[:, :, None]
    block = "patches" if show == "patches" else "reconstructions"
    if show == "strongest":
        x, y, w, h = u.layout.rect(block, 0)
    else:
        x, y = u.layout.rect(block, 0)[:2]
        w, h = u.layout.grid.width, u.layout.grid.height
    return px[y : y + h, x : x + w].permute(2, 0, 1).float() / 255


def _computed_thumb(atlas, layer: str, channel: int, show: str) -> torch.Tensor:
    if show == "patches":
        p = contrast_normalize(atlas.patches(layer, channel), "minmax").cpu()
        return mosaic(p)[0]
    r = contrast_normalize(atlas.reconstructions(layer, channel), "symmetric").cpu()
    return r[0] if show == "strongest" else mosaic(r)[0]


def overview_page(
    atlas,
    layer: str,
    *,
    page: int = 0,
    page_size: int = 64,
    sort: str = "index",
    show: str = "strongest",
    side: int = 64,
    columns: int | None = None,
) -> OverviewPage:
    """One page of ``layer``'s overview (see the module docstring).

    Parameters
    ----------
    atlas : Atlas
    layer : str
    page : int
        0-based; clamped to the last page.
    page_size : int
        Units per page.
    sort : {"index", "strength"}
    show : {"strongest", "reconstructions", "patches"}
        The unit's strongest reconstruction, or its top-k mosaic of reconstructions or patches.
    side : int
        Thumbnail side in pixels (tiles are enlarged by whole factors or shrunk to fit).
    columns : int, optional
        Grid columns (default: about 16:10).

    Raises
    ------
    ValueError
        An unknown layer, sort or show, or a layer with neither stored tiles nor model and data.
    """
    if show not in SHOWS:
        raise ValueError(f"show: expected one of {SHOWS}, got {show!r}")
    for name, v, lo in (("page", page, 0), ("page_size", page_size, 1), ("side", side, 4)):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise ValueError(f"{name}: expected an int >= {lo}, got {v!r}")
    order = unit_order(atlas, layer, sort)
    pages = max(1, math.ceil(len(order) / page_size))
    page = min(page, pages - 1)
    units = order[page * page_size : (page + 1) * page_size]
    stored = atlas.has_images(layer)
    if not stored and (atlas.model is None or atlas.source is None):
        raise ValueError(
            f"layer {layer!r} has no stored tiles and the atlas has no model and data to compute "
            "them; render it (atlas.render(layers=[...])) or load the atlas with model= and data="
        )
    thumbs, missing = [], []
    for c in units:
        try:
            x = (_stored_thumb if stored else _computed_thumb)(atlas, layer, c, show)
            thumbs.append(_rgba(x, side))
        except FileNotFoundError:
            missing.append(c)
            thumbs.append(torch.zeros(side, side, 4, dtype=torch.uint8))
    image, layout = tile(torch.stack(thumbs), columns=columns, pad=2)
    values = atlas.values[layer][units, 0].float().tolist()
    return OverviewPage(
        layer=layer,
        units=units,
        values=values,
        image=image,
        layout=layout,
        page=page,
        pages=pages,
        source="stored" if stored else "computed",
        missing=missing,
    )
