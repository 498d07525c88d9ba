"""Invariance of the features and of the output to translation, scale and rotation.

docs/method.md Sec. 3.3, Fig. 5: images are vertically translated, rescaled and rotated; for each
amount, the Euclidean distance between the feature vector of a layer for the original and for
the transformed image, and the probability of the true class. Small distances in the upper
layers and a flat probability curve mean the network is invariant to the transformation.

Everything runs on the model's device in batched forward passes (one per chunk of
``batch_size`` transformed images) through :class:`~zfwidgets.engine.capture.Capture`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..base.checks import as_int_list, check_classes, check_logits, check_positive_int
from ..base.layers import eval_mode, resolve_layers
from .capture import Capture
from .probe import check_images, dry_run

__all__ = ["TRANSFORMS", "Invariance", "default_invariance_layers", "invariance"]

TRANSFORMS = ("translate", "scale", "rotate")


@dataclass
class Invariance:
    """Fig. 5 curves for a batch of images.

    Attributes
    ----------
    transform : str
        ``"translate"`` (pixels, vertical, positive = down), ``"scale"`` (factor about the
        centre) or ``"rotate"`` (degrees, counter-clockwise).
    amounts : Tensor (A,)
    layers : list of str
    distance : dict layer -> Tensor (N, A)
        ``||f(T_a x) - f(x)|| / ||f(x)||``: the Euclidean distance between the layer's
        flattened outputs for the transformed and the original image, divided by the norm of
        the original's (so that layers compare); NaN where the original's vector is zero.
    probability : Tensor (N, A)
        Softmax probability of ``target`` for each transformed image.
    original_probability : Tensor (N,)
        The same for the untransformed images.
    target : Tensor (N,)
        The class followed: the one given, else the class predicted for the original image.
    images : Tensor (N, A, C, H, W)
        The transformed images, for a strip above the curves.
    """

    transform: str
    amounts: torch.Tensor
    layers: list[str]
    distance: dict[str, torch.Tensor]
    probability: torch.Tensor
    original_probability: torch.Tensor
    target: torch.Tensor
    images: torch.Tensor

    @property
    def mean_distance(self) -> dict[str, torch.Tensor]:
        """Per layer, the distance averaged over images (NaNs ignored), (A,)."""
        return {k: v.nanmean(0) for k, v in self.distance.items()}

    @property
    def mean_probability(self) -> torch.Tensor:
        """The probability averaged over images, (A,)."""
        return self.probability.mean(0)

    def __repr__(self) -> str:
        n, a = self.probability.shape
        return f"Invariance({self.transform!r}, {n} images x {a} amounts, layers={self.layers})"


def default_invariance_layers(model: nn.Module, shape: tuple[int, ...] | None = None) -> list[str]:
    """The paper's pair (layer 1 and layer 7): the first ``nn.Conv2d`` and the input of the
    last ``nn.Linear`` (the output of the ``nn.Linear`` before it, when there is one, else the
    last ``nn.Conv2d``). With the input ``shape``, first and last in the order the forward
    calls them (a shape-only pass), so heads the forward skips (GoogLeNet's auxiliary
    classifiers in eval mode) are not picked."""
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if shape is not None:  # the modules the forward calls, in call order
        run = dry_run(model, shape, layers=tuple(convs + linears))
        if run.ok:
            called = [n for n in run.order if run.calls.get(n, 0)]
            convs = [n for n in called if n in set(convs)]
            linears = [n for n in called if n in set(linears)]
    out = convs[:1]
    if len(linears) >= 2:
        out.append(linears[-2])
    elif len(convs) >= 2:
        out.append(convs[-1])
    if not out:
        raise ValueError(f"layers: {type(model).__name__} has no Conv2d or Linear; pass layers=")
    return out


def _default_amounts(transform: str, size: tuple[int, int]) -> torch.Tensor:
    if transform == "translate":
        q = size[0] // 4
        return torch.linspace(-q, q, 9).round()
    if transform == "scale":
        return torch.linspace(0.6, 1.4, 9)
    return torch.arange(0.0, 360.0, 30.0)


def _check_amounts(transform: str, amounts: object, size: tuple[int, int]) -> torch.Tensor:
    if amounts is None:
        return _default_amounts(transform, size).double()
    if isinstance(amounts, torch.Tensor):
        a = amounts.detach().double().reshape(-1).cpu()
    elif isinstance(amounts, (int, float)) and not isinstance(amounts, bool):
        a = torch.tensor([float(amounts)], dtype=torch.float64)
    elif isinstance(amounts, Sequence) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in amounts
    ):
        a = torch.tensor([float(v) for v in amounts], dtype=torch.float64)
    else:
        raise TypeError(f"amounts: expected a number or a sequence of numbers, got {amounts!r}")
    if a.numel() == 0:
        raise ValueError("amounts: expected at least one amount, got none")
    if not bool(torch.isfinite(a).all()):
        raise ValueError(f"amounts: expected finite numbers, got {a.tolist()}")
    if transform == "translate":
        h = size[0]
        bad = [v for v in a.tolist() if abs(v) >= h]
        if bad:
            raise ValueError(
                f"amounts: a vertical translation must stay within the image height {h} "
                f"(|amount| < {h} pixels), got {bad}"
            )
    elif transform == "scale":
        bad = [v for v in a.tolist() if v <= 0]
        if bad:
            raise ValueError(f"amounts: scale factors must be > 0, got {bad}")
    return a


def _fill_of(fill: object, x: torch.Tensor) -> torch.Tensor:
    """Per-image, per-channel fill values (N, C)."""
    n, c = x.shape[:2]
    if isinstance(fill, str):
        if fill != "mean":
            raise ValueError(f"fill: expected 'mean' or a number, got {fill!r}")
        return x.mean((2, 3))
    if isinstance(fill, (int, float)) and not isinstance(fill, bool):
        if not math.isfinite(fill):
            raise ValueError(f"fill: expected a finite number, got {fill!r}")
        return torch.full((n, c), float(fill), dtype=x.dtype, device=x.device)
    raise TypeError(f"fill: expected 'mean' or a number, got {fill!r}")


def transform_images(
    x: torch.Tensor, transform: str, amount: float, fill: torch.Tensor
) -> torch.Tensor:
    """``x`` (N, C, H, W) transformed by one amount with torchvision's affine warp (bilinear),
    uncovered pixels set to ``fill`` (N, C)."""
    from torchvision.transforms.v2 import InterpolationMode
    from torchvision.transforms.v2 import functional as TF

    angle, translate, scale = 0.0, [0.0, 0.0], 1.0
    if transform == "translate":
        translate = [0.0, float(amount)]
    elif transform == "scale":
        scale = float(amount)
    else:
        angle = float(amount)
    out = []
    same = bool((fill == fill[:1]).all())
    groups = (
        [(slice(None), fill[0])] if same else [(slice(i, i + 1), fill[i]) for i in range(len(x))]
    )
    for rows, f in groups:
        out.append(
            TF.affine(
                x[rows],
                angle=angle,
                translate=translate,
                scale=scale,
                shear=[0.0, 0.0],
                interpolation=InterpolationMode.BILINEAR,
                fill=[float(v) for v in f],
            )
        )
    return torch.cat(out) if len(out) > 1 else out[0]


def layer_features(
    model: nn.Module, x: torch.Tensor, layers: list[str], *, batch_size: int = 64
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Flattened outputs of ``layers`` (N, D_l) and the model's output (N, ...) for ``x``, in
    chunks of ``batch_size`` under ``no_grad`` (the caller sets eval mode)."""

    def reduce(name: str, out: torch.Tensor) -> torch.Tensor:
        return out.detach().reshape(out.shape[0], -1).clone()

    feats: dict[str, list[torch.Tensor]] = {name: [] for name in layers}
    outs = []
    with torch.no_grad():
        for s in range(0, x.shape[0], batch_size):
            chunk = x[s : s + batch_size]
            with Capture(model, layers, switches=False, reduce=reduce) as cap:
                outs.append(model(chunk))
            for name in layers:
                if name not in cap.activations:
                    raise ValueError(f"layers: {name!r} was not called by the forward pass")
                feats[name].append(cap.activations[name])
    if not all(isinstance(o, torch.Tensor) for o in outs):
        raise ValueError(f"model output: expected a tensor, got {type(outs[0]).__name__}")
    return {k: torch.cat(v) for k, v in feats.items()}, torch.cat(outs)


