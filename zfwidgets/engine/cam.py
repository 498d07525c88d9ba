"""Class activation maps (Zhou et al. 2016) for global-average-pooling networks.

docs/method.md Sec. 4: in a network that ends with global average pooling of feature maps F
(N, C, h, w) followed by one linear layer W (classes, C), the score of class k is
``sum_c W[k, c] mean(F_c) + b_k``, so ``M_k = sum_c W[k, c] F_c`` (h, w) shows where the
evidence for k lies. For such a network it equals Grad-CAM of the same layer without the ReLU,
times ``h * w`` (the gradient of the score by ``F_c`` is ``W[k, c] / (h w)`` everywhere).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..base.checks import as_int_list, check_classes, check_logits
from ..base.layers import eval_mode, resolve_layer
from .capture import Capture
from .probe import check_images, dry_run

__all__ = ["Cam", "cam", "find_gap"]


@dataclass
class Cam:
    """Class activation maps of a batch.

    Attributes
    ----------
    map : Tensor (N, h, w) -- ``sum_c W[target, c] F_c`` at the layer's resolution, signed
    upsampled : Tensor (N, H, W) -- bilinearly resized to the input
    target : Tensor (N,)
    layer : str -- the module whose output F is
    fc : str -- the final linear layer whose weights are used
    """

    map: torch.Tensor
    upsampled: torch.Tensor
    target: torch.Tensor
    layer: str
    fc: str


def _is_gap(m: nn.Module) -> bool:
    if not isinstance(m, nn.AdaptiveAvgPool2d):
        return False
    size = m.output_size
    if isinstance(size, int):
        return size == 1
    return tuple(size) == (1, 1)


def find_gap(model: nn.Module, shape: tuple[int, ...] | None = None) -> tuple[str, str, str]:
    """``(feature layer, pooling layer, final linear)`` of a global-average-pooling network:
    the last ``nn.AdaptiveAvgPool2d(1)``, the module just before it among its siblings (its
    input, e.g. ``layer4`` in torchvision's ResNets), and the last ``nn.Linear``. With the
    input ``shape``, "before" is in the order the forward calls them (found by a shape-only
    pass), so auxiliary heads registered between (GoogLeNet's) are skipped."""
    modules = dict(model.named_modules())
    pools = [n for n, m in modules.items() if n and _is_gap(m)]
    linears = [n for n, m in modules.items() if isinstance(m, nn.Linear)]
    if not pools or not linears:
        missing = "nn.AdaptiveAvgPool2d(1)" if not pools else "a final nn.Linear"
        raise ValueError(
            f"model: CAM needs a global-average-pooling network (nn.AdaptiveAvgPool2d(1) followed "
            f"by a final nn.Linear, as torchvision's ResNets); {type(model).__name__} has no "
            f"{missing}. Use zf.grad_cam for any network, or pass layer= and fc="
        )
    pool = pools[-1]
    parent_name, _, child = pool.rpartition(".")
    parent = modules[parent_name]
    siblings = list(parent.named_children())
    k = [n for n, _ in siblings].index(child)
    if k == 0:
        raise ValueError(
            f"layer: cannot tell which module feeds the pooling {pool!r} (it is the first child "
            f"of {parent_name or type(model).__name__!r}); pass layer="
        )
    prev = siblings[k - 1][0]
    if shape is not None:
        full = [f"{parent_name}.{n}" if parent_name else n for n, _ in siblings[: k + 1]]
        run = dry_run(model, shape, layers=tuple(full))
        if run.ok and full[-1] in run.order:
            at = run.order.index(full[-1])
            before = [n for n in run.order[:at] if n in full[:-1]]
            if before:
                prev = before[-1].rpartition(".")[2]
    feature = f"{parent_name}.{prev}" if parent_name else prev
    return feature, pool, linears[-1]


def cam(
    model: nn.Module,
    x: torch.Tensor,
    *,
    target: int | list[int] | torch.Tensor | None = None,
    layer: str | nn.Module | None = None,
    fc: str | nn.Linear | None = None,
) -> Cam:
    """Class activation maps (CAM) of a global-average-pooling network.

    Parameters
    ----------
    model : nn.Module
        Ends with ``nn.AdaptiveAvgPool2d(1)`` + a final ``nn.Linear`` (torchvision ResNets,
        DenseNet-style ``features`` + ``avgpool`` + ``classifier``, ...). Run in eval mode,
        flags restored, no gradients.
    x : Tensor (N, C, H, W)
    target : int or one int per image, optional
        Default: each image's predicted class.
    layer : str or nn.Module, optional
        The module whose output (N, C, h, w) is pooled; default: the module just before the
        last ``nn.AdaptiveAvgPool2d(1)`` (``layer4`` for a ResNet).
    fc : str or nn.Linear, optional
        The linear layer on the pooled vector; default: the last ``nn.Linear``.

    Returns
    -------
    Cam
        ``map`` (N, h, w) and ``upsampled`` (N, H, W), signed (not rectified).

    Raises
    ------
    ValueError
        Before any forward pass (from a shape-only pass on the meta device): a model without
        global average pooling or a final linear layer, a bad target, a ``layer`` that does
        not give (N, C, h, w) maps whose channel count matches ``fc``, an output that is not
        ``fc``'s. After the forward pass when the logits are not ``fc`` of the spatial mean
        of the maps (then CAM does not hold; use :func:`zfwidgets.grad_cam`).
    """
    x = check_images(model, x)
    gap = None
    if layer is None or fc is None:
        gap = find_gap(model, tuple(x.shape))
    name = gap[0] if layer is None else resolve_layer(model, layer)[0]
    fc_name, fc_module = resolve_layer(model, gap[2] if fc is None else fc)
    if not isinstance(fc_module, nn.Linear):
        raise ValueError(f"fc: expected an nn.Linear, got {type(fc_module).__name__} ({fc_name!r})")
    weight = fc_module.weight.detach()
    n_classes = weight.shape[0]
    targets = as_int_list(target, x.shape[0], "target")
    check_classes(targets, n_classes)
    run = dry_run(model, x.shape, layers=(name, fc_name))
    run.logits(x.shape[0])
    shape = run.layer(name)
    if shape is not None:
        if len(shape) != 4:
            raise ValueError(f"layer: CAM needs (N, C, h, w) feature maps; {name!r} gives {shape}")
        if shape[1] != weight.shape[1]:
            raise ValueError(
                f"layer: {name!r} gives {shape[1]} channels but {fc_name!r} takes "
                f"{weight.shape[1]} inputs; pass the layer whose maps are pooled into fc"
            )
        run.layer(fc_name, "fc")
        if fc_name not in run.returns:
            raise ValueError(
                f"model: the output is not the output of {fc_name!r} (something follows it), "
                "so CAM does not apply; pass layer=/fc=, or use zf.grad_cam"
            )

    with eval_mode(model), torch.no_grad():
        with Capture(model, [name], switches=False) as cap:
            logits = check_logits(model(x), x.shape[0])
        if name not in cap.activations:
            raise ValueError(f"layer: {name!r} was not called by the forward pass")
        feats = cap.activations[name]
    if not isinstance(feats, torch.Tensor) or feats.dim() != 4:
        shape = tuple(feats.shape) if isinstance(feats, torch.Tensor) else type(feats).__name__
        raise ValueError(f"layer: CAM needs (N, C, h, w) feature maps; {name!r} gives {shape}")
    if feats.shape[1] != weight.shape[1]:
        raise ValueError(
            f"layer: {name!r} gives {feats.shape[1]} channels but {fc_name!r} takes "
            f"{weight.shape[1]} inputs; pass the layer whose maps are pooled into fc"
        )
    expected = F.linear(feats.mean((2, 3)), weight, fc_module.bias)
    if expected.shape != logits.shape or not torch.allclose(
        expected.float(), logits.float(), rtol=1e-3, atol=1e-4
    ):
        raise ValueError(
            f"model: the logits are not {fc_name!r} applied to the spatial mean of "
            f"{name!r}'s maps, so CAM does not apply; pass layer=/fc=, or use zf.grad_cam"
        )
    t = logits.argmax(1) if targets is None else torch.tensor(targets, device=logits.device)
    w_t = weight[t].to(feats.dtype)  # (N, C)
    m = torch.einsum("nc,nchw->nhw", w_t, feats)
    up = F.interpolate(m[:, None], size=x.shape[2:], mode="bilinear", align_corners=False)[:, 0]
    return Cam(map=m, upsampled=up, target=t, layer=name, fc=fc_name)
