"""The attribution maps of one image that the Explorer shows beside occlusion.

docs/method.md Sec. 2 (the deconvnet projection and its peers, guided back-propagation and
saliency, which differ only in the rectifier's backward rule) and Sec. 4 (Grad-CAM, and any
Captum-style method as a neighbour). For one image and one unit, :func:`attribution_maps`
computes each projection once (:func:`~zfwidgets.engine.backprop.backprop`) and turns it into a
heatmap, adds Grad-CAM of the predicted class (:func:`~zfwidgets.engine.gradcam.grad_cam`) and
the maps of the given attribution methods. A method that fails is left out and its error kept,
so one broken method never hides the others.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..base.layers import eval_mode
from .backprop import backprop
from .gradcam import grad_cam

__all__ = ["VIEWS", "AttributionMaps", "attribution_maps", "method_map"]

#: The projection views by name, and the backward rule of each (:func:`backprop`'s ``rule``).
VIEWS = {"saliency": "saliency", "guided backprop": "guided", "deconvnet": "deconv"}


@dataclass
class AttributionMaps:
    """The attribution maps of one image (:func:`attribution_maps`).

    Attributes
    ----------
    predicted : int -- the class the model predicts for the image (argmax of its scores)
    projections : dict rule -> Tensor (1, C, H, W) -- the selected unit's projections to pixel
        space by backward rule (``"deconv"``, ``"guided"``, ``"saliency"``); empty when no
        unit (channel) was given
    maps : dict view -> Tensor (H, W) -- float heatmaps by view name: ``"Grad-CAM"``, the
        names of :data:`VIEWS`, and the names of the given methods
    errors : dict view -> str -- why a view failed (``"TypeError: ..."``); it has no map
    tried : list of str -- the views that were attempted as maps, in order (a projection that
        failed is in ``errors`` only)
    """

    predicted: int
    projections: dict[str, torch.Tensor] = field(default_factory=dict)
    maps: dict[str, torch.Tensor] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    tried: list[str] = field(default_factory=list)


def method_map(model: nn.Module, method: Callable, x: torch.Tensor, target: int) -> torch.Tensor:
    """The heatmap of a Captum-style attribution method: ``method(model).attribute(x,
    target=target)``, ``|.|`` summed over channels.

    Parameters
    ----------
    model : nn.Module
        Run in eval mode (flags restored), with gradients enabled.
    method : callable
        A class (or factory) taking the model, whose ``attribute(x, target=)`` returns a
        (1, C, H, W) tensor or a tuple whose first element is one (e.g.
        ``captum.attr.IntegratedGradients``).
    x : Tensor (1, C, H, W)
        Passed as a detached copy.
    target : int

    Returns
    -------
    Tensor (H, W)

    Raises
    ------
    ValueError
        When the attribution is not (1, C, H, W).
    """
    with eval_mode(model), torch.enable_grad():
        attr = method(model).attribute(x.detach().clone(), target=target)
    if isinstance(attr, tuple):
        attr = attr[0]
    if not isinstance(attr, torch.Tensor) or attr.dim() != 4:
        shape = tuple(attr.shape) if isinstance(attr, torch.Tensor) else type(attr).__name__
        raise ValueError(f"expected an attribution of shape (1, C, H, W), got {shape}")
    return attr[0].abs().sum(0)


def attribution_maps(
    model: nn.Module,
    x: torch.Tensor,
    *,
    layer: str | None = None,
    channel: int | None = None,
    views: bool = True,
    image_maps: bool = True,
    methods: Mapping[str, Callable] | None = None,
) -> AttributionMaps:
    """The attribution maps of one image: the unit's projections, their heatmaps, Grad-CAM and
    the maps of ``methods`` (docs/method.md Sec. 2 and 4).

    Parameters
    ----------
    model : nn.Module
        Returns class scores (1, classes).
    x : Tensor (1, C, H, W)
        One image, on the model's device.
    layer, channel : str and int, optional
        The unit: the strongest activation of feature map ``channel`` of ``layer`` in this
        image. Its deconvnet and guided back-propagation projections are always computed
        (``projections``); with ``views``, its saliency too. Without a channel the views
        project the predicted class score instead (the output of the last ``nn.Linear``; no
        views when the model has none).
    views : bool
        Add the heatmaps ``"saliency"``, ``"guided backprop"`` and ``"deconvnet"``
        (``|projection|`` summed over channels, (H, W)) and, with ``image_maps``,
        ``"Grad-CAM"`` (:func:`~zfwidgets.engine.gradcam.grad_cam` of the predicted class at
        the last convolution the forward calls, upsampled to (H, W)).
    image_maps : bool
        Compute the maps that depend on the image only, not on the unit: Grad-CAM and
        ``methods``. ``False`` when only the unit changed.
    methods : dict name -> attribution class, optional
        Each adds the map :func:`method_map` of the predicted class under its name.

    Returns
    -------
    AttributionMaps
        A failing projection or map is left out, its error kept in ``errors``.
    """
    maps: dict[str, torch.Tensor] = {}
    errors: dict[str, str] = {}
    tried: list[str] = []
    projections: dict[str, torch.Tensor] = {}
    with eval_mode(model), torch.no_grad():
        predicted = int(model(x).argmax(1)[0])

    def attempt(name: str, fn: Callable[[], torch.Tensor]) -> None:
        tried.append(name)
        try:
            maps[name] = fn().detach().float()
        except Exception as exc:  # one broken method must not hide the others
            errors[name] = f"{type(exc).__name__}: {exc}"

    if channel is not None:
        kw: dict[str, Any] = {"layer": layer, "channel": channel}
    else:
        last = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
        kw = {"layer": last[-1], "units": [[0, predicted]]} if last else {}
    rules = {"deconv", "guided"} if channel is not None else set()
    if views and kw:
        rules |= set(VIEWS.values())
    for rule in sorted(rules):
        try:
            projections[rule] = backprop(model, x, rule=rule, **kw)
        except Exception as exc:
            name = next(n for n, r in VIEWS.items() if r == rule)
            errors[name] = f"{type(exc).__name__}: {exc}"
    if views:
        if image_maps:
            attempt("Grad-CAM", lambda: grad_cam(model, x, target=predicted).upsampled[0])
        for name, rule in VIEWS.items():
            if rule in projections:
                attempt(name, lambda rule=rule: projections[rule][0].abs().sum(0))
    if image_maps:
        for name, method in (methods or {}).items():
            attempt(name, lambda method=method: method_map(model, method, x, predicted))
    unit = projections if channel is not None else {}
    return AttributionMaps(predicted, unit, maps, errors, tried)
