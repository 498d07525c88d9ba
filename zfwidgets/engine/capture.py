"""Capture of layer outputs and max-pool switches: the only module that registers hooks.

Every hook handle is owned by one :class:`Capture`, which removes all of them on exit, also
when the forward pass raises. The rest of the library (backprop, mining, occlusion) asks for
what it needs through :class:`Capture`'s options rather than registering hooks itself.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, ItemsView, Iterable, Iterator, Mapping, ValuesView
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..base.checks import check_model
from ..base.layers import resolve_layers

__all__ = ["Capture", "capture", "default_layers"]

#: Module types captured when ``layers=None`` (docs/method.md Sec. 2: conv, rectify,
#: pool, fully connected).
DEFAULT_TYPES: tuple[type[nn.Module], ...] = (nn.Conv2d, nn.ReLU, nn.MaxPool2d, nn.Linear)


def default_layers(model: nn.Module) -> list[str]:
    """Dotted names of every Conv2d, ReLU, MaxPool2d and Linear module of ``model``."""
    return [n for n, m in model.named_modules() if n and isinstance(m, DEFAULT_TYPES)]


class _Stop(Exception):
    """Raised by a hook to end a forward pass early; swallowed by :class:`Capture`."""


class _Derived:
    """An output that is not kept but recomputed when first read: ``fn(source)``, where
    ``source`` is the captured output the module read (e.g. a ReLU's output from the
    convolution's). Reading fails, with a message, if ``source`` was changed in place since."""

    __slots__ = ("fn", "source", "version", "what", "_value")

    def __init__(self, source: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor], what: str):
        self.source = source
        self.version = source._version
        self.fn = fn
        self.what = what
        self._value: torch.Tensor | None = None

    def value(self) -> torch.Tensor:
        if self._value is None:
            if self.source._version != self.version:
                raise KeyError(
                    f"{self.what} is recomputed from the captured output it read, which was "
                    "modified in place afterwards by an operation outside a module; use "
                    "capture(model, ..., clone=True) to copy outputs as they are produced"
                )
            with torch.no_grad():
                self._value = self.fn(self.source)
            self.source = None
        return self._value


class _Activations(dict):
    """A dict whose missing keys explain themselves, and whose derived entries (a ReLU's
    output, kept as "ReLU of the captured output it read") are computed when first read."""

    def __init__(self, owner: Capture):
        super().__init__()
        self._owner = owner

    def __getitem__(self, key: str):
        value = super().__getitem__(key)
        if isinstance(value, _Derived):
            value = value.value()
            dict.__setitem__(self, key, value)
        return value

    # every way of reading goes through __getitem__ (also dict(cap.activations))
    def __iter__(self) -> Iterator[str]:
        return iter(list(dict.keys(self)))

    def get(self, key: str, default: Any = None) -> Any:
        return self[key] if key in self else default  # noqa: SIM401 - dict.get skips __getitem__

    def values(self) -> ValuesView:
        return ValuesView(self)

    def items(self) -> ItemsView:
        return ItemsView(self)

    def __missing__(self, key: str):
        owner = self._owner
        if key in owner.overwritten:
            raise KeyError(
                f"the output of {key!r} was modified in place after it was captured by an "
                "operation outside a module (e.g. `out += identity`); use "
                "capture(model, ..., clone=True) to copy outputs as they are produced"
            )
        if key in owner.layers and owner.calls.get(key, 0) == 0:
            raise KeyError(f"{key!r} was not called by the forward pass (no output recorded)")
        raise KeyError(f"{key!r} was not captured; captured layers: {sorted(self)}")


