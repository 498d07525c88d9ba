"""Receptive fields of layer units: which input pixels a unit at ``(y, x)`` can see.

The paper's Fig. 2 shows every top activation next to "the corresponding image patch"
(docs/method.md Sec. 3.1): the part of the input that the unit's receptive field covers.
:func:`receptive_field` finds that field for any layer of any model by tracing one forward
pass of a zeros image under a :class:`torch.overrides.TorchFunctionMode` that sees every torch
operation and propagates, per spatial axis, an affine description of what each tensor position
depends on:

    unit ``i`` of the tensor depends at most on input positions ``[o + i*s, o + i*s + r)``

(stride ``s``, offset ``o``, size ``r``). A convolution or pooling with kernel ``k``, stride
``t``, left padding ``p`` and dilation ``d`` maps ``(s, o, r)`` to
``(s*t, o - p*s, r + d*(k-1)*s)``; elementwise operations keep it (the union over their
operands); everything that mixes positions in another way makes the result *global* (the whole
input). Alongside, each position carries the exact hull ``[lo, hi)`` of the input coordinates
it reaches through the traced windows, skipping zero padding: ``box(y, x)`` returns it, so the
box is the affine field clipped to the image, trimmed at borders where a part of the field is
reached only through padding (a dilated convolution's taps can skip the first row).

The analysis is sound by construction (a unit never depends on a pixel outside its box) and
exact for chains of convolutions, average poolings, pads and elementwise operations: with
positive weights and inputs, the gradient of a unit is nonzero on a set whose bounding box is
the box.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from ..base.checks import check_model, model_device
from ..base.layers import eval_mode, first_conv, resolve_layer
from .capture import Capture
from .probe import check_input_size, dry_run

__all__ = ["ReceptiveField", "receptive_field"]


# --------------------------------------------------------------------------------------------
# The result
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ReceptiveField:
    """Where in the input each unit of a layer's output looks.

    Unit ``(y, x)`` of the layer output (shape ``(N, C, h, w)``) depends at most on input rows
    ``[offset[0] + y*stride[0], offset[0] + y*stride[0] + size[0])`` and the same columns with
    index 1 (the *affine field*, ``box(y, x, clip=False)``). ``box(y, x)`` is that rectangle
    restricted to the image: the exact bounding box of the pixels the unit depends on.

    Attributes
    ----------
    layer : str
        Dotted ``named_modules()`` name of the layer.
    input_size : (H, W)
        The input image size the field was computed at.
    output_size : (h, w)
        Spatial size of the layer output at ``input_size``; ``(1, 1)`` for an output that is
        not spatial (``Linear``: shape ``(N, F)``).
    stride : (sy, sx)
        Input pixels per output step. ``(0, 0)`` when ``is_global``.
    offset : (oy, ox)
        Input coordinate where the field of unit ``(0, 0)`` starts; negative when it begins in
        the padding. ``(0, 0)`` when ``is_global``.
    size : (ry, rx)
        Extent of one unit's field, unclipped. ``(H, W)`` when ``is_global``.
    is_global : bool
        True when the analysis could only say "the whole input" (the layer comes after an
        operation that mixes all positions: flatten, squeeze-excitation, interpolation, a
        normalisation over space, ...). Then every box is the whole image.
    calls : int
        How many times the forward pass called the layer (the field describes the last call).
    channels : int or None
        ``C`` of the layer output ``(N, C, ...)``; None when unknown.
    rows, cols : tuple of (start, end), lengths h and w
        ``rows[y]``: the input rows that output row ``y`` depends on, ``[start, end)``, within
        ``[0, H]`` (what ``box`` returns). Equal to the affine field clipped to the image except
        at borders where a part of it is reached only through zero padding (e.g. a dilated
        convolution whose taps skip the first row and land in the padding).
    """

    layer: str
    input_size: tuple[int, int]
    output_size: tuple[int, int]
    stride: tuple[int, int]
    offset: tuple[int, int]
    size: tuple[int, int]
    is_global: bool
    calls: int = 1
    channels: int | None = None
    rows: tuple[tuple[int, int], ...] = field(repr=False, default=())
    cols: tuple[tuple[int, int], ...] = field(repr=False, default=())

    def __post_init__(self) -> None:
        # Plain ints and tuples whatever came in (e.g. lists from a JSON round trip).
        for name in ("input_size", "output_size", "stride", "offset", "size"):
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        for name in ("rows", "cols"):
            bounds = tuple((int(a), int(b)) for a, b in getattr(self, name))
            object.__setattr__(self, name, bounds)
        object.__setattr__(self, "is_global", bool(self.is_global))
        # Without explicit bounds: the affine field clipped to the image.
        for name, axis in (("rows", 0), ("cols", 1)):
            if not getattr(self, name):
                n, total = self.output_size[axis], self.input_size[axis]
                bounds = []
                for i in range(n):
                    start = self.offset[axis] + i * self.stride[axis]
                    end = start + self.size[axis]
                    bounds.append((min(max(start, 0), total), min(max(end, 0), total)))
                object.__setattr__(self, name, tuple(bounds))

    def _check_unit(self, y: int, x: int) -> None:
        h, w = self.output_size
        if not (0 <= y < h and 0 <= x < w):
            raise ValueError(
                f"unit (y={y}, x={x}) is outside the output of {self.layer!r}, whose spatial "
                f"size is (h={h}, w={w}) at input size {self.input_size}"
            )

    def box(self, y: int, x: int, *, clip: bool = True) -> tuple[int, int, int, int]:
        """The input rectangle that unit ``(y, x)`` sees: ``(top, left, bottom, right)``.

        Ends are exclusive: the patch is ``image[..., top:bottom, left:right]``.

        Parameters
        ----------
        y, x : int
            Unit position in the layer output, ``0 <= y < h``, ``0 <= x < w``.
        clip : bool
            ``True`` (default): within the image ``[0, H] x [0, W]``, the exact bounding box of
            the pixels the unit depends on (``rows[y]``, ``cols[x]``). ``False``: the affine
            field ``offset + (y, x) * stride`` of extent ``size``, which may start at a
            negative coordinate or end beyond the image.
        """
        y, x = _as_index(y, "y"), _as_index(x, "x")
        self._check_unit(y, x)
        if clip:
            (top, bottom), (left, right) = self.rows[y], self.cols[x]
            return top, left, bottom, right
        top = self.offset[0] + y * self.stride[0]
        left = self.offset[1] + x * self.stride[1]
        return top, left, top + self.size[0], left + self.size[1]

    def boxes(self, ys: Any, xs: Any, *, clip: bool = True) -> torch.Tensor:
        """Vectorised :meth:`box`: a LongTensor of shape ``(K, 4)``, rows
        ``(top, left, bottom, right)`` for the units ``(ys[k], xs[k])``.

        Parameters
        ----------
        ys, xs : sequence of int or integer tensor, shape (K,)
            Unit positions; a scalar is broadcast against the other argument.
        clip : bool
            Within the image (default), as in :meth:`box`.
        """
        ys_t = _as_index_tensor(ys, "ys")
        xs_t = _as_index_tensor(xs, "xs")
        try:
            ys_t, xs_t = torch.broadcast_tensors(ys_t, xs_t)
        except RuntimeError:
            raise ValueError(
                f"ys, xs: expected the same number of units, got {ys_t.numel()} and {xs_t.numel()}"
            ) from None
        ys_t, xs_t = ys_t.reshape(-1), xs_t.reshape(-1)
        h, w = self.output_size
        bad = (ys_t < 0) | (ys_t >= h) | (xs_t < 0) | (xs_t >= w)
        if bool(bad.any()):
            k = int(bad.nonzero()[0, 0])
            self._check_unit(int(ys_t[k]), int(xs_t[k]))
        if clip:
            rows = torch.tensor(self.rows, dtype=torch.long).reshape(-1, 2)[ys_t]  # (K, 2)
            cols = torch.tensor(self.cols, dtype=torch.long).reshape(-1, 2)[xs_t]
            return torch.stack([rows[:, 0], cols[:, 0], rows[:, 1], cols[:, 1]], dim=1)
        top = self.offset[0] + ys_t * self.stride[0]
        left = self.offset[1] + xs_t * self.stride[1]
        return torch.stack([top, left, top + self.size[0], left + self.size[1]], dim=1)


def _as_index(v: Any, name: str) -> int:
    if isinstance(v, bool):
        raise TypeError(f"{name}: expected an int, got {v!r}")
    try:
        return operator.index(v)
    except TypeError:
        raise TypeError(f"{name}: expected an int, got {type(v).__name__}") from None


def _as_index_tensor(v: Any, name: str) -> torch.Tensor:
    t = torch.as_tensor(v)
    if t.numel() == 0:
        t = t.long()
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise TypeError(f"{name}: expected integer unit positions, got dtype {t.dtype}")
    if t.dim() > 1:
        raise ValueError(f"{name}: expected a 1-d sequence of ints, got shape {tuple(t.shape)}")
    return t.to(device="cpu", dtype=torch.long)


# --------------------------------------------------------------------------------------------
# Per-tensor information
# --------------------------------------------------------------------------------------------
_BIG = 1 << 62  # hull bounds of a position that depends on no input pixel: (_BIG, -_BIG)


@dataclass(frozen=True, eq=False)
class _Axis:
    """One spatial axis of a tensor of length ``n = len(lo)``.

    Affine field: position ``i`` depends at most on input coordinates ``[o + i*s, o + i*s + r)``.
    Exact hull: the input coordinates it depends on through the traced operations span
    ``[lo[i], hi[i])`` (int64 arrays of shape (n,)); it lies inside the affine field clipped to
    the image and is smaller at borders where part of the field is reached only through zero
    padding.
    """

    s: int
    o: int
    r: int
    lo: np.ndarray
    hi: np.ndarray

    @property
    def n(self) -> int:
        return len(self.lo)

    def same(self, other: _Axis) -> bool:
        return (
            (self.s, self.o, self.r) == (other.s, other.o, other.r)
            and np.array_equal(self.lo, other.lo)
            and np.array_equal(self.hi, other.hi)
        )

    def window(self, n_out: int, k: int, st: int, pad: int, dil: int = 1) -> _Axis:
        """A sliding window (convolution, pooling, pad): output ``j`` reads positions
        ``j*st - pad + t*dil`` for ``t < k``; positions outside ``[0, n)`` are padding."""
        q = np.arange(n_out)[:, None] * st - pad + np.arange(k)[None, :] * dil  # (n_out, k)
        return self._gather(
            q, (self.s * st, self.o - pad * self.s, self.r + dil * (k - 1) * self.s)
        )

    def bins(self, starts: np.ndarray, ends: np.ndarray, affine: tuple[int, int, int]) -> _Axis:
        """Output ``i`` reads positions ``[starts[i], ends[i])`` (adaptive pooling)."""
        width = int((ends - starts).max()) if len(starts) else 1
        q = starts[:, None] + np.arange(width)[None, :]
        q = np.where(q < ends[:, None], q, -1)  # -1: not read
        return self._gather(q, affine)

    def _gather(self, q: np.ndarray, affine: tuple[int, int, int]) -> _Axis:
        valid = (q >= 0) & (q < self.n)
        if self.n == 0 or q.shape[1] == 0:
            lo = np.full(q.shape[0], _BIG, dtype=np.int64)
            hi = np.full(q.shape[0], -_BIG, dtype=np.int64)
        else:
            qc = np.clip(q, 0, self.n - 1)
            lo = np.where(valid, self.lo[qc], _BIG).min(1)
            hi = np.where(valid, self.hi[qc], -_BIG).max(1)
        return _Axis(*affine, lo, hi)


class _Info(NamedTuple):
    """The field of a tensor whose last two dims are spatial: rows, columns."""

    y: _Axis
    x: _Axis

    @property
    def hw(self) -> tuple[int, int]:
        return self.y.n, self.x.n

    def same(self, other: Any) -> bool:
        return isinstance(other, _Info) and self.y.same(other.y) and self.x.same(other.x)


def _identity_axis(n: int) -> _Axis:
    i = np.arange(n, dtype=np.int64)
    return _Axis(1, 0, 1, i, i + 1)


class _GlobalType:
    """Depends on (or could depend on) the whole input."""

    def __repr__(self) -> str:
        return "GLOBAL"


GLOBAL = _GlobalType()
# Per-tensor state: an _Info, GLOBAL, or None (not derived from the input: weights, constants).
_State = Any


def _same_state(a: _State, b: _State) -> bool:
    return a.same(b) if isinstance(a, _Info) else a is b


def _spatial(t: torch.Tensor) -> tuple[int, int] | None:
    return (int(t.shape[-2]), int(t.shape[-1])) if t.dim() >= 3 else None


def _union_axis(axes: list[_Axis]) -> _Axis | None:
    if any(a.s != axes[0].s for a in axes):
        return None
    o = min(a.o for a in axes)
    end = max(a.o + a.r for a in axes)
    lo = np.minimum.reduce([a.lo for a in axes])
    hi = np.maximum.reduce([a.hi for a in axes])
    return _Axis(axes[0].s, o, end - o, lo, hi)


def _union(states: Sequence[_State], hw: tuple[int, int] | None) -> _State:
    """Union of the operands' fields for an output of spatial size ``hw`` whose position
    ``(i, j)`` reads position ``(i, j)`` of every operand (no broadcast over space)."""
    infos = [s for s in states if s is not None]
    if not infos:
        return None
    if hw is None or any(s is GLOBAL or s.hw != hw for s in infos):
        return GLOBAL
    if len(infos) == 1:
        return infos[0]
    y = _union_axis([s.y for s in infos])
    x = _union_axis([s.x for s in infos])
    return GLOBAL if y is None or x is None else _Info(y, x)


def _window(
    state: _State,
    out: torch.Tensor,
    kernel: tuple[int, int],
    stride: tuple[int, int],
    pad: tuple[int, int],
    dilation: tuple[int, int] = (1, 1),
) -> _State:
    """A sliding window (convolution, pooling) with left/top padding ``pad``:
    ``(s, o, r) -> (s*stride, o - pad*s, r + dilation*(kernel - 1)*s)`` per axis."""
    if not isinstance(state, _Info):
        return state
    hw = _spatial(out)
    if hw is None:
        return GLOBAL
    return _Info(
        state.y.window(hw[0], kernel[0], stride[0], pad[0], dilation[0]),
        state.x.window(hw[1], kernel[1], stride[1], pad[1], dilation[1]),
    )


# --------------------------------------------------------------------------------------------
# Argument helpers
# --------------------------------------------------------------------------------------------
_MISSING = object()


def _arg(args: tuple, kwargs: dict, pos: int, name: str, default: Any = _MISSING) -> Any:
    if len(args) > pos:
        return args[pos]
    if name in kwargs:
        return kwargs[name]
    if default is _MISSING:
        raise KeyError(name)
    return default


def _pair(v: Any) -> tuple[int, int]:
    if isinstance(v, torch.Tensor):
        v = v.tolist()
    if isinstance(v, int) and not isinstance(v, bool):
        return int(v), int(v)
    v = tuple(int(e) for e in v)
    if len(v) == 1:
        return v[0], v[0]
    if len(v) != 2:
        raise ValueError(f"expected 1 or 2 values, got {v}")
    return v


def _tensors(obj: Any) -> Iterator[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for e in obj:
            yield from _tensors(e)
    elif isinstance(obj, dict):
        for e in obj.values():
            yield from _tensors(e)


def _dims(value: Any, ndim: int) -> list[int] | None:
    """Normalised dims of a ``dim`` argument, or None when not a plain int / ints."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        value = [value]
    if not isinstance(value, (list, tuple, torch.Size)) or not value:
        return None
    out = []
    for d in value:
        if isinstance(d, bool) or not isinstance(d, int):
            return None
        out.append(d + ndim if d < 0 else d)
    return out


