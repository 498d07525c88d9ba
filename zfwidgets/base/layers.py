"""Layers of a model: lookup by name, kinds, and a module tree of one's own to run a model on.

- :func:`resolve_layer` / :func:`resolve_layers`: a dotted ``named_modules()`` name (or the
  module itself) to ``(name, module)``, with a ``ValueError`` listing close matches.
- :func:`first_conv`: the first registered ``nn.Conv2d`` (the filters of Fig. 6).
- :func:`map_layers`: the modules whose outputs may be feature maps (conv, rectifier,
  pooling, normalisation), as the layer menus offer them.
- :func:`module_tree_copy`: a copy of a model's module tree that shares its parameters and
  buffers, so that hooks and flags set on the copy (a computation in a background thread) are
  never seen by forward passes made on the model meanwhile (a notebook cell).
- :func:`eval_mode`: every module in eval mode for a block, each module's flag restored after.

The convolutions a forward pass *calls* (the default layers) need a traced pass: they come
from :mod:`zfwidgets.engine.probe`.
"""

from __future__ import annotations

import contextlib
import copy
import difflib
import itertools
from collections.abc import Iterable, Iterator

import torch
from torch import nn

__all__ = [
    "MAP_TYPES",
    "eval_mode",
    "first_conv",
    "layer_names",
    "map_layers",
    "module_tree_copy",
    "resolve_layer",
    "resolve_layers",
]


#: Module types whose outputs are offered as feature maps (when they are (1, C, H, W)).
MAP_TYPES: tuple[type[nn.Module], ...] = (
    nn.Conv2d,
    nn.ConvTranspose2d,
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.ELU,
    nn.GELU,
    nn.SiLU,
    nn.Hardswish,
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
    nn.LocalResponseNorm,
    nn.BatchNorm2d,
)


def map_layers(model: nn.Module) -> list[str]:
    """Dotted names of the modules of ``model`` that may produce feature maps (conv, rectifier,
    pooling, normalisation), in ``named_modules()`` order."""
    return [n for n, m in model.named_modules() if n and isinstance(m, MAP_TYPES)]


def module_tree_copy(model: nn.Module) -> nn.Module:
    """A copy of the module tree of ``model`` that shares its parameters and buffers.

    Hooks registered on the copy (and the flags :class:`~zfwidgets.engine.capture.Capture` and
    ``eval_mode`` toggle on its modules) do not touch ``model``, so work in a background thread
    and a forward pass in the notebook cannot see each other's hooks. Only module objects are
    copied, never weights. Falls back to ``model`` itself for a model that cannot be copied
    (e.g. a scripted module).
    """
    memo = {id(v): v for v in itertools.chain(model.parameters(), model.buffers())}
    try:
        return copy.deepcopy(model, memo)
    except Exception:
        return model


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put every module in eval mode for the block; restore each module's own flag after."""
    flags = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        yield model
    finally:
        for m, flag in flags:
            m.training = flag


def first_conv(model: nn.Module) -> tuple[str, nn.Conv2d] | None:
    """The first ``nn.Conv2d`` in ``named_modules()`` order, or ``None``."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            return name, module
    return None


def layer_names(model: nn.Module) -> list[str]:
    """Every dotted ``named_modules()`` name of ``model`` but the root's."""
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
    names = layer_names(model)
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
