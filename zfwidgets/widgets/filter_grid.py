"""FilterGrid: the filters of a convolution (the first by default) as image tiles, with the
filters that dominate (RMS above the renormalisation radius) and the dead ones marked.

docs/method.md Sec. 1 (RMS renormalisation), Sec. 3 Fig. 6 (layer-1 filters with and without it),
Sec. 4 (dead filters). Several checkpoints (``checkpoints=``) turn it into Fig. 4's view of
training: a slider picks the checkpoint.

The grid's core works on weight tensors: a model's convolution (``FilterGrid(model)``, its
checkpoints) gives them, or they are passed directly (``FilterGrid(weights=w)``: a checkpoint's
or a training snapshot's filters, with no model around them).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import traitlets as t
from torch import nn

from ..base.checks import check_model
from ..base.codec import decode, pack
from ..base.images import filter_atlas
from ..base.layers import eval_mode
from ..engine.capture import capture
from ..engine.filters import (
    DEAD,
    DOMINATING,
    conv_layer,
    dead_filters,
    filter_flags,
    over_radius,
    weight_images,
    weight_rms,
)
from ..engine.probe import check_images
from ._base import ZFWidget
from ._jobs import Runner

__all__ = ["DEAD", "DOMINATING", "FilterGrid"]

Frame = dict[str, Any]


def _filter_frame(
    weight: torch.Tensor,
    *,
    layer: str,
    radius: float,
    normalize: str,
    columns: int | None,
    dead: torch.Tensor | None = None,
    dominating: torch.Tensor | None = None,
) -> Frame:
    """What the grid shows of one set of filters: tiles, RMS, dominating / dead flags.

    ``weight`` (Cout, Cin, kh, kw); ``dead`` and ``dominating`` (Cout,) bool, the latter
    computed from the weights and ``radius`` when not given (docs/method.md Sec. 1).
    """
    with torch.no_grad():
        atlas, layout = filter_atlas(weight_images(weight, normalize=normalize), columns=columns)
        rms = weight_rms(weight)
        if dominating is None:
            dominating = over_radius(rms, radius, weight.dtype)
        flags = filter_flags(dominating.to(rms.device), dead)
    return {
        "layer": layer,
        "shape": list(weight.shape),
        "grid": layout.to_json(),
        "radius": float(radius),
        "dead_known": dead is not None,
        # one device for the three: one host transfer
        **pack(
            {"atlas": atlas, "flags": flags.to(atlas.device), "rms": rms.float().to(atlas.device)}
        ),
    }


def _per_frame(value: object, n: int, single: bool, what: str) -> list[torch.Tensor | None]:
    """``dead=`` / ``dominating=``: one (Cout,) tensor per set of weights (or None)."""
    if value is None:
        return [None] * n
    if single:
        value = [value]
    elif isinstance(value, torch.Tensor) or not isinstance(value, Sequence):
        raise TypeError(
            f"{what}: with a list of weights, expected a list of (Cout,) bool tensors, got "
            f"{type(value).__name__}"
        )
    value = list(value)
    if len(value) != n:
        raise ValueError(f"{what}: expected {n} entries (one per set of weights), got {len(value)}")
    for i, v in enumerate(value):
        if v is not None and not isinstance(v, torch.Tensor):
            raise TypeError(f"{what}[{i}]: expected a (Cout,) bool tensor, got {type(v).__name__}")
    return value


def _check_weight(w: object, what: str) -> torch.Tensor:
    if not isinstance(w, torch.Tensor) or w.dim() != 4 or not w.is_floating_point():
        got = (
            f"{w.dtype} tensor of shape {tuple(w.shape)}"
            if isinstance(w, torch.Tensor)
            else type(w).__name__
        )
        raise ValueError(f"{what}: expected a floating (Cout, Cin, kh, kw) tensor, got {got}")
    if w.device.type == "meta":
        raise ValueError(f"{what}: expected weights with values, got a tensor on the meta device")
    return w.detach()


def _check_flags(v: torch.Tensor | None, cout: int, what: str) -> None:
    if v is not None and tuple(v.shape) != (cout,):
        raise ValueError(f"{what}: expected shape ({cout},), one per filter, got {tuple(v.shape)}")


class FilterGrid(ZFWidget):
    """The filters of a convolution as RGB tiles (grey for one input channel).

    Parameters
    ----------
    model : nn.Module, optional
        The model whose convolution is shown. Leave it out to pass ``weights=`` instead.
    layer : str or nn.Module, optional
        An ``nn.Conv2d``; default: the model's first. With 3 input channels filters are RGB,
        with 1 grey, otherwise the mean over input channels. With ``weights=``, the name
        shown in the caption (default ``"filters"``).
    weights : Tensor (Cout, Cin, kh, kw) or list of them, optional
        The filters themselves, instead of a model (a checkpoint's, a training snapshot's).
        A list gives one frame per tensor with the ``checkpoint`` slider, like
        ``checkpoints=`` (each frame's label in its caption).
    dead : Tensor (Cout,) bool or list of them, optional
        With ``weights=``: the dead filters (``zf.dead_filters(activations).dead``, docs/method.md
        Sec. 4), one per set of weights; unknown when None.
    dominating : Tensor (Cout,) bool or list of them, optional
        With ``weights=``: the dominating filters, when already computed (e.g. on the
        weights' own dtype); default: their RMS above ``radius``.
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

    Examples
    --------
    >>> import zfwidgets as zf
    >>> d = zf.load_default()
    >>> x = d.images.tensors()[0]
    >>> grid = FilterGrid(d.model, images=x[:64])            # the first conv, dead ones marked
    >>> sd = d.checkpoints[0][1]                             # a state_dict from training
    >>> grid = FilterGrid(weights=sd["features.0.weight"], layer="features.0")  # no model needed
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
        model: nn.Module | None = None,
        layer: str | nn.Module | None = None,
        *,
        weights: torch.Tensor | Sequence[torch.Tensor] | None = None,
        dead: torch.Tensor | Sequence[torch.Tensor | None] | None = None,
        dominating: torch.Tensor | Sequence[torch.Tensor | None] | None = None,
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
        if normalize not in ("filter", "layer"):
            raise ValueError(f"normalize: expected 'filter' or 'layer', got {normalize!r}")
        self._radius = radius
        self._normalize = normalize
        self._columns = columns
        self._model: nn.Module | None = None
        self._checkpoints: list[Mapping[str, torch.Tensor]] | None = None
        self._images: torch.Tensor | None = None
        self._activations: torch.Tensor | None = None
        self._shadow: nn.Module | None = None
        if weights is not None:
            if model is not None:
                raise ValueError("give a model or weights=, not both")
            if checkpoints is not None or images is not None or activations is not None:
                raise ValueError(
                    "weights=: pass a list of weights instead of checkpoints=, and dead= "
                    "(zf.dead_filters(activations).dead) instead of images= or activations="
                )
            if layer is not None and not isinstance(layer, str):
                raise TypeError(
                    f"layer: with weights=, expected a name, got {type(layer).__name__}"
                )
            name = "filters" if layer is None else layer
            sources, labels = self._weight_sources(weights, dead, dominating, name, labels)
        else:
            if dead is not None or dominating is not None:
                raise ValueError(
                    "dead= and dominating= go with weights=; with a model pass images="
                )
            check_model(model)
            name, sources, labels = self._model_sources(
                model, layer, checkpoints, labels, images, activations
            )
        self._setup(name, sources, labels, max_width, kwargs)

    @classmethod
    def _of_frames(
        cls, frames: Sequence[Frame], labels: Sequence[str], *, layer: str, **kwargs: Any
    ) -> FilterGrid:
        """A grid over frames already made (package-private: the training monitor's snapshots
        saved without their weights hold only their tiles and statistics)."""
        self = cls.__new__(cls)
        self._radius, self._normalize, self._columns = 0.1, "filter", None
        self._model = self._checkpoints = self._images = self._activations = self._shadow = None
        sources = [lambda f=f: f for f in frames]
        self._setup(layer, sources, list(labels), kwargs.pop("max_width", 480), kwargs)
        return self

    def _setup(
        self,
        name: str,
        sources: list[Callable[[], Frame]],
        labels: list[str],
        max_width: int,
        kwargs: dict[str, Any],
    ) -> None:
        self._name = name
        self._sources = sources
        self._frames: dict[int, Frame] = {}
        self._ready = False
        self._runner = Runner(f"zfwidgets.FilterGrid-{id(self):x}")
        frame = self._frame(0)
        ZFWidget.__init__(
            self,
            layer=name,
            frame=frame,
            checkpoint=0,
            checkpoint_labels=labels,
            caption=self._caption(frame, None),
            max_width=max_width,
            **kwargs,
        )
        self._ready = True

    # -- where the weights come from ---------------------------------------------------------
    def _weight_sources(
        self,
        weights: torch.Tensor | Sequence[torch.Tensor],
        dead: object,
        dominating: object,
        name: str,
        labels: Sequence[str] | None,
    ) -> tuple[list[Callable[[], Frame]], list[str]]:
        single = isinstance(weights, torch.Tensor)
        if not single and (isinstance(weights, (str, bytes)) or not isinstance(weights, Sequence)):
            raise TypeError(
                "weights: expected a (Cout, Cin, kh, kw) tensor or a list of them, got "
                f"{type(weights).__name__}"
            )
        ws = [weights] if single else list(weights)
        if not ws:
            raise ValueError("weights: expected at least one tensor, got none")
        what = "weights" if single else "weights[{}]"
        ws = [_check_weight(w, what.format(i)) for i, w in enumerate(ws)]
        deads = _per_frame(dead, len(ws), single, "dead")
        doms = _per_frame(dominating, len(ws), single, "dominating")
        for i, w in enumerate(ws):
            suffix = "" if single else f"[{i}]"
            _check_flags(deads[i], w.shape[0], "dead" + suffix)
            _check_flags(doms[i], w.shape[0], "dominating" + suffix)
        labels = self._labels(labels, None if single else len(ws))
        titles = [f"{name} · {label}" for label in labels] or [name]
        sources = [
            lambda w=w, d=d, m=m, title=title: self._weight_frame(w, title, dead=d, dominating=m)
            for w, d, m, title in zip(ws, deads, doms, titles)
        ]
        return sources, labels

    def _weight_frame(
        self,
        weight: torch.Tensor,
        title: str,
        *,
        dead: torch.Tensor | None = None,
        dominating: torch.Tensor | None = None,
    ) -> Frame:
        return _filter_frame(
            weight,
            layer=title,
            radius=self._radius,
            normalize=self._normalize,
            columns=self._columns,
            dead=dead,
            dominating=dominating,
        )

    @staticmethod
    def _labels(labels: Sequence[str] | None, n: int | None) -> list[str]:
        """One label per frame when there is a slider (``n`` frames), none otherwise."""
        if labels is None:
            return [f"checkpoint {i}" for i in range(n)] if n is not None else []
        labels = [str(label) for label in labels]
        if len(labels) != (n or 1):
            raise ValueError(
                f"labels: expected {n or 1} labels (one per checkpoint), got {len(labels)}"
            )
        return labels

    def _model_sources(
        self,
        model: nn.Module,
        layer: str | nn.Module | None,
        checkpoints: Sequence[Mapping[str, torch.Tensor]] | None,
        labels: Sequence[str] | None,
        images: torch.Tensor | None,
        activations: torch.Tensor | None,
    ) -> tuple[str, list[Callable[[], Frame]], list[str]]:
        name, conv = conv_layer(model, layer)
        self._model = model
        self._name = name
        self._conv = conv
        if checkpoints is not None:
            checkpoints = list(checkpoints)
            if not checkpoints:
                raise ValueError("checkpoints: expected at least one state dict, got none")
            for i, sd in enumerate(checkpoints):
                self._weight_of(sd, i)  # checks each one now, not at the slider
        self._checkpoints = checkpoints
        labels = self._labels(labels, len(checkpoints) if checkpoints is not None else None)
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
        n = len(checkpoints) if checkpoints is not None else 1
        sources = [lambda i=i: self._model_frame(i) for i in range(n)]
        return name, sources, labels

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

    def _model_frame(self, index: int) -> Frame:
        """Checkpoint ``index``'s weights (the model's own without checkpoints); the model is
        never modified."""
        if self._checkpoints is None:
            weight = self._conv.weight
        else:
            weight = self._weight_of(self._checkpoints[index], index).to(self._conv.weight)
        frame = self._weight_frame(weight.detach(), self._name, dead=self._dead_at(index))
        if self._checkpoints is not None and len(self._frames) + 1 >= len(self._checkpoints):
            self._shadow = None
        return frame

    def _frame(self, index: int) -> Frame:
        if index not in self._frames:
            self._frames[index] = self._sources[index]()
        return self._frames[index]

    def _caption(self, frame: Frame, channel: int | None) -> str:
        cout, cin, kh, kw = frame["shape"]
        if channel is None:
            return f"{frame['layer']} · {cout} filters {cin}×{kh}×{kw}"
        rms = float(decode(frame["rms"])[channel])
        flags = int(decode(frame["flags"])[channel])
        marks = [w for bit, w in ((DOMINATING, "dominating"), (DEAD, "dead")) if flags & bit]
        extra = f" · {', '.join(marks)}" if marks else ""
        return f"{frame['layer']} · filter {channel} · RMS {rms:.3g}{extra}"

    # -- showing other weights ---------------------------------------------------------------
    def set_weights(
        self,
        weights: torch.Tensor,
        *,
        dead: torch.Tensor | None = None,
        dominating: torch.Tensor | None = None,
        label: str | None = None,
    ) -> None:
        """Show other filters in place (a grid without a checkpoint slider): the training
        monitor's latest snapshot, say.

        Parameters
        ----------
        weights : Tensor (Cout, Cin, kh, kw)
        dead, dominating : Tensor (Cout,) bool, optional
            As for ``FilterGrid(weights=...)``.
        label : str, optional
            Shown after the layer name in the caption.

        Notes
        -----
        The frame is made by the widget's job runner and applied on the kernel's thread
        (at once where no event loop runs); the selected filter is kept when it still exists.
        """
        if len(self._sources) != 1:
            raise ValueError(
                f"set_weights: this grid holds {len(self._sources)} checkpoints; build a new "
                "FilterGrid(weights=[...]) instead"
            )
        w = _check_weight(weights, "weights")
        _check_flags(dead, w.shape[0], "dead")
        _check_flags(dominating, w.shape[0], "dominating")
        title = self._name if label is None else f"{self._name} · {label}"

        def make() -> Frame:
            return self._weight_frame(w, title, dead=dead, dominating=dominating)

        self._show(make, [] if label is None else [str(label)])

    def _show_frame(self, frame: Frame, label: str | None = None) -> None:
        """Show a frame already made in place (package-private, see :meth:`_of_frames`)."""
        self._show(lambda: frame, None if label is None else [label])

    def _show(self, make: Callable[[], Frame], labels: list[str] | None = None) -> None:
        def apply(frame: Frame) -> None:
            self._sources = [lambda: frame]
            self._frames = {0: frame}
            channel = self.channel
            if channel is not None and channel >= frame["grid"]["count"]:
                channel = None
            with self.hold_sync():
                self.frame = frame
                self.channel = channel
                self.caption = self._caption(frame, channel)
                if labels is not None:
                    self.checkpoint_labels = labels

        self._runner.submit(lambda job: make(), apply, wait=True)

    # -- traits ------------------------------------------------------------------------------
    @t.validate("checkpoint")
    def _validate_checkpoint(self, proposal: dict) -> int:
        k = proposal["value"]
        n = len(self._sources)
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

            def apply(frame: Frame) -> None:
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