def _touches_space(dims: list[int] | None, ndim: int) -> bool:
    return dims is None or ndim < 3 or any(d >= ndim - 2 for d in dims)


# --------------------------------------------------------------------------------------------
# Operation classes
# --------------------------------------------------------------------------------------------
def _names(text: str) -> frozenset[str]:
    return frozenset(text.split())


_CONV = {"conv2d", "convolution", "_convolution"}
_MAXPOOL = {"max_pool2d", "_max_pool2d", "max_pool2d_with_indices"}
_ADAPTIVE = {
    "adaptive_avg_pool2d",
    "adaptive_max_pool2d",
    "_adaptive_max_pool2d",
    "adaptive_max_pool2d_with_indices",
}
# Position (i, j) of the output reads position (i, j) of each operand: elementwise maths,
# activations, eval-mode batch norm, LRN (across channels), dropout, casts, copies, and
# reshapes (a reshape that keeps the last two sizes maps (..., i, j) to (..., i, j)).
_POINTWISE = _names(
    """
    abs absolute abs_ neg negative neg_ positive relu relu_ relu6 rrelu rrelu_ leaky_relu
    leaky_relu_ elu elu_ selu selu_ celu celu_ gelu silu mish sigmoid sigmoid_ logsigmoid tanh
    tanh_ hardtanh hardtanh_ hardsigmoid hardswish hardshrink softshrink tanhshrink softplus
    softsign threshold threshold_ prelu exp exp_ exp2 expm1 log log_ log1p log2 log10 sqrt
    sqrt_ rsqrt rsqrt_ square square_ pow pow_ float_power reciprocal reciprocal_ sign sgn sin
    cos erf erfinv floor ceil round trunc frac clamp clamp_ clip clip_ clamp_min clamp_min_
    clamp_max clamp_max_ nan_to_num nan_to_num_ isnan isfinite isinf logical_not bitwise_not
    sigmoid_ add add_ sub sub_ subtract rsub mul mul_ multiply div div_ divide true_divide
    floor_divide remainder fmod maximum minimum fmax fmin atan2 hypot eq ne lt le gt ge
    logical_and logical_or logical_xor bitwise_and bitwise_or bitwise_xor where masked_fill
    masked_fill_ lerp lerp_ addcmul addcmul_ addcdiv addcdiv_ copy_ fill_ zero_ xlogy
    __add__ __radd__ __iadd__ __sub__ __rsub__ __isub__ __mul__ __rmul__ __imul__ __truediv__
    __rtruediv__ __itruediv__ __div__ __floordiv__ __rfloordiv__ __ifloordiv__ __mod__ __rmod__
    __pow__ __rpow__ __ipow__ __neg__ __pos__ __abs__ __invert__ __eq__ __ne__ __lt__ __le__
    __gt__ __ge__ __and__ __or__ __xor__ __iand__ __ior__ __ixor__ __rand__ __ror__ __rxor__
    batch_norm local_response_norm dropout dropout_ alpha_dropout feature_alpha_dropout
    dropout1d dropout2d dropout3d
    clone contiguous detach detach_ to type type_as float double half bfloat16 int long bool
    cpu cuda requires_grad_ view view_as reshape reshape_as flatten unflatten squeeze squeeze_
    unsqueeze unsqueeze_ expand expand_as repeat tile broadcast_to broadcast_tensors
    """
)
# Outputs that do not depend on the values of their operands.
_CONSTANT = _names(
    """
    zeros_like ones_like empty_like full_like rand_like randn_like randint_like new_zeros
    new_ones new_empty new_full new_tensor
    """
)
# Operations along ``dim`` (argument position, default): position-wise when no dim is spatial.
_ALONG_DIM: dict[str, tuple[int, Any]] = {
    **{
        n: (1, None)
        for n in _names(
            """sum mean nansum nanmean prod max min argmax argmin std var std_mean var_mean
        logsumexp softmax log_softmax softmin cumsum cumprod all any median nanmedian
        count_nonzero narrow select index_select flip"""
        )
    },
    "amax": (1, ()),
    "amin": (1, ()),
    "unbind": (1, 0),
    "norm": (2, None),
    "normalize": (2, 1),
    "split": (2, 0),
    "split_with_sizes": (2, 0),
    "unsafe_split": (2, 0),
    "chunk": (2, 0),
    "unsafe_chunk": (2, 0),
    "tensor_split": (2, 0),
    "roll": (2, None),
    "glu": (1, -1),
    "cat": (1, 0),
    "concat": (1, 0),
    "concatenate": (1, 0),
}
_DIM_NAMES = {"flip": "dims", "roll": "dims"}
_PERMUTE = {"permute", "transpose", "transpose_", "swapaxes", "swapdims", "swapaxes_"}
_INPLACE_DUNDER = {
    "__iadd__",
    "__isub__",
    "__imul__",
    "__itruediv__",
    "__ifloordiv__",
    "__imod__",
    "__ipow__",
    "__iand__",
    "__ior__",
    "__ixor__",
    "__ilshift__",
    "__irshift__",
    "__imatmul__",
    "__setitem__",
}