class _Switches(Mapping):
    """``cap.switches``: the argmax indices of each captured max-pool, by layer name.

    A plain ``nn.MaxPool2d`` runs as in a plain forward (without indices, which is cheaper:
    the switches are not needed by a forward, only by the projections); its input is kept by
    reference and the indices are computed by the same pooling, once, when first read. So
    they are exactly the indices the pool would have returned. If that input was changed in
    place after the pool read it (an operation outside any module; torch's in-place modules
    run out of place while capturing), reading raises ``KeyError``; ``clone=True`` records
    the switches as the pool runs. Pools that return their indices themselves, and subclasses
    of ``nn.MaxPool2d`` (whose ``forward`` may differ), hand them over as they run.
    """

    def __init__(self) -> None:
        # name -> indices, or (module, input, input version at the call) until first read
        self._items: dict[str, Any] = {}

    def _record(self, name: str, indices: torch.Tensor) -> None:
        self._items.pop(name, None)
        self._items[name] = indices

    def _defer(self, name: str, module: nn.MaxPool2d, x: torch.Tensor | _Derived) -> None:
        """Indices of ``module`` on its input ``x`` (a tensor, or a captured output that is
        itself recomputed when read), computed when first read."""
        self._items.pop(name, None)
        if isinstance(x, _Derived):
            self._items[name] = (module, x, None)
        else:
            self._items[name] = (module, x.detach(), x._version)

    def __getitem__(self, name: str) -> torch.Tensor:
        item = self._items[name]
        if isinstance(item, tuple):
            module, x, version = item
            if isinstance(x, _Derived):
                x = x.value()
            elif x._version != version:
                raise KeyError(
                    f"the input of the max-pool {name!r} was modified in place after the pool "
                    "ran (by an operation outside any module), so its switches cannot be "
                    "recovered; use capture(model, ..., clone=True), which records them as "
                    "the pool runs"
                )
            with torch.no_grad():
                _, item = F.max_pool2d(
                    x,
                    module.kernel_size,
                    module.stride,
                    module.padding,
                    module.dilation,
                    ceil_mode=module.ceil_mode,
                    return_indices=True,
                )
            self._items[name] = item
        return item

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._items))

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"switches({sorted(self._items)})"


