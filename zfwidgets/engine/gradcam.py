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

from ..base.checks import as_int_list, check_classes, check_logits
from ..base.layers import eval_mode, resolve_layer
from .capture import Capture
from .probe import check_images, dry_run, last_called_conv

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


def grad_cam(
    model: nn.Module,
    x: torch.Tensor,
    *,
    layer: str | nn.Module | None = None,
    target: int | list[int] | torch.Tensor | None = None,
    relu: bool = True,
) -> GradCam:
    """Grad-CAM of ``layer`` (default: the last ``nn.Conv2d`` the forward calls) for
    ``target`` classes.

    Parameters
    ----------
    model : nn.Module
        Returns class scores (N, classes); run in eval mode, flags restored, no ``.grad``.
    x : Tensor (N, C, H, W)
    layer : str or nn.Module, optional
        Must give (N, C, h, w) feature maps (the last call of a reused module) on the path to
        the output. Default: the last ``nn.Conv2d`` the forward pass calls (found by a
        shape-only pass; auxiliary heads registered after the main path are skipped).
    target : int or one int per image, optional
        Default: each image's predicted class.
    relu : bool
        Rectify the map (the paper's definition); ``False`` keeps negative evidence.

    Raises
    ------
    TypeError, ValueError
        Before any forward pass: bad images, layer or target, a layer the forward does not
        call, whose maps are not (N, C, h, w), or whose output does not reach the logits.
    """
    x = check_images(model, x)
    name = last_called_conv(model, x.shape)[0] if layer is None else resolve_layer(model, layer)[0]
    targets = as_int_list(target, x.shape[0], "target")
    if not isinstance(relu, bool):
        raise TypeError(f"relu: expected True or False, got {relu!r}")
    run = dry_run(model, x.shape, layers=(name,), reach=True)
    check_classes(targets, run.logits(x.shape[0]))
    shape = run.layer(name)
    if shape is not None:
        if len(shape) != 4:
            raise ValueError(
                f"layer: Grad-CAM needs (N, C, h, w) feature maps; {name!r} gives {shape}"
            )
        if not run.reaches.get(name, True):
            raise ValueError(
                f"layer: the output of {name!r} does not reach the model's output, so the class "
                "score has no gradient there; pick a layer on the path to the logits"
            )
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
        (g,) = torch.autograd.grad(score, a, allow_unused=True)
        if g is None:
            raise ValueError(
                f"layer: the output of {name!r} does not reach the model's output, so the class "
                "score has no gradient there; pick a layer on the path to the logits"
            )
    weights = g.mean((2, 3), keepdim=True)
    cam = (weights * a.detach()).sum(1)
    if relu:
        cam = cam.clamp_min(0)
    up = F.interpolate(cam[:, None], size=x.shape[2:], mode="bilinear", align_corners=False)[:, 0]
    return GradCam(map=cam, upsampled=up, target=t, layer=name)
