"""Projections of single units back to pixel space: deconvnet, guided backprop, saliency.

docs/method.md Sec. 2: the deconvnet is back-propagation of a one-hot signal in which each ReLU's
backward step is replaced by ReLU applied to the signal itself; max-pool backward is
unpooling by the recorded switches; convolution backward is the transposed filter.

Three rules, one engine:

- ``"deconv"`` (Zeiler & Fergus 2014): at every ReLU the backward signal is ``relu(g)``;
  contrast-normalisation layers (``F.local_response_norm``) are skipped on the way down,
  as in the paper.
- ``"guided"`` (Springenberg et al. 2015): ``relu(g) * (x > 0)``.
- ``"saliency"`` (Simonyan et al. 2014): the plain gradient, ``g * (x > 0)``.

The rules are applied by a :class:`torch.overrides.TorchFunctionMode` active only during
the library's own forward pass, so they hold for ``nn.ReLU`` (in place or not, reused any
number of times), ``F.relu``, ``torch.relu``, ``Tensor.relu``/``relu_`` and ``ReLU6`` alike,
without a single backward hook.

Modern activations (docs/method.md Sec. 5): GELU, SiLU, Hardswish, LeakyReLU, ELU, SELU,
CELU, Mish, Softplus, PReLU and RReLU get the same treatment, modules and functional calls
alike. ``"deconv"`` rectifies the backward signal, ``relu(g)``, whatever the forward
activation (the paper's "rectify" step: what goes down stays positive); ``"guided"`` takes
``relu(g) * max(f'(x), 0)``, ``f'`` the activation's derivative at its input, which is
Springenberg's rule when ``f`` is ReLU. The forward is untouched. Elementwise nonlinearities
with no rule (sigmoid and hardsigmoid gates of squeeze-and-excitation blocks, tanh, custom
autograd Functions, ...) keep their plain gradient, as do normalisation layers; when the
backward crosses one, the call warns once (:class:`NoRuleWarning`) naming the operations and
their layers, and ``strict=True`` raises :class:`NoRuleError` instead, before any backward.

Max-pooling: autograd's max-pool backward routes each window's signal to the window's
argmax, which is exactly unpooling by switches. With overlapping pools (ZFNet and AlexNet
use 3x3 windows with stride 2) one input location can be the argmax of two windows; it
then receives the *sum* of both signals, which makes unpooling the adjoint of max-pooling.
(``F.max_unpool2d``, where the last write wins, differs from this by up to ~60% of the signal
on such nets.) :mod:`zfwidgets.engine.literal` implements the paper's chain step by step with this
summing unpool and serves as the test reference.

Speed: a batch of K units is reconstructed with batched forward/backward passes, never K
separate calls. Two strategies, picked by a cost estimate (``strategy="auto"``):

- ``"shared"``: one forward per distinct image, then one backward per *round*, where a round
  holds at most one unit per image (units of different images never interact, so they
  share a backward). Best when there are few units per image (a click in the Explorer).
- ``"crop"``: each unit's input is cropped to its receptive field (start aligned to the
  layer's stride, clipped at the image border, one size per chunk) and the crops run as one
  batch, forward stopped at the layer. Every unit of the unit's cone sees exactly the
  pixels it sees in the full image, so the result equals the full computation (tested);
  work drops with the crop's area. Best for many units (top-9 atlases).
"""

from __future__ import annotations

import os
import re
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from ..base.checks import check_model
from ..base.layers import eval_mode, resolve_layer
from .capture import Capture
from .probe import check_images, check_input_size, dry_run

__all__ = [
    "ACTIVATIONS",
    "RULES",
    "NoRuleError",
    "NoRuleWarning",
    "backprop",
    "deconv",
    "guided_backprop",
    "relu_rule",
    "saliency",
]

RULES = ("deconv", "guided", "saliency")


# ---------------------------------------------------------------------------------------------
# The backward rules
# ---------------------------------------------------------------------------------------------
class NoRuleWarning(UserWarning):
    """The backward of ``deconv``/``guided`` crossed nonlinearities that have no rule.

    ``sites`` lists ``(operation, layer)`` pairs in the order the forward met them; they kept
    their plain gradient.
    """

    def __init__(self, message: str, sites: Sequence[tuple[str, str]] = ()):
        super().__init__(message)
        self.sites = list(sites)


class NoRuleError(RuntimeError):
    """:class:`NoRuleWarning` as an error, raised with ``strict=True`` before any backward."""

    def __init__(self, message: str, sites: Sequence[tuple[str, str]] = ()):
        super().__init__(message)
        self.sites = list(sites)