# --------------------------------------------------------------------------------------------
# The tracer
# --------------------------------------------------------------------------------------------
class _Tracer(TorchFunctionMode):
    """Propagates per-tensor receptive-field states through every torch operation."""

    def __init__(self, x: torch.Tensor, constants: Sequence[torch.Tensor]):
        super().__init__()
        # id -> (tensor, state); the tensor is held so that its id cannot be reused.
        self.table: dict[int, tuple[torch.Tensor, _State]] = {}
        self.constants = {id(t): t for t in constants}
        H, W = x.shape[-2:]
        self.table[id(x)] = (x, _Info(_identity_axis(int(H)), _identity_axis(int(W))))

    def state(self, t: torch.Tensor) -> _State:
        entry = self.table.get(id(t))
        if entry is not None and entry[0] is t:
            return entry[1]
        c = self.constants.get(id(t))
        if c is t:
            return None
        # Made during the forward by code this mode does not see (TorchScript, C++): it may
        # depend on anything.
        return GLOBAL

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = getattr(func, "__name__", "").split(".")[0]  # torch.ops: "relu.default"
        targets = list(_tensors(out))
        seen = {id(t) for t in targets}
        targets += [t for t in _mutated(name, args, kwargs) if id(t) not in seen]
        if not targets:
            return out
        ins = list(_tensors((args, kwargs)))
        states = [self.state(t) for t in ins]
        if all(s is None for s in states) or name in _CONSTANT:
            new: _State = None
        else:
            try:
                new = _rule(name, args, kwargs, ins, states, self.state, targets[0])
            except Exception:  # an unexpected signature: be conservative, never fail
                new = GLOBAL
        for t in targets:
            st = new
            if isinstance(st, _Info) and _spatial(t) != st.hw:
                st = GLOBAL
            self._set(t, st)
        return out

    def _set(self, t: torch.Tensor, new: _State) -> None:
        entry = self.table.get(id(t))
        old = entry[1] if entry is not None and entry[0] is t else _MISSING
        self.table[id(t)] = (t, new)
        if old is _MISSING or _same_state(old, new):
            return
        # ``t`` existed and changed in place: every other view of its memory changed too.
        ptr = _storage_ptr(t)
        if ptr is None:
            return
        for tid, (other, st) in list(self.table.items()):
            if other is t or _storage_ptr(other) != ptr:
                continue
            same_view = (
                other.shape == t.shape
                and other.stride() == t.stride()
                and other.storage_offset() == t.storage_offset()
            )
            self.table[tid] = (other, _union([st, new], _spatial(other)) if same_view else GLOBAL)


