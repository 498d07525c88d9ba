"""Grad-CAM (Selvaraju et al. 2017), batched, on the engine's capture.

docs/method.md Sec. 4: class activation maps, in their gradient-weighted form for any network. For
a layer with feature maps A (N, C, h, w) and the score y of the target class, the weight of
map c is the spatial mean of dy/dA_c and the map is ``relu(sum_c weight_c * A_c)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ._checks import as_int_list, check_images, check_logits, resolve_layer
from .capture import Capture, eval_mode

__all__ = ["GradCam", "grad_cam"]


@dataclass
class GradCam:
    """Grad-CAM of a batch.

    Attributes
    ----------
    map : Tensor (N, h, w) -- at the layer's resolution (rectified unless ``relu=False``)
    upsampled : Tensor (N, H, W) -- bilinearly resized to the input
    target : Tensor (N,) -- the class of each image
    layer : str
    """

    map: torch.Tensor
    upsampled: torch.Tensor
    target: torch.Tensor
    layer: str


def _last_conv(model: nn.Module) -> str:
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    if not names:
        raise ValueError(f"layer: {type(model).__name__} has no nn.Conv2d; pass layer=")
    return names[-1]


def grad_cam(
    model: nn.Module,
    x: torch.Tensor,
    *,
    layer: str | nn.Module | None = None,
    target: int | list[int] | torch.Tensor | None = None,
    relu: bool = True,
) -> GradCam:
    """Grad-CAM of ``layer`` (default: the last ``nn.Conv2d``) for ``target`` classes.

    Parameters
    ----------
    model : nn.Module
        Returns class scores (N, classes); run in eval mode, flags restored, no ``.grad``.
    x : Tensor (N, C, H, W)
    layer : str or nn.Module, optional
        Must give (N, C, h, w) feature maps (the last call of a reused module).
    target : int or one int per image, optional
        Default: each image's predicted class.
    relu : bool
        Rectify the map (the paper's definition); ``False`` keeps negative evidence.
    """
    check_images(model, x)
    name = _last_conv(model) if layer is None else resolve_layer(model, layer)[0]
    targets = as_int_list(target, x.shape[0], "target")
    with eval_mode(model), torch.enable_grad():
        xg = x.detach().clone().requires_grad_(True)  # keeps a graph with frozen weights
        with Capture(model, [name], switches=False, keep_graph=True) as cap:
            logits = check_logits(model(xg), x.shape[0])
        if name not in cap.activations:
            raise ValueError(f"layer: {name!r} was not called by the forward pass")
        a = cap.activations[name]
        if a.dim() != 4:
            raise ValueError(
                f"layer: Grad-CAM needs (N, C, h, w) feature maps; {name!r} gives {tuple(a.shape)}"
            )
        n_classes = logits.shape[1]
        if targets is None:
            t = logits.detach().argmax(1)
        else:
            bad = [v for v in targets if not 0 <= v < n_classes]
            if bad:
                raise ValueError(f"target: expected classes in [0, {n_classes}), got {bad}")
            t = torch.tensor(targets, device=logits.device)
        score = logits.gather(1, t[:, None]).sum()
        (g,) = torch.autograd.grad(score, a)
    weights = g.mean((2, 3), keepdim=True)
    cam = (weights * a.detach()).sum(1)
    if relu:
        cam = cam.clamp_min(0)
    up = F.interpolate(cam[:, None], size=x.shape[2:], mode="bilinear", align_corners=False)[:, 0]
    return GradCam(map=cam, upsampled=up, target=t, layer=name)
