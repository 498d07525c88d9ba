"""Incremental occlusion: recompute only the forward cone of the grey square (docs/method.md Sec. 3.5).

An occluder changes only the units whose receptive field it touches. For every layer this
module computes, per occluder position, the rectangle of the layer's output that can change
(from the kernel, stride, padding and dilation of convolutions and pools; elementwise and
per-pixel layers keep the rectangle; additions and channel concatenations take the union),
computes only that rectangle from the input rectangle plus its halo (the unoccluded
activations fill the halo, padding is applied at the borders as the layer pads), and keeps
the unoccluded activations everywhere else. Where the rectangle covers most of a layer's
map, the full map is assembled (unoccluded activations with the rectangle pasted in) and
the rest of the network runs as usual. The result equals the naive sweep (every occluded
image through the whole model) to float precision.

The dataflow comes from ``torch.fx`` symbolic tracing, attempted only on models built entirely
from ``torch``, ``torchvision`` and ``zfwidgets.models`` modules (tracing runs the Python
forward with proxies, which a custom forward may not survive unharmed). A model that cannot be
traced, or whose traced graph does not reproduce its own output, is swept naively; the reason
goes to the ``zfwidgets.engine.occlusion`` debug log. Operations the geometry cannot follow (anything
not listed above) are computed on full maps from that point of the graph on.

Threads. While it traces, torch.fx replaces ``nn.Module.__call__`` and ``__getattr__`` for the
whole process. Two rules keep that invisible:

- **Tracing happens on the main thread only** (the kernel's thread in Jupyter), one trace at a
  time, so it never overlaps another fx trace the notebook makes. :func:`trace` traces a model
  there and remembers its graph while the model lives (per module structure), so that a sweep
  of the same model in a worker thread (a widget's job) finds the graph and takes the
  incremental path; a worker never traces (a model not traced beforehand is swept naively
  there, with the reason in the debug log).
- **The tracer is confined to its thread**: a module called from another thread meanwhile (a
  widget's sweep in its worker) goes straight to the module, never through fx's wrappers.

The trace runs on a copy of the module tree (:func:`~zfwidgets.base.layers.module_tree_copy`)
in eval mode, so the model itself is never touched; only the per-image data of a sweep (the
unoccluded activations, :func:`plan`) is computed where the sweep runs.
"""

from __future__ import annotations

import contextlib
import logging
import operator
import threading
import weakref
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from ..base.layers import eval_mode, module_tree_copy

__all__ = ["FULL_AT", "Plan", "Traced", "Window", "plan", "trace"]

log = logging.getLogger("zfwidgets.engine.occlusion")

#: Fraction of a layer's map above which the full map is assembled and computed.
FULL_AT = 0.6

_TRUSTED = ("torch.", "torchvision.", "zfwidgets.models.")

# Modules that act on each pixel independently (channels may mix) in eval mode.
_PIXELWISE_MODULES = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.ELU,
    nn.GELU,
    nn.SiLU,
    nn.Sigmoid,
    nn.Tanh,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Identity,
    nn.Dropout,
    nn.Dropout2d,
    nn.LocalResponseNorm,
)
_PIXELWISE_FUNCTIONS = {F.relu, torch.relu, F.relu6, F.leaky_relu, torch.sigmoid, torch.tanh}
_PIXELWISE_METHODS = {"relu", "sigmoid", "tanh"}
_BINARY = {operator.add, operator.mul, operator.sub, torch.add, torch.mul, torch.sub}
_INPLACE_FUNCTIONS = {operator.iadd, operator.imul, operator.isub, operator.itruediv}


@dataclass
class Window:
    """A batch of B maps equal to the node's unoccluded map except in a rectangle per item:
    ``data`` (B, C, h, w) holds rows ``top[k]:top[k] + h`` and columns ``left[k]:left[k] + w``."""

    data: torch.Tensor
    top: torch.Tensor
    left: torch.Tensor


