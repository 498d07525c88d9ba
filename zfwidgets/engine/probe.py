"""What a model takes and does, found before the work: shape-only forward passes on the meta
device (sizes, layer shapes, the layers the forward calls) and the input checks built on them
(:func:`check_images`, :func:`one_image`) that every engine function makes before its first
real forward.

A pass runs on a copy of the module tree (:func:`~zfwidgets.base.layers.module_tree_copy`)
whose parameters stand in as meta tensors, watched by :class:`~zfwidgets.engine.capture.Capture`
(the package's only hooks): no data, no memory for activations, the model untouched.
"""

from __future__ import annotations

import contextlib
import math
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..base.checks import check_finite_batch, check_model, model_device, model_dtype
from ..base.layers import eval_mode, first_conv, module_tree_copy

__all__ = [
    "DryRun",
    "called_convs",
    "check_images",
    "check_input_size",
    "dry_run",
    "fixed_input_size",
    "last_called_conv",
    "layer_shapes",
    "one_image",
]


# ---------------------------------------------------------------------------------------------
# Shape-only passes on the meta device: sizes, layer shapes, the layers the forward calls
# ---------------------------------------------------------------------------------------------
@dataclass
class DryRun:
    """What one forward pass of a ``shape`` input does, found on the meta device (no data).

    Attributes
    ----------
    shape : tuple -- the input shape (N, C, H, W)
    output : tuple or None -- the shape of the model's output when it is a tensor
    error : str or None -- why the pass failed (then the other fields are partial)
    convs : list of str -- every ``nn.Conv2d`` in the order the forward calls it (a module
        called twice appears at its last call)
    order : list of str -- the same for every convolution and watched layer
    shapes : dict name -> tuple -- the last output shape of each watched layer
    calls : dict name -> int -- how often each watched layer was called
    reaches : dict name -> bool -- whether the output depends on the layer's last output
    returns : set of str -- watched layers whose last output is the model's output itself
    """

    shape: tuple[int, ...]
    output: tuple[int, ...] | None = None
    error: str | None = None
    convs: list[str] = field(default_factory=list)
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)
    reaches: dict[str, bool] = field(default_factory=dict)
    returns: set[str] = field(default_factory=set)
    output_type: str = ""
    order: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None

    def logits(self, n: int) -> int | None:
        """The number of classes when the output is (n, classes); a ``ValueError`` when the
        pass ran and the output is not class scores; ``None`` when the pass could not run."""
        if not self.ok:
            return None
        if self.output is None or len(self.output) != 2 or self.output[0] != n:
            got = self.output_type if self.output is None else f"shape {self.output}"
            raise ValueError(
                f"model output: expected class scores (logits) of shape ({n}, classes), got {got}"
            )
        return self.output[1]

    def layer(self, name: str, what: str = "layer") -> tuple[int, ...] | None:
        """The output shape of a watched layer; a ``ValueError`` naming ``what`` when the
        forward does not call it or it returns no tensor; ``None`` when the pass could not run."""
        if not self.ok:
            return None
        if self.calls.get(name, 0) == 0:
            raise ValueError(
                f"{what}: {name!r} is not called by the model's forward pass (for an input of "
                f"shape {self.shape}); pick a module the forward uses"
            )
        if name not in self.shapes:
            raise ValueError(f"{what}: {name!r} returns no tensor; pick a layer that returns one")
        return self.shapes[name]


_UNSUPPORTED = object()


_cache: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _fingerprint(model: nn.Module) -> tuple:
    return tuple(
        (
            id(m),
            tuple((k, tuple(p.shape), p.dtype) for k, p in m._parameters.items() if p is not None),
        )
        for m in model.modules()
    )


