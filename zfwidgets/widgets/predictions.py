"""Predictions: the top-k classes of one image as bars (class name + probability).

The companion of :class:`~zfwidgets.widgets.occlusion_map.OcclusionMap` (docs/method.md Sec. 3.5
(Fig. 7: the occlusion maps are read against what the model predicts for the unoccluded image).
One forward pass per image, on the model's device; the k probabilities and class indices cross
to the browser as one binary transfer (:func:`zfwidgets.base.codec.pack`), the k names as text.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import traitlets as t
from torch import nn

from ..base.checks import check_model
from ..base.classes import class_names, logits_of
from ..base.codec import decode, pack
from ..base.layers import module_tree_copy
from ..engine.probe import one_image
from ._base import ZFWidget
from ._jobs import Job, Runner

__all__ = ["Predictions", "class_names", "logits_of"]


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
    >>> import zfwidgets as zf
    >>> d = zf.load_default()
    >>> preds = Predictions(d.model, d.images[60][0], classes=d.classes, k=3)
    >>> preds.labels[0]
    'Ankle boot'
    >>> preds.set_image(d.images[90][0])      # or preds.image = ...
    >>> preds.labels[0]
    'Trouser'
    """

    _bundle = "predictions.js"

    top = t.Dict().tag(sync=True)
    labels = t.List(t.Unicode()).tag(sync=True)
    caption = t.Unicode("").tag(sync=True)
    error = t.Unicode("").tag(sync=True)

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
        x = one_image(model, image)
        logits = logits_of(model, x)
        self._classes = class_names(classes, logits.shape[1])
        self._runner = Runner(f"zfwidgets.Predictions-{id(self):x}")
        state, self.probabilities = self._state(x, logits)
        self._image = x
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
        """Show the predictions for another image (same checks as the constructor).

        In a kernel the forward pass runs off the kernel thread (a newer image wins); without
        an event loop the bars are updated when this returns.
        """
        x = one_image(self._model, image)

        def work(job: Job) -> tuple[dict[str, Any], torch.Tensor]:
            logits = logits_of(module_tree_copy(self._model), x)
            if logits.shape[1] != len(self._classes):
                raise ValueError(
                    f"model output: expected {len(self._classes)} classes, got {logits.shape[1]}"
                )
            return self._state(x, logits)

        def apply(out: tuple[dict[str, Any], torch.Tensor]) -> None:
            state, probs = out
            self._image = x
            self.probabilities = probs
            with self.hold_sync():
                for name, value in state.items():
                    setattr(self, name, value)
                self.error = ""

        def error(exc: BaseException) -> None:
            self.error = f"{type(exc).__name__}: {exc}"

        self._runner.submit(work, apply, error=error, wait=True)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the latest image's bars are shown; False when ``timeout`` ran out."""
        return self._runner.join(timeout)

    def _state(self, x: torch.Tensor, logits: torch.Tensor) -> tuple[dict[str, Any], torch.Tensor]:
        probs = torch.softmax(logits[0].float(), dim=0)
        k = min(self._k, probs.shape[0])
        values, indices = torch.topk(probs, k)
        top = pack({"probability": values, "index": indices})  # one device-to-host copy
        names = [self._classes[i] for i in indices.tolist()]
        state = {"top": top, "labels": names, "caption": f"top {k} of {probs.shape[0]} classes"}
        return state, probs

    def predictions(self) -> list[tuple[str, float]]:
        """``(class name, probability)`` of the k bars, most probable first."""
        return [
            (name, float(p))
            for name, p in zip(self.labels, decode(self.top["probability"]).tolist())
        ]
