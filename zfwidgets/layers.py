"""Layer lookup by kind, and a module tree of one's own to run a model on.

- :func:`map_layers`: the modules whose outputs may be feature maps (conv, rectifier,
  pooling, normalisation), as the layer menus offer them.
- :func:`module_tree_copy`: a copy of a model's module tree that shares its parameters and
  buffers, so that hooks and flags set on the copy (a computation in a background thread) are
  never seen by forward passes made on the model meanwhile (a notebook cell).

Layers are named by their dotted ``named_modules()`` path; :func:`zfwidgets._checks.resolve_layer`
turns a name or a module into ``(name, module)`` with a clear error, and the convolutions a
forward pass calls (the default layers) come from :mod:`zfwidgets._checks` as well.
"""

from __future__ import annotations

import copy
import itertools

from torch import nn

__all__ = ["MAP_TYPES", "map_layers", "module_tree_copy"]

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

    Hooks registered on the copy (and the flags :class:`~zfwidgets.capture.Capture` and
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
