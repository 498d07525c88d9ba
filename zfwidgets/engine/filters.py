"""Filters as images, the paper's RMS renormalisation and dead-filter statistics.

- :func:`filters`: convolution weights scaled to [0, 1] for display (docs/method.md Sec. 3.4, Fig. 6;
  Sec. 4, "the weights of the first layer as images").
- :func:`renormalize_filters_`, :func:`filter_rms`, :func:`dominating_filters`: a filter
  whose RMS exceeds a fixed radius (0.1 in the paper) is rescaled to that radius, which keeps
  one layer-1 filter from dominating (docs/method.md Sec. 1, Sec. 3 Fig. 6 (a)).
- :func:`dead_filters`: feature maps that stay dark for every input (docs/method.md Sec. 4).
- :func:`conv_layer`, :func:`weight_images`, :func:`weight_rms`, :func:`over_radius`: the same on
  a weight tensor (a checkpoint's, a training snapshot's) with no model around it.
- :func:`filter_flags`: both marks as one uint8 bit field per filter (:data:`DOMINATING`,
  :data:`DEAD`), the form :class:`~zfwidgets.FilterGrid` and the training monitor send.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from ..base.checks import check_finite_batch, check_model
from ..base.layers import first_conv, resolve_layer, resolve_layers

__all__ = [
    "DEAD",
    "DOMINATING",
    "FilterStats",
    "conv_layer",
    "dead_filters",
    "dominating_filters",
    "filter_flags",
    "filter_rms",
    "filters",
    "over_radius",
    "renormalize_filters_",
    "weight_images",
    "weight_rms",
]


#: Bits of :func:`filter_flags`: the filter's RMS exceeds the renormalisation radius.
DOMINATING = 1
#: Bits of :func:`filter_flags`: the filter's feature map stayed dark on every input.
DEAD = 2


def filter_flags(dominating: torch.Tensor, dead: torch.Tensor | None = None) -> torch.Tensor:
    """One uint8 per filter: :data:`DOMINATING` and/or :data:`DEAD` set.

    Parameters
    ----------
    dominating : Tensor (Cout,), bool
        From :func:`dominating_filters`.
    dead : Tensor (Cout,), bool, optional
        From :func:`dead_filters` (``.dead``); unknown when None (no bit set).

    Returns
    -------
    Tensor (Cout,), uint8, on ``dominating``'s device.
    """
    if dominating.dim() != 1:
        raise ValueError(
            f"dominating: expected a 1-D bool tensor, got shape {tuple(dominating.shape)}"
        )
    flags = dominating.to(torch.uint8) * DOMINATING
    if dead is not None:
        if dead.shape != dominating.shape:
            raise ValueError(
                f"dead: expected shape {tuple(dominating.shape)} like dominating, got {tuple(dead.shape)}"
            )
        flags = flags | (dead.to(flags.device).to(torch.uint8) * DEAD)
    return flags


def conv_layer(model: nn.Module, layer: str | nn.Module | None = None) -> tuple[str, nn.Conv2d]:
    """The convolution whose filters are shown: ``layer`` resolved to an ``nn.Conv2d``.

    Parameters
    ----------
    model : nn.Module
    layer : str or nn.Module, optional
        A dotted ``named_modules()`` name or the module; default: the model's first
        ``nn.Conv2d`` (the layer-1 filters of docs/method.md Sec. 3.4, Fig. 6).

    Returns
    -------
    (name, conv) : tuple[str, nn.Conv2d]

    Raises
    ------
    ValueError
        An unknown name (close matches listed), or no ``nn.Conv2d`` to default to.
    TypeError
        ``layer`` is not an ``nn.Conv2d``.
    """
    check_model(model)
    if layer is None:
        found = first_conv(model)
        if found is None:
            raise ValueError(
                f"layer: {type(model).__name__} has no nn.Conv2d to default to; pass layer="
            )
        return found
    name, module = resolve_layer(model, layer)
    if not isinstance(module, nn.Conv2d):
        raise TypeError(f"layer: expected an nn.Conv2d, got {name!r} ({type(module).__name__})")
    return name, module


def weight_rms(weight: torch.Tensor) -> torch.Tensor:
    """Root mean square of each filter (docs/method.md Sec. 1, filter renormalisation).

    Parameters
    ----------
    weight : Tensor (Cout, Cin, kh, kw)
        A convolution's weights (any number of trailing dimensions).

    Returns
    -------
    Tensor (Cout,)
        ``sqrt(mean(w[i] ** 2))``, detached, on the weight's device; float32 for float16 and
        bfloat16 weights, the weight's dtype otherwise.
    """
    w = weight.detach()
    if w.dtype in (torch.float16, torch.bfloat16):
        w = w.float()
    return w.reshape(w.shape[0], -1).pow(2).mean(dim=1).sqrt()


def over_radius(
    rms: torch.Tensor, radius: float, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Which filters exceed the renormalisation radius, ignoring rounding.

    docs/method.md Sec. 1: a filter whose RMS exceeds ``radius`` is rescaled to it; Sec. 3,
    Fig. 6 (a): without the rule such filters dominate.

    Parameters
    ----------
    rms : Tensor (Cout,)
        From :func:`weight_rms`.
    radius : float
        The fixed radius (0.1 in the paper).
    dtype : torch.dtype
        The weights' dtype: a filter within a relative ``max(1e-5, 8 eps(dtype))`` of
        ``radius`` (one just rescaled to it) does not count.

    Returns
    -------
    Tensor (Cout,), bool
    """
    tol = max(1e-5, 8 * torch.finfo(dtype).eps)
    return rms > radius * (1 + tol)