def _meta_pass(
    model: nn.Module,
    shape: tuple[int, ...],
    dtype: torch.dtype,
    watch: tuple[str, ...],
    reach: bool,
) -> DryRun:
    from torch.func import functional_call

    from .capture import Capture

    run = DryRun(shape=tuple(shape))
    named = dict(model.named_modules())
    convs = [n for n, m in named.items() if n and isinstance(m, nn.Conv2d)]
    layers = list(dict.fromkeys([*convs, *watch]))
    kept: dict[str, torch.Tensor] = {}
    order: list[str] = []
    watched = set(watch)

    def reduce(name: str, out: object) -> None:
        if name in order:
            order.remove(name)
        order.append(name)
        if name in watched and isinstance(out, torch.Tensor):
            run.shapes[name] = tuple(out.shape)
            kept[name] = out

    # The pass runs on a copy of the module tree that shares nothing but the (untouched)
    # parameter and buffer objects: the meta stand-ins and the hooks never appear on the
    # user's modules, so a forward of the real model on another thread is not disturbed.
    target = module_tree_copy(model)
    tensors = dict(target.named_parameters(remove_duplicate=False))
    tensors.update(target.named_buffers(remove_duplicate=False))
    meta = {k: torch.empty_like(v, device="meta") for k, v in tensors.items()}
    x = torch.empty(shape, dtype=dtype, device="meta", requires_grad=reach)
    # switches=True: a max-pool that returns its indices hands over its pooled tensor
    cap = Capture(target, layers, switches=True, reduce=reduce) if layers else None
    try:
        with eval_mode(target), torch.set_grad_enabled(reach), cap or contextlib.nullcontext():
            out = functional_call(target, meta, (x,))
    except Exception as exc:  # shape errors and models that cannot run on meta alike
        run.error = f"{type(exc).__name__}: {exc}".split("\n")[0][:300]
    run.calls = dict(cap.calls) if cap is not None else {}
    if run.error is None:
        run.output_type = type(out).__name__
        if isinstance(out, torch.Tensor):
            run.output = tuple(out.shape)
            run.returns = {n for n, t in kept.items() if t is out}
            if reach and kept and out.requires_grad:
                names = list(kept)
                grads = torch.autograd.grad(
                    out.float().sum(), [kept[n] for n in names], allow_unused=True
                )
                run.reaches = {n: g is not None for n, g in zip(names, grads)}
            if reach:
                for n in kept:
                    run.reaches.setdefault(n, False)
    conv_set = set(convs)
    run.order = list(order)
    run.convs = [n for n in order if n in conv_set]
    return run


def dry_run(
    model: nn.Module,
    shape: Sequence[int],
    *,
    layers: Iterable[str] = (),
    reach: bool = False,
    dtype: torch.dtype | None = None,
    cached: bool = True,
) -> DryRun:
    """One forward pass of an input of ``shape`` on the meta device: shapes only, no data,
    no memory for activations, the model untouched (its parameters stand in as meta tensors
    for the pass; every module's ``training`` flag restored). Cached per model and shape
    (the module tree and parameter shapes) unless ``cached=False``.

    ``layers`` are watched (output shapes, call counts); with ``reach=True`` a backward pass
    on meta tells which of them the output depends on.
    """
    dtype = model_dtype(model) if dtype is None else dtype
    key = (tuple(int(v) for v in shape), dtype, tuple(layers), bool(reach))
    if not cached:
        return _meta_pass(model, key[0], dtype, key[2], reach)
    try:
        per_model = _cache.setdefault(model, {})
    except TypeError:  # not weak-referenceable
        per_model = {}
    fp = _fingerprint(model)
    if per_model.get("fp") != fp:
        per_model.clear()
        per_model["fp"] = fp
    if key not in per_model:
        if len(per_model) > 64:
            per_model.clear()
            per_model["fp"] = fp
        per_model[key] = _meta_pass(model, key[0], dtype, key[2], reach)
    return per_model[key]


def _runs(model: nn.Module, n: int, c: int, h: int, w: int) -> bool:
    return dry_run(model, (n, c, h, w)).ok


