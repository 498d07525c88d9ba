"""Receptive-field crops of an atlas's hits (docs/method.md Sec. 3.1, Fig. 2), shared by the
atlas's own crops (:mod:`zfwidgets.atlas.core`) and the rendering of its tiles
(:mod:`zfwidgets.atlas.render`)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["crop", "hit_units"]


def crop(
    images: torch.Tensor,
    boxes: list[tuple[int, int]],
    size: tuple[int, int],
    which: list[int] | None = None,
) -> torch.Tensor:
    """Crop (N, C, H, W) at top-left corners ``boxes`` (may lie outside the image) to ``size``,
    zero-padding what falls outside; crop ``i`` comes from image ``which[i]`` (default ``i``).
    Returns (len(boxes), C, h, w)."""
    _, C, H, W = images.shape
    h, w = size
    out = images.new_zeros((len(boxes), C, h, w))
    for i, (top, left) in enumerate(boxes):
        n = i if which is None else which[i]
        t0, l0 = max(top, 0), max(left, 0)
        t1, l1 = min(top + h, H), min(left + w, W)
        if t1 > t0 and l1 > l0:
            out[i, :, t0 - top : t1 - top, l0 - left : l1 - left] = images[n, :, t0:t1, l0:l1]
    return out


def hit_units(
    indices: torch.Tensor,
    positions: torch.Tensor,
    channels: Sequence[int],
    *,
    spatial: bool,
) -> tuple[list[int], torch.Tensor, torch.Tensor]:
    """The backward pass's units for the hits of ``channels`` of one layer.

    Parameters
    ----------
    indices : (C, k) long -- the layer's image index per hit
    positions : (C, k, 2) long -- the layer's ``(y, x)`` per hit
    channels : the feature maps whose hits are wanted (c of them)
    spatial : whether the layer has a spatial output (units name a position)

    Returns
    -------
    (images, inverse, units)
        ``images`` the distinct image indices to load (sorted), ``inverse`` (c * k,) the row
        of ``images`` of each hit, ``units`` (c * k, 4) ``[image row, channel, y, x]`` (or
        (c * k, 2) without ``y, x`` for a non-spatial layer), hits in channel-major order.
    """
    channels = list(channels)
    k = int(indices.shape[1])
    idx = indices[channels].cpu()  # (c, k)
    uniq, inverse = torch.unique(idx.flatten(), return_inverse=True)
    chan = torch.tensor(channels).repeat_interleave(k)
    if spatial:
        pos = positions[channels].cpu().reshape(-1, 2)
        units = torch.stack([inverse, chan, pos[:, 0], pos[:, 1]], 1)
    else:
        units = torch.stack([inverse, chan], 1)
    return uniq.tolist(), inverse, units