class Capture:
    """Records layer outputs (and max-pool switches) during forward passes of ``model``.

    Use through :func:`capture`. After the ``with`` block:

    - ``activations[name]``: the output of that module, shape as the module returns it, on the
      model's device, detached. For a module called more than once in a forward (a ReLU reused
      twice in a ResNet block), the output of its last call; ``calls[name]`` counts the calls.
    - ``switches[name]``: for every captured ``nn.MaxPool2d``, the argmax indices of each
      pooling window (flat indices into each input plane, as
      ``F.max_pool2d(..., return_indices=True)`` returns them). docs/method.md Sec. 2, step 1.
      Computed from the pool's input when first read (the forward itself runs the pools
      without indices, as a plain forward does); ``clone=True`` records them as the pools run.

    The forward holds no more than it must: an ``nn.ReLU`` whose input is another captured
    output, unchanged, keeps no tensor of its own; its output is ``relu`` of that output,
    computed when first read (the same values). On a CPU every megabyte a forward keeps is
    fresh memory the system must map for it, which is most of what capturing costs.

    Outputs are protected against later in-place operations (``ReLU(inplace=True)``): with
    ``clone="auto"`` torch's in-place modules run out of place for the duration of the block
    (their flag is restored on exit; cheaper than copying), other modules flagged ``inplace``
    get the output they are about to overwrite copied first; an in-place operation outside any module (``out += identity``) is detected
    and reading that output raises ``KeyError`` telling to use ``clone=True``, which copies
    every output as it is produced.

    A Capture may be entered again (one per batch of a loop, its layers resolved once): each
    ``with`` starts new ``activations``, ``switches``, ``calls`` and ``overwritten``.
    """

    def __init__(
        self,
        model: nn.Module,
        layers: Iterable[str | nn.Module] | str | nn.Module | None = None,
        *,
        switches: bool = True,
        clone: bool | str = "auto",
        reduce: Callable[[str, torch.Tensor], Any] | None = None,
        keep_graph: bool = False,
        stop_at: tuple[str, int] | None = None,
    ):
        check_model(model)
        if clone not in (True, False, "auto"):
            raise ValueError(f"clone: expected True, False or 'auto', got {clone!r}")
        self.model = model
        if layers is None:
            named = [(n, m) for n, m in model.named_modules() if n and isinstance(m, DEFAULT_TYPES)]
        else:
            named = resolve_layers(model, layers)
        self.layers: list[str] = [n for n, _ in named]
        self._modules = dict(named)
        self._want_switches = switches
        self._clone = clone
        self._reduce = reduce
        self._keep_graph = keep_graph
        self._stop_at = stop_at
        self.activations: dict[str, Any] = _Activations(self)
        self.switches: _Switches = _Switches()
        self.calls: dict[str, int] = {}
        self.overwritten: set[str] = set()
        self.stopped = False
        self._handles: list[Any] = []
        self._saved_return_indices: list[tuple[nn.MaxPool2d, bool]] = []
        self._saved_inplace: list[nn.Module] = []
        # name -> (tensor, version at capture, storage pointer) for outputs not yet copied
        self._uncopied: dict[str, tuple[torch.Tensor, int, int]] = {}
        # A captured nn.ReLU that reads a captured output unchanged keeps no output of its
        # own: its output is recomputed from that output when read (a ReLU pass), so the
        # forward holds no more memory than it must (fresh pages cost on CPU).
        self._derive = (
            reduce is None
            and not keep_graph
            and clone == "auto"
            and any(type(m) is nn.ReLU for m in self._modules.values())
        )
        # id(output) -> (weak reference to it, the kept tensor, its version) for kept outputs
        self._kept_by_id: dict[int, tuple[weakref.ref, torch.Tensor, int]] = {}
        self._kept_id_of: dict[str, int] = {}  # name -> its entry there (the last call's)
        # id(output) -> (weak reference, the _Derived standing for it, its version)
        self._dropped: dict[int, tuple[weakref.ref, _Derived, int]] = {}
        self._active = False
        self._entered = False

    # -- hooks ---------------------------------------------------------------------------
    def _store(self, name: str, out: torch.Tensor) -> torch.Tensor | None:
        """Store ``out`` for ``name``; return a replacement output for downstream or None."""
        if self._reduce is not None:
            self.activations[name] = self._reduce(name, out)
            return None
        if self._keep_graph:
            # Keep the tensor with its graph; downstream gets a copy, so in-place ops after this
            # layer can neither overwrite it nor rebase its history.
            self.activations[name] = out
            return out.clone()
        if self._clone is True:
            self.activations[name] = out.detach().clone()
            return None
        kept = out.detach()
        self.activations[name] = kept
        self._uncopied.pop(name, None)
        if self._clone == "auto":
            self._uncopied[name] = (kept, kept._version, _storage_ptr(kept))
        if self._derive:
            # a module called again replaces its entry: an earlier output is not held here
            self._kept_by_id.pop(self._kept_id_of.get(name, -1), None)
            self._kept_id_of[name] = id(out)
            self._kept_by_id[id(out)] = (weakref.ref(out), kept, kept._version)
        return None

    def _derived_relu(self, name: str, x: Any, out: torch.Tensor) -> bool:
        """If the ReLU ``name`` read ``x``, a captured output still unchanged, keep its output
        ``out`` as "ReLU of that output", computed when read; whether it did."""
        entry = self._kept_by_id.get(id(x))
        if entry is None or entry[0]() is not x or x._version != entry[2]:
            return False
        derived = _Derived(entry[1], F.relu, f"the output of {name!r}")
        self._uncopied.pop(name, None)
        dict.pop(self.activations, name, None)
        dict.__setitem__(self.activations, name, derived)
        self._dropped[id(out)] = (weakref.ref(out), derived, out._version)
        return True

    def _pool_input(self, x: torch.Tensor) -> torch.Tensor | _Derived:
        """``x``, or the derived output standing for it when ``x`` is a ReLU output not kept."""
        entry = self._dropped.get(id(x))
        if entry is not None and entry[0]() is x and x._version == entry[2]:
            return entry[1]
        return x

    def _make_hook(self, name: str, is_pool: bool, had_indices: bool, lazy: bool, relu: bool):
        def hook(module: nn.Module, inputs: tuple, output: Any):
            self.calls[name] = self.calls.get(name, 0) + 1
            replacement = None
            if is_pool and self._want_switches and isinstance(output, tuple):
                out, idx = output
                self.switches._record(name, idx)
                replacement = output if had_indices else out
                output = out
            elif lazy and inputs and isinstance(inputs[0], torch.Tensor):
                self.switches._defer(name, module, self._pool_input(inputs[0]))
            if (
                relu
                and inputs
                and isinstance(output, torch.Tensor)
                and self._derived_relu(name, inputs[0], output)
            ):
                pass  # kept as "ReLU of what it read"
            elif isinstance(output, torch.Tensor):
                new = self._store(name, output)
                if new is not None:
                    replacement = (new, replacement[1]) if had_indices else new
            if self._stop_at is not None and self._stop_at == (name, self.calls[name] - 1):
                self.stopped = True
                raise _Stop()
            return replacement

        return hook

    def _pre_inplace(self, module: nn.Module, inputs: tuple) -> None:
        # An in-place module is about to run: copy any captured output it would overwrite.
        if not self._uncopied:
            return
        ptrs = {_storage_ptr(t) for t in inputs if isinstance(t, torch.Tensor)}
        for name, value in list(dict.items(self.activations)):
            # a ReLU output recomputed from an output about to be overwritten: compute it now
            if (
                isinstance(value, _Derived)
                and value.source is not None
                and _storage_ptr(value.source) in ptrs
                and value.source._version == value.version
            ):
                self.activations[name]
        for name, (t, version, ptr) in list(self._uncopied.items()):
            if ptr in ptrs:
                del self._uncopied[name]
                if t._version != version:  # already changed by an op outside any module
                    self.overwritten.add(name)
                    dict.pop(self.activations, name, None)
                else:
                    self.activations[name] = t.clone()

    # -- context -------------------------------------------------------------------------
    def __enter__(self) -> Capture:
        if self._active:
            raise RuntimeError("this Capture is already active")
        self._active = True
        if self._entered:  # entered again: new records (those read before stay as they were)
            self.activations = _Activations(self)
            self.switches = _Switches()
            self.calls = {}
            self.overwritten = set()
            self.stopped = False
        self._entered = True
        try:
            for name, module in self._modules.items():
                is_pool = isinstance(module, nn.MaxPool2d)
                had = bool(getattr(module, "return_indices", False)) if is_pool else False
                # a plain MaxPool2d runs without indices; they are computed when read
                lazy = (
                    is_pool
                    and self._want_switches
                    and not had
                    and type(module) is nn.MaxPool2d
                    and self._clone is not True
                )
                if is_pool and self._want_switches and not had and not lazy:
                    self._saved_return_indices.append((module, module.return_indices))
                    module.return_indices = True
                self._handles.append(
                    module.register_forward_hook(
                        self._make_hook(
                            name, is_pool, had, lazy, self._derive and type(module) is nn.ReLU
                        ),
                        prepend=True,
                    )
                )
            if self._clone == "auto" and self._reduce is None and not self._keep_graph:
                for module in self.model.modules():
                    if getattr(module, "inplace", False) is not True:
                        continue
                    if type(module).__module__.startswith("torch.nn.modules."):
                        # torch's own in-place modules (ReLU, Dropout, ...) run out of place for
                        # the block: cheaper than copying every output they would overwrite
                        self._saved_inplace.append(module)
                        module.inplace = False
                    else:  # a module of unknown behaviour: copy what it is about to overwrite
                        self._handles.append(module.register_forward_pre_hook(self._pre_inplace))
        except BaseException:
            self._release()
            raise
        return self

    def _release(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        for module, value in self._saved_return_indices:
            module.return_indices = value
        self._saved_return_indices.clear()
        for module in self._saved_inplace:
            module.inplace = True
        self._saved_inplace.clear()
        self._kept_by_id.clear()
        self._kept_id_of.clear()
        self._dropped.clear()
        self._active = False

    def __exit__(self, exc_type, exc, tb) -> bool:
        self._release()
        for name, (t, version, _) in self._uncopied.items():
            if t._version != version:
                self.overwritten.add(name)
                dict.pop(self.activations, name, None)
        self._uncopied.clear()
        return exc_type is _Stop

    def __repr__(self) -> str:
        return f"Capture({len(self.layers)} layers, {len(self.activations)} recorded)"


def _storage_ptr(t: torch.Tensor) -> int:
    try:
        return t.untyped_storage().data_ptr()
    except RuntimeError:  # tensors without storage (e.g. some subclasses)
        return id(t)


def capture(
    model: nn.Module,
    layers: Iterable[str | nn.Module] | str | nn.Module | None = None,
    *,
    switches: bool = True,
    clone: bool | str = "auto",
) -> Capture:
    """Record the outputs of ``layers`` (dotted ``named_modules()`` names or modules) and the
    switches of every max-pool among them, for the forward passes run inside the ``with``.

    Parameters
    ----------
    model : nn.Module
    layers : names or modules, optional
        ``None`` captures every ``Conv2d``, ``ReLU``, ``MaxPool2d`` and ``Linear``. An
        unknown name raises ``ValueError`` listing close matches.
    switches : bool
        Record max-pool argmax indices (docs/method.md Sec. 2, step 1) in ``cap.switches``
        (computed from each pool's input when first read; see :class:`Capture`).
    clone : True, False or "auto"
        How outputs are protected from later in-place operations (see :class:`Capture`).

    Examples
    --------
    >>> import zfwidgets as zf
    >>> d = zf.load_default()
    >>> x = d.images.tensors()[0][:4]                  # (4, 1, 28, 28)
    >>> with zf.capture(d.model) as cap:
    ...     logits = d.model(x)
    >>> cap.activations["features.4"].shape            # conv2's output
    torch.Size([4, 32, 14, 14])
    >>> cap.switches["features.2"].shape               # conv1's max-pooling argmax
    torch.Size([4, 16, 14, 14])
    """
    return Capture(model, layers, switches=switches, clone=clone)
