"""Input checks shared by every public function.

Every check runs before any work is done and raises a ``TypeError`` or ``ValueError`` that
says what was expected and what came.
"""

from __future__ import annotations

import contextlib
import difflib
import math
import weakref
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

__all__ = [
    "DryRun",
    "called_convs",
    "check_finite_batch",
    "check_images",
    "dry_run",
    "last_called_conv",
    "model_dtype",
    "first_conv",
    "model_device",
    "resolve_layer",
    "resolve_layers",
]


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for a model with none)."""
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


def first_conv(model: nn.Module) -> tuple[str, nn.Conv2d] | None:
    """The first ``nn.Conv2d`` in ``named_modules()`` order, or ``None``."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            return name, module
    return None


def check_model(model: object) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    return model


def model_dtype(model: nn.Module) -> torch.dtype:
    """The floating dtype of the model's first floating parameter or buffer (float32 for none)."""
    for t in model.parameters():
        if t.is_floating_point():
            return t.dtype
    for t in model.buffers():
        if t.is_floating_point():
            return t.dtype
    return torch.float32


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


@contextlib.contextmanager
def _all_eval(model: nn.Module) -> Iterator[None]:
    flags = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        yield
    finally:
        for m, flag in flags:
            m.training = flag


def _shadow(model: nn.Module) -> nn.Module:
    """A copy of the module tree of ``model`` sharing its parameters and buffers (the model
    itself when it cannot be copied)."""
    import copy
    import itertools

    memo = {id(t): t for t in itertools.chain(model.parameters(), model.buffers())}
    try:
        return copy.deepcopy(model, memo)
    except Exception:
        return model


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
    target = _shadow(model)
    tensors = dict(target.named_parameters(remove_duplicate=False))
    tensors.update(target.named_buffers(remove_duplicate=False))
    meta = {k: torch.empty_like(v, device="meta") for k, v in tensors.items()}
    x = torch.empty(shape, dtype=dtype, device="meta", requires_grad=reach)
    # switches=True: a max-pool that returns its indices hands over its pooled tensor
    cap = Capture(target, layers, switches=True, reduce=reduce) if layers else None
    try:
        with _all_eval(target), torch.set_grad_enabled(reach), cap or contextlib.nullcontext():
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
) -> DryRun:
    """One forward pass of an input of ``shape`` on the meta device: shapes only, no data,
    no memory for activations, the model untouched (its parameters stand in as meta tensors
    for the pass; every module's ``training`` flag restored). Cached per model and shape.

    ``layers`` are watched (output shapes, call counts); with ``reach=True`` a backward pass
    on meta tells which of them the output depends on.
    """
    dtype = model_dtype(model) if dtype is None else dtype
    key = (tuple(int(v) for v in shape), dtype, tuple(layers), bool(reach))
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


def check_input_size(model: nn.Module, shape: tuple[int, ...], *, name: str = "x") -> None:
    """Refuse an image size the network cannot take, before any work.

    A failing meta pass at ``shape`` is compared with square sizes: when some size works,
    the ``ValueError`` names the smallest size the network accepts and, for a classifier that
    takes one fixed size, that size. When no size works on meta (a model that cannot run on
    the meta device), nothing is said here and the real forward reports.
    """
    n, c, h, w = shape
    run = dry_run(model, (1, c, h, w))
    if run.ok:
        return
    ladder = sorted({16, 28, 32, 64, 75, 96, 128, 224, 227, 256, 299, 384, 512, 1024, max(h, w)})
    working = [s for s in ladder if _runs(model, 1, c, s, s)]
    if not working:
        return  # the meta pass itself fails: let the real forward speak
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


