"""Class names and labels: one name per model output, the label of a dataset item, the class
names and labels a collection of images carries (:func:`find_labels`), and the model's class
scores for a batch.

Used by the prediction, occlusion and top-9 widgets and the atlas site (docs/method.md Sec. 3.1
and 3.5: hits and occluded images are read with their classes). Names are plain text; the front
end never renders them as HTML.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from .checks import check_logits
from .layers import eval_mode
from .source import ImageSource

__all__ = [
    "FoundLabels",
    "as_labels",
    "class_names",
    "count_classes",
    "find_labels",
    "label_names",
    "label_of_item",
    "logits_of",
]


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


def count_classes(
    labels: Sequence[int | None], classes: Sequence[str] | None = None
) -> list[tuple[str, int]]:
    """How many of ``labels`` fall in each class: ``(name, count)`` pairs, most frequent
    first, ties by class index; labels that are None or negative (no label) are not counted.

    Names as :func:`label_names` gives them (``classes[y]``, else ``"class y"``). Used for
    "which classes a unit serves": the labels of a unit's top-k hits (docs/method.md Sec. 3.1).

    Examples
    --------
    >>> count_classes([2, 0, 2, None, 1, 0, 2], ["cat", "dog", "car"])
    [('car', 3), ('cat', 2), ('dog', 1)]
    """
    counts: dict[int, int] = {}
    for y in labels:
        if y is not None and y >= 0:
            counts[int(y)] = counts.get(int(y), 0) + 1
    order = sorted(counts, key=lambda y: (-counts[y], y))
    return list(zip(label_names(order, classes), (counts[y] for y in order)))


@dataclass(frozen=True)
class FoundLabels:
    """The class names and image labels of a collection of images (:func:`find_labels`).

    Attributes
    ----------
    classes : list of str or None
        Class names, indexed by label.
    labels : list of int or None
        One label per image, when known up front (given, or the data's ``labels`` /
        ``targets``).
    items : indexable or None
        Where labels are read one item at a time when ``labels`` is None: a Dataset or list
        whose items are ``(image, label, ...)`` or ``{"label": ...}``. None: no labels to read
        (a tensor of images, nothing indexable).
    """

    classes: list[str] | None = None
    labels: list[int] | None = None
    items: Any = None

    def labels_of(self, indices: Sequence[int]) -> list[int | None]:
        """The label of each image in ``indices`` (None where the data has none); reads the
        items themselves only when no label list is known."""
        if self.labels is not None:
            return [self.labels[int(i)] for i in indices]
        if self.items is not None:
            return [label_of_item(self.items[int(i)]) for i in indices]
        return [None] * len(indices)

    def names_of(self, indices: Sequence[int]) -> list[str]:
        """The class name of each image in ``indices`` (:func:`label_names`: ``""`` for none)."""
        return label_names(self.labels_of(indices), self.classes)


def _items_of(data: Any) -> Any:
    """The indexable collection behind ``data``: a DataLoader's dataset, an ImageSource's
    items, else ``data`` itself."""
    if isinstance(data, ImageSource):
        return data.items
    if isinstance(data, DataLoader):
        return data.dataset
    return data


def find_labels(
    data: Any,
    *,
    classes: Sequence[str] | None = None,
    labels: Sequence[int] | torch.Tensor | np.ndarray | None = None,
    n: int | None = None,
) -> FoundLabels:
    """The class names and image labels of ``data``: those given, else those the data carries.

    One rule for every part that shows hits with their classes (docs/method.md Sec. 3.1: the
    top-9 widget and the atlas site).

    Parameters
    ----------
    data : Tensor (N, C, H, W), Dataset, DataLoader, list, ImageSource, or None
        The images (a DataLoader stands for its dataset, an ImageSource for its items).
    classes : list of str, optional
        Class names by label. Default: the data's ``classes`` attribute when it is a list of
        str.
    labels : sequence, tensor or array of ints, optional
        One label per image (``n`` of them when ``n`` is given). Default: the data's
        ``labels`` or ``targets`` attribute when it holds one int per image, else the labels
        of the items themselves, read when asked for (:meth:`FoundLabels.labels_of`). A
        tensor of images has none.
    n : int, optional
        The number of images, to check the given ``labels`` against.

    Raises
    ------
    TypeError
        When ``classes`` is not a sequence of names, or ``labels`` not a sequence of ints.
    ValueError
        When ``labels`` does not hold ``n`` labels.
    """
    items = _items_of(data)
    if classes is not None:
        if isinstance(classes, (str, bytes)) or not isinstance(classes, Sequence):
            raise TypeError(
                f"classes: expected a list of class names, got {type(classes).__name__}"
            )
        names: list[str] | None = [str(c) for c in classes]
    else:
        found = getattr(items, "classes", None)
        names = (
            list(found)
            if isinstance(found, Sequence)
            and not isinstance(found, (str, bytes))
            and all(isinstance(c, str) for c in found)
            else None
        )
    if labels is not None:
        return FoundLabels(names, as_labels(labels, n), None)
    if items is None or isinstance(items, torch.Tensor):
        return FoundLabels(names, None, None)
    try:
        count: int | None = len(items)
    except TypeError:
        count = None
    for attr in ("labels", "targets"):
        seq = getattr(items, attr, None)
        if seq is None or isinstance(seq, (str, bytes)) or count is None:
            continue
        try:
            return FoundLabels(names, as_labels(seq, count), None)
        except (TypeError, ValueError):
            continue
    readable = hasattr(items, "__getitem__") and not hasattr(items, "dim")
    return FoundLabels(names, None, items if readable else None)