class _Rectify(torch.autograd.Function):
    """clamp(x, lo, hi) forward; the chosen rule backward."""

    @staticmethod
    def forward(ctx, x, lo, hi, rule, inplace):
        if inplace:
            out = x.clamp_(lo, hi)
            ctx.mark_dirty(x)
        else:
            out = x.clamp(lo, hi)
        ctx.rule, ctx.lo, ctx.hi = rule, lo, hi
        if rule == "guided":
            ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, g):
        g = g.clamp_min(0)
        if ctx.rule == "guided":
            (out,) = ctx.saved_tensors
            mask = out > ctx.lo
            if ctx.hi is not None:
                mask &= out < ctx.hi
            g = g * mask
        return g, None, None, None, None


class _Activation(torch.autograd.Function):
    """The activation's own forward (``call()``, untouched, in place if it was); the rule
    backward: ``relu(g)`` (deconv) or ``relu(g) * max(f'(x), 0)`` (guided), where ``f'(x)``
    is the activation's derivative, from autograd on ``recompute`` (the same function, out of
    place) at the saved input."""

    @staticmethod
    def forward(ctx, x, call, recompute, rule, inplace):
        ctx.rule, ctx.recompute = rule, recompute
        if rule == "guided":
            ctx.save_for_backward(x.clone() if inplace else x)
        out = call()
        if inplace:
            ctx.mark_dirty(x)
        return out

    @staticmethod
    def backward(ctx, g):
        g = g.clamp_min(0)
        if ctx.rule == "guided":
            (x,) = ctx.saved_tensors
            with torch.enable_grad():
                xd = x.detach().requires_grad_(True)
                y = ctx.recompute(xd)
                (d,) = torch.autograd.grad(y, xd, torch.ones_like(y))
            g = g * d.clamp_min(0)
        return g, None, None, None, None


class _SkipBackward(torch.autograd.Function):
    """f(x) forward, identity backward (contrast normalisation on the deconvnet's way down)."""

    @staticmethod
    def forward(ctx, x, y):
        return y

    @staticmethod
    def backward(ctx, g):
        return g, None


_OURS = (_Rectify, _Activation, _SkipBackward)
_RELU_FUNCS = {F.relu, torch.relu, torch.Tensor.relu}
_RELU_INPLACE = {torch.relu_, torch.Tensor.relu_, F.relu_}


@dataclass(frozen=True)
class _Act:
    """An activation with a rule: its name, its parameters after ``input`` (positional order),
    its out-of-place form, and whether the function always works in place."""

    name: str
    params: tuple[str, ...]
    base: Callable[..., torch.Tensor]
    inplace: bool = False


#: The rectifier family beyond ReLU: every function torch's activation modules call, and the
#: functional / in-place aliases. (ReLU, ReLU6 and Hardtanh(0, t) go through ``_Rectify``.)
ACTIVATIONS: dict[Callable, _Act] = {
    F.gelu: _Act("gelu", ("approximate",), F.gelu),
    F.silu: _Act("silu", ("inplace",), F.silu),
    F.hardswish: _Act("hardswish", ("inplace",), F.hardswish),
    F.leaky_relu: _Act("leaky_relu", ("negative_slope", "inplace"), F.leaky_relu),
    F.leaky_relu_: _Act("leaky_relu", ("negative_slope",), F.leaky_relu, inplace=True),
    F.elu: _Act("elu", ("alpha", "inplace"), F.elu),
    F.elu_: _Act("elu", ("alpha",), F.elu, inplace=True),
    F.selu: _Act("selu", ("inplace",), F.selu),
    torch.selu: _Act("selu", (), torch.selu),
    torch.selu_: _Act("selu", (), torch.selu, inplace=True),
    F.celu: _Act("celu", ("alpha", "inplace"), F.celu),
    torch.celu: _Act("celu", ("alpha",), torch.celu),
    torch.celu_: _Act("celu", ("alpha",), torch.celu, inplace=True),
    F.mish: _Act("mish", ("inplace",), F.mish),
    F.softplus: _Act("softplus", ("beta", "threshold"), F.softplus),
    torch.prelu: _Act("prelu", ("weight",), torch.prelu),
    F.rrelu: _Act("rrelu", ("lower", "upper", "training", "inplace"), F.rrelu),
    torch.rrelu: _Act("rrelu", ("lower", "upper", "training"), torch.rrelu),
    torch.rrelu_: _Act("rrelu", ("lower", "upper", "training"), torch.rrelu, inplace=True),
}

#: Elementwise nonlinearities with no rule, recorded where the forward calls them so that the
#: warning can name their layer. Anything else is caught on the graph (``_UNRULED_NODES``).
_UNRULED_FUNCS: dict[Callable, str] = {
    torch.sigmoid: "sigmoid",
    torch.sigmoid_: "sigmoid",
    torch.Tensor.sigmoid: "sigmoid",
    torch.Tensor.sigmoid_: "sigmoid",
    torch.special.expit: "sigmoid",
    torch.tanh: "tanh",
    torch.tanh_: "tanh",
    torch.Tensor.tanh: "tanh",
    torch.Tensor.tanh_: "tanh",
    F.hardsigmoid: "hardsigmoid",
    F.hardtanh: "hardtanh",
    F.logsigmoid: "logsigmoid",
    F.softsign: "softsign",
    F.tanhshrink: "tanhshrink",
    F.softshrink: "softshrink",
    F.hardshrink: "hardshrink",
    F.glu: "glu",
    F.threshold: "threshold",
    F.threshold_: "threshold",
    torch.erf: "erf",
    torch.Tensor.erf: "erf",
}

