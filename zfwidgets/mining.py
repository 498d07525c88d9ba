"""Streaming top-k per feature map over a dataset: the paper's Fig. 2.

docs/method.md Sec. 3.1, Fig. 2: for a feature map, the 9 strongest activations over a whole dataset,
shown as deconvnet projections cropped to the unit's receptive field beside the same crops of
the input images. Each image counts once per feature map, with its spatial maximum.

The reduction runs inside the forward hook on the model's device, so no activation is kept
and memory does not grow with the dataset: per layer only (C, k) values, indices and positions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from ._checks import check_images, check_model, check_positive_int, model_device, resolve_layers
from ._data import ImageSource
from .atlas import Atlas
from .capture import Capture, eval_mode
from .progress import Progress, ProgressArg, check_progress

__all__ = ["mine", "TopK"]


class TopK:
    """Running top-k of (C,) scores per batch, strongest first; ties go to the lower index."""

    def __init__(self, channels: int, k: int, device: torch.device, dtype=torch.float32):
        self.k = k
        self.values = torch.full((channels, k), float("-inf"), device=device, dtype=dtype)
        self.indices = torch.full((channels, k), -1, device=device, dtype=torch.long)
        self.positions = torch.zeros((channels, k, 2), device=device, dtype=torch.long)

    def update(self, values: torch.Tensor, positions: torch.Tensor, start: int) -> None:
        """values (B, C), positions (B, C, 2) for images start .. start + B - 1."""
        B, C = values.shape
        idx = torch.arange(start, start + B, device=values.device).expand(C, B)
        v = torch.cat([self.values, values.t().to(self.values.dtype)], 1)
        i = torch.cat([self.indices, idx], 1)
        p = torch.cat([self.positions, positions.transpose(0, 1)], 1)
        # stable: the running entries (lower indices) come first and win ties
        order = torch.sort(v, dim=1, descending=True, stable=True).indices[:, : self.k]
        self.values = torch.gather(v, 1, order)
        self.indices = torch.gather(i, 1, order)
        self.positions = torch.gather(p, 1, order.unsqueeze(-1).expand(-1, -1, 2))


def _spatial_max(out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, C, H, W) -> values (B, C), positions (B, C, 2); (B, C) -> itself, zeros."""
    if out.dim() == 4:
        w = out.shape[3]
        values, flat = out.detach().flatten(2).max(2)
        return values, torch.stack([flat // w, flat % w], -1)
    if out.dim() == 2:
        values = out.detach()
        return values, torch.zeros(values.shape + (2,), dtype=torch.long, device=values.device)
    raise ValueError(f"mine: expected layer outputs (B, C, H, W) or (B, C), got {tuple(out.shape)}")


def mine(
    model: nn.Module,
    data: Any,
    *,
    layers: Iterable[str | nn.Module] | str | nn.Module,
    k: int = 9,
    batch_size: int = 64,
    transform: Callable | None = None,
    progress: ProgressArg = True,
) -> Atlas:
    """The k strongest activations of every feature map of ``layers`` over ``data``.

    Parameters
    ----------
    model : nn.Module
        Run in eval mode on its own device; every module's ``training`` flag is restored.
    data : Tensor (N, C, H, W), Dataset, DataLoader, or list of tensors / PIL images
        Datasets may return tensors or ``(tensor, label)``; PIL images need ``transform``.
        A DataLoader must iterate in a fixed order (``shuffle=False``).
    layers : names or modules
        Dotted ``named_modules()`` names. Outputs (B, C, H, W) or (B, C).
    k : int
        Hits kept per feature map (the paper's 9).
    batch_size : int
        Images per forward pass (ignored for a DataLoader, which batches itself).
    transform : callable, optional
        Applied to each item (PIL image or tensor) of a Dataset or list.
    progress : bool or callable
        ``True``: a ``tqdm.auto`` bar; a callable ``progress(done, total)`` is called after each
        batch and may raise (e.g. :class:`zfwidgets.progress.Cancelled`) to stop the work.

    Returns
    -------
    Atlas
        ``values[layer]`` (C, k), ``indices[layer]`` (C, k) dataset indices,
        ``positions[layer]`` (C, k, 2) ``(y, x)`` in the layer's output; strongest first.
        ``patches(layer, c)`` and ``reconstructions(layer, c)`` give the Fig. 2 crops.
    """
    check_model(model)
    named = resolve_layers(model, layers)
    names = list(dict.fromkeys(n for n, _ in named))
    k = check_positive_int(k, "k")
    batch_size = check_positive_int(batch_size, "batch_size")
    progress = check_progress(progress)
    source = ImageSource(data, transform=transform, batch_size=batch_size)
    if k > len(source):
        raise ValueError(f"k: expected at most the dataset size ({len(source)} images), got k={k}")
    device = model_device(model)
    first = source.first().unsqueeze(0).to(device)
    check_images(model, first, name="data[0]")
    input_size = tuple(first.shape[2:])

    tops: dict[str, TopK] = {}
    spatial: dict[str, bool] = {}
    pending: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def reduce(name: str, out: torch.Tensor):
        spatial[name] = out.dim() == 4
        pending[name] = _spatial_max(out)

    seen = 0
    with (
        Progress(progress, len(source), desc="mining", unit="img") as bar,
        eval_mode(model),
        torch.no_grad(),
    ):
        for start, batch in source.batches():
            if start != seen:
                raise RuntimeError(
                    f"data: batches out of order (expected start {seen}, got {start})"
                )
            if batch.shape[1:] != first.shape[1:]:
                raise ValueError(
                    f"data: images must share one size; image {start} has shape "
                    f"{tuple(batch.shape[1:])}, image 0 {tuple(first.shape[1:])}"
                )
            batch = batch.to(device, non_blocking=True)
            pending.clear()
            with Capture(model, names, switches=False, reduce=reduce):
                model(batch)
            for n in names:
                values, positions = pending[n]
                if n not in tops:
                    tops[n] = TopK(values.shape[1], k, device, values.dtype)
                tops[n].update(values, positions, start)
            seen += batch.shape[0]
            bar.update(batch.shape[0])
    if seen != len(source):
        raise ValueError(f"data: expected {len(source)} images from the data, got {seen}")
    return Atlas(
        layers=names,
        k=k,
        values={n: t.values for n, t in tops.items()},
        indices={n: t.indices for n, t in tops.items()},
        positions={n: t.positions for n, t in tops.items()},
        fields={},
        input_size=input_size,
        model=model,
        source=source,
        spatial=spatial,
    )