def weight_images(weight: torch.Tensor, *, normalize: str = "filter") -> torch.Tensor:
    """Convolution weights scaled to [0, 1], ready to show as images (see :func:`filters`).

    Parameters
    ----------
    weight : Tensor (Cout, Cin, kh, kw)
    normalize : {"filter", "layer"}
        ``"filter"``: min-max over each filter separately; ``"layer"``: one min-max over all
        of them. A constant filter (or layer) maps to 0.5.

    Returns
    -------
    Tensor (Cout, Cin, kh, kw)
        A detached copy, on the weight's device, in the weight's dtype, values in [0, 1].
    """
    if normalize not in ("filter", "layer"):
        raise ValueError(f"normalize: expected 'filter' or 'layer', got {normalize!r}")
    if not isinstance(weight, torch.Tensor) or weight.dim() != 4:
        raise ValueError(
            "weight: expected a (Cout, Cin, kh, kw) tensor, got "
            f"{tuple(weight.shape) if isinstance(weight, torch.Tensor) else type(weight).__name__}"
        )
    w = weight.detach().clone()
    flat = w.reshape(w.shape[0], -1) if normalize == "filter" else w.reshape(1, -1)
    lo = flat.amin(dim=1, keepdim=True)
    hi = flat.amax(dim=1, keepdim=True)
    span = hi - lo
    scaled = torch.where(span > 0, (flat - lo) / torch.where(span > 0, span, 1), 0.5)
    return scaled.clamp_(0, 1).reshape(w.shape)


def filters(
    model: nn.Module, layer: str | nn.Module | None = None, *, normalize: str = "filter"
) -> torch.Tensor:
    """The weights of a convolution scaled to [0, 1], ready to show as images.

    docs/method.md Sec. 3.4, Fig. 6 (layer-1 filters) and Sec. 4.

    Parameters
    ----------
    model : nn.Module
    layer : str or nn.Module, optional
        An ``nn.Conv2d`` (dotted name or module); default: the model's first ``nn.Conv2d``.
    normalize : {"filter", "layer"}
        ``"filter"``: min-max over each filter (Cin, kh, kw) separately, so every filter uses
        the full range; ``"layer"``: one min-max over the whole layer, so filters keep their
        relative strength. A constant filter (or layer) maps to 0.5.

    Returns
    -------
    Tensor (Cout, Cin / groups, kh, kw)
        A detached copy, on the weight's device, in the weight's dtype, values in [0, 1].
    """
    if normalize not in ("filter", "layer"):
        raise ValueError(f"normalize: expected 'filter' or 'layer', got {normalize!r}")
    _, conv = conv_layer(model, layer)
    return weight_images(conv.weight, normalize=normalize)


def filter_rms(model: nn.Module, layer: str | nn.Module | None = None) -> torch.Tensor:
    """RMS of each filter of a convolution (docs/method.md Sec. 1, filter renormalisation).

    Parameters
    ----------
    model : nn.Module
    layer : str or nn.Module, optional
        An ``nn.Conv2d``; default: the model's first ``nn.Conv2d``.

    Returns
    -------
    Tensor (Cout,)
        ``sqrt(mean(w[i] ** 2))`` over (Cin, kh, kw), on the weight's device.
    """
    _, conv = conv_layer(model, layer)
    return weight_rms(conv.weight)


def dominating_filters(
    model: nn.Module, layer: str | nn.Module | None = None, *, radius: float = 0.1
) -> torch.Tensor:
    """Filters whose RMS exceeds ``radius``: the ones renormalisation would rescale.

    "Exceeds" ignores rounding (a relative 1e-5 in float32), so a filter just rescaled to
    ``radius`` by :func:`renormalize_filters_` does not count.

    docs/method.md Sec. 1 and Sec. 3, Fig. 6 (a): without renormalisation a few layer-1 filters
    dominate.

    Returns
    -------
    Tensor (Cout,), bool
    """
    radius = _check_radius(radius)
    _, conv = conv_layer(model, layer)
    return over_radius(weight_rms(conv.weight), radius, conv.weight.dtype)


def _check_radius(radius: object) -> float:
    if (
        isinstance(radius, bool)
        or not isinstance(radius, (int, float))
        or not math.isfinite(radius)
        or radius <= 0
    ):
        raise ValueError(f"radius: expected a positive finite number, got {radius!r}")
    return float(radius)