def invariance(
    model: nn.Module,
    images: torch.Tensor,
    *,
    transform: str = "translate",
    amounts: Sequence[float] | torch.Tensor | None = None,
    layers: Sequence[str | nn.Module] | str | nn.Module | None = None,
    target: int | Sequence[int] | torch.Tensor | None = None,
    fill: str | float = "mean",
    batch_size: int = 64,
) -> Invariance:
    """Fig. 5 of the paper: how far each layer's features and the class probability move when
    the images are translated, rescaled or rotated.

    Parameters
    ----------
    model : nn.Module
        Returns class scores (N, classes); run in eval mode (flags restored), no gradients.
    images : Tensor (N, C, H, W)
        On the model's device; never modified.
    transform : {"translate", "scale", "rotate"}
        Vertical translation in pixels (positive = down, as in the paper), scale factor about
        the centre, rotation in degrees; all by ``torchvision.transforms.v2.functional.affine``
        with bilinear interpolation.
    amounts : sequence of numbers, optional
        Default: translations -H/4..H/4 in 9 steps, scales 0.6..1.4 in 9 steps, rotations
        0..330 degrees by 30. Translations must satisfy ``|a| < H``, scales ``a > 0``.
    layers : names or modules, optional
        Default: :func:`default_invariance_layers` (the first convolution and the
        penultimate fully connected layer, the paper's layers 1 and 7).
    target : int or one int per image, optional
        The true classes; default: the class predicted for each original image.
    fill : "mean" or float
        Value of uncovered pixels: each image's per-channel mean (default) or a constant.
    batch_size : int
        Transformed images per forward pass.

    Returns
    -------
    Invariance
        ``distance[layer]`` (N, A), ``probability`` (N, A), ``images`` (N, A, C, H, W), with
        ``mean_distance`` / ``mean_probability`` averaged over images.
    """
    images = check_images(model, images, name="images")
    if not isinstance(transform, str) or transform not in TRANSFORMS:
        raise ValueError(f"transform: expected one of {TRANSFORMS}, got {transform!r}")
    size = (images.shape[2], images.shape[3])
    a = _check_amounts(transform, amounts, size)
    if layers is None:
        names = default_invariance_layers(model, tuple(images.shape))
    else:
        names = [n for n, _ in resolve_layers(model, layers)]
    names = list(dict.fromkeys(names))
    targets = as_int_list(target, images.shape[0], "target")
    fills = _fill_of(fill, images)
    batch_size = check_positive_int(batch_size, "batch_size")
    n, n_a = images.shape[0], len(a)
    run = dry_run(model, images.shape, layers=tuple(names))
    check_classes(targets, run.logits(n))
    for name in names:
        run.layer(name, "layers")

    x0 = images.detach()
    with eval_mode(model):
        f0, logits0 = layer_features(model, x0, names, batch_size=batch_size)
        logits0 = check_logits(logits0, n)
        n_classes = logits0.shape[1]
        if targets is None:
            t = logits0.argmax(1)
        else:
            bad = [v for v in targets if not 0 <= v < n_classes]
            if bad:
                raise ValueError(f"target: expected classes in [0, {n_classes}), got {bad}")
            t = torch.tensor(targets, device=logits0.device)
        # (A, N, C, H, W) -> (N, A, C, H, W)
        moved = torch.stack([transform_images(x0, transform, float(v), fills) for v in a], 1)
        flat = moved.reshape(n * n_a, *x0.shape[1:])
        f1, logits1 = layer_features(model, flat, names, batch_size=batch_size)
        logits1 = check_logits(logits1, n * n_a)

    distance = {}
    for name in names:
        ref = f0[name].float()
        cur = f1[name].float().reshape(n, n_a, -1)
        norm = ref.norm(dim=1)
        d = (cur - ref[:, None]).norm(dim=2) / norm[:, None]
        distance[name] = torch.where(norm[:, None] > 0, d, torch.full_like(d, float("nan")))
    p1 = logits1.float().softmax(1).reshape(n, n_a, -1)
    prob = p1.gather(2, t.view(n, 1, 1).expand(n, n_a, 1))[..., 0]
    p0 = logits0.float().softmax(1).gather(1, t[:, None])[:, 0]
    return Invariance(
        transform=transform,
        amounts=a.to(torch.float32),
        layers=names,
        distance=distance,
        probability=prob,
        original_probability=p0,
        target=t,
        images=moved,
    )