#: Autograd nodes of elementwise nonlinearities (name without ``Backward<n>``). On the path of
#: a deconv/guided backward they mean an activation that kept its plain gradient: one with no
#: rule, or one computed where the rule context cannot see it (TorchScript, C++ extensions).
_UNRULED_NODES = {
    "Relu",
    "Gelu",
    "Silu",
    "Mish",
    "Hardswish",
    "LeakyRelu",
    "Elu",
    "Celu",
    "Softplus",
    "PreluKernel",
    "RreluWithNoise",
    "Threshold",
    "Sigmoid",
    "Tanh",
    "Hardsigmoid",
    "Hardtanh",
    "LogSigmoid",
    "Softshrink",
    "Hardshrink",
    "Erf",
    "Erfc",
    "Glu",
}
_BACKWARD_SUFFIX = re.compile(r"Backward\d*$")
_CALL_CODES = {nn.Module._call_impl.__code__, nn.Module._wrapped_call_impl.__code__}


def _input_of(args, kwargs):
    return args[0] if args else kwargs["input"]


class relu_rule(TorchFunctionMode):
    """Context in which every activation computed by torch back-propagates by ``rule``.

    ``"deconv"``: the backward signal is rectified, ``relu(g)``, at every ReLU, ReLU6,
    Hardtanh(0, t) and every activation of :data:`ACTIVATIONS` (GELU, SiLU, Hardswish,
    LeakyReLU, ELU, SELU, CELU, Mish, Softplus, PReLU, RReLU); ``F.local_response_norm``
    back-propagates as the identity (the paper skips contrast normalisation on the way down).
    ``"guided"``: ``relu(g) * max(f'(x), 0)``, ``f'`` the activation's derivative (Springenberg's
    ``relu(g) * (x > 0)`` for ReLU). ``"saliency"`` changes nothing. The forward is untouched.

    Elementwise nonlinearities with no rule (sigmoid, tanh, hardsigmoid, custom autograd
    Functions, ...) keep their gradient; :meth:`unruled` lists those a backward would cross,
    naming each one's layer (the innermost module of ``model`` whose forward called it).
    """

    def __init__(self, rule: str, model: nn.Module | None = None):
        super().__init__()
        if rule not in RULES:
            raise ValueError(f"rule: expected one of {RULES}, got {rule!r}")
        self.rule = rule
        self.model = model
        self._names: dict[int, str] | None = None
        #: autograd node -> (operation, layer) for the unruled operations the forward called
        self._seen: dict[Any, tuple[str, str]] = {}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.rule == "saliency":
            return func(*args, **kwargs)
        if func in _RELU_FUNCS or func in _RELU_INPLACE:
            x = _input_of(args, kwargs)
            inplace = func in _RELU_INPLACE or bool(
                kwargs.get("inplace", args[1] if len(args) > 1 else False)
            )
            return self._rectify(x, 0.0, None, inplace)
        if func is F.relu6:
            x = _input_of(args, kwargs)
            inplace = bool(kwargs.get("inplace", args[1] if len(args) > 1 else False))
            return self._rectify(x, 0.0, 6.0, inplace)
        if func is F.hardtanh:
            names = ("input", "min_val", "max_val", "inplace")
            bound = dict(zip(names, args)) | kwargs
            if float(bound.get("min_val", -1.0)) == 0.0:
                return self._rectify(
                    bound["input"],
                    0.0,
                    float(bound.get("max_val", 1.0)),
                    bool(bound.get("inplace", False)),
                )
        act = ACTIVATIONS.get(func)
        if act is not None:
            out = self._activation(act, func, args, kwargs)
            if out is not NotImplemented:
                return out
        if func is F.local_response_norm and self.rule == "deconv":
            x = _input_of(args, kwargs)
            y = func(*args, **kwargs)
            if torch.is_grad_enabled() and x.requires_grad:
                return _SkipBackward.apply(x, y)
            return y
        out = func(*args, **kwargs)
        if torch.is_grad_enabled():
            op = _UNRULED_FUNCS.get(func)
            if op is not None and isinstance(out, torch.Tensor) and out.grad_fn is not None:
                self._seen.setdefault(out.grad_fn, (op, self._layer()))
        else:  # inside a custom autograd Function's forward? record it under its layer
            self._custom_forward()
        return out

    def _rectify(self, x, lo, hi, inplace):
        if not (torch.is_grad_enabled() and x.requires_grad):
            return x.clamp_(lo, hi) if inplace else x.clamp(lo, hi)
        if inplace and x.is_leaf:
            inplace = False
        return _Rectify.apply(x, lo, hi, self.rule, inplace)

    def _activation(self, act: _Act, func, args, kwargs):
        bound = dict(zip(("input", *act.params), args)) | kwargs
        x = bound.pop("input")
        inplace = act.inplace or bool(bound.pop("inplace", False))
        if bound.get("training"):  # RReLU's random slopes: no derivative to recompute
            return NotImplemented
        if not (torch.is_grad_enabled() and isinstance(x, torch.Tensor) and x.requires_grad):
            return func(*args, **kwargs)
        base = act.base

        def recompute(t):
            return base(t, **bound)

        if inplace and x.is_leaf:  # autograd refuses in-place ops on leaves: run out of place
            inplace = False

            def call():
                return base(x, **bound)
        else:

            def call():
                return func(*args, **kwargs)

        return _Activation.apply(x, call, recompute, self.rule, inplace)

    # -- where the unruled operations are -------------------------------------------------
    def _module_name(self, module: nn.Module) -> str | None:
        if self.model is None:
            return type(module).__name__
        if self._names is None:
            self._names = {id(m): name for name, m in self.model.named_modules()}
        name = self._names.get(id(module))
        if name == "":
            return f"{type(module).__name__}.forward"
        return name

    def _layer(self, frame=None) -> str:
        """The innermost module of the model whose forward is on the call stack."""
        f = frame if frame is not None else sys._getframe(2)
        while f is not None:
            if f.f_code in _CALL_CODES:
                name = self._module_name(f.f_locals.get("self"))
                if name is not None:
                    return name
            f = f.f_back
        return "(outside the model's modules)"

    def _custom_forward(self) -> None:
        f = sys._getframe(2)
        while f is not None and f.f_code not in _CALL_CODES:
            ctx = f.f_locals.get("ctx") if f.f_code.co_name == "forward" else None
            if isinstance(ctx, torch.autograd.function.BackwardCFunction):
                if ctx not in self._seen and type(ctx)._forward_cls not in _OURS:
                    name = type(ctx)._forward_cls.__name__
                    self._seen[ctx] = (f"{name} (custom autograd Function)", self._layer(f))
                return
            f = f.f_back

    def unruled(self, output: torch.Tensor, inp: torch.Tensor) -> list[tuple[str, str]]:
        """``(operation, layer)`` of every elementwise nonlinearity with no rule that lies on a
        path of the autograd graph from ``output`` down to the leaf ``inp``: the operations the
        backward of ``output`` with respect to ``inp`` crosses with their plain gradient."""
        if self.rule == "saliency" or output.grad_fn is None:
            return []
        root = output.grad_fn
        reaches: dict[Any, bool] = {root: False}
        stack = [(root, iter(root.next_functions))]
        while stack:
            node, children = stack[-1]
            for child, _ in children:
                if child is None:
                    continue
                if child not in reaches:
                    if type(child).__name__ == "AccumulateGrad":
                        reaches[child] = child.variable is inp
                    else:
                        reaches[child] = False
                        stack.append((child, iter(child.next_functions)))
                        break
                if reaches[child]:
                    reaches[node] = True
            else:
                stack.pop()
                if stack and reaches[node]:
                    reaches[stack[-1][0]] = True
        order = {node: i for i, node in enumerate(self._seen)}
        found = []
        for node, on_path in reaches.items():
            if not on_path:
                continue
            site = self._seen.get(node)
            if site is None:
                site = _unseen_site(node)
            if site is not None:
                found.append((order.get(node, len(order)), site))
        found.sort(key=lambda t: t[0])
        return list(dict.fromkeys(site for _, site in found))


