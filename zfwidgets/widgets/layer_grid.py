"""LayerGrid: every feature map of a layer for one image, colour-mapped, on one canvas.

docs/method.md Sec. 2-3: the feature maps of each layer are what the deconvnet projects back; the
grid is where a unit is picked. The activations of every map layer come from one forward
pass through :func:`zfwidgets.capture` (kept on the model's device); a layer switch
colour-maps and tiles one layer into one uint8 atlas (:func:`zfwidgets.images.feature_atlas`)
and sends it with the per-map maxima in one transfer (:func:`zfwidgets.codec.pack`).
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Any

import torch
import traitlets as t
from torch import nn

from .._checks import check_images, check_model, model_device, resolve_layer
from ..capture import capture, eval_mode
from ..codec import decode, encode, pack
from ..images import COLORMAPS, display_image, feature_atlas, to_rgba
from ._base import ZFWidget

__all__ = ["MAP_TYPES", "LayerGrid", "display_stats", "map_layers"]

#: Module types whose outputs are offered as feature maps (when they are (1, C, H, W)).
MAP_TYPES: tuple[type[nn.Module], ...] = (
    nn.Conv2d,
    nn.ConvTranspose2d,
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.ELU,
    nn.GELU,
    nn.SiLU,
    nn.Hardswish,
    nn.MaxPool2d,
    nn.AvgPool2d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
    nn.LocalResponseNorm,
    nn.BatchNorm2d,
)

_SCALES = ("map", "layer")


def map_layers(model: nn.Module) -> list[str]:
    """Dotted names of the modules of ``model`` that may produce feature maps (conv, rectifier,
    pooling, normalisation), in ``named_modules()`` order."""
    return [n for n, m in model.named_modules() if n and isinstance(m, MAP_TYPES)]


def mean_std_of(transform: Any) -> tuple[Any, Any]:
    """``(mean, std)`` of the ``Normalize`` inside a torchvision transform (a ``Normalize``,
    a ``Compose`` holding one, or ``weights.transforms()``)."""
    mean, std = getattr(transform, "mean", None), getattr(transform, "std", None)
    if mean is not None and std is not None:
        return mean, std
    for inner in getattr(transform, "transforms", None) or []:
        try:
            return mean_std_of(inner)
        except ValueError:
            continue
    raise ValueError(
        f"transform: found no Normalize(mean, std) in {type(transform).__name__}; "
        "pass mean= and std= instead"
    )


def display_stats(transform: Any, mean: Any, std: Any) -> tuple[Any, Any]:
    """The ``(mean, std)`` to undo for display: from ``transform``'s ``Normalize`` or given
    directly (not both); ``(None, None)`` when neither is given."""
    if transform is not None:
        if mean is not None or std is not None:
            raise ValueError("give transform= or mean=/std=, not both")
        mean, std = mean_std_of(transform)
    if (mean is None) != (std is None):
        raise ValueError("mean and std: give both or neither")
    return mean, std


def _as_image(model: nn.Module, image: object) -> torch.Tensor:
    """One image as a (1, C, H, W) tensor on the model's device (a copy only if moved)."""
    if not isinstance(image, torch.Tensor):
        raise TypeError(
            f"image: expected a torch.Tensor of shape (C, H, W) or (1, C, H, W), "
            f"got {type(image).__name__}"
        )
    if image.dim() == 3:
        image = image.unsqueeze(0)
    elif image.dim() != 4 or image.shape[0] != 1:
        raise ValueError(
            f"image: expected one image of shape (C, H, W) or (1, C, H, W), got shape "
            f"{tuple(image.shape)}"
            + (" (a batch: pass one image, e.g. x[0])" if image.dim() == 4 else "")
        )
    x = image.detach().to(model_device(model))
    return check_images(model, x, name="image")


