"""2-d maps of the penultimate-layer codes: t-SNE (scikit-learn) or PCA.

docs/method.md Sec. 4 (cs231n "Understanding CNNs"): embed the codes a network computes just before
its classifier so that images it considers alike land close together; coloured by class, with
the images as thumbnails, the map shows what the features separate.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..base.checks import (
    check_callable,
    check_finite_batch,
    check_int,
    check_model,
    check_number,
    check_positive_int,
    model_device,
)
from ..base.layers import eval_mode, resolve_layer
from ..base.source import ImageSource
from .invariance import layer_features
from .probe import check_images, dry_run

__all__ = ["METHODS", "Embedding", "embed", "penultimate_layer"]

METHODS = ("tsne", "pca")


@dataclass
class Embedding:
    """A 2-d embedding of the codes of a set of images.

    Attributes
    ----------
    coords : Tensor (M, 2), float32, CPU
    codes : Tensor (M, D) -- the flattened outputs of ``layer``, on the model's device
    indices : Tensor (M,) -- which items of ``data`` (all of them, or a sorted random subset
        of ``max_points``)
    labels : Tensor (M,) or None -- the labels of the items (given, or read from ``(image,
        label)`` items)
    predicted : Tensor (M,) -- the class the model predicts for each image
    layer : str
    method : str
    explained : Tensor (2,) or None -- for PCA, the fraction of the variance of each axis
    """

    coords: torch.Tensor
    codes: torch.Tensor
    indices: torch.Tensor
    labels: torch.Tensor | None
    predicted: torch.Tensor
    layer: str
    method: str
    explained: torch.Tensor | None = None

    def __repr__(self) -> str:
        return (
            f"Embedding({self.method!r}, {len(self.coords)} points, layer={self.layer!r}, "
            f"{self.codes.shape[1]}-d codes)"
        )


def penultimate_layer(model: nn.Module) -> str:
    """The module whose output feeds the last ``nn.Linear``: its previous sibling (going up
    through parents of which it is the first child), e.g. ``avgpool`` in torchvision ResNets,
    the ReLU before the last ``Linear`` of a classifier ``Sequential``."""
    modules = dict(model.named_modules())
    linears = [n for n, m in modules.items() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"layer: {type(model).__name__} has no nn.Linear; pass layer=")
    name = linears[-1]
    while name:
        parent_name, _, child = name.rpartition(".")
        siblings = [n for n, _ in modules[parent_name].named_children()]
        k = siblings.index(child)
        if k > 0:
            prev = siblings[k - 1]
            return f"{parent_name}.{prev}" if parent_name else prev
        name = parent_name
    raise ValueError(
        f"layer: cannot tell which module feeds {linears[-1]!r} in {type(model).__name__}; "
        "pass layer="
    )


def _label_of(item: Any) -> int | None:
    if isinstance(item, (tuple, list)) and len(item) >= 2:
        y = item[1]
        if isinstance(y, torch.Tensor) and y.numel() == 1 and not y.is_floating_point():
            return int(y)
        if isinstance(y, int) and not isinstance(y, bool):
            return y
    if isinstance(item, dict):
        for key in ("label", "labels", "target"):
            if key in item:
                return _label_of((None, item[key]))
    return None


def _subset(n: int, max_points: int | None, seed: int) -> torch.Tensor:
    if max_points is None or n <= max_points:
        return torch.arange(n)
    gen = torch.Generator().manual_seed(int(seed) % 2**63)
    return torch.randperm(n, generator=gen)[:max_points].sort().values


def _pca(codes: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """First two principal components by ``torch.pca_lowrank`` (CPU, float64, seeded without
    touching the global RNG). Each axis is signed so that its largest loading is positive."""
    c = codes.detach().cpu().double()
    m, d = c.shape
    q = min(m, d, 12)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed) % 2**63)
        _, s, v = torch.pca_lowrank(c, q=q, center=True, niter=8)
    v = v[:, :2]
    if v.shape[1] < 2:  # one-dimensional codes or a single point
        v = torch.cat([v, torch.zeros(d, 2 - v.shape[1], dtype=v.dtype)], 1)
    idx = v.abs().argmax(0)
    signs = torch.sign(v[idx, torch.arange(2)])
    v = v * torch.where(signs == 0, torch.ones_like(signs), signs)
    centred = c - c.mean(0, keepdim=True)
    coords = centred @ v
    total = centred.pow(2).sum()
    explained = coords.pow(2).sum(0) / total if total > 0 else torch.zeros(2, dtype=c.dtype)
    return coords.float(), explained.float()


def _tsne(codes: torch.Tensor, seed: int, perplexity: float) -> torch.Tensor:
    from sklearn.manifold import TSNE

    c = codes.detach().cpu().float().numpy()
    m = c.shape[0]
    p = min(float(perplexity), max(1.0, (m - 1) / 3))
    out = TSNE(
        n_components=2, perplexity=p, init="pca", random_state=int(seed) % 2**32
    ).fit_transform(c)
    return torch.as_tensor(out, dtype=torch.float32)


def _stack(images: list[torch.Tensor], indices: list[int]) -> torch.Tensor:
    """One batch of (C, H, W) images; a ``ValueError`` naming ``data`` when sizes differ."""
    first = tuple(images[0].shape)
    for i, t in zip(indices, images):
        if tuple(t.shape) != first:
            raise ValueError(
                f"data: images must share one size; image {indices[0]} has shape {first}, "
                f"image {i} has {tuple(t.shape)} (resize them with a transform)"
            )
    return torch.stack(images)


def _check_one_size(src: Any, indices: list[int]) -> None:
    """Every picked item of an in-memory list has the same (C, H, W) shape (no transform)."""
    shapes = []
    for i in indices:
        t = src.items[i]
        t = t[0] if isinstance(t, (tuple, list)) and t else t
        shapes.append(tuple(t.shape) if isinstance(t, torch.Tensor) else None)
    known = [(i, s) for i, s in zip(indices, shapes) if s is not None]
    if known:
        i0, s0 = known[0]
        for i, s in known:
            if s != s0:
                raise ValueError(
                    f"data: images must share one size; image {i0} has shape {s0}, image {i} "
                    f"has {s} (resize them with a transform)"
                )


def embed(
    model: nn.Module,
    data: Any,
    *,
    layer: str | nn.Module | None = None,
    method: str = "tsne",
    max_points: int | None = 2000,
    labels: Sequence[int] | torch.Tensor | None = None,
    transform: Any = None,
    batch_size: int = 64,
    seed: int = 0,
    perplexity: float = 30.0,
) -> Embedding:
    """Embed the codes of ``layer`` (default: the penultimate layer) for the images of
    ``data`` in 2-d, by t-SNE or PCA.

    Parameters
    ----------
    model : nn.Module
        Run in eval mode (flags restored), without gradients.
    data : tensor (N, C, H, W), Dataset, DataLoader (fixed order) or list
        Anything :class:`zfwidgets.base.source.ImageSource` accepts; ``(image, label)`` items give
        the labels.
    layer : str or nn.Module, optional
        Default: :func:`penultimate_layer`, the input of the last ``nn.Linear``.
    method : {"tsne", "pca"}
        ``"tsne"`` needs scikit-learn (``pip install zfwidgets[embed]``); ``"pca"`` is
        ``torch.pca_lowrank``.
    max_points : int or None
        Embed at most this many images (a seeded random subset, in data order); ``None``: all.
    labels : one int per item of ``data``, optional
        Overrides the labels read from the items.
    transform : callable, optional
        Applied to PIL images (as in :func:`zfwidgets.mine`).
    batch_size : int
    seed : int
        Seeds the subset, PCA's random projection and t-SNE.
    perplexity : float
        t-SNE's perplexity (capped at ``(M - 1) / 3`` for small sets).

    Returns
    -------
    Embedding
        ``coords`` (M, 2), ``codes`` (M, D), ``indices``, ``labels``, ``predicted``.
    """
    check_model(model)
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(f"method: expected one of {METHODS}, got {method!r}")
    if method == "tsne":
        try:
            import sklearn.manifold  # noqa: F401
        except ImportError as e:
            raise ImportError(
                "method='tsne' needs scikit-learn: pip install 'zfwidgets[embed]' "
                "(or pip install scikit-learn), or use method='pca'"
            ) from e
    if max_points is not None:
        max_points = check_int(max_points, "max_points", low=2)
    perplexity = check_number(perplexity, "perplexity", positive=True)
    seed = check_int(seed, "seed")
    transform = check_callable(transform, "transform")
    batch_size = check_positive_int(batch_size, "batch_size")
    name = penultimate_layer(model) if layer is None else resolve_layer(model, layer)[0]
    src = ImageSource(data, transform=transform, batch_size=batch_size)
    n = len(src)
    if n < 2:
        raise ValueError(f"data: expected at least 2 images to embed, got {n}")
    given = None
    if labels is not None:
        try:
            given = torch.as_tensor(labels).reshape(-1)
        except (TypeError, ValueError, RuntimeError, OverflowError) as e:
            raise TypeError(
                f"labels: expected {n} integer labels (one per item), got {labels!r}"[:300]
            ) from e
        if given.is_floating_point() or given.is_complex() or given.shape[0] != n:
            raise ValueError(
                f"labels: expected {n} integer labels (one per item), got {labels!r}"[:300]
            )
    if src.is_tensor and src.items.device.type == "meta":
        raise ValueError("data: expected images with values, got a tensor on the meta device")
    indices = _subset(n, max_points, seed)
    if not src.is_tensor and isinstance(src.items, (list, tuple)) and transform is None:
        _check_one_size(src, indices.tolist())  # in memory: every size known before the work

    codes, outs, found = [], [], []
    shape_of: tuple = ((), None)
    with eval_mode(model):
        for s in range(0, len(indices), batch_size):
            chunk = indices[s : s + batch_size].tolist()
            if src.is_tensor:
                x = src.items[chunk]
                found.extend([None] * len(chunk))
            else:
                items = [src.items[i] for i in chunk]
                x = _stack([src.prepare(item, i) for item, i in zip(items, chunk)], chunk)
                found.extend(_label_of(item) for item in items)
            x = x.to(model_device(model))
            if s == 0 and src.is_tensor:  # the whole tensor at once: one reduction
                check_finite_batch(src.items, name="data")
            if s == 0:
                x = check_images(model, x, name="data", size=False)
                shape = x.shape
                run = dry_run(model, shape, layers=(name,))
                if not run.ok:
                    check_images(model, x, name="data")  # a size the network cannot take
                run.layer(name)
            else:
                if x.shape[1:] != shape[1:]:
                    raise ValueError(
                        f"data: images must share one size; image {chunk[0]} has shape "
                        f"{tuple(x.shape[1:])}, the first {tuple(shape[1:])}"
                    )
                check_finite_batch(x, name="data", indices=chunk)
                x = x.to(shape_of[1])
            shape_of = (x.shape, x.dtype) if s == 0 else shape_of
            feats, out = layer_features(model, x, [name], batch_size=batch_size)
            codes.append(feats[name])
            outs.append(out)
    codes_t = torch.cat(codes)
    out_t = torch.cat(outs)
    predicted = out_t.argmax(1) if out_t.dim() == 2 else torch.full((len(indices),), -1)
    if given is not None:
        lab = given[indices]
    elif all(v is not None for v in found):
        lab = torch.tensor(found, dtype=torch.long)
    else:
        lab = None

    explained = None
    if method == "pca":
        coords, explained = _pca(codes_t, seed)
    else:
        coords = _tsne(codes_t, seed, perplexity)
    return Embedding(
        coords=coords,
        codes=codes_t,
        indices=indices,
        labels=lab,
        predicted=predicted,
        layer=name,
        method=method,
        explained=explained,
    )