def _unseen_site(node) -> tuple[str, str] | None:
    """A flagged node the rule context did not see being made (or None if not flagged)."""
    if isinstance(node, torch.autograd.function.BackwardCFunction):
        cls = getattr(type(node), "_forward_cls", None)
        if cls in _OURS:
            return None
        name = getattr(cls, "__name__", type(node).__name__)
        return (f"{name} (custom autograd Function)", "(layer not found)")
    kind = _BACKWARD_SUFFIX.sub("", type(node).__name__)
    if kind in _UNRULED_NODES:
        op = re.sub(r"(?<!^)(?=[A-Z])", "_", kind).lower()
        return (op, "(layer not found)")
    return None


class _Unruled:
    """The unruled nonlinearities one ``backprop`` call crosses: an error at the first forward
    that shows one (``strict``), else one warning when the call ends."""

    def __init__(self, rule: str, strict: bool):
        self.rule, self.strict = rule, strict
        self.sites: dict[tuple[str, str], None] = {}

    def check(self, mode: relu_rule, output: torch.Tensor, inp: torch.Tensor) -> None:
        if self.rule == "saliency":
            return
        for site in mode.unruled(output, inp):
            self.sites.setdefault(site)
        if self.strict and self.sites:
            raise NoRuleError(self.message(), list(self.sites))

    def message(self) -> str:
        by_op: dict[str, list[str]] = {}
        for op, layer in self.sites:
            by_op.setdefault(op, []).append(layer)
        parts = []
        for op, layers in by_op.items():
            shown = ", ".join(layers[:6])
            if len(layers) > 6:
                shown += f" and {len(layers) - 6} more"
            parts.append(f"{op} at {shown}")
        return (
            f"rule={self.rule!r}: the backward signal crosses elementwise nonlinearities that have "
            f"no {self.rule} rule, so they keep their plain gradient: {'; '.join(parts)}. "
            "Gates (squeeze-and-excitation sigmoids) and normalisation layers keep their "
            "gradient by design; see 'Modern activations' in docs/method.md. Pass strict=True "
            "to raise instead; the full list is the warning's .sites."
        )

    def warn(self) -> None:
        if self.sites:
            warnings.warn(
                NoRuleWarning(self.message(), list(self.sites)), stacklevel=_user_stacklevel()
            )