def check_finite_batch(
    x: torch.Tensor,
    start: int = 0,
    name: str = "data",
    *,
    indices: Sequence[int] | torch.Tensor | None = None,
) -> torch.Tensor:
    """Refuse a batch holding NaN or infinite values, naming the first bad image.

    ``x`` is images ``start .. start + len(x) - 1`` of ``name`` (or the images ``indices``,
    for a batch gathered out of order). Costs one reduction on the batch's device and one
    synchronisation (a single bool) when the batch is finite; the index of the first bad
    image is computed only on failure.
    """
    if not x.is_floating_point() or x.numel() == 0 or x.device.type == "meta":
        return x
    if bool(torch.isfinite(x).all()):
        return x
    bad = ~torch.isfinite(x.reshape(x.shape[0], -1)).all(1) if x.dim() > 0 else None
    first = int(bad.nonzero()[0, 0]) if bad is not None and bool(bad.any()) else 0
    count = int(bad.sum()) if bad is not None else 1
    if indices is not None:
        index = int(indices[first])
    else:
        index = start + first
    what = "value" if x.dim() == 0 else f"image {index}"
    raise ValueError(
        f"{name}: expected finite values, got NaN or infinite values in {what}"
        + (f" ({count} image(s) of this batch of {x.shape[0]})" if count > 1 else "")
    )


def _layer_names(model: nn.Module) -> list[str]:
    return [n for n, _ in model.named_modules() if n]


def resolve_layer(model: nn.Module, layer: str | nn.Module) -> tuple[str, nn.Module]:
    """Resolve a dotted ``named_modules()`` name (or the module itself) to ``(name, module)``.

    An unknown name raises ``ValueError`` listing close matches.
    """
    if isinstance(layer, nn.Module):
        for n, m in model.named_modules():
            if m is layer:
                return n, m
        raise ValueError(
            f"layer: the module {type(layer).__name__} given is not a submodule of the model"
        )
    if not isinstance(layer, str):
        raise TypeError(
            f"layer: expected a dotted module name (str) or a submodule, got {type(layer).__name__}"
        )
    modules = dict(model.named_modules())
    if layer in modules and layer != "":
        return layer, modules[layer]
    names = _layer_names(model)
    close = difflib.get_close_matches(layer, names, n=5, cutoff=0.5)
    if not close:
        close = [n for n in names if layer and (layer in n or n in layer)][:5]
    hint = f"; close matches: {', '.join(repr(c) for c in close)}" if close else ""
    some = ", ".join(repr(n) for n in names[:8]) + (", ..." if len(names) > 8 else "")
    raise ValueError(
        f"layer: no module named {layer!r} in {type(model).__name__}{hint} "
        f"(names are dotted named_modules() paths such as {some})"
    )


def resolve_layers(
    model: nn.Module,
    layers: Iterable[str | nn.Module] | str | nn.Module,
    name: str = "layers",
) -> list[tuple[str, nn.Module]]:
    """Several layers (names or modules, or one of them) -> ``[(name, module), ...]``."""
    if isinstance(layers, (str, nn.Module)):
        layers = [layers]
    if isinstance(layers, torch.Tensor) or not isinstance(layers, Iterable):
        raise TypeError(
            f"{name}: expected a dotted module name, a submodule or a list of them, "
            f"got {type(layers).__name__}"
        )
    items = list(layers)
    for item in items:
        if not isinstance(item, (str, nn.Module)):
            raise TypeError(
                f"{name}: expected dotted module names (str) or submodules, got "
                f"{type(item).__name__} {item!r}"[:200]
            )
    out = []
    for item in items:
        try:
            out.append(resolve_layer(model, item))
        except (TypeError, ValueError) as exc:
            msg = str(exc)
            raise type(exc)(f"{name}{msg[5:]}" if msg.startswith("layer:") else msg) from None
    if not out:
        raise ValueError(f"{name}: expected at least one layer, got none")
    return out


def check_int(value: object, name: str, *, low: int | None = None) -> int:
    """An int (not a bool; numpy ints welcome) >= ``low``; a ``TypeError``/``ValueError``
    naming ``name`` otherwise."""
    import operator

    if isinstance(value, bool):
        raise TypeError(f"{name}: expected an int, got {value!r}")
    try:
        v = operator.index(value)
    except TypeError:
        raise TypeError(
            f"{name}: expected an int, got {type(value).__name__} {value!r}"[:200]
        ) from None
    if low is not None and v < low:
        raise ValueError(f"{name}: expected an int >= {low}, got {v}")
    return v