def _fixed_size(model: nn.Module, failed: DryRun, c: int, start: int) -> int | None:
    """The square size at which a head that wants a fixed number of features runs, or None.

    The pass at the failing size names the last layer that ran before the failure (``feed``)
    and the first ``nn.Linear`` the forward did not reach (the head that refused its input).
    The features ``feed`` hands on per image grow with the image size (convolutions and
    poolings are monotone in it), so a bisection on the size finds the one where they equal
    the head's ``in_features``; the size counts only when the whole pass then runs.
    """
    linears = [(n, m) for n, m in model.named_modules() if n and isinstance(m, nn.Linear)]
    if not linears:
        return None
    leaves = tuple(n for n, m in model.named_modules() if n and not any(True for _ in m.children()))
    run = dry_run(model, failed.shape, layers=leaves)
    if run.ok or not run.order:
        return None
    heads = [m for n, m in linears if run.calls.get(n, 0) == 0]
    feed = run.order[-1]
    if not heads or feed not in run.shapes:
        return None
    want = heads[0].in_features

    def features(s: int) -> int:  # -1: the pass fails before ``feed`` (the image is too small)
        r = dry_run(model, (1, c, s, s), layers=leaves)
        shape = r.shapes.get(feed)
        return -1 if shape is None or not r.calls.get(feed) else math.prod(shape[1:])

    lo, hi = 0, max(int(start), 1)
    while features(hi) < want:
        lo, hi = hi, hi * 2
        if hi > 8192:
            return None
    while hi - lo > 1:  # the smallest size whose features reach ``want``
        mid = (lo + hi) // 2
        if features(mid) >= want:
            hi = mid
        else:
            lo = mid
    return hi if features(hi) == want and _runs(model, 1, c, hi, hi) else None


_LADDER = (16, 28, 32, 64, 75, 96, 128, 224, 227, 256, 299, 384, 512, 1024)


def fixed_input_size(model: nn.Module, channels: int) -> int | None:
    """The square size a model whose classifier takes one size (a flatten into an
    ``nn.Linear``) needs, found on the meta device; ``None`` when a 224x224 input runs (or
    when no size can be found: a model that cannot run on meta)."""
    run = dry_run(model, (1, channels, 224, 224))
    if run.ok:
        return None
    working = [s for s in _LADDER if _runs(model, 1, channels, s, s)]
    if working and working[-1] != _LADDER[-1]:
        return working[0]
    if working:
        return None
    return _fixed_size(model, run, channels, 224)


def check_input_size(model: nn.Module, shape: tuple[int, ...], *, name: str = "x") -> None:
    """Refuse an image size the network cannot take, before any work.

    A failing meta pass at ``shape`` is compared with square sizes: when some size works,
    the ``ValueError`` names the smallest size the network accepts and, for a classifier that
    takes one fixed size, that size. A fixed size that none of the tried squares hits (a head
    that wants 20x20) is found from the features fed to the first ``nn.Linear`` the pass did
    not reach (:func:`_fixed_size`). When no size works on meta (a model that cannot run on
    the meta device), nothing is said here and the real forward reports.
    """
    n, c, h, w = shape
    run = dry_run(model, (1, c, h, w))
    if run.ok:
        return
    ladder = sorted({*_LADDER, max(h, w)})
    working = [s for s in ladder if _runs(model, 1, c, s, s)]
    if not working:
        # A head that takes one size off the ladder (a Linear after a flatten at 20x20)
        # fails at every rung; find its size from the features it is fed.
        fixed = _fixed_size(model, run, c, max(h, w))
        if fixed is None:
            return  # the meta pass itself fails: let the real forward speak
        working = [fixed]
    why = f"(the forward pass would fail with {run.error})"
    if working[-1] != ladder[-1]:  # a classifier that takes one size (or a few)
        ranges = []
        for s in working:
            if any(lo <= s <= hi for lo, hi in ranges):
                continue
            lo = hi = s
            while lo > 1 and s - lo < 64 and _runs(model, 1, c, lo - 1, lo - 1):
                lo -= 1
            while hi - s < 64 and _runs(model, 1, c, hi + 1, hi + 1):
                hi += 1
            ranges.append((lo, hi))
        sizes = " or ".join(
            f"{lo}x{lo}" if lo == hi else f"{lo}x{lo} to {hi}x{hi}" for lo, hi in ranges
        )
        raise ValueError(
            f"{name}: {type(model).__name__} takes images of {sizes} pixels (its classifier "
            f"needs a fixed size), got {h}x{w} {why}"
        )
    # the smallest square size that works, by bisection below the smallest working size
    fails = [s for s in ladder if s < working[0]]
    lo, hi = (fails[-1] if fails else 0), working[0]
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if _runs(model, 1, c, mid, mid):
            hi = mid
        else:
            lo = mid
    if h < hi or w < hi:
        raise ValueError(
            f"{name}: {type(model).__name__} needs images of at least {hi}x{hi} pixels, "
            f"got {h}x{w} {why}"
        )
    raise ValueError(
        f"{name}: {type(model).__name__} cannot take images of {h}x{w} pixels (squares of "
        f"{hi}x{hi} and larger work) {why}"
    )


