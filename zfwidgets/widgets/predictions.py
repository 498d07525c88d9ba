"""Predictions: the top-k classes of one image as bars (class name + probability).

The companion of :class:`~zfwidgets.widgets.occlusion_map.OcclusionMap` (docs/method.md Sec. 3.5
(Fig. 7: the occlusion maps are read against what the model predicts for the unoccluded image).
One forward pass per image, on the model's device; the k probabilities and class indices cross
to the browser as one binary transfer (:func:`zfwidgets.codec.pack`), the k names as text.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import traitlets as t
from torch import nn

from .._checks import check_logits, check_model
from ..capture import eval_mode
from ..codec import decode, pack
from ._base import ZFWidget
from .layer_grid import _as_image

__all__ = ["Predictions", "class_names", "logits_of"]


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


class Predictions(ZFWidget):
    """The top-k predicted classes of one image, as bars with the class name and probability.

    Parameters
    ----------
    model : nn.Module
        Maps (1, C, H, W) images to (1, classes) logits; run in eval mode (flags restored),
        on its own device.
    image : Tensor (C, H, W) or (1, C, H, W)
        One input, normalised as the model expects.
    classes : list of str, optional
        One name per model output (default ``"class 0"``, ...); shown as text, never as HTML.
    k : int
        Number of bars (at most the number of classes).

    Attributes
    ----------
    top : dict
        ``{"probability": payload float32 (k,), "index": payload int32 (k,)}`` (synced).
    labels : list of str
        The k class names, most probable first (synced).
    probabilities : Tensor (classes,)
        Softmax of the current image's logits, on the model's device.

    Examples
    --------
    >>> Predictions(model, x, classes=weights.meta["categories"])
    >>> preds.set_image(other)      # or preds.image = other
    """

    _bundle = "predictions.js"

    top = t.Dict().tag(sync=True)
    labels = t.List(t.Unicode()).tag(sync=True)
    caption = t.Unicode("").tag(sync=True)

    def __init__(
        self,
        model: nn.Module,
        image: torch.Tensor,
        *,
        classes: Sequence[str] | None = None,
        k: int = 5,
        **kwargs: Any,
    ) -> None:
        check_model(model)
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k: expected a positive int, got {k!r}")
        self._model = model
        self._k = k
        x = _as_image(model, image)
        logits = logits_of(model, x)
        self._classes = class_names(classes, logits.shape[1])
        state = self._state(x, logits)
        super().__init__(**state, **kwargs)

    @property
    def classes(self) -> list[str]:
        """The class names (one per model output)."""
        return list(self._classes)

    @property
    def image(self) -> torch.Tensor:
        """The current image, (1, C, H, W) on the model's device; assign to replace it."""
        return self._image

    @image.setter
    def image(self, image: torch.Tensor) -> None:
        self.set_image(image)

    def set_image(self, image: torch.Tensor) -> None:
        """Show the predictions for another image (same checks as the constructor)."""
        x = _as_image(self._model, image)
        logits = logits_of(self._model, x)
        if logits.shape[1] != len(self._classes):
            raise ValueError(
                f"model output: expected {len(self._classes)} classes, got {logits.shape[1]}"
            )
        state = self._state(x, logits)
        with self.hold_sync():
            for name, value in state.items():
                setattr(self, name, value)

    def _state(self, x: torch.Tensor, logits: torch.Tensor) -> dict[str, Any]:
        probs = torch.softmax(logits[0].float(), dim=0)
        k = min(self._k, probs.shape[0])
        values, indices = torch.topk(probs, k)
        self._image = x
        self.probabilities = probs
        top = pack({"probability": values, "index": indices})  # one device-to-host copy
        names = [self._classes[i] for i in indices.tolist()]
        return {
            "top": top,
            "labels": names,
            "caption": f"top {k} of {probs.shape[0]} classes",
        }

    def predictions(self) -> list[tuple[str, float]]:
        """``(class name, probability)`` of the k bars, most probable first."""
        return [
            (name, float(p))
            for name, p in zip(self.labels, decode(self.top["probability"]).tolist())
        ]
