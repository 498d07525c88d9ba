"""FilterGrid: the filters of a convolution (the first by default) as image tiles, with the
filters that dominate (RMS above the renormalisation radius) and the dead ones marked.

docs/method.md Sec. 1 (RMS renormalisation), Sec. 3 Fig. 6 (layer-1 filters with and without it),
Sec. 4 (dead filters). Several checkpoints (``checkpoints=``) turn it into Fig. 4's view of
training: a slider picks the checkpoint.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import traitlets as t
from torch import nn

from ..base.checks import check_model, model_device
from ..base.codec import decode, pack
from ..base.images import filter_atlas
from ..base.layers import eval_mode, first_conv, resolve_layer
from ..engine.capture import capture
from ..engine.filters import (
    DEAD,
    DOMINATING,
    dead_filters,
    dominating_filters,
    filter_flags,
    filter_rms,
    filters,
)
from ..engine.probe import check_images
from ._base import ZFWidget
from ._jobs import Runner

__all__ = ["DEAD", "DOMINATING", "FilterGrid"]


def _resolve_conv(model: nn.Module, layer: str | nn.Module | None) -> tuple[str, nn.Conv2d]:
    if layer is None:
        found = first_conv(model)
        if found is None:
            raise ValueError(f"layer: {type(model).__name__} has no nn.Conv2d to show")
        return found
    name, module = resolve_layer(model, layer)
    if not isinstance(module, nn.Conv2d):
        raise TypeError(f"layer: expected an nn.Conv2d, got {name!r} ({type(module).__name__})")
    return name, module


class FilterGrid(ZFWidget):
    """The filters of a convolution as RGB tiles (grey for one input channel).

    Parameters
    ----------
    model : nn.Module
    layer : str or nn.Module, optional
        An ``nn.Conv2d``; default: the model's first. With 3 input channels filters are RGB,
        with 1 grey, otherwise the mean over input channels.
    checkpoints : list of state dicts, optional
        Weights saved during training (``model.state_dict()`` per epoch). The slider (trait
        ``checkpoint``) picks which one is shown; the model itself is never modified.
    labels : list of str, optional
        One label per checkpoint (default ``"checkpoint 0"``, ...).
    images : Tensor (N, C, H, W), optional
        Inputs (normalised as the model expects) from which dead filters are found: a filter
        whose output is never positive on any of them (docs/method.md Sec. 4). With
        ``checkpoints``, each checkpoint is run on a copy of the model.
    activations : Tensor (N, C, H, W), optional
        The layer's outputs, instead of ``images`` (not with ``checkpoints``).
    radius : float
        Filters whose RMS exceeds it are marked as dominating (0.1 in the paper).
    normalize : {"filter", "layer"}
        See :func:`zfwidgets.engine.filters.filters`.
    columns : int, optional
    max_width : int
        Width in CSS pixels the grid is scaled to fit.

    Attributes
    ----------
    checkpoint : int
        Index of the checkpoint shown (synced).
    channel : int or None
        The selected filter (synced; set on click).
    """

    _bundle = "filter_grid.js"

    layer = t.Unicode("").tag(sync=True)
    #: {"layer", "shape", "grid", "atlas", "flags", "rms", "radius", "dead_known"}
    frame = t.Dict().tag(sync=True)
    checkpoint = t.Int(0).tag(sync=True)
    checkpoint_labels = t.List(t.Unicode()).tag(sync=True)
    channel = t.Int(None, allow_none=True).tag(sync=True)
    caption = t.Unicode("").tag(sync=True)
    max_width = t.Int(480).tag(sync=True)

    def __init__(
        self,
        model: nn.Module,
        layer: str | nn.Module | None = None,
        *,
        checkpoints: Sequence[Mapping[str, torch.Tensor]] | None = None,
        labels: Sequence[str] | None = None,
        images: torch.Tensor | None = None,
        activations: torch.Tensor | None = None,
        radius: float = 0.1,
        normalize: str = "filter",
        columns: int | None = None,
        max_width: int = 480,
        **kwargs: Any,
    ) -> None:
        check_model(model)
        name, conv = _resolve_conv(model, layer)
        self._model = model
        self._name = name
        self._conv = conv
        self._radius = radius
        self._normalize = normalize
        self._columns = columns
        if checkpoints is not None:
            checkpoints = list(checkpoints)
            if not checkpoints:
                raise ValueError("checkpoints: expected at least one state dict, got none")
            for i, sd in enumerate(checkpoints):
                self._weight_of(sd, i)  # checks each one now, not at the slider
        self._checkpoints = checkpoints
        n = len(checkpoints) if checkpoints is not None else 1
        if labels is None:
            labels = [f"checkpoint {i}" for i in range(n)] if checkpoints is not None else []
        else:
            labels = [str(label) for label in labels]
            if len(labels) != n:
                raise ValueError(
                    f"labels: expected {n} labels (one per checkpoint), got {len(labels)}"
                )
        if images is not None and activations is not None:
            raise ValueError("give images= or activations=, not both")
        if activations is not None and checkpoints is not None:
            raise ValueError(
                "activations= holds one model's outputs; with checkpoints pass images="
            )
        if images is not None:
            images = check_images(model, images, name="images")
        self._images = images
        self._activations = activations
        self._frames: dict[int, dict[str, Any]] = {}
        self._shadow: nn.Module | None = None
        self._ready = False
        self._runner = Runner(f"zfwidgets.FilterGrid-{id(self):x}")
        frame = self._frame(0)
        super().__init__(
            layer=name,
            frame=frame,
            checkpoint=0,
            checkpoint_labels=labels,
            caption=self._caption(frame, None),
            max_width=max_width,
            **kwargs,
        )
        self._ready = True

    # -- plain-Python compute --------------------------------------------------------------
    def _weight_of(self, state_dict: Mapping[str, torch.Tensor], index: int) -> torch.Tensor:
        key = f"{self._name}.weight" if self._name else "weight"
        if not isinstance(state_dict, Mapping) or key not in state_dict:
            have = list(state_dict)[:6] if isinstance(state_dict, Mapping) else type(state_dict)
            raise ValueError(
                f"checkpoints[{index}]: expected a state dict with {key!r} (from "
                f"model.state_dict()), got keys {have}"
            )
        w = state_dict[key]
        if not isinstance(w, torch.Tensor) or w.shape != self._conv.weight.shape:
            raise ValueError(
                f"checkpoints[{index}][{key!r}]: expected a tensor of shape "
                f"{tuple(self._conv.weight.shape)}, got {getattr(w, 'shape', type(w).__name__)}"
            )
        return w

    def _conv_at(self, index: int) -> nn.Conv2d:
        """The convolution with the weights of checkpoint ``index`` (a copy; the model's own
        convolution when there are no checkpoints)."""
        if self._checkpoints is None:
            return self._conv
        conv = copy.deepcopy(self._conv)
        with torch.no_grad():
            conv.weight.copy_(self._weight_of(self._checkpoints[index], index))
        return conv

    def _dead_at(self, index: int) -> torch.Tensor | None:
        if self._activations is not None:
            return dead_filters(self._activations).dead
        if self._images is None:
            return None
        model = self._model
        if self._checkpoints is not None:
            # one private copy of the model takes each checkpoint's weights in turn; it is
            # dropped once every checkpoint has its frame
            if self._shadow is None:
                self._shadow = copy.deepcopy(self._model)
            model = self._shadow
            model.load_state_dict(self._checkpoints[index], strict=False)
        with torch.no_grad(), eval_mode(model), capture(model, [self._name], switches=False) as cap:
            model(self._images)
        return dead_filters(cap.activations[self._name]).dead

    def _frame(self, index: int) -> dict[str, Any]:
        if index in self._frames:
            return self._frames[index]
        conv = self._conv_at(index)
        weights = filters(conv, normalize=self._normalize)
        atlas, layout = filter_atlas(weights, columns=self._columns)
        dead = self._dead_at(index)
        flags = filter_flags(dominating_filters(conv, radius=self._radius), dead)
        rms = filter_rms(conv).float()
        device = model_device(self._model)
        frame = {
            "layer": self._name,
            "shape": list(conv.weight.shape),
            "grid": layout.to_json(),
            "radius": float(self._radius),
            "dead_known": dead is not None,
            **pack({"atlas": atlas, "flags": flags.to(device), "rms": rms.to(device)}),
        }
        self._frames[index] = frame
        if self._checkpoints is not None and len(self._frames) == len(self._checkpoints):
            self._shadow = None
        return frame

    def _caption(self, frame: dict[str, Any], channel: int | None) -> str:
        cout, cin, kh, kw = frame["shape"]
        if channel is None:
            return f"{frame['layer']} · {cout} filters {cin}×{kh}×{kw}"
        rms = float(decode(frame["rms"])[channel])
        flags = int(decode(frame["flags"])[channel])
        marks = [w for bit, w in ((DOMINATING, "dominating"), (DEAD, "dead")) if flags & bit]
        extra = f" · {', '.join(marks)}" if marks else ""
        return f"{frame['layer']} · filter {channel} · RMS {rms:.3g}{extra}"

    # -- traits ------------------------------------------------------------------------------
    @t.validate("checkpoint")
    def _validate_checkpoint(self, proposal: dict) -> int:
        k = proposal["value"]
        n = len(self._checkpoints) if self._checkpoints is not None else 1
        if not 0 <= k < n:
            raise t.TraitError(f"checkpoint: expected an int in [0, {n}), got {k}")
        return k

    @t.validate("channel")
    def _validate_channel(self, proposal: dict) -> int | None:
        c = proposal["value"]
        if c is not None and self.frame and not 0 <= c < self.frame["grid"]["count"]:
            raise t.TraitError(
                f"channel: expected an int in [0, {self.frame['grid']['count']}) or None, got {c}"
            )
        return c

    @t.observe("checkpoint")
    def _on_checkpoint(self, change: dict) -> None:
        if self._ready:
            index = change["new"]

            def apply(frame: dict[str, Any]) -> None:
                with self.hold_sync():
                    self.frame = frame
                    self.caption = self._caption(frame, self.channel)

            self._runner.submit(lambda job: self._frame(index), apply, wait=True)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the latest checkpoint's filters are shown; False when ``timeout`` ran
        out first."""
        return self._runner.join(timeout)

    @t.observe("channel")
    def _on_channel(self, change: dict) -> None:
        if self._ready:
            self.caption = self._caption(self.frame, change["new"])