def _storage_ptr(t: torch.Tensor) -> int | None:
    try:
        ptr = t.untyped_storage().data_ptr()
    except (RuntimeError, NotImplementedError):
        return None
    return ptr or None


def _mutated(name: str, args: tuple, kwargs: dict) -> list[torch.Tensor]:
    """Tensors an operation writes to in place (besides returning them)."""
    out: list[torch.Tensor] = []
    first = args[0] if args else kwargs.get("input", kwargs.get("self", kwargs.get("tensor")))
    if (
        (name.endswith("_") and not name.startswith("__"))
        or name in _INPLACE_DUNDER
        or kwargs.get("inplace") is True
    ) and isinstance(first, torch.Tensor):
        out.append(first)
    if "out" in kwargs:
        out.extend(_tensors(kwargs["out"]))
    return out


def _rule(
    name: str,
    args: tuple,
    kwargs: dict,
    ins: list[torch.Tensor],
    states: list[_State],
    state: Callable[[torch.Tensor], _State],
    out: torch.Tensor,
) -> _State:
    """The state of the output ``out`` (and every other output) of one operation."""
    first = args[0] if args and isinstance(args[0], torch.Tensor) else None
    others_have_info = first is not None and any(
        s is not None for t, s in zip(ins, states) if t is not first
    )

    if name in _CONV:
        if others_have_info or (name != "conv2d" and _arg(args, kwargs, 6, "transposed")):
            return GLOBAL
        weight = _arg(args, kwargs, 1, "weight")
        if weight.dim() != 4:
            return GLOBAL
        k = (int(weight.shape[-2]), int(weight.shape[-1]))
        stride = _pair(_arg(args, kwargs, 3, "stride", 1))
        dil = _pair(_arg(args, kwargs, 5, "dilation", 1))
        padding = _arg(args, kwargs, 4, "padding", 0)
        if padding == "valid":
            pad = (0, 0)
        elif padding == "same":
            pad = (dil[0] * (k[0] - 1) // 2, dil[1] * (k[1] - 1) // 2)
        else:
            pad = _pair(padding)
        return _window(state(first), out, k, stride, pad, dil)

    if name in _MAXPOOL or name in ("avg_pool2d", "lp_pool2d"):
        if others_have_info:
            return GLOBAL
        if name == "lp_pool2d":
            k = _pair(_arg(args, kwargs, 2, "kernel_size"))
            stride_arg = _arg(args, kwargs, 3, "stride", None)
            pad, dil = (0, 0), (1, 1)
        else:
            k = _pair(_arg(args, kwargs, 1, "kernel_size"))
            stride_arg = _arg(args, kwargs, 2, "stride", None)
            pad = _pair(_arg(args, kwargs, 3, "padding", 0))
            dil = _pair(_arg(args, kwargs, 4, "dilation", 1)) if name in _MAXPOOL else (1, 1)
        empty = stride_arg is None or (isinstance(stride_arg, (list, tuple)) and not stride_arg)
        stride = k if empty else _pair(stride_arg)
        return _window(state(first), out, k, stride, pad, dil)

    if name in _ADAPTIVE:
        st = state(first)
        if others_have_info or not isinstance(st, _Info):
            return GLOBAL if others_have_info else st
        hw = _spatial(out)
        if hw is None:
            return GLOBAL
        y, x = _adaptive(st.y, hw[0]), _adaptive(st.x, hw[1])
        return GLOBAL if y is None or x is None else _Info(y, x)

    if name == "pad":
        if others_have_info or _arg(args, kwargs, 2, "mode", "constant") != "constant":
            return GLOBAL
        pads = [int(p) for p in _arg(args, kwargs, 1, "pad")]
        left = pads[0] if len(pads) >= 2 else 0
        top = pads[2] if len(pads) >= 4 else 0
        return _window(state(first), out, (1, 1), (1, 1), (top, left))

    if name in _POINTWISE:
        if name == "batch_norm" and _arg(args, kwargs, 5, "training", False):
            return GLOBAL  # batch statistics mix every position
        return _union(states, _spatial(out))

    if name in ("max", "min") and len(args) > 1 and isinstance(args[1], torch.Tensor):
        return _union(states, _spatial(out))  # the elementwise form

    if name in _ALONG_DIM:
        pos, default = _ALONG_DIM[name]
        src = first
        if name in ("cat", "concat", "concatenate"):
            src = next(iter(_tensors(args[0] if args else kwargs.get("tensors"))), None)
        if src is None:
            return GLOBAL
        if name == "flip" and len(args) > 2:  # x.flip(1, 2)
            dim_arg: Any = list(args[1:])
        else:
            dim_arg = _arg(args, kwargs, pos, _DIM_NAMES.get(name, "dim"), default)
        dims = _dims(dim_arg, src.dim())
        if _touches_space(dims, src.dim()):
            return GLOBAL
        return _union(states, _spatial(out))

    if name == "stack":
        src = next(iter(_tensors(args[0] if args else kwargs.get("tensors"))), None)
        dims = _dims(_arg(args, kwargs, 1, "dim", 0), src.dim() + 1) if src is not None else None
        if _touches_space(dims, src.dim() + 1 if src is not None else 0):
            return GLOBAL
        return _union(states, _spatial(out))

    if name in _PERMUTE:
        if first is None:
            return GLOBAL
        n = first.dim()
        if name == "permute":
            raw = args[1:] if len(args) > 1 else kwargs.get("dims")
            if len(raw) == 1 and isinstance(raw[0], (list, tuple, torch.Size)):
                raw = raw[0]
            perm = _dims(list(raw), n)
            if perm is None or n < 3 or perm[n - 2] != n - 2 or perm[n - 1] != n - 1:
                return GLOBAL
        else:
            d = _dims([_arg(args, kwargs, 1, "dim0"), _arg(args, kwargs, 2, "dim1")], n)
            if d is None or (d[0] != d[1] and _touches_space(d, n)):
                return GLOBAL
        return _union(states, _spatial(out))

    if name == "__getitem__":
        return _getitem(first, args[1] if len(args) > 1 else None, states, state, out)

    return GLOBAL


def _adaptive(a: _Axis, n_out: int) -> _Axis | None:
    """Adaptive pooling of an axis of length ``n`` to ``n_out``: bin ``i`` is
    ``[floor(i*n/n_out), ceil((i+1)*n/n_out))``. The affine field uses stride
    ``st = n // n_out`` (``floor(i*n/n_out) >= i*st``) and the smallest kernel that holds every
    bin: exact (``kernel = stride = n/n_out``) when ``n_out`` divides ``n``. None (global) when
    ``n_out > n``."""
    n = a.n
    if n_out < 1 or n_out > n:
        return None
    i = np.arange(n_out, dtype=np.int64)
    starts = (i * n) // n_out
    ends = -((-(i + 1) * n) // n_out)
    st = n // n_out
    k = int((ends - i * st).max())
    return a.bins(starts, ends, (a.s * st, a.o, a.r + (k - 1) * a.s))


def _getitem(
    first: torch.Tensor | None,
    index: Any,
    states: list[_State],
    state: Callable[[torch.Tensor], _State],
    out: torch.Tensor,
) -> _State:
    """Basic indexing: ints and slices on leading dims keep the field; a slice
    ``start::step`` on a spatial dim is a crop (offset) and a subsampling (stride)."""
    if first is None or first.dim() < 3:
        return GLOBAL
    if any(s is not None for s in states[1:]):
        return GLOBAL  # the index itself comes from the input
    st = state(first)
    if not isinstance(st, _Info):
        return st
    items = list(index) if isinstance(index, tuple) else [index]
    if any(not (e is None or e is Ellipsis or isinstance(e, (int, slice))) for e in items):
        return GLOBAL  # advanced indexing (tensors, lists, bools)
    if any(isinstance(e, bool) for e in items) or items.count(Ellipsis) > 1:
        return GLOBAL
    n = first.dim()
    used = sum(1 for e in items if e is not None and e is not Ellipsis)
    if Ellipsis in items:
        i = items.index(Ellipsis)
        items[i : i + 1] = [slice(None)] * (n - used)
    else:
        items += [slice(None)] * (n - used)
    spatial: list[tuple[int, int, int]] = []
    d = 0
    for e in items:
        if e is None:
            if d >= n - 2:
                return GLOBAL  # a new dim between or after the spatial dims
            continue
        if d >= n - 2:
            if not isinstance(e, slice):
                return GLOBAL
            spatial.append(e.indices(int(first.shape[d])))
        d += 1
    hw = _spatial(out)
    if hw is None or len(spatial) != 2:
        return GLOBAL
    axes = []
    for a, (start, stop, step), n_out in zip((st.y, st.x), spatial, hw):
        picked = np.arange(start, stop, step, dtype=np.int64)[:, None]
        if len(picked) != n_out:
            return GLOBAL
        axes.append(a._gather(picked, (a.s * step, a.o + start * a.s, a.r)))
    return _Info(*axes)


# --------------------------------------------------------------------------------------------
# The public function
# --------------------------------------------------------------------------------------------
def _check_input_size(input_size: Any) -> tuple[int, int]:
    """An int or a pair of positive ints (numpy ints and ``torch.Size`` welcome) -> (H, W)."""
    hw = tuple(input_size) if isinstance(input_size, (tuple, list, torch.Size)) else None
    if hw is None:
        hw = (input_size, input_size)
    out = []
    for v in hw:
        try:
            v = operator.index(v) if not isinstance(v, bool) else None
        except TypeError:
            v = None
        out.append(v)
    if len(out) != 2 or any(v is None or v < 1 for v in out):
        raise ValueError(
            f"input_size: expected an int or (H, W) of positive ints, got {input_size!r}"
        )
    return out[0], out[1]


def receptive_field(
    model: nn.Module,
    layer: str | nn.Module,
    input_size: int | tuple[int, int] = (224, 224),
    *,
    in_channels: int | None = None,
) -> ReceptiveField:
    """The receptive field of the units of ``layer``: which input pixels each can see.

    Traces one forward pass of a zeros image of shape ``(1, C, H, W)`` on the model's device
    (in eval mode, without gradients, no hook left behind) and propagates per-axis
    ``(stride, offset, size)`` through every torch operation (see the module docstring).
    The result is sound (a unit's value never depends on a pixel outside its box) and its box
    is the exact bounding box of the pixels the unit is wired to through convolutions,
    poolings, constant pads, crops and elementwise operations (ReLU, eval-mode batch norm, LRN,
    dropout, residual additions, channel concatenations).

    Parameters
    ----------
    model : nn.Module
    layer : str or nn.Module
        Dotted ``named_modules()`` name (``"features.10"``) or the submodule itself. A module
        called several times in one forward (ResNet's shared ReLU) is described by its last call.
    input_size : int or (H, W)
        Input image size, default 224 x 224.
    in_channels : int, optional
        Channels ``C`` of the traced image; default: those of the first ``Conv2d``, else 3.

    Returns
    -------
    ReceptiveField
        ``rf.box(y, x)`` is ``(top, left, bottom, right)`` for unit ``(y, x)`` of the layer's
        ``(N, C, h, w)`` output; ``rf.is_global`` when the analysis can only say "everything"
        (after a flatten, a squeeze-excitation, an interpolation, a non-constant pad, a
        normalisation over space, ...) or when the output is not spatial (``(N, F)``).

    Raises
    ------
    ValueError
        Bad ``input_size``, unknown layer (with close matches), a layer the forward pass does
        not call, or a forward pass that fails before reaching the layer.

    Examples
    --------
    >>> import torch, torchvision
    >>> import zfwidgets as zf
    >>> alexnet = torchvision.models.alexnet()
    >>> rf = zf.receptive_field(alexnet, "features.10", 224)  # torchvision AlexNet's conv5
    >>> rf.stride, rf.offset, rf.size
    ((16, 16), (-66, -66), (163, 163))
    >>> top, left, bottom, right = rf.box(6, 6)
    >>> image = torch.zeros(3, 224, 224)
    >>> image[:, max(top, 0):bottom, max(left, 0):right].shape   # clipped at the border
    torch.Size([3, 163, 163])
    """
    check_model(model)
    H, W = _check_input_size(input_size)
    name, module = resolve_layer(model, layer)
    conv = first_conv(model)
    if in_channels is None:
        in_channels = conv[1].in_channels if conv is not None else 3
    elif isinstance(in_channels, bool) or not isinstance(in_channels, int) or in_channels < 1:
        raise ValueError(f"in_channels: expected a positive int, got {in_channels!r}")

    device = model_device(model)
    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    # a shape-only pass first: a size the network cannot take, or a layer it does not call,
    # is reported before the traced forward
    run = dry_run(model, (1, in_channels, H, W), layers=(name,))
    if not run.ok and name not in run.shapes:  # failed before reaching the layer
        if conv is not None and conv[1].in_channels != in_channels:
            raise ValueError(
                f"in_channels: the shape-only forward pass of shape {run.shape} failed before "
                f"reaching layer {name!r}: the model's first convolution {conv[0]!r} takes "
                f"{conv[1].in_channels} channels, got {in_channels} ({run.error})"
            )
        check_input_size(model, (1, in_channels, H, W), name="input_size")
    run.layer(name)
    x = torch.zeros(1, in_channels, H, W, device=device, dtype=dtype)
    # Tensors that exist before the forward cannot depend on its input: parameters, buffers
    # and plain tensor attributes of the modules (``self.mean = torch.tensor(...)``).
    constants = [t for m in model.modules() for t in _tensors(dict(vars(m)))]
    found: dict[str, tuple[_State, tuple[int, ...]]] = {}
    tracer = _Tracer(x, constants)

    def reduce(_: str, t: torch.Tensor) -> None:
        found["out"] = (tracer.state(t), tuple(t.shape))

    # A max-pool module that returns its indices hands Capture a tuple; ask for the switches so
    # that Capture passes the pooled tensor itself.
    switches = isinstance(module, nn.MaxPool2d) and bool(module.return_indices)
    cap = Capture(model, [name], switches=switches, reduce=reduce)
    error: Exception | None = None
    try:
        with eval_mode(model), torch.no_grad(), cap, tracer:
            model(x)
    except Exception as exc:  # e.g. a classifier head that needs another input size
        error = exc
    if "out" not in found:
        if error is not None:
            raise ValueError(
                f"input_size: the forward pass of a zeros input of shape {tuple(x.shape)} failed before "
                f"reaching layer {name!r}: {type(error).__name__}: {error}"
            ) from error
        if cap.calls.get(name, 0) == 0:
            raise ValueError(
                f"layer {name!r} is not called by the forward pass of {type(model).__name__}; "
                "pick a module that the forward uses"
            )
        raise ValueError(f"layer {name!r} returns no tensor; pick a layer that returns one")

    st, shape = found["out"]
    calls = cap.calls.get(name, 1)
    channels = int(shape[1]) if len(shape) >= 2 else None
    if len(shape) < 3:
        return ReceptiveField(name, (H, W), (1, 1), (0, 0), (0, 0), (H, W), True, calls, channels)
    hw = (int(shape[-2]), int(shape[-1]))
    if not isinstance(st, _Info):
        return ReceptiveField(name, (H, W), hw, (0, 0), (0, 0), (H, W), True, calls, channels)
    return ReceptiveField(
        name,
        (H, W),
        hw,
        (st.y.s, st.x.s),
        (st.y.o, st.x.o),
        (st.y.r, st.x.r),
        False,
        calls,
        channels,
        _bounds(st.y, H),
        _bounds(st.x, W),
    )


def _bounds(a: _Axis, total: int) -> tuple[tuple[int, int], ...]:
    """Per-position ``(start, end)`` within ``[0, total]``; a position that depends on no
    input pixel (zero padding added by ``F.pad``) gets an empty range at its clipped start."""
    out = []
    for i, (lo, hi) in enumerate(zip(a.lo.tolist(), a.hi.tolist())):
        if lo >= hi:
            lo = hi = min(max(a.o + i * a.s, 0), total)
        out.append((int(lo), int(hi)))
    return tuple(out)
