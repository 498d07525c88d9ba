"""Correspondence analysis: does the network locate the same object part across images?

docs/method.md Sec. 3.6, Fig. 8 / Table 1. The same part (left eye, right eye, nose) is occluded in
several images of one kind. For image i and layer l, ``eps_i = f_l(x_i) - f_l(x_i occluded)``;
the consistency score is

    Delta_l = sum_{i != j} H(sign(eps_i), sign(eps_j))

with H the Hamming distance, here as the fraction of the D_l components whose signs differ
(so that layers of different sizes compare). Lower is more consistent. The baseline occludes a
box of the same size at a random place in each image (the mean over ``n_random`` draws).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..base.checks import check_int, check_number, check_positive_int
from ..base.layers import eval_mode, resolve_layers
from .invariance import default_invariance_layers, layer_features
from .probe import check_images, dry_run

__all__ = ["Correspondence", "consistency", "correspondence"]

#: The most random draws of the baseline (each is a forward pass of every image).
MAX_RANDOM = 1000


@dataclass
class Correspondence:
    """Table 1 for a set of images.

    Attributes
    ----------
    layers : list of str
    score : dict part -> dict layer -> float
        ``Delta_l`` for occluding that part in every image.
    random : dict part -> dict layer -> float
        The mean of ``Delta_l`` over ``n_random`` draws of random boxes of the part's sizes.
    random_std : dict part -> dict layer -> float
        Their standard deviation over the draws (0 for one draw).
    boxes : dict part -> Tensor (N, 4)
        ``(top, left, bottom, right)`` per image (rows ``top:bottom``, columns ``left:right``).
    random_boxes : dict part -> Tensor (n_random, N, 4)
    """

    layers: list[str]
    score: dict[str, dict[str, float]]
    random: dict[str, dict[str, float]]
    random_std: dict[str, dict[str, float]]
    boxes: dict[str, torch.Tensor]
    random_boxes: dict[str, torch.Tensor]

    def table(self) -> list[dict[str, object]]:
        """One row per part: ``{"part": ..., "<layer>": score, "<layer> random": baseline}``."""
        rows = []
        for part in self.score:
            row: dict[str, object] = {"part": part}
            for layer in self.layers:
                row[layer] = self.score[part][layer]
                row[f"{layer} random"] = self.random[part][layer]
            rows.append(row)
        return rows

    def __repr__(self) -> str:
        lines = [f"Correspondence(layers={self.layers})"]
        for part in self.score:
            cells = ", ".join(
                f"{layer}: {self.score[part][layer]:.3f} (random {self.random[part][layer]:.3f})"
                for layer in self.layers
            )
            lines.append(f"  {part}: {cells}")
        return "\n".join(lines)


def consistency(eps: torch.Tensor) -> float:
    """``sum_{i != j} H(sign eps_i, sign eps_j)`` for ``eps`` (N, D), H as a fraction of D."""
    s = torch.sign(eps)
    diff = (s[:, None, :] != s[None, :, :]).float().mean(2)  # (N, N), zero diagonal
    return float(diff.sum())


def _check_boxes(boxes: object, n: int, size: tuple[int, int], part: str) -> torch.Tensor:
    name = f"parts[{part!r}]"
    if isinstance(boxes, torch.Tensor):
        b = boxes.detach().cpu()
    elif isinstance(boxes, Sequence) and not isinstance(boxes, str):
        try:
            b = torch.as_tensor(boxes)
        except (TypeError, ValueError, RuntimeError, OverflowError) as e:
            raise TypeError(
                f"{name}: expected one (top, left, bottom, right) box of ints per image, "
                f"got {boxes!r}"[:300]
            ) from e
    else:
        raise TypeError(
            f"{name}: expected (N, 4) boxes (top, left, bottom, right), got {type(boxes).__name__}"
        )
    if b.is_floating_point() or b.is_complex() or b.dtype == torch.bool:
        raise TypeError(f"{name}: expected integer boxes, got {b.dtype}")
    b = b.long()
    if b.dim() == 1 and b.numel() == 4:
        b = b.expand(n, 4).clone()
    if b.shape != (n, 4):
        raise ValueError(
            f"{name}: expected {n} boxes (one per image) of 4 ints, got shape {tuple(b.shape)}"
        )
    h, w = size
    for i, (top, left, bottom, right) in enumerate(b.tolist()):
        if not (0 <= top < bottom <= h and 0 <= left < right <= w):
            raise ValueError(
                f"{name}: box {i} (top, left, bottom, right) = {(top, left, bottom, right)} is not a "
                f"non-empty box inside the {h}x{w} image (0 <= top < bottom <= {h}, "
                f"0 <= left < right <= {w})"
            )
    return b


def _occlude(x: torch.Tensor, boxes: torch.Tensor, fill: float) -> torch.Tensor:
    out = x.clone()
    for i, (top, left, bottom, right) in enumerate(boxes.tolist()):
        out[i, :, top:bottom, left:right] = fill
    return out


def _random_boxes(
    boxes: torch.Tensor, size: tuple[int, int], n_random: int, gen: torch.Generator
) -> torch.Tensor:
    """Boxes of the same sizes as ``boxes`` at uniform random places: (n_random, N, 4)."""
    h, w = size
    bh = boxes[:, 2] - boxes[:, 0]
    bw = boxes[:, 3] - boxes[:, 1]
    u = torch.rand(n_random, len(boxes), 2, generator=gen, dtype=torch.float64)
    top = (u[..., 0] * (h - bh + 1).double()).floor().long()
    left = (u[..., 1] * (w - bw + 1).double()).floor().long()
    return torch.stack([top, left, top + bh, left + bw], -1)


def correspondence(
    model: nn.Module,
    images: torch.Tensor,
    parts: Mapping[str, object] | Sequence[Sequence[int]] | torch.Tensor,
    *,
    layers: Sequence[str | nn.Module] | str | nn.Module | None = None,
    n_random: int = 10,
    seed: int = 0,
    fill: float = 0.0,
    batch_size: int = 64,
) -> Correspondence:
    """Table 1 of the paper: consistency of the feature change when the same part is occluded
    in every image, against random occlusions of the same size.

    Parameters
    ----------
    model : nn.Module
        Run in eval mode (flags restored), without gradients.
    images : Tensor (N, C, H, W), N >= 2
        Images of one kind (the paper: 5 dogs, frontal pose); never modified.
    parts : dict name -> boxes, or boxes
        Boxes ``(top, left, bottom, right)`` in pixels (rows ``top:bottom``, columns
        ``left:right``), one per image as an (N, 4) int tensor or a list of N 4-tuples, or one
        box for every image. A bare set of boxes is named ``"part"``.
    layers : names or modules, optional
        Default: the first convolution and the penultimate fully connected layer (as
        :func:`zfwidgets.engine.invariance`); the paper uses layers 5 and 7.
    n_random : int
        Random draws for the baseline (at most ``MAX_RANDOM`` = 1000).
    seed : int
        Seeds the random boxes (a private ``torch.Generator``; the global RNG is untouched).
    fill : float
        Value of the occluded pixels (0 is the mean grey for normalised images); finite.
    batch_size : int
        Images per forward pass.

    Returns
    -------
    Correspondence
        ``score[part][layer]``, ``random[part][layer]`` (lower = more consistent), the boxes.
    """
    images = check_images(model, images, name="images")
    n = images.shape[0]
    if n < 2:
        raise ValueError(f"images: expected at least 2 images to compare, got {n}")
    size = (images.shape[2], images.shape[3])
    if isinstance(parts, Mapping):
        if not parts:
            raise ValueError("parts: expected at least one part, got none")
        items = list(parts.items())
    else:
        items = [("part", parts)]
    boxes = {}
    for part, b in items:
        if not isinstance(part, str):
            raise TypeError(f"parts: expected str part names, got {part!r}")
        boxes[part] = _check_boxes(b, n, size, part)
    n_random = check_int(n_random, "n_random", low=1)
    if n_random > MAX_RANDOM:
        raise ValueError(f"n_random: expected at most {MAX_RANDOM} draws, got {n_random}")
    seed = check_int(seed, "seed")
    fill = check_number(fill, "fill")
    batch_size = check_positive_int(batch_size, "batch_size")
    if layers is None:
        names = default_invariance_layers(model, tuple(images.shape))
    else:
        names = list(dict.fromkeys(n_ for n_, _ in resolve_layers(model, layers)))
    run = dry_run(model, images.shape, layers=tuple(names))
    for name in names:
        run.layer(name, "layers")

    gen = torch.Generator().manual_seed(seed % 2**63)
    random_boxes = {part: _random_boxes(b, size, n_random, gen) for part, b in boxes.items()}

    x = images.detach()
    # one batch: the part occlusions, then the random ones, part by part
    occluded = []
    for part in boxes:
        occluded.append(_occlude(x, boxes[part], fill))
        occluded.extend(_occlude(x, rb, fill) for rb in random_boxes[part])
    with eval_mode(model):
        f0, _ = layer_features(model, x, names, batch_size=batch_size)
        f1, _ = layer_features(model, torch.cat(occluded), names, batch_size=batch_size)

    score: dict[str, dict[str, float]] = {}
    rand: dict[str, dict[str, float]] = {}
    rand_std: dict[str, dict[str, float]] = {}
    for p, part in enumerate(boxes):
        score[part], rand[part], rand_std[part] = {}, {}, {}
        for name in names:
            feats = f1[name].reshape(len(boxes), 1 + n_random, n, -1)[p]
            eps = f0[name][None] - feats  # (1 + n_random, N, D)
            score[part][name] = consistency(eps[0])
            draws = torch.tensor([consistency(e) for e in eps[1:]], dtype=torch.float64)
            rand[part][name] = float(draws.mean())
            rand_std[part][name] = float(draws.std(unbiased=False))
    return Correspondence(
        layers=names,
        score=score,
        random=rand,
        random_std=rand_std,
        boxes=boxes,
        random_boxes=random_boxes,
    )