def renormalize_filters_(
    model: nn.Module,
    radius: float = 0.1,
    layers: Iterable[str | nn.Module] | str | nn.Module | None = None,
) -> dict[str, int]:
    """Rescale, in place, every convolution filter whose RMS exceeds ``radius`` to RMS = radius.

    The paper's rule (docs/method.md Sec. 1): "any convolutional filter whose RMS value exceeds a
    fixed radius of 0.1 is rescaled to that radius". Call it after each optimiser step. The
    weights are changed under ``torch.no_grad`` (no ``.grad`` is created, ``requires_grad``
    is unchanged); biases are left alone. A filter whose RMS exceeds ``radius`` by less than
    rounding (a relative 1e-5 in float32) is left alone, so the call is idempotent.

    Parameters
    ----------
    model : nn.Module
    radius : float
        The fixed radius (0.1 in the paper).
    layers : names or modules, optional
        The ``nn.Conv2d`` layers to renormalise; default: every ``nn.Conv2d`` of the model.

    Returns
    -------
    dict[str, int]
        For each layer (dotted name), the number of filters rescaled.
    """
    check_model(model)
    radius = _check_radius(radius)
    if layers is None:
        named = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    else:
        named = resolve_layers(model, layers)
        for name, module in named:
            if not isinstance(module, nn.Conv2d):
                raise TypeError(
                    f"layers: expected nn.Conv2d layers, got {name!r} ({type(module).__name__})"
                )
    counts: dict[str, int] = {}
    with torch.no_grad():
        for name, conv in named:
            w = conv.weight
            rms = weight_rms(w)
            over = over_radius(rms, radius, w.dtype)
            if bool(over.any()):
                scale = torch.where(over, radius / rms, torch.ones_like(rms))
                w.mul_(scale.to(w.dtype).reshape(-1, *([1] * (w.dim() - 1))))
            counts[name] = int(over.sum())
    return counts


@dataclass
class FilterStats:
    """Per-channel activation statistics over a batch (docs/method.md Sec. 4, dead filters).

    Attributes
    ----------
    dead : Tensor (C,), bool
        Channels whose activation never exceeds ``threshold``, over every image and position.
    max : Tensor (C,)
        Largest activation of each channel.
    mean : Tensor (C,)
        Mean activation of each channel over images and positions.
    fraction_active : Tensor (C,), float
        Fraction of the images in which the channel exceeds ``threshold`` somewhere.
    threshold : float
    """

    dead: torch.Tensor
    max: torch.Tensor
    mean: torch.Tensor
    fraction_active: torch.Tensor
    threshold: float

    @property
    def num_dead(self) -> int:
        """Number of dead channels."""
        return int(self.dead.sum())


def dead_filters(activations: torch.Tensor, *, threshold: float = 0.0) -> FilterStats:
    """Find feature maps that stay dark for every input (docs/method.md Sec. 4).

    Parameters
    ----------
    activations : Tensor (N, C, H, W) or (N, C)
        A layer's outputs for N images (e.g. ``cap.activations[name]`` from
        :class:`~zfwidgets.engine.capture.Capture`); any trailing spatial dimensions are pooled.
    threshold : float
        A channel is active where its value is strictly greater than ``threshold``.

    Returns
    -------
    FilterStats
        ``dead``, ``max``, ``mean``, ``fraction_active``, each (C,).
    """
    if not isinstance(activations, torch.Tensor):
        raise TypeError(
            f"activations: expected a torch.Tensor (N, C, H, W) or (N, C), "
            f"got {type(activations).__name__}"
        )
    if activations.dim() < 2:
        raise ValueError(
            f"activations: expected (N, C, H, W) or (N, C), got shape {tuple(activations.shape)}"
        )
    if activations.shape[0] == 0 or activations.numel() == 0:
        raise ValueError(
            f"activations: expected at least one value, got shape {tuple(activations.shape)}"
        )
    if not activations.is_floating_point():
        raise TypeError(f"activations: expected a floating-point tensor, got {activations.dtype}")
    if activations.device.type == "meta":
        raise ValueError("activations: expected a tensor with values, got one on the meta device")
    if (
        isinstance(threshold, bool)
        or not isinstance(threshold, (int, float))
        or not math.isfinite(threshold)
    ):
        raise ValueError(f"threshold: expected a finite number, got {threshold!r}")
    a = check_finite_batch(activations.detach(), name="activations")
    flat = a.reshape(a.shape[0], a.shape[1], -1)  # (N, C, P)
    per_image_max = flat.amax(dim=2)  # (N, C)
    top = per_image_max.amax(dim=0)
    active = (per_image_max > threshold).float().mean(dim=0)
    return FilterStats(
        dead=top <= threshold,
        max=top,
        mean=flat.float().mean(dim=(0, 2)).to(a.dtype),
        fraction_active=active,
        threshold=float(threshold),
    )