def check_number(value: object, name: str, *, positive: bool = False, finite: bool = True) -> float:
    """A real number (not a bool), finite (and > 0 with ``positive``); a ``TypeError`` or
    ``ValueError`` naming ``name`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        import numbers

        if not isinstance(value, numbers.Real) or isinstance(value, bool):
            raise TypeError(
                f"{name}: expected a number, got {type(value).__name__} {value!r}"[:200]
            )
    try:
        v = float(value)
    except OverflowError:
        raise ValueError(f"{name}: expected a finite number, got {value!r}"[:200]) from None
    if finite and not math.isfinite(v):
        raise ValueError(f"{name}: expected a finite number, got {value!r}")
    if positive and not v > 0:
        raise ValueError(f"{name}: expected a positive number, got {value!r}")
    return v


def check_callable(value: object, name: str, *, optional: bool = True) -> object:
    if value is None and optional:
        return None
    if not callable(value):
        raise TypeError(f"{name}: expected a callable or None, got {type(value).__name__}")
    return value


def check_classes(targets: list[int] | None, n_classes: int | None, name: str = "target") -> None:
    """Class indices in ``[0, n_classes)`` (only the sign when the count is unknown)."""
    if targets is None:
        return
    if n_classes is None:
        bad = [v for v in targets if v < 0]
        if bad:
            raise ValueError(f"{name}: expected class indices >= 0, got {bad}")
        return
    bad = [v for v in targets if not 0 <= v < n_classes]
    if bad:
        raise ValueError(f"{name}: expected classes in [0, {n_classes}), got {bad}")


def check_positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: expected a positive int, got {value!r}")
    return value


def as_int_list(values: object, n: int, name: str) -> list[int] | None:
    """``None`` -> ``None``; an int -> ``[v] * n``; a sequence/tensor of n ints -> list."""
    import operator

    if values is None:
        return None
    if isinstance(values, torch.Tensor):
        if values.is_floating_point() or values.is_complex() or values.dtype == torch.bool:
            raise TypeError(
                f"{name}: expected integer values, got a tensor of dtype {values.dtype}"
            )
        values = values.reshape(-1).tolist() if values.dim() > 0 else int(values)
    if (
        not isinstance(values, bool)
        and hasattr(values, "__index__")
        and not isinstance(values, Sequence)
    ):
        return [operator.index(values)] * n
    if (
        isinstance(values, Sequence)
        and not isinstance(values, (str, bytes))
        and all(hasattr(v, "__index__") and not isinstance(v, bool) for v in values)
    ):
        if len(values) != n:
            raise ValueError(
                f"{name}: expected one int or {n} ints (one per image), got {len(values)}"
            )
        return [operator.index(v) for v in values]
    raise TypeError(f"{name}: expected an int or one int per image, got {values!r}"[:300])


def check_logits(out: object, n: int) -> torch.Tensor:
    """``out`` when it is a (n, classes) floating tensor of class scores, else an error."""
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != n:
        got = f"shape {tuple(out.shape)}" if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(
            f"model output: expected class scores (logits) of shape ({n}, classes), got {got}"
        )
    if not out.is_floating_point():
        raise TypeError(f"model output: expected floating-point logits, got {out.dtype}")
    return out


def check_architecture(num_classes: object, in_channels: object, dropout: object) -> float:
    """The constructor arguments of the bundled architectures; returns ``dropout`` as float."""
    for value, name in ((num_classes, "num_classes"), (in_channels, "in_channels")):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}: expected a positive int, got {value!r}")
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout <= 1:
        raise ValueError(f"dropout: expected a probability in [0, 1], got {dropout!r}")
    return float(dropout)
