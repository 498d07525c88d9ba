"""LayerGrid: every feature map of a layer for one image, colour-mapped, on one canvas.

docs/method.md Sec. 2-3: the feature maps of each layer are what the deconvnet projects back; the
grid is where a unit is picked. The activations of every map layer come from one forward
pass through :func:`zfwidgets.engine.capture` (kept on the model's device); a layer switch
colour-maps and tiles one layer into one uint8 atlas (:func:`zfwidgets.base.images.feature_atlas`)
and sends it with the per-map maxima in one transfer (:func:`zfwidgets.base.codec.pack`).
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Any

import torch
import traitlets as t
from torch import nn

from ..base.checks import check_model
from ..base.codec import decode, encode, pack
from ..base.images import (
    COLORMAPS,
    display_image,
    display_stats,
    feature_atlas,
    fit_channels,
    mean_std_of,
    to_rgba,
)
from ..base.layers import MAP_TYPES, eval_mode, map_layers, module_tree_copy, resolve_layer
from ..engine.capture import capture
from ..engine.probe import one_image as _as_image
from ._base import ZFWidget
from ._jobs import Job, Runner

__all__ = ["MAP_TYPES", "LayerGrid", "display_stats", "map_layers", "mean_std_of"]

_SCALES = ("map", "layer")


def _capture_maps(
    model: nn.Module, x: torch.Tensor, names: Sequence[str]
) -> dict[str, torch.Tensor]:
    """The (C, H, W) outputs of ``names`` for image ``x`` (1, C, H, W), from one forward pass.
    Layers whose output is not (1, C, H, W) are left out."""
    with torch.no_grad(), eval_mode(model), capture(model, list(names), switches=False) as cap:
        model(x)
    out = {}
    for name in names:
        a = cap.activations.get(name)
        if isinstance(a, torch.Tensor) and a.dim() == 4 and a.shape[0] == 1:
            out[name] = a[0]
    return out


class LayerGrid(ZFWidget):
    """Every feature map of one layer for one image, colour-mapped in a grid.

    Hover a map for its channel index and maximum; click to select it (``channel``); pick
    another layer from the menu (or set ``layer``) to redraw. docs/method.md Sec. 2-3.

    Parameters
    ----------
    model : nn.Module
        Used as is, on its device; it is run once per image in eval mode (flags restored).
    image : Tensor (C, H, W) or (1, C, H, W)
        One input, normalised as the model expects.
    layer : str or nn.Module, optional
        Dotted ``named_modules()`` name of a conv / rectifier / pooling layer; default: the
        first ``nn.Conv2d``.
    transform : torchvision transform, optional
        The transform the image went through (e.g. ``weights.transforms()``); its
        ``Normalize(mean, std)`` is undone to show the image.
    mean, std : sequences of floats, optional
        Instead of ``transform``.
    columns : int, optional
        Columns of the grid; default about 16:10.
    colormap : {"viridis", "inferno", "gray", "jet"}
    scale : {"map", "layer"}
        Colour range per map, or one for the whole layer.
    max_tile : int or None
        Maps larger than this are shrunk (area averaging) before they are sent.
    layers : list of str, optional
        The layers offered in the menu; default: every conv / rectifier / pooling layer
        whose output is a feature map for this image.
    max_width : int
        Width in CSS pixels the grid is scaled to fit.
    cache_bytes : int
        The activations of every offered layer are kept (one forward per image) when they
        take at most this many bytes; otherwise each layer switch runs the model again.

    Attributes
    ----------
    layer : str
        The layer shown (synced; set it to switch).
    channel : int or None
        The selected map (synced; the front end sets it on click).
    layers : list of str
        The layers offered.

    Examples
    --------
    >>> import zfwidgets as zf
    >>> d = zf.load_default()
    >>> x, label = d.images[0]
    >>> grid = LayerGrid(d.model, x, "features.4", mean=[d.mean], std=[d.std])
    >>> grid.observe(lambda change: print("selected map", change.new), "channel")
    >>> grid.channel = 3
    selected map 3
    >>> grid.layer = "features.8"                  # another layer: the selection is cleared
    selected map None

    On an ImageNet model, ``LayerGrid(model, x, "features.3", transform=weights.transforms())``
    undoes the transform's ``Normalize`` to show the image.
    """

    _bundle = "layer_grid.js"

    layers = t.List(t.Unicode()).tag(sync=True)
    layer = t.Unicode("").tag(sync=True)
    channel = t.Int(None, allow_none=True).tag(sync=True)
    colormap = t.Unicode("viridis").tag(sync=True)
    colormaps = t.List(t.Unicode(), default_value=list(COLORMAPS)).tag(sync=True)
    scale = t.Unicode("map").tag(sync=True)
    #: {"layer", "shape", "grid", "atlas": payload, "maxima": payload, "colormap", "scale"}
    frame = t.Dict().tag(sync=True)
    #: the input image as an RGBA payload
    thumbnail = t.Dict().tag(sync=True)
    caption = t.Unicode("").tag(sync=True)
    error = t.Unicode("").tag(sync=True)
    max_width = t.Int(720).tag(sync=True)

    def __init__(
        self,
        model: nn.Module,
        image: torch.Tensor,
        layer: str | nn.Module | None = None,
        *,
        transform: Any = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        columns: int | None = None,
        colormap: str = "viridis",
        scale: str = "map",
        max_tile: int | None = 64,
        layers: Sequence[str | nn.Module] | None = None,
        max_width: int = 720,
        cache_bytes: int = 256 * 2**20,
        **kwargs: Any,
    ) -> None:
        check_model(model)
        mean, std = display_stats(transform, mean, std)
        if columns is not None and (
            isinstance(columns, bool) or not isinstance(columns, int) or columns < 1
        ):
            raise ValueError(f"columns: expected a positive int or None, got {columns!r}")
        if max_tile is not None and (
            isinstance(max_tile, bool) or not isinstance(max_tile, int) or max_tile < 1
        ):
            raise ValueError(f"max_tile: expected a positive int or None, got {max_tile!r}")
        self._model = model
        self._mean, self._std = mean, std
        self._columns = columns
        self._max_tile = max_tile
        self._cache_bytes = int(cache_bytes)
        if layers is None:
            self._candidates = map_layers(model)
        else:
            self._candidates = [resolve_layer(model, layer)[0] for layer in layers]
        self._ready = False
        self._wanted: torch.Tensor | None = None
        self._runner = Runner(f"zfwidgets.LayerGrid-{id(self):x}")
        x = _as_image(model, image)
        acts = self._compute_maps(model, x)
        self._commit_image(x, acts)
        self._wanted = x
        if layer is None:
            convs = [n for n in self._offered_names if isinstance(self._module(n), nn.Conv2d)]
            layer = convs[0] if convs else self._offered_names[0]
        elif isinstance(layer, nn.Module):
            layer = resolve_layer(model, layer)[0]
        layer = self._check_name(layer)
        colormap = self._check_colormap(colormap)
        scale = self._check_scale(scale)
        frame, self._maxima = self._frame(model, x, acts, layer, colormap, scale)
        # Everything is computed before the comm opens, so the front end gets one full state.
        super().__init__(
            layers=list(self._offered_names),
            layer=layer,
            colormap=colormap,
            scale=scale,
            frame=frame,
            thumbnail=self._thumbnail(x),
            caption=self._caption(frame, None),
            max_width=max_width,
            **kwargs,
        )
        self._ready = True

    # -- plain-Python compute (no front end needed) ------------------------------------------
    def _module(self, name: str) -> nn.Module:
        return dict(self._model.named_modules())[name]

    def _compute_maps(self, model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Run the model once on ``x``; the maps of every candidate layer (checked)."""
        acts = _capture_maps(model, x, self._candidates)
        if not acts:
            raise ValueError(
                f"model: none of the layers {self._candidates[:8]} of {type(self._model).__name__} "
                f"gives (1, C, H, W) feature maps for an image of shape {tuple(x.shape)}"
            )
        return acts

    def _commit_image(self, x: torch.Tensor, acts: dict[str, torch.Tensor]) -> None:
        self._image = x
        size = sum(a.numel() * a.element_size() for a in acts.values())
        self._acts = acts if size <= self._cache_bytes else {}
        self._offered_names = list(acts)

    def maps(self, layer: str | None = None) -> torch.Tensor:
        """The (C, H, W) activations of ``layer`` (default: the current one) for the image,
        on the model's device."""
        name = self._check_name(layer if layer is not None else self.layer)
        if name in self._acts:
            return self._acts[name]
        return _capture_maps(self._model, self._image, [name])[name]

    def set_image(self, image: torch.Tensor) -> None:
        """Show another image (same checks as the constructor); redraws the grid.

        In a kernel the forward pass runs off the kernel thread and the grid changes when it is
        done (a newer request wins); without an event loop it is done when this returns.
        """
        x = _as_image(self._model, image)
        self._request(x=x, keep_channel=True)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the latest request is drawn; False when ``timeout`` ran out first."""
        return self._runner.join(timeout)

    def _request(self, *, x: torch.Tensor | None = None, keep_channel: bool) -> None:
        """Draw ``layer`` / ``colormap`` / ``scale`` as they are now, for ``x`` (a new image)
        or the current one, through the widget's job runner."""
        new_image = x is not None
        x = self._wanted if x is None else x
        self._wanted = x
        layer, colormap, scale = self.layer, self.colormap, self.scale
        acts, cached_for = self._acts, self._image

        def work(job: Job) -> dict[str, Any]:
            model = module_tree_copy(self._model)
            if cached_for is x:
                maps, offered = acts, self._offered_names
            else:
                maps = self._compute_maps(model, x)
                offered = list(maps)
            name = layer if layer in offered else offered[0]
            frame, maxima = self._frame(model, x, maps, name, colormap, scale)
            return {
                "x": x,
                "acts": None if cached_for is x else maps,
                "layer": name,
                "frame": frame,
                "maxima": maxima,
                "thumbnail": self._thumbnail(x) if new_image else None,
            }

        def apply(out: dict[str, Any]) -> None:
            with self.hold_sync():
                if out["acts"] is not None:
                    self._commit_image(out["x"], out["acts"])
                self._ready = False
                try:
                    self.layers = list(self._offered_names)
                    if self.layer != out["layer"]:
                        self.layer = out["layer"]
                    frame = out["frame"]
                    count = frame["grid"]["count"]
                    if not keep_channel or (self.channel is not None and self.channel >= count):
                        self.channel = None
                finally:
                    self._ready = True
                self._maxima = out["maxima"]
                if out["thumbnail"] is not None:
                    self.thumbnail = out["thumbnail"]
                self.frame = frame
                self.error = ""
                self.caption = self._caption(frame, self.channel)

        def error(exc: BaseException) -> None:
            self.error = f"{type(exc).__name__}: {exc}"

        self._runner.submit(work, apply, error=error, wait=True)

    def _check_name(self, name: object) -> str:
        if not isinstance(name, str):
            raise TypeError(
                f"layer: expected a dotted module name (str), got {type(name).__name__}"
            )
        offered = self._offered_names
        if name in offered:
            return name
        close = difflib.get_close_matches(name, offered, n=5, cutoff=0.5)
        hint = f"; close matches: {', '.join(repr(c) for c in close)}" if close else ""
        some = ", ".join(repr(n) for n in offered[:10]) + (", ..." if len(offered) > 10 else "")
        modules = dict(self._model.named_modules())
        if name in modules and name:
            what = (
                f"layer: {name!r} ({type(modules[name]).__name__}) gives no (1, C, H, W) "
                "feature maps"
            )
        else:
            what = f"layer: no feature-map layer named {name!r} in {type(self._model).__name__}"
        raise ValueError(f"{what}{hint} (layers with feature maps: {some})")

    @staticmethod
    def _check_colormap(name: object) -> str:
        if name not in COLORMAPS:
            raise ValueError(f"colormap: expected one of {list(COLORMAPS)}, got {name!r}")
        return str(name)

    @staticmethod
    def _check_scale(scale: object) -> str:
        if scale not in _SCALES:
            raise ValueError(f"scale: expected one of {list(_SCALES)}, got {scale!r}")
        return str(scale)

    def _frame(
        self,
        model: nn.Module,
        x: torch.Tensor,
        acts: dict[str, torch.Tensor],
        layer: str,
        colormap: str,
        scale: str,
    ) -> tuple[dict[str, Any], Any]:
        """The state the front end draws (one atlas and the maxima, packed in one transfer),
        and the maxima as a host array for captions."""
        maps = acts[layer] if layer in acts else _capture_maps(model, x, [layer])[layer]
        fa = feature_atlas(
            maps, cmap=colormap, scale=scale, columns=self._columns, max_tile=self._max_tile
        )
        payloads = pack({"atlas": fa.image, "maxima": fa.maxima})  # one device-to-host copy
        frame = {
            "layer": layer,
            "shape": list(maps.shape),
            "grid": fa.layout.to_json(),
            "colormap": colormap,
            "scale": scale,
            **payloads,
        }
        return frame, decode(payloads["maxima"])

    def _thumbnail(self, x: torch.Tensor) -> dict[str, Any]:
        return encode(to_rgba(fit_channels(display_image(x, self._mean, self._std)))[0])

    def _caption(self, frame: dict[str, Any], channel: int | None) -> str:
        c, h, w = frame["shape"]
        layer = frame["layer"]
        if channel is None:
            return f"{layer} · {c} maps of {h}×{w} · hover for values, click to select"
        return f"{layer} · channel {channel} · max {float(self._maxima[channel]):.4g}"

    # -- trait validation and observers ------------------------------------------------------
    @t.validate("layer")
    def _validate_layer(self, proposal: dict) -> str:
        return self._check_name(proposal["value"])

    @t.validate("colormap")
    def _validate_colormap(self, proposal: dict) -> str:
        return self._check_colormap(proposal["value"])

    @t.validate("scale")
    def _validate_scale(self, proposal: dict) -> str:
        return self._check_scale(proposal["value"])

    @t.validate("channel")
    def _validate_channel(self, proposal: dict) -> int | None:
        c = proposal["value"]
        if c is None or not self.frame:
            return c
        count = self.frame["grid"]["count"]
        if not 0 <= c < count:
            raise t.TraitError(f"channel: expected an int in [0, {count}) or None, got {c}")
        return c

    @t.observe("layer")
    def _on_layer(self, change: dict) -> None:
        if self._ready:
            self._request(keep_channel=False)

    @t.observe("colormap", "scale")
    def _on_style(self, change: dict) -> None:
        if self._ready:
            self._request(keep_channel=True)

    @t.observe("channel")
    def _on_channel(self, change: dict) -> None:
        if self._ready:
            self.caption = self._caption(self.frame, self.channel)