def _capture_maps(
    model: nn.Module, x: torch.Tensor, names: Sequence[str]
) -> dict[str, torch.Tensor]:
    """The (C, H, W) outputs of ``names`` for image ``x`` (1, C, H, W), from one forward pass.
    Layers whose output is not (1, C, H, W) are left out."""
    with torch.no_grad(), eval_mode(model), capture(model, list(names), switches=False) as cap:
        model(x)
    out = {}
    for name in names:
        a = dict.get(cap.activations, name)
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
    >>> grid = LayerGrid(model, x, "features.3", transform=weights.transforms())
    >>> grid.observe(lambda change: print(change.new), "channel")
    >>> grid.layer = "features.6"
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
        self._acts: dict[str, torch.Tensor] = {}
        self._offered_names: list[str] = []
        self._load_image(image)
        if layer is None:
            convs = [n for n in self._offered_names if isinstance(self._module(n), nn.Conv2d)]
            layer = convs[0] if convs else self._offered_names[0]
        elif isinstance(layer, nn.Module):
            layer = resolve_layer(model, layer)[0]
        layer = self._check_name(layer)
        colormap = self._check_colormap(colormap)
        scale = self._check_scale(scale)
        frame = self._frame(layer, colormap, scale)
        # Everything is computed before the comm opens, so the front end gets one full state.
        super().__init__(
            layers=list(self._offered_names),
            layer=layer,
            colormap=colormap,
            scale=scale,
            frame=frame,
            thumbnail=self._thumbnail(),
            caption=self._caption(frame, None),
            max_width=max_width,
            **kwargs,
        )
        self._ready = True

    # -- plain-Python compute (no front end needed) ------------------------------------------
    def _module(self, name: str) -> nn.Module:
        return dict(self._model.named_modules())[name]

    def _load_image(self, image: torch.Tensor) -> None:
        """Check ``image``, run the model once, keep the maps and the offered layer names."""
        x = _as_image(self._model, image)
        acts = _capture_maps(self._model, x, self._candidates)
        if not acts:
            raise ValueError(
                f"model: none of the layers {self._candidates[:8]} of {type(self._model).__name__} "
                f"gives (1, C, H, W) feature maps for an image of shape {tuple(x.shape)}"
            )
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
        """Show another image (same checks as the constructor); redraws the grid."""
        self._load_image(image)
        with self.hold_sync():
            self._ready = False
            try:
                self.layers = list(self._offered_names)
                if self.layer not in self._offered_names:
                    self.layer = self._offered_names[0]
            finally:
                self._ready = True
            self.thumbnail = self._thumbnail()
            self._redraw(keep_channel=True)

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

    def _frame(self, layer: str, colormap: str, scale: str) -> dict[str, Any]:
        """The state the front end draws: one atlas and the maxima, packed in one transfer."""
        maps = self.maps(layer)
        fa = feature_atlas(
            maps, cmap=colormap, scale=scale, columns=self._columns, max_tile=self._max_tile
        )
        payloads = pack({"atlas": fa.image, "maxima": fa.maxima})  # one device-to-host copy
        self._maxima = decode(payloads["maxima"])  # host view, for captions
        return {
            "layer": layer,
            "shape": list(maps.shape),
            "grid": fa.layout.to_json(),
            "colormap": colormap,
            "scale": scale,
            **payloads,
        }

    def _thumbnail(self) -> dict[str, Any]:
        img = display_image(self._image, self._mean, self._std)
        if img.shape[1] not in (1, 3):
            img = img.mean(1, keepdim=True)
        return encode(to_rgba(img)[0])

    def _caption(self, frame: dict[str, Any], channel: int | None) -> str:
        c, h, w = frame["shape"]
        layer = frame["layer"]
        if channel is None:
            return f"{layer} · {c} maps of {h}×{w} · hover for values, click to select"
        return f"{layer} · channel {channel} · max {float(self._maxima[channel]):.4g}"

    def _redraw(self, keep_channel: bool) -> None:
        try:
            frame = self._frame(self.layer, self.colormap, self.scale)
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            raise
        with self.hold_sync():
            count = frame["grid"]["count"]
            if not keep_channel or (self.channel is not None and self.channel >= count):
                self._ready = False
                try:
                    self.channel = None
                finally:
                    self._ready = True
            self.frame = frame
            self.error = ""
            self.caption = self._caption(frame, self.channel)

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
            self._redraw(keep_channel=False)

    @t.observe("colormap", "scale")
    def _on_style(self, change: dict) -> None:
        if self._ready:
            self._redraw(keep_channel=True)

    @t.observe("channel")
    def _on_channel(self, change: dict) -> None:
        if self._ready:
            self.caption = self._caption(self.frame, self.channel)