def _untrusted(model: nn.Module) -> str | None:
    for name, m in model.named_modules():
        mod = type(m).__module__ + "."
        if not mod.startswith(_TRUSTED):
            return f"{name or 'the model'} is a {type(m).__module__}.{type(m).__qualname__}"
    return None


def _inplace(node: fx.Node, model: nn.Module) -> bool:
    if node.op == "call_module":
        return bool(getattr(model.get_submodule(node.target), "inplace", False))
    if node.op == "call_function":
        return node.target in _INPLACE_FUNCTIONS or bool(node.kwargs.get("inplace", False))
    if node.op == "call_method":
        return str(node.target).endswith("_") and not str(node.target).startswith("__")
    return False


def _axis(a: torch.Tensor, h: int, k: int, s: int, p: int, d: int, n_out: int):
    """Output rows a window op (kernel k, stride s, padding p, dilation d) can change when input
    rows a..a+h-1 change: (start (B,), size, first padded input row (B,), input rows needed)."""
    lo = -((-(a + p - d * (k - 1))) // s)
    hi = (a + h - 1 + p) // s
    lo, hi = lo.clamp(min=0), hi.clamp(max=n_out - 1)
    size = max(1, min(n_out, int((hi - lo + 1).max())))
    start = lo.clamp(max=n_out - size)
    return start, size, start * s, (size - 1) * s + d * (k - 1) + 1


def _region(
    src, bi, win: Window, top, left, hn: int, wn: int, shift=(0, 0), cache: dict | None = None
) -> torch.Tensor:
    """Rows ``top[k]:top[k]+hn`` and columns ``left[k]:left[k]+wn`` of ``src[bi[k]]`` (N, C, H, W)
    with ``win`` pasted in (its coordinates offset by ``shift``): (B, C, hn, wn).

    One gather of channel vectors from a table holding the unoccluded pixels, then the
    window's pixels. ``cache`` keeps the table of an unoccluded ``src`` between calls.
    """
    dev = src.device
    n, c, h_src, w_src = src.shape
    b = len(bi)
    h, w = win.data.shape[2:]
    size, extra = n * h_src * w_src, b * h * w
    entry = None if cache is None else cache.get(id(src))
    if entry is None or entry[0] is not src or entry[1].shape[0] < size + extra:
        table = src.new_empty(size + extra, c)
        table[:size] = src.permute(0, 2, 3, 1).reshape(-1, c)
        if cache is not None:
            cache[id(src)] = (src, table)
    else:
        table = entry[1]
    table[size : size + extra] = win.data.permute(0, 2, 3, 1).reshape(-1, c)
    r = top[:, None] + torch.arange(hn, device=dev)  # (B, hn)
    q = left[:, None] + torch.arange(wn, device=dev)  # (B, wn)
    index = (bi[:, None, None] * h_src + r[:, :, None]) * w_src + q[:, None, :]
    wr = r - (win.top + shift[0])[:, None]
    wc = q - (win.left + shift[1])[:, None]
    inside = ((wr >= 0) & (wr < h))[:, :, None] & ((wc >= 0) & (wc < w))[:, None, :]
    pasted = n * h_src * w_src + (
        (torch.arange(b, device=dev)[:, None, None] * h + wr[:, :, None]) * w + wc[:, None, :]
    )
    index = torch.where(inside, pasted, index)
    return table[index.reshape(-1)].reshape(b, hn, wn, c).permute(0, 3, 1, 2)


class Plan:
    """A traced model and its unoccluded activations, ready to sweep positions incrementally."""

    def __init__(self, model, graph, clean, dynamic, layer_node):
        self.model = model
        self.graph = graph
        self.clean = clean  # node -> unoccluded value (N images)
        self.dynamic = dynamic  # nodes that depend on the image
        self.layer_node = layer_node
        self._padded: dict[tuple, torch.Tensor] = {}
        self._tables: dict[int, tuple] = {}
        #: node name -> "window" or "full" in the last chunk (for tests and the debug log)
        self.modes: dict[str, str] = {}
        #: nodes that received rectangles and needed full maps, in the last chunk
        self.assembled: list[str] = []
        self._logged = False

    # -- helpers -------------------------------------------------------------------------
    def _pad(self, node, pads: tuple[int, int, int, int], value: float) -> torch.Tensor:
        key = (node, pads, value)
        if key not in self._padded:
            self._padded[key] = F.pad(self.clean[node], pads, value=value)
        return self._padded[key]

    def _full(self, node, v, bi):
        if not isinstance(v, Window):
            return v
        h, w = self.clean[node].shape[2:]
        zero = torch.zeros_like(v.top)
        return _region(self.clean[node], bi, v, zero, zero, h, w, cache=self._tables).contiguous()

    # -- one chunk -----------------------------------------------------------------------
    def run(self, bi, win: Window, channel: torch.Tensor):
        """Positions ``bi`` (B,) image indices and the occluded input as a window; returns the
        rectified total of ``channel`` (B,) of the layer and the logits (B, classes)."""
        env: dict[fx.Node, Any] = {}
        total = None
        self.modes = {}
        self.assembled: list[str] = []
        for node in self.graph.nodes:
            if node.op == "placeholder":
                env[node] = win
                continue
            if node.op == "output":
                out = fx.node.map_arg(node.args[0], lambda a: self._full(a, env[a], bi))
                if not self._logged:
                    self._logged = True
                    windowed = [k for k, v in self.modes.items() if v == "window"]
                    log.debug(
                        "incremental occlusion: %d operations on rectangles (%s); full maps "
                        "assembled for %s (the cone covers most of the map, or an operation "
                        "the geometry does not follow)",
                        len(windowed),
                        ", ".join(windowed),
                        ", ".join(self.assembled) or "the output only",
                    )
                return total, out
            if node not in self.dynamic:
                env[node] = self.clean[node]
                continue
            env[node] = self._step(node, env, bi)
            self.modes[node.name] = "window" if isinstance(env[node], Window) else "full"
            if node is self.layer_node:
                v = env[node]
                if isinstance(v, Window):
                    src = self.clean[node][bi, channel][:, None]
                    sel = Window(v.data[torch.arange(len(bi)), channel][:, None], v.top, v.left)
                    zero = torch.zeros_like(v.top)
                    one = _region(src, torch.arange(len(bi)), sel, zero, zero, *src.shape[2:])
                else:
                    one = v[torch.arange(len(bi)), channel]
                total = one.reshape(len(bi), -1).float().relu().sum(dim=1)
        raise RuntimeError("graph without output")  # pragma: no cover

    def _step(self, node, env, bi):
        args = list(fx.node.map_arg(node.args, lambda a: env[a]))
        wins = [a for a in args if isinstance(a, Window)]
        if args and isinstance(args[0], (list, tuple)):
            wins += [a for a in args[0] if isinstance(a, Window)]
        if wins:
            out = self._window_step(node, args, bi)
            if out is not None:
                return out
            self.assembled.append(node.name)
        # full computation: assemble every windowed argument into full maps
        full = fx.node.map_arg(node.args, lambda a: self._full(a, env[a], bi))
        kw = fx.node.map_arg(node.kwargs, lambda a: self._full(a, env[a], bi))
        return _call(self.model, node, full, kw)

    def _window_step(self, node, args, bi):
        """The node computed on rectangles, or None where it needs full maps."""
        clean_out = self.clean[node]
        if not isinstance(clean_out, torch.Tensor) or clean_out.dim() != 4:
            return None
        oh, ow = clean_out.shape[2:]
        if node.op == "call_module":
            m = self.model.get_submodule(node.target)
            x = args[0]
            if len(args) != 1 or node.kwargs or not isinstance(x, Window):
                return None
            if isinstance(m, _PIXELWISE_MODULES) or (
                isinstance(m, nn.BatchNorm2d) and m.running_mean is not None
            ):
                return Window(m(x.data), x.top, x.left)
            geo = _geometry(m)
            if geo is None:
                return None
            (kh, kw), (sh, sw), (ph, pw), (dh, dw), fill, op = geo
            h, w = x.data.shape[2:]
            top, hn, r0, rin = _axis(x.top, h, kh, sh, ph, dh, oh)
            left, wn, c0, cin = _axis(x.left, w, kw, sw, pw, dw, ow)
            if hn * wn >= FULL_AT * oh * ow:
                return None
            src_node = node.args[0]
            ih, iw = self.clean[src_node].shape[2:]
            extra_h = max(ph, (oh - 1) * sh + dh * (kh - 1) + 1 - ih - ph)
            extra_w = max(pw, (ow - 1) * sw + dw * (kw - 1) + 1 - iw - pw)
            src = self._pad(src_node, (pw, extra_w, ph, extra_h), fill)
            patch = _region(src, bi, x, r0, c0, rin, cin, shift=(ph, pw), cache=self._tables)
            return Window(op(patch), top, left)
        if node.op == "call_function" and node.target in _PIXELWISE_FUNCTIONS:
            x = args[0]
            if not isinstance(x, Window) or any(isinstance(a, Window) for a in args[1:]):
                return None
            kw = {k: v for k, v in node.kwargs.items()}
            return Window(node.target(x.data, *args[1:], **kw), x.top, x.left)
        if node.op == "call_method" and node.target in _PIXELWISE_METHODS:
            x = args[0]
            if len(args) != 1 or node.kwargs or not isinstance(x, Window):
                return None
            return Window(getattr(x.data, node.target)(), x.top, x.left)
        if node.op == "call_function" and node.target in _BINARY and len(args) == 2:
            if node.kwargs:
                return None
            return self._union(node, args, bi, lambda a, b: node.target(a, b), oh, ow)
        if node.op == "call_function" and node.target is torch.cat:
            tensors = args[0] if args else None
            dim = node.kwargs.get("dim", args[1] if len(args) > 1 else 0)
            if dim not in (1, -3) or not isinstance(tensors, (list, tuple)):
                return None
            return self._cat(list(node.args[0]), list(tensors), bi, oh, ow)
        return None

    def _union(self, node, args, bi, fn, oh, ow):
        """An elementwise operation of two maps (or a map and a constant) on the union of the
        rectangles."""
        srcs = list(node.args)
        wins = [(a, s) for a, s in zip(args, srcs) if isinstance(a, Window)]
        for a, s in zip(args, srcs):
            if isinstance(a, Window):
                if tuple(self.clean[s].shape[1:]) != tuple(self.clean[node].shape[1:]):
                    return None
            elif isinstance(a, torch.Tensor):
                if s in self.dynamic or (a.dim() >= 2 and a.shape[-2:].numel() != 1):
                    return None  # a full map, or a constant that varies over space
            elif not isinstance(a, (int, float)):
                return None
        box = self._box([w for w, _ in wins], oh, ow)
        if box is None:
            return None
        top, left, hn, wn = box
        vals = [
            _region(self.clean[s], bi, a, top, left, hn, wn, cache=self._tables)
            if isinstance(a, Window)
            else a
            for a, s in zip(args, srcs)
        ]
        return Window(fn(*vals), top, left)

    def _cat(self, srcs, vals, bi, oh, ow):
        wins = [v for v in vals if isinstance(v, Window)]
        for v, s in zip(vals, srcs):
            if not isinstance(s, fx.Node) or not isinstance(v, (Window, torch.Tensor)):
                return None
            if s in self.dynamic and not isinstance(v, Window):
                return None
        box = self._box(wins, oh, ow)
        if box is None:
            return None
        top, left, hn, wn = box
        parts = []
        for v, s in zip(vals, srcs):
            if isinstance(v, Window):
                parts.append(_region(self.clean[s], bi, v, top, left, hn, wn, cache=self._tables))
            else:  # a constant map: the same rectangle of it
                src = v.expand(len(bi), *v.shape[1:]) if v.shape[0] == 1 else v[bi]
                empty = Window(src[:, :, :0, :0], top, left)
                parts.append(_region(src, torch.arange(len(bi)), empty, top, left, hn, wn))
        return Window(torch.cat(parts, dim=1), top, left)

    @staticmethod
    def _box(wins: list[Window], oh: int, ow: int):
        tops = torch.stack([w.top for w in wins])
        lefts = torch.stack([w.left for w in wins])
        bottoms = torch.stack([w.top + w.data.shape[2] for w in wins])
        rights = torch.stack([w.left + w.data.shape[3] for w in wins])
        t, lft = tops.min(dim=0).values, lefts.min(dim=0).values
        hn = int((bottoms.max(dim=0).values - t).max())
        wn = int((rights.max(dim=0).values - lft).max())
        if hn * wn >= FULL_AT * oh * ow:
            return None
        return t.clamp(max=oh - hn), lft.clamp(max=ow - wn), hn, wn


def _geometry(m: nn.Module):
    """(kernel, stride, padding, dilation, pad value, op on a pre-padded patch) of a window op
    this module can compute on a rectangle, else None."""
    if isinstance(m, nn.Conv2d):
        if m.padding_mode != "zeros" or isinstance(m.padding, str) and m.padding != "valid":
            return None
        pad = (0, 0) if isinstance(m.padding, str) else tuple(m.padding)

        def conv(p, m=m):
            return F.conv2d(p, m.weight, m.bias, m.stride, 0, m.dilation, m.groups)

        return m.kernel_size, m.stride, pad, m.dilation, 0.0, conv
    if isinstance(m, nn.MaxPool2d):
        if m.return_indices:
            return None
        k, s, p, d = (_two(v) for v in (m.kernel_size, m.stride, m.padding, m.dilation))

        def pool(x, k=k, s=s, d=d):
            return F.max_pool2d(x, k, s, 0, d)

        return k, s, p, d, float("-inf"), pool
    if isinstance(m, nn.AvgPool2d):
        k, s, p = (_two(v) for v in (m.kernel_size, m.stride, m.padding))
        if p != (0, 0) or m.ceil_mode or m.divisor_override is not None:
            return None

        def avg(x, k=k, s=s):
            return F.avg_pool2d(x, k, s, 0)

        return k, s, p, (1, 1), 0.0, avg
    return None


def _two(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _call(model: nn.Module, node: fx.Node, args, kwargs):
    if node.op == "call_module":
        return model.get_submodule(node.target)(*args, **kwargs)
    if node.op == "call_function":
        return node.target(*args, **kwargs)
    if node.op == "call_method":
        self_obj, *rest = args
        return getattr(self_obj, node.target)(*rest, **kwargs)
    raise ValueError(f"unexpected node {node.op}")  # pragma: no cover


def _get_attr(model: nn.Module, target: str):
    obj: Any = model
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


@dataclass(frozen=True)
class Traced:
    """A model's dataflow as torch.fx traced it: ``graph`` (modules named by their dotted path,
    parameters and buffers read from the model at run time) and the tensor constants the
    trace created (``constants``: get_attr target -> tensor; they live on no module)."""

    graph: fx.Graph
    constants: dict[str, torch.Tensor]


class _ThreadTracer(fx.Tracer):
    """fx's tracer, confined to the thread that traces.

    fx patches ``nn.Module.__call__`` and ``__getattr__`` on the class while it traces: a call
    from any other thread reaches :meth:`call_module` / :meth:`getattr` below and goes straight
    to the module, and finds no function to wrap (``_autowrap_function_ids`` is empty for it).
    """

    def __init__(self) -> None:
        self._owner: int | None = None
        super().__init__()

    def _mine(self) -> bool:
        return self._owner == threading.get_ident()

    @property
    def _autowrap_function_ids(self) -> set[int]:
        return self._wrap_ids if self._mine() else set()

    @_autowrap_function_ids.setter
    def _autowrap_function_ids(self, ids: set[int]) -> None:
        self._wrap_ids = ids

    def trace(self, root: Any, concrete_args: Any = None) -> fx.Graph:
        self._owner = threading.get_ident()
        try:
            return super().trace(root, concrete_args)
        finally:
            self._owner = None

    def call_module(self, m, forward, args, kwargs):
        if not self._mine():
            return forward(*args, **kwargs)  # the module's own __call__
        return super().call_module(m, forward, args, kwargs)

    def getattr(self, attr, attr_val, parameter_proxy_cache):
        if not self._mine():
            return attr_val
        return super().getattr(attr, attr_val, parameter_proxy_cache)


def _signature(model: nn.Module) -> tuple:
    """What a traced graph depends on besides plain attributes: every module's dotted name and
    type, and any ``forward`` set on an instance (by id: nothing here keeps the model alive)."""
    return tuple(
        (name, type(m), id(m.__dict__.get("forward"))) for name, m in model.named_modules()
    )


class _Graphs:
    """The traced graph of each model (or why it has none), kept while the model lives.

    Its one writer is the thread that traces, the main thread (:func:`trace`); sweeps read it
    from any thread. A lock guards the dictionary.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: weakref.WeakKeyDictionary[nn.Module, tuple] = weakref.WeakKeyDictionary()

    def get(self, model: nn.Module, signature: tuple) -> tuple[Traced | None, str] | None:
        entry = None
        with self._lock, contextlib.suppress(TypeError):  # TypeError: no weak reference
            entry = self._entries.get(model)
        if entry is None or entry[0] != signature:
            return None
        return entry[1], entry[2]

    def put(self, model: nn.Module, signature: tuple, traced: Traced | None, why: str) -> None:
        """Remember (not for a model that cannot be weakly referenced: traced each time)."""
        with self._lock, contextlib.suppress(TypeError):
            self._entries[model] = (signature, traced, why)


_GRAPHS = _Graphs()


def _trace_copy(model: nn.Module) -> tuple[Traced | None, str]:
    """Trace a copy of ``model``'s module tree in eval mode (main thread only); the model
    itself for a tree that cannot be copied, with every attribute the trace adds removed."""
    tree = module_tree_copy(model)
    before = set(vars(tree))
    try:
        with eval_mode(tree), torch.no_grad():
            graph = _ThreadTracer().trace(tree)
    except Exception as err:  # noqa: BLE001 - any tracing failure means the naive sweep
        return None, f"torch.fx cannot trace the model ({type(err).__name__}: {err})"
    finally:
        added = set(vars(tree)) - before  # tensor constants fx put on the root
        kept = {name: vars(tree)[name] for name in added}
        for name in added:
            del vars(tree)[name]
    constants = {
        node.target: _get_attr_from(kept, node.target)
        for node in graph.nodes
        if node.op == "get_attr" and node.target.split(".")[0] in kept
    }
    return Traced(graph, constants), ""


def _get_attr_from(root: dict, target: str):
    first, *rest = target.split(".")
    return _get_attr(root[first], ".".join(rest)) if rest else root[first]


def _traced(model: nn.Module) -> Traced | None:
    """The model's graph: remembered, else traced now on the main thread; None (the reason in
    the debug log) when the sweep must run naively."""
    why = _untrusted(model)
    if why is not None:
        log.debug(
            "incremental occlusion off, full forwards: %s (only torch, torchvision and "
            "zfwidgets.models modules are traced)",
            why,
        )
        return None
    signature = _signature(model)
    entry = _GRAPHS.get(model, signature)
    if entry is None:
        if threading.current_thread() is not threading.main_thread():
            log.debug(
                "incremental occlusion off, full forwards: not on the main thread, and the "
                "model was not traced there beforehand (zfwidgets.engine.occlusion.prepare)"
            )
            return None
        entry = _trace_copy(model)
        _GRAPHS.put(model, signature, *entry)
    traced, why = entry
    if traced is None:
        log.debug("incremental occlusion off, full forwards: %s", why)
    return traced


def trace(model: nn.Module) -> Traced | None:
    """Trace ``model`` for the incremental sweep now, on the main thread, and remember its graph
    while the model lives, so that a sweep of it in another thread takes the incremental path.

    Returns the graph, or None (with the reason in the debug log) when the model will be swept
    naively, or when called off the main thread with no graph remembered. Cheap when the
    graph is remembered and the model's module structure has not changed since.
    """
    return _traced(model)


def plan(
    model: nn.Module, x: torch.Tensor, layer: str, logits: torch.Tensor, total: torch.Tensor
) -> Plan | None:
    """The model's graph (:func:`trace`) and its unoccluded activations on ``x`` (N, C, H, W);
    None (with the reason in the debug log) when the sweep must run naively.

    ``logits`` (N, classes) and ``total`` (N, K), the rectified totals of every feature map of
    ``layer``, are the eager forward's: the graph must reproduce them. Runs in any thread;
    off the main thread only with a graph traced there beforehand.
    """
    traced = _traced(model)
    if traced is None:
        return None
    graph = traced.graph
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    layer_nodes = [n for n in graph.nodes if n.op == "call_module" and n.target == layer]
    if len(placeholders) != 1 or len(layer_nodes) != 1:
        log.debug(
            "incremental occlusion off, full forwards: %d inputs, layer %r called %d "
            "times in the traced graph",
            len(placeholders),
            layer,
            len(layer_nodes),
        )
        return None
    for node in graph.nodes:
        first = node.args[0] if node.args else None
        if isinstance(first, fx.Node) and len(first.users) > 1 and _inplace(node, model):
            log.debug(
                "incremental occlusion off, full forwards: %s overwrites %s, which other "
                "operations read",
                node.name,
                first.name,
            )
            return None
    # The unoccluded forward through the graph: every node's value for the N images.
    clean: dict[fx.Node, Any] = {}
    dynamic: set[fx.Node] = set()
    for node in graph.nodes:
        if node.op == "placeholder":
            clean[node] = x
            dynamic.add(node)
        elif node.op == "get_attr":
            const = traced.constants.get(node.target)
            clean[node] = _get_attr(model, node.target) if const is None else const
        elif node.op == "output":
            out = fx.node.map_arg(node.args[0], lambda a: clean[a])
        else:
            args = fx.node.map_arg(node.args, lambda a: clean[a])
            kwargs = fx.node.map_arg(node.kwargs, lambda a: clean[a])
            if _inplace(node, model):  # keep the input's own value for later reads
                args = tuple(a.clone() if isinstance(a, torch.Tensor) else a for a in args)
            try:
                clean[node] = _call(model, node, args, kwargs)
            except Exception as err:  # noqa: BLE001 - e.g. a flag changed since the trace
                log.debug(
                    "incremental occlusion off, full forwards: the traced graph fails at %s "
                    "(%s: %s)",
                    node.name,
                    type(err).__name__,
                    err,
                )
                return None
            if any(a in dynamic for a in node.all_input_nodes):
                dynamic.add(node)
    layer_out = clean[layer_nodes[0]]
    ok = isinstance(out, torch.Tensor) and out.shape == logits.shape
    if ok:
        mine = layer_out.detach().reshape(x.shape[0], layer_out.shape[1], -1).float()
        scale = 1e-4 * (1 + float(logits.abs().max()))
        ok = bool((out - logits).abs().max() <= scale) and torch.allclose(
            mine.relu().sum(dim=2), total, rtol=1e-4, atol=1e-4
        )
    if not ok:
        log.debug(
            "incremental occlusion off, full forwards: the traced graph does not "
            "reproduce the model's output"
        )
        return None
    return Plan(model, graph, clean, dynamic, layer_nodes[0])