def called_convs(model: nn.Module, shape: Sequence[int], *, reaching: bool = False) -> list[str]:
    """Every ``nn.Conv2d`` the forward of a ``shape`` input calls, in call order (one traced
    pass on the meta device), only those whose output reaches the model's output with
    ``reaching=True``; the registered ones, in order, when the pass cannot run."""
    registered = [n for n, m in model.named_modules() if n and isinstance(m, nn.Conv2d)]
    run = dry_run(model, shape, layers=tuple(registered) if reaching else (), reach=reaching)
    if run.ok and run.convs:
        if reaching and any(run.reaches.values()):
            return [n for n in run.convs if run.reaches.get(n, False)]
        return list(run.convs)
    return registered


def last_called_conv(model: nn.Module, shape: Sequence[int]) -> tuple[str, nn.Module]:
    """The last ``nn.Conv2d`` the forward calls for a ``shape`` input whose output reaches
    the model's output: the default layer of Grad-CAM, occlusion and the Explorer. Auxiliary
    heads registered after the main path (torchvision's GoogLeNet) and side branches whose
    result is thrown away are not picked."""
    names = called_convs(model, shape, reaching=True)
    if not names:
        raise ValueError(
            f"layer: {type(model).__name__} has no nn.Conv2d to default to; pass layer= "
            "(a dotted named_modules() name or the module)"
        )
    return names[-1], dict(model.named_modules())[names[-1]]


def layer_shapes(
    model: nn.Module, x: torch.Tensor, layers: Sequence[str]
) -> dict[str, tuple[int, ...]]:
    """The output shape of each of ``layers`` (dotted names) for the batch ``x``, at its last
    call: from a shape-only pass on the meta device (:func:`dry_run`, no data), or, for a model
    that cannot run on meta, from one real forward pass of ``x`` on a copy of the module tree
    (no grad, eval mode; the model untouched). A layer the forward never calls, or whose output
    is not a tensor, is left out.
    """
    names = tuple(dict.fromkeys(layers))
    if not names:
        return {}
    run = dry_run(model, tuple(x.shape), layers=names)
    if run.ok:
        return {n: run.shapes[n] for n in names if n in run.shapes}
    from .capture import Capture

    def shape(_: str, out: object) -> tuple[int, ...] | None:
        return tuple(out.shape) if isinstance(out, torch.Tensor) else None

    target = module_tree_copy(model)
    with (
        torch.no_grad(),
        eval_mode(target),
        Capture(target, list(names), switches=False, reduce=shape) as cap,
    ):
        target(x)
    found = {n: cap.activations.get(n) for n in names}
    return {n: s for n, s in found.items() if isinstance(s, tuple)}


