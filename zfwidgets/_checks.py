"""Input checks shared by every public function.

Every check runs before any work is done and raises a ``TypeError`` or ``ValueError`` that
says what was expected and what came.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence

import torch
from torch import nn

__all__ = [
    "check_finite_batch",
    "check_images",
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


def check_images(model: nn.Module, x: object, *, name: str = "x") -> torch.Tensor:
    """Check a batch of images for ``model``: a finite floating (N, C, H, W) tensor with the
    channel count of the model's first convolution, on the model's device."""
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
    if not x.is_floating_point():
        raise TypeError(
            f"{name}: expected a floating-point tensor (float32/float16/bfloat16/float64), "
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
    return x


def check_finite_batch(x: torch.Tensor, start: int = 0, name: str = "data") -> torch.Tensor:
    """Refuse a batch holding NaN or infinite values, naming the first bad image.

    ``x`` is images ``start .. start + len(x) - 1`` of ``name``. Costs one reduction on the
    batch's device and one synchronisation (a single bool) when the batch is finite; the
    index of the first bad image is computed only on failure.
    """
    if not x.is_floating_point() or x.numel() == 0:
        return x
    if bool(torch.isfinite(x).all()):
        return x
    bad = ~torch.isfinite(x.reshape(x.shape[0], -1)).all(1) if x.dim() > 0 else None
    first = int(bad.nonzero()[0, 0]) if bad is not None and bool(bad.any()) else 0
    count = int(bad.sum()) if bad is not None else 1
    what = "value" if x.dim() == 0 else f"image {start + first}"
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
    model: nn.Module, layers: Iterable[str | nn.Module] | str | nn.Module
) -> list[tuple[str, nn.Module]]:
    if isinstance(layers, (str, nn.Module)):
        layers = [layers]
    out = [resolve_layer(model, layer) for layer in layers]
    if not out:
        raise ValueError("layers: expected at least one layer, got none")
    return out


def check_positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: expected a positive int, got {value!r}")
    return value


def as_int_list(values: object, n: int, name: str) -> list[int] | None:
    """``None`` -> ``None``; an int -> ``[v] * n``; a sequence/tensor of n ints -> list."""
    if values is None:
        return None
    if isinstance(values, torch.Tensor):
        values = values.reshape(-1).tolist()
    if isinstance(values, int) and not isinstance(values, bool):
        return [values] * n
    if isinstance(values, Sequence) and all(
        isinstance(v, int) and not isinstance(v, bool) for v in values
    ):
        if len(values) != n:
            raise ValueError(f"{name}: expected {n} values (one per image), got {len(values)}")
        return list(values)
    raise TypeError(f"{name}: expected an int or a sequence of ints, got {values!r}")


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
