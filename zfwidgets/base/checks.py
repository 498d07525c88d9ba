"""Input checks shared by every public function.

Every check runs before any work is done and raises a ``TypeError`` or ``ValueError`` that
says what was expected and what came. Layer lookup lives in :mod:`zfwidgets.base.layers`; the
shape-only forward passes that check sizes on the meta device in :mod:`zfwidgets.engine.probe`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

__all__ = [
    "as_int_list",
    "check_architecture",
    "check_callable",
    "check_classes",
    "check_finite_batch",
    "check_int",
    "check_logits",
    "check_model",
    "check_number",
    "check_positive_int",
    "model_device",
    "model_dtype",
]


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for a model with none)."""
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


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