def check_images(
    model: nn.Module, x: object, *, name: str = "x", size: bool = True
) -> torch.Tensor:
    """Check a batch of images for ``model`` before any work; return it ready for the model.

    A finite floating (N, C, H, W) tensor with the channel count of the model's first
    convolution, on the model's device. A floating tensor of another dtype than the model's
    (a float64 array from NumPy on a float32 model, float32 images on a half model) is
    converted to the model's dtype when every value stays finite; it is refused with a
    ``TypeError`` naming both dtypes otherwise. With ``size=True`` the image size is checked
    against the network by a shape-only pass on the meta device (:func:`dry_run`, no data
    runs): too small, or not the fixed size a classifier needs, is a ``ValueError`` naming
    the sizes. The input is never modified; a converted copy is returned.
    """
    check_model(model)
    if not isinstance(x, torch.Tensor):
        raise TypeError(
            f"{name}: expected a torch.Tensor of shape (N, C, H, W), got {type(x).__name__}"
        )
    if x.dim() != 4:
        raise ValueError(
            f"{name}: expected a 4-d tensor (N, C, H, W), got {x.dim()}-d with shape {tuple(x.shape)}"
            + (" (add a batch dimension with x.unsqueeze(0))" if x.dim() == 3 else "")
        )
    want = model_dtype(model)
    if not x.is_floating_point():
        raise TypeError(
            f"{name}: expected a floating-point tensor (the model computes in {want}), "
            f"got {x.dtype}; convert images with x.float() / 255 and your normalisation"
        )
    if x.shape[0] == 0:
        raise ValueError(
            f"{name}: expected at least one image, got an empty batch {tuple(x.shape)}"
        )
    if x.shape[2] == 0 or x.shape[3] == 0:
        raise ValueError(f"{name}: expected a non-empty image, got shape {tuple(x.shape)}")
    conv = first_conv(model)
    if conv is not None and conv[1].in_channels != x.shape[1]:
        raise ValueError(
            f"{name}: the model's first convolution {conv[0]!r} takes {conv[1].in_channels} "
            f"channels, got {x.shape[1]} (shape {tuple(x.shape)})"
        )
    device = model_device(model)
    if x.device != device:
        raise ValueError(
            f"{name}: expected a tensor on the model's device {device}, got one on {x.device}; "
            f"move it with {name}.to({str(device)!r})"
        )
    check_finite_batch(x, 0, name)
    if x.dtype != want:
        converted = x.detach().to(want)
        if not bool(torch.isfinite(converted).all()):
            raise TypeError(
                f"{name}: the model computes in {want} and the images are {x.dtype}; their "
                f"values overflow {want} (largest {torch.finfo(want).max:.4g}); rescale them "
                f"or convert the model with model.to({x.dtype})"
            )
        x = converted
    if size:
        check_input_size(model, tuple(x.shape), name=name)
    return x


def one_image(model: Any, image: object) -> torch.Tensor:
    """One image as a (1, C, H, W) tensor on the model's device (a copy only if moved), checked
    as :func:`check_images` checks a batch."""
    if not isinstance(image, torch.Tensor):
        raise TypeError(
            f"image: expected a torch.Tensor of shape (C, H, W) or (1, C, H, W), "
            f"got {type(image).__name__}"
        )
    if image.dim() == 3:
        image = image.unsqueeze(0)
    elif image.dim() != 4 or image.shape[0] != 1:
        raise ValueError(
            f"image: expected one image of shape (C, H, W) or (1, C, H, W), got shape "
            f"{tuple(image.shape)}"
            + (" (a batch: pass one image, e.g. x[0])" if image.dim() == 4 else "")
        )
    x = image.detach().to(model_device(model))
    return check_images(model, x, name="image")
