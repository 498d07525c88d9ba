"""Class names and labels: one name per model output, the label of a dataset item, and the
model's class scores for a batch.

Used by the prediction, occlusion and top-9 widgets (docs/method.md Sec. 3.1 and 3.5: hits and
occluded images are read with their classes). Names are plain text; the front end never
renders them as HTML.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from .checks import check_logits
from .layers import eval_mode

__all__ = ["as_labels", "class_names", "label_names", "label_of_item", "logits_of"]


def logits_of(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The model's class scores for a batch of images: a (N, classes) floating tensor.

    Runs under ``torch.no_grad`` in eval mode (flags restored).

    Raises
    ------
    ValueError, TypeError
        When the output is not (N, classes) floating-point logits.
    """
    with torch.no_grad(), eval_mode(model):
        out = model(x)
    return check_logits(out, x.shape[0])


def class_names(classes: Sequence[str] | None, num_classes: int) -> list[str]:
    """One name per model output: ``classes`` as strings, or ``"class 0"``, ``"class 1"``, ...

    Raises
    ------
    TypeError, ValueError
        When ``classes`` is not a sequence of names, or has the wrong length.
    """
    if classes is None:
        return [f"class {i}" for i in range(num_classes)]
    if isinstance(classes, (str, bytes)) or not isinstance(classes, Sequence):
        raise TypeError(
            f"classes: expected a list of {num_classes} class names, got {type(classes).__name__}"
        )
    if len(classes) != num_classes:
        raise ValueError(
            f"classes: the model has {num_classes} outputs, got {len(classes)} class names"
        )
    return [str(c) for c in classes]


def label_of_item(item: Any) -> int | None:
    """The integer label of a dataset item ``(image, label, ...)`` or ``{"label": ...}``."""
    y = None
    if isinstance(item, (tuple, list)) and len(item) >= 2:
        y = item[1]
    elif isinstance(item, dict):
        y = next((item[k] for k in ("label", "labels", "target", "y") if k in item), None)
    if isinstance(y, torch.Tensor) and y.numel() == 1 and not y.is_floating_point():
        return int(y)
    if isinstance(y, (int, np.integer)) and not isinstance(y, bool):
        return int(y)
    return None


def as_labels(labels: Any, n: int | None) -> list[int]:
    """``labels`` (a sequence, tensor or array of ints, one per image) as a list of ints.

    Raises
    ------
    TypeError, ValueError
        For a non-integer label, or a count other than ``n``.
    """
    if isinstance(labels, (torch.Tensor, np.ndarray)):
        labels = labels.reshape(-1).tolist()
    if isinstance(labels, (str, bytes)) or not isinstance(labels, Sequence):
        raise TypeError(
            f"labels: expected a sequence of ints (one per image), got {type(labels).__name__}"
        )
    out = []
    for i, v in enumerate(labels):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise TypeError(f"labels[{i}]: expected an int class index, got {v!r}")
        out.append(int(v))
    if n is not None and len(out) != n:
        raise ValueError(f"labels: expected {n} labels (one per image), got {len(out)}")
    return out


def label_names(labels: Sequence[int | None], classes: Sequence[str] | None) -> list[str]:
    """The name of each label: ``classes[y]``, else ``"class y"``; ``""`` for no label."""
    out = []
    for y in labels:
        if y is None:
            out.append("")
        elif classes is not None and 0 <= y < len(classes):
            out.append(str(classes[y]))
        else:
            out.append(f"class {y}")
    return out