def _user_stacklevel() -> int:
    """``stacklevel`` for a warning raised in this package that points at the user's call."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # zfwidgets/
    f, level = sys._getframe(2), 2
    while f is not None and f.f_code.co_filename.startswith(package):
        f, level = f.f_back, level + 1
    return level


# ---------------------------------------------------------------------------------------------
# Units
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Plan:
    layer: str
    units: torch.Tensor  # (K, 4) long on CPU: n, c, y, x
    shape: tuple[int, ...]  # layer output shape for the full image batch (N, C, h, w)


def _as_units(units: object) -> torch.Tensor:
    if isinstance(units, torch.Tensor):
        t = units.detach().to("cpu")
        if t.dtype.is_floating_point or t.dtype == torch.bool:
            raise TypeError(f"units: expected integer indices, got a {t.dtype} tensor")
        t = t.long()
    elif isinstance(units, Sequence) and not isinstance(units, str):
        rows = []
        for u in units:
            if not isinstance(u, Sequence) or not all(
                isinstance(v, int) and not isinstance(v, bool) for v in u
            ):
                raise TypeError(f"units: expected (n, c, y, x) tuples of ints, got {u!r}")
            rows.append(list(u))
        t = torch.tensor(rows, dtype=torch.long) if rows else torch.zeros(0, 4, dtype=torch.long)
    else:
        raise TypeError(
            f"units: expected a sequence of (n, c, y, x) tuples or a (K, 4) tensor, got {type(units).__name__}"
        )
    if t.dim() != 2 or t.shape[1] not in (2, 4):
        raise ValueError(
            f"units: expected (K, 4) indices (n, c, y, x) (or (K, 2) (n, c) for a layer without "
            f"spatial size), got shape {tuple(t.shape)}"
        )
    if t.shape[0] == 0:
        raise ValueError("units: expected at least one unit, got none")
    return t


def _check_units(units: torch.Tensor, shape: tuple[int, ...], layer: str) -> None:
    spatial = len(shape) == 4
    want = 4 if spatial else 2
    if len(shape) not in (2, 4):
        raise ValueError(
            f"layer {layer!r}: expected an output of shape (N, C, H, W) or (N, C), got {tuple(shape)}"
        )
    if units.shape[1] != want:
        raise ValueError(
            f"units: layer {layer!r} has output shape {tuple(shape)}, so units are "
            f"{'(n, c, y, x)' if spatial else '(n, c)'}; got {units.shape[1]} indices per unit"
        )
    for dim, label in enumerate("ncyx"[:want]):
        col = units[:, dim]
        bad = (col < 0) | (col >= shape[dim])
        if bool(bad.any()):
            k = int(bad.nonzero()[0, 0])
            raise ValueError(
                f"units: unit {k} = {tuple(units[k].tolist())} is out of range: {label} must lie in "
                f"[0, {shape[dim]}) for layer {layer!r} with output shape {tuple(shape)}"
            )


def _rounds(image_of_unit: torch.Tensor) -> list[torch.Tensor]:
    """Split unit indices into rounds holding at most one unit per image."""
    order = torch.argsort(image_of_unit, stable=True)
    imgs = image_of_unit[order]
    # rank of each unit among the units of its image
    first = torch.ones_like(imgs, dtype=torch.bool)
    first[1:] = imgs[1:] != imgs[:-1]
    start = torch.cummax(torch.where(first, torch.arange(len(imgs)), 0), 0).values
    rank = torch.arange(len(imgs)) - start
    return [order[rank == r] for r in range(int(rank.max()) + 1)]


# ---------------------------------------------------------------------------------------------
# Engine
# ---------------------------------------------------------------------------------------------
def _seed(target: torch.Tensor, rows: torch.Tensor, units: torch.Tensor) -> torch.Tensor:
    """A one-hot seed shaped like ``target`` with 1 at (rows[i], *units[i, 1:])."""
    g = torch.zeros_like(target)
    idx = (rows.to(target.device),) + tuple(
        units[:, j].to(target.device) for j in range(1, units.shape[1])
    )
    g[idx] = 1.0
    return g


def _shared(model, x, layer, units, channel, rule, batch_size, unruled, stop_at=None):
    """Forward each image once; one backward per round of units (<= 1 unit per image)."""
    N = x.shape[0]
    out_units = [] if units is None else None
    result = None
    for start in range(0, N, batch_size):
        stop = min(N, start + batch_size)
        if units is not None:
            sel = ((units[:, 0] >= start) & (units[:, 0] < stop)).nonzero().flatten()
            if len(sel) == 0:
                continue
        xg = x[start:stop].detach().clone().requires_grad_(True)
        with (
            relu_rule(rule, model) as mode,
            Capture(model, [layer], switches=False, keep_graph=True, stop_at=stop_at) as cap,
        ):
            model(xg)  # ends after the layer's last call (Capture swallows the stop)
        target = cap.activations[layer]
        unruled.check(mode, target, xg)
        del mode
        if units is None:  # strongest location of `channel` in each image
            if target.dim() != 4:
                raise ValueError(
                    f"channel: layer {layer!r} has no spatial size (output {tuple(target.shape)}); pass units=[(n, c), ...]"
                )
            if not 0 <= channel < target.shape[1]:
                raise ValueError(
                    f"channel: expected an int in [0, {target.shape[1]}) for layer {layer!r}, got {channel}"
                )
            fmap = target.detach()[:, channel].flatten(1)
            pos = fmap.argmax(1).cpu()
            w = target.shape[3]
            chunk_units = torch.stack(
                [
                    torch.arange(start, stop),
                    torch.full((stop - start,), channel),
                    pos // w,
                    pos % w,
                ],
                1,
            )
            out_units.append(chunk_units)
            sel = torch.arange(stop - start)
            local = chunk_units
        else:
            full_shape = (N,) + tuple(target.shape[1:])
            _check_units(units, full_shape, layer)
            local = units[sel]
        if result is None:
            K = N if units is None else len(units)
            result = x.new_zeros((K,) + tuple(x.shape[1:]))
        rounds = _rounds(local[:, 0])
        for r, members in enumerate(rounds):
            u = local[members]
            seed = _seed(target, u[:, 0] - start, u)
            (g,) = torch.autograd.grad(target, xg, seed, retain_graph=r < len(rounds) - 1)
            result[sel[members].to(x.device)] = g[(u[:, 0] - start).to(x.device)]
        del cap, target, xg
    return result


def _crop_windows(index, rf_offset, rf_stride, rf_size, limit):
    """Per-unit crop starts and one common crop length along one axis.

    Each crop ``[start, start + size)`` holds the unit's receptive field clipped to
    ``[0, limit)``, starts on a multiple of the layer's stride (so every layer's grid in the
    crop coincides with the full image's), and never passes the image border (past it the
    full computation sees each layer's zero padding, not the layer applied to zero pixels).
    ``size`` is congruent to ``limit`` modulo the stride, so a crop pushed back from the far
    border to end exactly at it still starts on the grid.
    """
    a = rf_offset + index * rf_stride  # RF start (may be < 0)
    lo = a.clamp_min(0)
    hi = (a + rf_size).clamp_max(limit)
    c = (lo // rf_stride) * rf_stride
    need = int((hi - c).max())
    size = need + (limit - need) % rf_stride
    if size >= limit:
        return torch.zeros_like(c), limit
    c = torch.minimum(c, torch.full_like(c, limit - size))
    return c, size


def _cropped(model, x, layer, units, rule, batch_size, rf, unruled):
    """Per-unit crops of the receptive field, batched; forward stopped at the layer."""
    N, C, H, W = x.shape
    K = len(units)
    result = x.new_zeros((K, C, H, W))
    (sy, sx), (oy, ox), (ry, rx) = rf.stride, rf.offset, rf.size
    stop_at = (layer, rf.calls - 1)
    for start in range(0, K, batch_size):
        u = units[start : start + batch_size]
        cy, hy = _crop_windows(u[:, 2], oy, sy, ry, H)
        cx, wx = _crop_windows(u[:, 3], ox, sx, rx, W)
        crops = torch.stack(
            [
                x[int(n), :, int(a) : int(a) + hy, int(b) : int(b) + wx]
                for n, a, b in zip(u[:, 0], cy, cx)
            ]
        )
        crops.requires_grad_(True)
        with (
            relu_rule(rule, model) as mode,
            Capture(model, [layer], switches=False, keep_graph=True, stop_at=stop_at) as cap,
        ):
            model(crops)
        target = cap.activations[layer]
        unruled.check(mode, target, crops)
        del mode
        local = u.clone()
        local[:, 2] -= cy // sy
        local[:, 3] -= cx // sx
        seed = _seed(target, torch.arange(len(u)), local)
        (g,) = torch.autograd.grad(target, crops, seed)
        for i, (a, b) in enumerate(zip(cy.tolist(), cx.tolist())):
            result[start + i, :, a : a + hy, b : b + wx] = g[i]
        del cap, target, crops
    return result


def _strongest(model, x, layer, channel, batch_size, calls):
    """(N, 4) units at the strongest location of ``channel`` in each image (no graph)."""
    rows = []
    stop_at = (layer, calls - 1) if calls else None

    def reduce(name, out):
        if out.dim() != 4:
            raise ValueError(
                f"channel: layer {layer!r} has no spatial size (output {tuple(out.shape)}); pass units=[(n, c), ...]"
            )
        if not 0 <= channel < out.shape[1]:
            raise ValueError(
                f"channel: expected an int in [0, {out.shape[1]}) for layer {layer!r}, got {channel}"
            )
        return out[:, channel].flatten(1).argmax(1), out.shape[3]

    with torch.no_grad():
        for s in range(0, x.shape[0], batch_size):
            with Capture(model, [layer], switches=False, reduce=reduce, stop_at=stop_at) as cap:
                model(x[s : s + batch_size])
            pos, w = cap.activations[layer]
            pos = pos.cpu()
            n = torch.arange(s, s + len(pos))
            rows.append(torch.stack([n, torch.full_like(n, channel), pos // w, pos % w], 1))
    return torch.cat(rows)


def backprop(
    model: nn.Module,
    x: torch.Tensor,
    *,
    layer: str | nn.Module,
    units: Sequence[Sequence[int]] | torch.Tensor | None = None,
    channel: int | None = None,
    rule: str = "deconv",
    batch_size: int = 32,
    strategy: str = "auto",
    strict: bool = False,
) -> torch.Tensor:
    """Project units of ``layer`` back to pixel space by ``rule`` (see module docstring).

    Parameters
    ----------
    model : nn.Module
        Any architecture; run in eval mode, every module's ``training`` flag restored.
    x : Tensor (N, C, H, W)
        Floating, finite, on the model's device. Never modified.
    layer : str or nn.Module
        Dotted ``named_modules()`` name (or the module). For a module called several times in
        one forward (a reused ReLU), its last call.
    units : (K, 4) ints ``(n, c, y, x)``, optional
        Image index, channel and location in the layer's output; ``(n, c)`` for a layer
        without spatial size.
    channel : int, optional
        Instead of ``units``: in each image, the strongest location of this feature map
        (docs/method.md Sec. 2, step 2).
    rule : "deconv" | "guided" | "saliency"
        The backward step at each activation (module docstring; docs/method.md Sec. 2 for
        ReLU, Sec. 5 for GELU, SiLU, Hardswish and the rest of the rectifier family).
    batch_size : int
        Images (``"shared"``) or crops (``"crop"``) per forward/backward pass.
    strategy : "auto" | "shared" | "crop"
    strict : bool
        With ``"deconv"`` or ``"guided"``, the backward may cross elementwise nonlinearities
        that have no rule (squeeze-and-excitation gates, tanh, custom autograd Functions):
        they keep their plain gradient, and the call emits one :class:`NoRuleWarning` naming
        the operations and their layers (``.sites``). ``strict=True`` raises
        :class:`NoRuleError` instead, before any backward. No effect on ``"saliency"``.

    Returns
    -------
    Tensor (K, C, H, W) with ``units``, (N, C, H, W) with ``channel``: the gradient-like
    signal of each unit (seeded with 1) in pixel space, on the model's device, detached.
    Multiply by the unit's activation for the paper's weighting; it does not matter for
    display, which is contrast-normalised per image.
    """
    check_model(model)
    if rule not in RULES:
        raise ValueError(f"rule: expected one of {RULES}, got {rule!r}")
    if strategy not in ("auto", "shared", "crop"):
        raise ValueError(f"strategy: expected 'auto', 'shared' or 'crop', got {strategy!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size: expected a positive int, got {batch_size!r}")
    if not isinstance(strict, bool):
        raise TypeError(f"strict: expected a bool, got {type(strict).__name__}")
    x = check_images(model, x, size=False)  # the size is checked below, up to the layer
    name, _ = resolve_layer(model, layer)
    if (units is None) == (channel is None):
        raise ValueError(
            "units, channel: expected exactly one of units=[(n, c, y, x), ...] or channel=int"
        )
    if channel is not None and (isinstance(channel, bool) or not isinstance(channel, int)):
        raise TypeError(f"channel: expected an int, got {type(channel).__name__}")
    u = None
    if units is not None:
        u = _as_units(units)
        bad = (u[:, 0] < 0) | (u[:, 0] >= x.shape[0])
        if bool(bad.any()):
            k = int(bad.nonzero()[0, 0])
            raise ValueError(
                f"units: unit {k} = {tuple(u[k].tolist())} refers to image {int(u[k, 0])}, "
                f"but x holds {x.shape[0]} image(s)"
            )
    # the layer's output shape from a shape-only pass: unit and channel checks before any work.
    # The projection needs the forward only up to the layer: a head after it that wants
    # another image size does not matter (the forward stops after the layer's last call);
    # a size the network cannot take up to the layer is a ValueError naming x.
    run = dry_run(model, x.shape, layers=(name,))
    if not run.ok and name not in run.shapes:
        check_input_size(model, tuple(x.shape))
    shape = run.shapes[name] if not run.ok and name in run.shapes else run.layer(name)
    stop_at = (name, run.calls[name] - 1) if run.calls.get(name) else None
    if shape is not None:
        if u is not None:
            _check_units(u, shape, name)
        else:
            if len(shape) != 4:
                raise ValueError(
                    f"channel: layer {name!r} has no spatial size (output {shape}); pass "
                    "units=[(n, c), ...]"
                )
            if not 0 <= channel < shape[1]:
                raise ValueError(
                    f"channel: expected an int in [0, {shape[1]}) for layer {name!r}, got {channel}"
                )

    unruled = _Unruled(rule, strict)
    with eval_mode(model), torch.enable_grad():
        choice = strategy
        rf = None
        if strategy != "shared" and (u is None or u.shape[1] == 4):
            n_units = x.shape[0] if u is None else len(u)
            if strategy == "crop" or n_units > 1:
                from .receptive import receptive_field

                rf = receptive_field(model, name, input_size=tuple(x.shape[2:]))
                if rf.is_global and strategy == "auto":
                    choice = "shared"
        if choice == "auto":
            choice = _choose(x, u, rf)
        if choice == "shared" or rf is None or rf.is_global:
            out = _shared(model, x, name, u, channel, rule, batch_size, unruled, stop_at)
        else:
            if u is None:
                u = _strongest(model, x, name, channel, batch_size, rf.calls)
            else:
                _check_units(
                    u, (x.shape[0], _channels(model, x, name, rf)) + tuple(rf.output_size), name
                )
            out = _cropped(model, x, name, u, rule, batch_size, rf, unruled)
    unruled.warn()
    return out.detach()


def _channels(model, x, name, rf) -> int:
    if rf.channels is not None:
        return rf.channels
    with (
        torch.no_grad(),
        Capture(model, [name], switches=False, stop_at=(name, rf.calls - 1)) as cap,
    ):
        model(x[:1])
    return cap.activations[name].shape[1]


def _choose(x, units, rf) -> str:
    """Pick the cheaper strategy by a pixel-area cost model (backward ~ 2x forward)."""
    if rf is None:
        return "shared"
    H, W = x.shape[2:]
    area = H * W
    crop_area = min(H, rf.size[0] + rf.stride[0] - 1) * min(W, rf.size[1] + rf.stride[1] - 1)
    if units is None:
        n_img, rounds, K, probe = x.shape[0], 1, x.shape[0], x.shape[0] * area
    else:
        imgs = units[:, 0]
        n_img = len(torch.unique(imgs))
        rounds = int(torch.bincount(imgs).max())
        K, probe = len(units), 0
    shared = n_img * area * (1 + 2 * rounds)
    crop = probe + 3 * K * crop_area + area
    return "crop" if crop < shared else "shared"


def deconv(model: nn.Module, x: torch.Tensor, *, strict: bool = False, **kwargs) -> torch.Tensor:
    """Deconvnet projection (Zeiler & Fergus 2014, Sec. 2.1): ``relu(g)`` at every ReLU, and
    at every GELU, SiLU, Hardswish, LeakyReLU, ELU, SELU, CELU, Mish, Softplus, PReLU, RReLU
    (docs/method.md Sec. 5). ``strict=True``: raise :class:`NoRuleError` where the backward
    would cross a nonlinearity with no rule (else one :class:`NoRuleWarning`). Other keywords:
    see :func:`backprop`."""
    return backprop(model, x, rule="deconv", strict=strict, **kwargs)


def guided_backprop(
    model: nn.Module, x: torch.Tensor, *, strict: bool = False, **kwargs
) -> torch.Tensor:
    """Guided back-propagation (Springenberg et al. 2015): ``relu(g) * max(f'(x), 0)`` at every
    activation of the rectifier family (docs/method.md Sec. 5), ``relu(g) * (x > 0)`` at a
    ReLU. ``strict``: as in :func:`deconv`. Other keywords: see :func:`backprop`."""
    return backprop(model, x, rule="guided", strict=strict, **kwargs)


def saliency(model: nn.Module, x: torch.Tensor, **kwargs) -> torch.Tensor:
    """Plain gradient of the unit (Simonyan et al. 2014). See :func:`backprop`."""
    return backprop(model, x, rule="saliency", **kwargs)
