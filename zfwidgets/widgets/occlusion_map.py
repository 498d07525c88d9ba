"""OcclusionMap: the image with the paper's three occlusion maps over it (docs/method.md Sec. 3.5, Fig. 7).

A grey square is slid over the image (:func:`zfwidgets.engine.occlusion`); for every position of the
square the widget maps (a) the total activation of one feature map, (b) the probability of the
target class and (c) the most probable class. The front end draws the un-normalised image with
one map over it as a heatmap (buttons switch between them, in the browser alone), a colour bar
(or, for (c), a legend of the classes that occur), and on hover the square at the position under
the pointer with its class, probability and activation.

What crosses to the browser, in one binary transfer per image (:func:`zfwidgets.base.codec.pack`):
the image as uint8 RGBA (H, W, 4), the four (R, Cc) maps (float32; the top class as int32) and
the square positions (int32). Class names are sent once, as text.

The sweep goes through the widget's job runner (:mod:`zfwidgets.widgets._jobs`): in a kernel it
runs off the kernel thread and a newer image supersedes it (it stops at its next forward pass,
through ``zf.occlusion(..., progress=)``); without a running loop (scripts, tests) the call
returns with the maps. The sweep runs on a copy of the model's module tree that shares its
parameters and buffers (:func:`zfwidgets.base.layers.module_tree_copy`), so the hooks it registers
never fire for forward passes the notebook makes in the meantime. The copy is made, and traced
for the incremental sweep (:func:`zfwidgets.engine.occlusion.prepare`: torch.fx traces on the main
thread only), on the thread that asks for the sweep; the worker then recomputes only each
square's forward cone, as ``zf.occlusion`` does in a cell.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import traitlets as t
from torch import nn

from ..base.checks import check_logits, check_model
from ..base.classes import class_names
from ..base.codec import encode, pack
from ..base.images import COLORMAPS, display_image, display_stats, fit_channels, to_rgba
from ..base.layers import eval_mode, resolve_layer
from ..base.layers import module_tree_copy as _shadow
from ..engine.capture import capture
from ..engine.occlusion import (
    OcclusionResult,
    SweepGeometry,
    check_fill,
    default_layer,
    occlusion,
    prepare,
    sweep_geometry,
)
from ..engine.probe import one_image
from ._base import ZFWidget
from ._jobs import Job, Runner, running_loop

__all__ = ["OCCLUSION_VIEWS", "OcclusionMap"]

#: The three maps of docs/method.md Sec. 3.5, Fig. 7, in the order of their buttons.
OCCLUSION_VIEWS: dict[str, dict[str, str]] = {
    "activation": {"label": "(a) activation", "colormap": "inferno"},
    "probability": {"label": "(b) probability", "colormap": "viridis"},
    "top_class": {"label": "(c) top class", "colormap": "categorical"},
}

_KEEP: Any = object()  # set_image(target=...) not given: keep the current setting


def _non_negative_int(value: object, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_floating_point():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name}: expected an int >= 0 or None, got {value!r}")
    if value < 0:
        raise ValueError(f"{name}: expected an int >= 0 or None, got {value}")
    return value


class OcclusionMap(ZFWidget):
    """The image with the three occlusion maps of docs/method.md Sec. 3.5, Fig. 7 as heatmaps.

    Buttons switch between (a) the total activation of one feature map, (b) the probability
    of the target class and (c) the most probable class, each as a function of the position
    of the grey square. Hovering shows the square at the position under the pointer and, for
    that position, the most probable class with its probability, the target's probability
    and the activation.

    Parameters
    ----------
    model : nn.Module
        Maps (N, C, H, W) images to (N, classes) logits. Used on its own device, in eval mode
        (flags restored); never moved or modified.
    image : Tensor (C, H, W) or (1, C, H, W)
        One input, normalised as the model expects.
    window : int or (h, w), optional
        Side of the grey square; default about 1/7 of the image's shorter side.
    stride : int or (h, w), optional
        Step between square positions; default about a quarter of the window (at least 1).
    target : int, optional
        Class whose probability is mapped; default: the class predicted for each image.
    classes : list of str, optional
        One name per model output (default ``"class 0"``, ...); shown as text, never as HTML.
    mean, std : sequences of floats, optional
        The ``Normalize`` the image went through, undone to show it.
    transform : torchvision transform, optional
        Instead of ``mean``/``std``: a transform holding a ``Normalize``
        (e.g. ``weights.transforms()``).
    layer : str or nn.Module, optional
        Layer whose feature map is totalled for (a); default: the last ``nn.Conv2d``.
    channel : int, optional
        Feature map of ``layer`` for (a); default: the strongest in the unoccluded image.
    fill : float or C values, optional
        Value inside the square; default: the image's per-channel mean (the paper's grey).
    view : str
        The map shown first: ``"activation"``, ``"probability"`` or ``"top_class"``.
    opacity : float
        Opacity of the heatmap over the image, in [0, 1] (a slider in the widget).
    max_width : int
        Width in CSS pixels the image is scaled to fit.
    batch_size : int
        Occluded images per forward pass (also how often a superseded sweep checks to stop).

    Attributes
    ----------
    view : str
        The map shown (synced; the buttons set it).
    result : OcclusionResult or None
        The maps shown, as :func:`zfwidgets.engine.occlusion` returns them (``None`` while the first
        sweep runs in the background).
    busy : bool
        Whether a sweep is under way (synced; the widget shows its ``progress``).
    image : Tensor (1, C, H, W)
        The current image; assign to replace it (as :meth:`set_image`).

    Examples
    --------
    >>> import zfwidgets as zf
    >>> d = zf.load_default()
    >>> x, label = d.images[60]
    >>> occ = OcclusionMap(d.model, x, window=6, stride=2, classes=d.classes,
    ...                    mean=[d.mean], std=[d.std])
    >>> occ.view = "top_class"
    >>> sneaker = d.images[209][0]
    >>> occ.image = sneaker              # recomputes (in the background in a notebook)
    >>> cam = zf.grad_cam(d.model, sneaker[None]).upsampled[0]
    >>> occ.show_map("grad-cam", cam)    # any (h, w) map over the image as one more view

    On an ImageNet model: ``OcclusionMap(model, x, classes=weights.meta["categories"],
    transform=weights.transforms())``.
    """

    _bundle = "occlusion_map.js"

    #: {"size", "image", "window", "stride", "layer", "channel", "target", "baseline",
    #:  "rows", "cols", "activation", "probability", "top_class", "top_probability"}
    frame = t.Dict().tag(sync=True)
    classes = t.List(t.Unicode()).tag(sync=True)
    view = t.Unicode("probability").tag(sync=True)
    #: [{"name", "label", "colormap", "kind": "occlusion" | "map"}], buttons in this order
    views = t.List(t.Dict()).tag(sync=True)
    #: name -> float32 (h, w) payload of every map added by show_map
    overlays = t.Dict().tag(sync=True)
    opacity = t.Float(0.6).tag(sync=True)
    busy = t.Bool(False).tag(sync=True)
    progress = t.Float(1.0).tag(sync=True)
    caption = t.Unicode("").tag(sync=True)
    error = t.Unicode("").tag(sync=True)
    max_width = t.Int(480).tag(sync=True)

    def __init__(
        self,
        model: nn.Module,
        image: torch.Tensor,
        *,
        window: int | tuple[int, int] | None = None,
        stride: int | tuple[int, int] | None = None,
        target: int | None = None,
        classes: Sequence[str] | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        transform: Any = None,
        layer: str | nn.Module | None = None,
        channel: int | None = None,
        fill: float | Sequence[float] | torch.Tensor | None = None,
        view: str = "probability",
        opacity: float = 0.6,
        max_width: int = 480,
        batch_size: int = 64,
        **kwargs: Any,
    ) -> None:
        check_model(model)
        mean, std = display_stats(transform, mean, std)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size: expected a positive int, got {batch_size!r}")
        self._model = model
        self._mean, self._std = mean, std
        self._window, self._stride = window, stride
        self._target = _non_negative_int(target, "target")
        self._channel = _non_negative_int(channel, "channel")
        self._fill = fill
        self._batch_size = batch_size
        if layer is None:
            shape = (1, *image.shape[-3:]) if isinstance(image, torch.Tensor) else None
            self._layer = default_layer(model, shape)[0]
        else:
            self._layer = resolve_layer(model, layer)[0]
        self._result: OcclusionResult | None = None
        self._job: Job | None = None
        self._runner = Runner(
            f"zfwidgets.OcclusionMap-{id(self):x}",
            on_progress=self._on_progress,
            progress_every_s=0.2,
        )

        x, geometry, num_classes = self._check(image, self._target)
        self._x = x
        self._classes = class_names(classes, num_classes)
        views = [{"name": k, "kind": "occlusion", **v} for k, v in OCCLUSION_VIEWS.items()]
        if view not in OCCLUSION_VIEWS:
            raise ValueError(f"view: expected one of {list(OCCLUSION_VIEWS)}, got {view!r}")
        background = running_loop() is not None
        if background:
            state = {"frame": self._pending_frame(x), "busy": True, "progress": 0.0}
            caption = self._pending_caption(geometry)
        else:  # no event loop: compute now, open the comm with the full state
            result, frame = self._sweep(_shadow(model), x, geometry, self._target, None)
            self._result = result
            state = {"frame": frame, "busy": False, "progress": 1.0}
            caption = self._caption(result)
        super().__init__(
            classes=self._classes,
            views=views,
            view=view,
            opacity=opacity,
            max_width=max_width,
            caption=caption,
            **state,
            **kwargs,
        )
        if background:
            self._submit(x, geometry, self._target)

    # -- requests ------------------------------------------------------------------------------
    def _check(self, image: object, target: int | None) -> tuple[torch.Tensor, SweepGeometry, int]:
        """Every check that needs no sweep: the image, window and stride against its size, and
        one unoccluded forward for the number of classes and the layer's feature maps."""
        x = one_image(self._model, image)
        geometry = sweep_geometry(tuple(x.shape[2:]), self._window, self._stride)
        check_fill(self._fill, x)  # raises for a bad fill
        name = self._layer
        with (
            torch.no_grad(),
            eval_mode(self._model),
            capture(self._model, [name], switches=False) as cap,
        ):
            logits = check_logits(self._model(x), 1)
        out = cap.activations.get(name)
        if not isinstance(out, torch.Tensor) or out.dim() < 2 or out.shape[0] != 1:
            got = f"shape {tuple(out.shape)}" if isinstance(out, torch.Tensor) else "no tensor"
            raise ValueError(
                f"layer: expected {name!r} to output a (1, C, ...) tensor for one image, got {got}"
            )
        num_classes = logits.shape[1]
        if hasattr(self, "_classes") and num_classes != len(self._classes):
            raise ValueError(
                f"model output: expected {len(self._classes)} classes, got {num_classes}"
            )
        if target is not None and target >= num_classes:
            raise ValueError(
                f"target: the model has {num_classes} classes (0..{num_classes - 1}), got {target}"
            )
        if self._channel is not None and self._channel >= out.shape[1]:
            raise ValueError(
                f"channel: {name!r} has {out.shape[1]} feature maps (0..{out.shape[1] - 1}), "
                f"got {self._channel}"
            )
        return x, geometry, num_classes

    def _sweep(
        self,
        model: nn.Module,
        x: torch.Tensor,
        geometry: SweepGeometry,
        target: int | None,
        job: Job | None,
    ) -> tuple[OcclusionResult, dict[str, Any]]:
        """The sweep and its frame (in the runner's worker, or inline before the comm opens)."""

        def progress(done: int, total: int) -> None:
            job.forwards = done
            job.progress(done, total)

        res = occlusion(
            model,
            x,
            target=target,
            window=geometry.window,
            stride=geometry.stride,
            fill=self._fill,
            layer=self._layer,
            channel=self._channel,
            batch_size=self._batch_size,
            progress=None if job is None else progress,
        )
        return res, self._frame(x, res)

    def _submit(self, x: torch.Tensor, geometry: SweepGeometry, target: int | None) -> None:
        # Here, on the caller's (the kernel's) thread: the worker may not trace with torch.fx.
        shadow = _shadow(self._model)
        prepare(shadow)

        def work(job: Job) -> tuple[OcclusionResult, dict[str, Any]]:
            job.frame, job.forwards = None, 0
            res, frame = self._sweep(shadow, x, geometry, target, job)
            job.frame = frame
            return res, frame

        def apply(out: tuple[OcclusionResult, dict[str, Any]]) -> None:
            res, frame = out
            with self.hold_sync():
                self._result = res
                self.frame = frame
                self.caption = self._caption(res)
                self.error = ""
                self.progress = 1.0
                self.busy = False

        def error(exc: BaseException) -> None:
            with self.hold_sync():
                self.error = f"{type(exc).__name__}: {exc}"
                self.caption = ""
                self.progress = 1.0
                self.busy = False

        job = self._runner.submit(work, apply, error=error)
        self._job = job
        if job.loop is None:  # no event loop: done (or raised) when this returns
            self._runner.join()
            if job.error is not None:
                raise job.error

    def _on_progress(self, fraction: float) -> None:
        if self.busy:
            self.progress = round(min(fraction, 1.0), 3)

    # -- state sent to the front end ---------------------------------------------------------
    def _display(self, x: torch.Tensor) -> torch.Tensor:
        return to_rgba(fit_channels(display_image(x, self._mean, self._std)))[0]

    def _pending_frame(self, x: torch.Tensor) -> dict[str, Any]:
        return {"size": list(x.shape[2:]), "image": encode(self._display(x))}

    def _frame(self, x: torch.Tensor, res: OcclusionResult) -> dict[str, Any]:
        payloads = pack(  # one device-to-host copy
            {
                "image": self._display(x),
                "activation": res.activation[0],
                "probability": res.probability[0],
                "top_class": res.top_class[0],
                "top_probability": res.top_probability[0],
                "rows": res.rows,
                "cols": res.cols,
            }
        )
        return {
            "size": list(x.shape[2:]),
            "window": list(res.window),
            "stride": list(res.stride),
            "layer": res.layer,
            "channel": int(res.channel[0]),
            "target": int(res.target[0]),
            "baseline": {
                "activation": float(res.baseline_activation[0]),
                "probability": float(res.baseline_probability[0]),
                "top_class": int(res.baseline_top_class[0]),
            },
            **payloads,
        }

    @staticmethod
    def _pending_caption(g: SweepGeometry) -> str:
        return (
            f"sliding a {g.window[0]}×{g.window[1]} square, stride {g.stride[0]}: "
            f"{g.positions[0]}×{g.positions[1]} positions…"
        )

    def _caption(self, res: OcclusionResult) -> str:
        nr, nc = res.probability.shape[1:]
        target = int(res.target[0])
        return (
            f"square {res.window[0]}×{res.window[1]}, stride {res.stride[0]} · "
            f"{nr}×{nc} positions · (a) {res.layer} map {int(res.channel[0])} · "
            f"(b) {self._classes[target]}: {float(res.baseline_probability[0]):.3g} unoccluded"
        )

    # -- public API ----------------------------------------------------------------------------
    @property
    def result(self) -> OcclusionResult | None:
        """The maps shown (``None`` while the first sweep runs)."""
        return self._result

    @property
    def image(self) -> torch.Tensor:
        """The current image, (1, C, H, W) on the model's device; assign to replace it."""
        return self._x

    @image.setter
    def image(self, image: torch.Tensor) -> None:
        self.set_image(image)

    @property
    def target(self) -> int | None:
        """The class mapped in (b): an index, or ``None`` for each image's predicted class."""
        return self._target

    def set_image(self, image: torch.Tensor, *, target: int | None = _KEEP) -> None:
        """Show another image and recompute the maps (same checks as the constructor).

        With an event loop running (a Jupyter kernel) the sweep runs in the background: the
        new image shows at once, the maps when they are ready, and a newer call supersedes
        this one. Maps added with :meth:`show_map` belong to the old image and are removed.

        Parameters
        ----------
        image : Tensor (C, H, W) or (1, C, H, W)
        target : int or None, optional
            Class mapped in (b); ``None``: the predicted class. Default: keep the setting.
        """
        target = self._target if target is _KEEP else _non_negative_int(target, "target")
        x, geometry, _ = self._check(image, target)
        self._target = target
        self._x = x
        with self.hold_sync():
            self._drop_overlays()
            self.frame = self._pending_frame(x)
            self.caption = self._pending_caption(geometry)
            self.error = ""
            self.progress = 0.0
            self.busy = True
        self._submit(x, geometry, target)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the latest sweep has finished and is shown.

        Returns
        -------
        bool
            ``False`` when ``timeout`` (seconds) ran out first.
        """
        return self._runner.join(timeout)

    @property
    def _thread(self) -> Any:
        """The runner's last worker thread (None before the first background sweep)."""
        return self._runner.thread

    def show_map(
        self,
        name: str,
        values: torch.Tensor,
        *,
        label: str | None = None,
        colormap: str = "inferno",
        show: bool = True,
    ) -> None:
        """Add (or replace) a named map over the whole image as one more view (Grad-CAM, a
        saliency map, ...): cell ``[i, j]`` of an (h, w) map covers rows ``i * H / h`` to
        ``(i + 1) * H / h`` of the image, and columns likewise. NaN is transparent.

        Parameters
        ----------
        name : str
            Not one of the three occlusion views.
        values : Tensor (h, w), floating (leading dimensions of size 1 are dropped)
        label : str, optional
            Button text (default ``name``).
        colormap : {"viridis", "inferno", "gray", "jet"}
        show : bool
            Switch to the new view.
        """
        if not isinstance(name, str) or not name:
            raise ValueError(f"name: expected a non-empty str, got {name!r}")
        if name in OCCLUSION_VIEWS:
            raise ValueError(f"name: {name!r} is one of the occlusion views; pick another name")
        if colormap not in COLORMAPS:
            raise ValueError(f"colormap: expected one of {list(COLORMAPS)}, got {colormap!r}")
        if not isinstance(values, torch.Tensor) or not values.is_floating_point():
            raise TypeError(
                f"values: expected a floating-point torch.Tensor of shape (h, w), got "
                f"{getattr(values, 'dtype', type(values).__name__)}"
            )
        v = values.detach()
        while v.dim() > 2 and v.shape[0] == 1:
            v = v[0]
        if v.dim() != 2 or v.numel() == 0:
            raise ValueError(f"values: expected an (h, w) map, got shape {tuple(values.shape)}")
        if bool(torch.isinf(v).any()):
            raise ValueError("values: expected finite values (NaN for none), got infinities")
        entry = {
            "name": name,
            "label": str(name if label is None else label),
            "colormap": colormap,
            "kind": "map",
        }
        with self.hold_sync():
            self.overlays = {**self.overlays, name: encode(v.float())}
            self.views = [w for w in self.views if w["name"] != name] + [entry]
            if show:
                self.view = name

    def remove_map(self, name: str) -> None:
        """Remove a view added by :meth:`show_map`."""
        if name not in self.overlays:
            raise ValueError(f"name: no map {name!r}; maps: {list(self.overlays)}")
        with self.hold_sync():
            if self.view == name:
                self.view = "probability"
            self.overlays = {k: v for k, v in self.overlays.items() if k != name}
            self.views = [w for w in self.views if w["name"] != name]

    def _drop_overlays(self) -> None:
        if self.overlays:
            if self.view not in OCCLUSION_VIEWS:
                self.view = "probability"
            self.overlays = {}
            self.views = [w for w in self.views if w["name"] in OCCLUSION_VIEWS]

    # -- trait validation ----------------------------------------------------------------------
    @t.validate("view")
    def _validate_view(self, proposal: dict) -> str:
        v = proposal["value"]
        names = [w["name"] for w in self.views] or list(OCCLUSION_VIEWS)
        if v not in names:
            raise t.TraitError(f"view: expected one of {names}, got {v!r}")
        return v

    @t.validate("opacity")
    def _validate_opacity(self, proposal: dict) -> float:
        v = proposal["value"]
        if not 0.0 <= v <= 1.0:
            raise t.TraitError(f"opacity: expected a value in [0, 1], got {v}")
        return v
