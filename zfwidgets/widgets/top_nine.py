"""TopNine: the 9 strongest activations of one feature map over a dataset, as the paper's
Fig. 2 shows them: the deconvnet projections in a 3x3 block beside the image patches.

docs/method.md Sec. 3.1, Fig. 2. The hits come from :func:`zfwidgets.mine` (run lazily, once per
checkpoint, for every offered layer in one pass over the data) or from a given
:class:`~zfwidgets.Atlas`; the crops from :meth:`Atlas.patches` and
:meth:`Atlas.reconstructions`. Each update sends one uint8 atlas (both blocks) with the
values and dataset indices of the hits in one transfer (:func:`zfwidgets.base.codec.pack`).

The model work goes through the widget's job runner (:mod:`zfwidgets.widgets._jobs`), on a
private copy of the model's module tree, so the kernel stays free for the front end (which
shows ``status`` and ``progress``) and for the user's own cells; a newer request (layer,
channel, checkpoint) supersedes an older one: its result is not sent, and mining for a
checkpoint no longer wanted stops at the next batch (``zf.mine(..., progress=)`` raises
``Cancelled``). Where no event loop runs (scripts, tests), :meth:`TopNine.wait` applies the
result.

Who owns what: the traits, the checkpoints and the mined atlases (``_atlases``) belong to the
kernel thread; a request hands the worker what it needs (the atlas when mined, the checkpoint's
weights), and the worker returns the frame and what it mined, which the callback on the kernel
thread stores. The private module tree and the weights it holds belong to the worker. No lock.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import traitlets as t
from torch import nn

from ..atlas.core import Atlas
from ..atlas.mining import mine
from ..base.checkpoints import check_state_dict, parse_checkpoints
from ..base.checks import check_model, check_positive_int, model_device
from ..base.classes import count_classes, find_labels, label_names
from ..base.codec import decode, pack
from ..base.images import contrast_normalize, display_image, mean_std_of, pair_atlas
from ..base.layers import module_tree_copy, resolve_layer
from ..base.source import ImageSource
from ..engine.probe import check_images, layer_shapes
from ._base import ZFWidget
from ._jobs import Job, Runner

__all__ = ["TopNine"]

#: Per-channel reconstructions an atlas keeps cached (each (k, C, h, w) float32).
_KEEP_RECONSTRUCTIONS = 48


class LayerError(t.TraitError, ValueError):
    """An unknown or unusable layer (a ``ValueError`` that traitlets rolls back)."""


@dataclass(frozen=True)
class _LayerInfo:
    channels: int
    spatial: bool


@dataclass(frozen=True)
class _Request:
    """What one job needs, read on the kernel thread when it is asked for."""

    checkpoint: int | None
    layer: str
    channel: int
    #: which weights and data the hits depend on (``TopNine._weights``)
    weights: tuple
    #: the checkpoint's state dict (None: the model's own weights)
    state: Mapping[str, Any] | None
    #: the hits of ``layer`` under these weights, when already mined
    atlas: Atlas | None
    #: the layers to mine in one pass when ``atlas`` is None
    layers: tuple[str, ...]
    checkpoint_label: str | None


def _check_arguments(
    data: Any,
    atlas: Atlas | None,
    k: int | None,
    transform: Callable | None,
    mean: Sequence[float] | float | None,
    std: Sequence[float] | float | None,
) -> tuple[int, Any, Any]:
    """Check what needs no model run; return ``k`` and the display ``mean``, ``std``."""
    if data is None and atlas is None:
        raise ValueError("give data= (images to mine) or atlas= (from zf.mine / Atlas.load)")
    if atlas is not None and not isinstance(atlas, Atlas):
        raise TypeError(f"atlas: expected a zfwidgets Atlas, got {type(atlas).__name__}")
    if (mean is None) != (std is None):
        raise ValueError("mean and std: give both or neither")
    if mean is None and transform is not None:
        # no Normalize: patches are shown as they are (or min-max per image)
        with contextlib.suppress(ValueError):
            mean, std = mean_std_of(transform)
    if k is None:
        k = atlas.k if atlas is not None else 9
    k = check_positive_int(k, "k")
    if atlas is not None and k != atlas.k:
        raise ValueError(f"k: the atlas holds {atlas.k} hits per map, got k={k}")
    return k, mean, std


def _private_tree(model: nn.Module) -> nn.Module:
    """The module tree every background computation runs on: copied modules sharing the
    model's weights (:func:`~zfwidgets.base.layers.module_tree_copy`), so hooks and checkpoint
    weights put on it never reach the model."""
    tree = module_tree_copy(model)
    if tree is model:
        raise TypeError(
            f"model: TopNine works on a private copy of the model's module tree, and "
            f"copy.deepcopy({type(model).__name__}) failed"
        )
    return tree


def _weights_like(state: Mapping[str, Any], reference: Mapping[str, torch.Tensor]) -> dict:
    """``state`` on the device and in the dtype of the model's own tensors (no copy when they
    already are)."""
    return {
        key: value.detach().to(device=reference[key].device, dtype=reference[key].dtype)
        for key, value in state.items()
    }


class TopNine(ZFWidget):
    """The top-k hits of one feature map: deconvnet projections beside image patches.

    docs/method.md Sec. 3.1, Fig. 2: for a feature map, the 9 strongest activations over a dataset
    (each image counted once, at its spatial maximum), projected to pixel space by the
    deconvnet and cropped to the unit's receptive field (contrast-normalised per image, as in
    the paper), beside the same crops of the input images, with each hit's activation and
    class. Linked to an :class:`EvolutionSlider`, it shows each checkpoint's hits (Fig. 4).

    Parameters
    ----------
    model : nn.Module
        Used through a private copy of its module tree (``module_tree_copy``: the modules
        are copied, the weights shared), on the model's device; the model's own modules are
        never run in the background, and checkpoint weights go into the copy only.
    data : Tensor (N, C, H, W), Dataset, DataLoader, or list of tensors / PIL images, optional
        The images to mine, normalised as the model expects (or made so by ``transform``).
        Datasets may return ``(image, label)``; a DataLoader must not shuffle.
    layer : str or nn.Module
        Dotted ``named_modules()`` name of the layer (keyword-only, required).
    channel : int
        The feature map shown first.
    atlas : Atlas, optional
        Hits already mined (``zf.mine(...)`` or ``Atlas.load(...)``); then ``data`` is only
        needed for layers or checkpoints the atlas lacks.
    k : int, optional
        Hits per feature map (default 9, or the atlas's k).
    transform : callable, optional
        Applied to each item of a Dataset or list (e.g. ``weights.transforms()``); its
        ``Normalize(mean, std)`` is undone to show the patches.
    mean, std : sequences of floats, optional
        Instead of (or besides) ``transform``, to show the patches un-normalised.
    classes : list of str, optional
        Class names by label (default: ``data.classes`` when the dataset has them).
    labels : sequence of ints, optional
        The label of each image (default: ``data.targets``, else the second element of each
        dataset item).
    layers : list of str, optional
        The layers offered in the menu and mined together (default: every ``nn.Conv2d``,
        or the atlas's layers, plus ``layer``).
    batch_size : int
        Images per forward pass while mining.
    max_tile : int
        Crops larger than this (either side) are shrunk (area averaging) before sending.
    max_width : int
        Width in CSS pixels the two blocks are scaled to fit.

    Attributes
    ----------
    layer, channel : synced; set them (or :meth:`show`) to switch, from Python, the front end
        or another widget.
    selected : int or None
        Dataset index of the image whose patch was clicked last (synced).
    checkpoint : int or None
        Index of the checkpoint shown (set by :class:`EvolutionSlider`); None: the model's
        own weights.
    status : {"mining", "computing", "ready", "error"}
    progress : float
        Fraction of the images mined so far (while ``status == "mining"``).
    frame : dict
        What the front end draws: ``atlas`` (uint8 (H, W, 4): reconstructions | patches),
        ``values`` (float32 (k,)), ``indices`` (int32 (k,)) payloads, ``grid``, ``classes``
        (the class name of each hit), ``top_classes`` (``[name, count]`` pairs: which classes
        the unit serves, over all ``counted`` hits of the atlas, most frequent first).

    Examples
    --------
    >>> import zfwidgets as zf
    >>> from zfwidgets.widgets import EvolutionSlider
    >>> d = zf.load_default()
    >>> top = TopNine(d.model, d.images, layer="features.12", channel=4, classes=d.classes,
    ...               atlas=zf.load_default_atlas(d), mean=[d.mean], std=[d.std])
    >>> top.channel = 12                                  # redraws
    >>> top.observe(lambda c: print("open image", c.new), "selected")
    >>> _ = EvolutionSlider(d.checkpoints).link(top)      # Fig. 4

    On an ImageNet model: ``TopNine(model, val_images, layer="features.10", channel=37,
    transform=weights.transforms(), classes=weights.meta["categories"])``.
    """

    _bundle = "top_nine.js"
    #: Seconds between two ``progress`` updates while mining.
    _progress_every_s: float = 0.1

    layers = t.List(t.Unicode()).tag(sync=True)
    layer = t.Unicode("").tag(sync=True)
    channel = t.Int(0).tag(sync=True)
    channels = t.Int(0).tag(sync=True)
    k = t.Int(9).tag(sync=True)
    checkpoint = t.Int(None, allow_none=True).tag(sync=True)
    checkpoint_labels = t.List(t.Unicode()).tag(sync=True)
    selected = t.Int(None, allow_none=True).tag(sync=True)
    status = t.Unicode("mining").tag(sync=True)
    progress = t.Float(0.0).tag(sync=True)
    #: {"layer", "channel", "checkpoint", "k", "grid", "crop", "classes", "atlas", "values",
    #:  "indices", "top_classes", "counted"}; see the class docstring
    frame = t.Dict().tag(sync=True)
    caption = t.Unicode("").tag(sync=True)
    error = t.Unicode("").tag(sync=True)
    max_width = t.Int(640).tag(sync=True)

    def __init__(
        self,
        model: nn.Module,
        data: Any = None,
        *,
        layer: str | nn.Module,
        channel: int = 0,
        atlas: Atlas | None = None,
        k: int | None = None,
        transform: Callable | None = None,
        mean: Sequence[float] | float | None = None,
        std: Sequence[float] | float | None = None,
        classes: Sequence[str] | None = None,
        labels: Sequence[int] | torch.Tensor | None = None,
        layers: Sequence[str | nn.Module] | None = None,
        batch_size: int = 32,
        max_tile: int = 96,
        max_width: int = 640,
        **kwargs: Any,
    ) -> None:
        check_model(model)
        k, mean, std = _check_arguments(data, atlas, k, transform, mean, std)
        self._batch_size = check_positive_int(batch_size, "batch_size")
        self._max_tile = check_positive_int(max_tile, "max_tile")
        self._model = model
        self._k = k
        self._mean, self._std = mean, std
        self._open_data(data, atlas, transform)
        self._found = find_labels(self._data, classes=classes, labels=labels, n=self._n)
        name, offered = self._offer_layers(layer, layers, atlas)
        channels = self._check_channel(name, channel)

        self._shadow = _private_tree(model)  # the worker's; see the module docstring
        self._loaded: Mapping[str, Any] | None = None  # weights the copy holds (None: own)
        # the worker's too: the last hits it mined, for the job that superseded theirs
        self._handoff: tuple[tuple, tuple[str, ...], Atlas] | None = None
        self._checkpoints: list[Any] = []
        self._atlases: dict[int | None, dict[str, Atlas]] = {}
        if atlas is not None:
            self._adopt(atlas, name, channel)
        self._runner = Runner(
            f"zfwidgets.TopNine-{id(self):x}",
            on_progress=self._on_progress,
            progress_every_s=self._progress_every_s,
        )
        self._shown: tuple | None = None
        self._shown_status = "ready"
        self._serial = 0  # bumped by refresh(): every hit is stale
        self._checkpoint_set = 0  # bumped by set_checkpoints(): their hits are stale
        self._quiet = 0
        self._ready = False
        needs_mining = name not in self._atlases.get(None, {})
        super().__init__(
            layers=offered,
            layer=name,
            channel=channel,
            channels=channels,
            k=k,
            status="mining" if needs_mining else "computing",
            progress=0.0,
            caption=self._caption(name, channel, None),  # uses self._k
            max_width=max_width,
            **kwargs,
        )
        self._ready = True
        self._request()

    # -- construction: each step checks its arguments before any work --------------------------
    def _open_data(self, data: Any, atlas: Atlas | None, transform: Callable | None) -> None:
        """The images to mine and crop: ``data``, else the atlas's own (checked now: empty,
        wrong type; not in the thread)."""
        self._source: ImageSource | None = None
        if data is not None:
            self._source = ImageSource(data, transform=transform, batch_size=self._batch_size)
        elif atlas.source is not None:
            self._source = atlas.source
            loader = atlas.source.loader
            data = loader if loader is not None else atlas.source.items
            transform = atlas.source.transform
        self._data = data  # what mining reads (None: only the atlas)
        self._transform = transform
        self._n = len(self._source) if self._source is not None else None
        if self._n is not None and self._k > self._n:
            raise ValueError(
                f"k: expected at most the dataset size ({self._n} images), got k={self._k}"
            )

    def _offer_layers(
        self,
        layer: str | nn.Module,
        layers: Sequence[str | nn.Module] | None,
        atlas: Atlas | None,
    ) -> tuple[str, list[str]]:
        """The layer shown first and the layers offered (each with a channel count, from the
        atlas or probed), in ``named_modules()`` order."""
        model = self._model
        self._order = {n: i for i, (n, _) in enumerate(model.named_modules())}
        name, _ = resolve_layer(model, layer)
        self._info: dict[str, _LayerInfo] = {}
        if atlas is not None:
            for n in atlas.layers:
                v = atlas.values[n]
                self._info[n] = _LayerInfo(int(v.shape[0]), bool(atlas.spatial.get(n, True)))
        if layers is not None:
            offered = [resolve_layer(model, m)[0] for m in layers]
        elif atlas is not None:
            offered = list(atlas.layers)
        else:
            offered = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
        wanted = list(dict.fromkeys([*offered, name]))
        if self._source is None:
            missing = [n for n in wanted if n not in self._info]
            if missing:
                raise ValueError(
                    f"layer: {missing[0]!r} is not in the atlas, which holds {atlas.layers}; "
                    "pass data= to mine other layers"
                )
        self._probe([n for n in wanted if n not in self._info])
        if name not in self._info:
            raise ValueError(
                f"layer: {name!r} ({type(dict(model.named_modules())[name]).__name__}) gives "
                "no (N, C, H, W) or (N, C) output to mine"
            )
        return name, self._sorted([n for n in wanted if n in self._info])

    def _check_channel(self, name: str, channel: object) -> int:
        """``channel`` checked against the layer's channel count; the count."""
        channels = self._info[name].channels
        if isinstance(channel, bool) or not isinstance(channel, int):
            raise TypeError(f"channel: expected an int, got {type(channel).__name__}")
        if not 0 <= channel < channels:
            raise ValueError(
                f"channel: expected an int in [0, {channels}) for layer {name!r}, got {channel}"
            )
        return channels

    def _adopt(self, atlas: Atlas, name: str, channel: int) -> None:
        """Use the hits of a given atlas for the model's own weights, on the private copy."""
        private = atlas.attached(self._shadow, self._source)
        self._atlases[None] = {n: private for n in atlas.layers}
        if self._source is None:
            try:
                private.patches(name, channel)
            except RuntimeError as exc:
                raise ValueError(
                    "atlas: it has no images to crop patches from; pass data= or load it "
                    "with Atlas.load(path, model=model, data=data)"
                ) from exc

    # -- layers --------------------------------------------------------------------------------
    def _sorted(self, names: Sequence[str]) -> list[str]:
        return sorted(names, key=lambda n: self._order.get(n, len(self._order)))

    def _probe(self, names: Sequence[str]) -> None:
        """Channel count of each layer from the output shapes for the first image
        (:func:`~zfwidgets.engine.probe.layer_shapes`: a shape-only pass, on the calling
        thread)."""
        if not names or self._source is None:
            return
        x = self._source.first().unsqueeze(0).to(model_device(self._model))
        x = check_images(self._model, x, name="data[0]")
        for n, shape in layer_shapes(self._model, x, names).items():
            if len(shape) in (2, 4) and shape[1] > 0:
                self._info[n] = _LayerInfo(int(shape[1]), len(shape) == 4)

    def _layer_info(self, name: object) -> _LayerInfo:
        if not isinstance(name, str):
            raise t.TraitError(f"layer: expected a dotted module name (str), got {name!r}")
        if name in self._info:
            return self._info[name]
        name, module = resolve_layer(self._model, name)  # ValueError listing close names
        if self._source is None:
            raise ValueError(
                f"layer: {name!r} is not in the atlas ({', '.join(self.layers)}) and there is "
                "no data to mine it"
            )
        self._probe([name])
        if name not in self._info:
            raise ValueError(
                f"layer: {name!r} ({type(module).__name__}) gives no (N, C, H, W) or (N, C) "
                "output to mine"
            )
        return self._info[name]

    # -- public API ----------------------------------------------------------------------------
    def show(self, layer: str | nn.Module | None = None, channel: int | None = None) -> None:
        """Switch layer and channel together (one redraw); ``channel`` defaults to 0 when
        the layer changes, else to the current one."""
        if isinstance(layer, nn.Module):
            layer = resolve_layer(self._model, layer)[0]
        with self.hold_trait_notifications():
            if layer is not None and layer != self.layer:
                self.layer = layer
                if channel is None:
                    channel = 0
            if channel is not None:
                self.channel = channel

    def set_checkpoints(
        self, checkpoints: Sequence[Any], labels: Sequence[str] | None = None
    ) -> None:
        """Use these checkpoints (normally called by :meth:`EvolutionSlider.link`).

        Each is checked against the model now (``ValueError`` naming missing / unexpected /
        mis-shaped keys); each is mined the first time it is shown, on the private copy.
        """
        states, names = parse_checkpoints(checkpoints, labels)
        reference = self._model.state_dict()
        for i, sd in enumerate(states):
            check_state_dict(
                reference, sd, f"checkpoints[{i}]", f"the model ({type(self._model).__name__})"
            )
        if self._source is None:
            raise ValueError(
                "checkpoints: each checkpoint is mined over the data, and this TopNine has "
                "none; build it with data="
            )
        self._checkpoints = states
        for key in [key for key in self._atlases if key is not None]:
            del self._atlases[key]
        self._checkpoint_set += 1  # hits of the old checkpoints are never handed on
        self._quiet += 1
        try:
            self.checkpoint_labels = names
            if self.checkpoint is not None and self.checkpoint >= len(states):
                self.checkpoint = len(states) - 1
        finally:
            self._quiet -= 1
        if self.checkpoint is not None:  # what is shown came from the old checkpoints
            self._request()

    def refresh(self) -> None:
        """Forget every mined hit and crop (e.g. after training the model further) and mine
        again."""
        self._atlases = {}
        self._serial += 1
        self._request()

    def wait(self, timeout: float | None = 120.0) -> TopNine:
        """Block until the pending work is done (for scripts and tests; a notebook never
        needs it).

        Raises
        ------
        TimeoutError
            When the work takes longer than ``timeout`` seconds.
        RuntimeError
            When the last computation failed (its message is also in ``error``).
        """
        if not self._runner.join(timeout):
            raise TimeoutError(f"TopNine: still {self.status} after {timeout} s")
        if self.status == "error":
            raise RuntimeError(self.error)
        return self

    @property
    def atlas(self) -> Atlas | None:
        """The hits behind the frame shown (None before the first frame)."""
        f = self.frame
        if not f:
            return None
        return self._atlases.get(f["checkpoint"], {}).get(f["layer"])

    @property
    def values(self) -> np.ndarray | None:
        """(k,) activations of the hits shown, strongest first."""
        return decode(self.frame["values"]) if self.frame else None

    @property
    def indices(self) -> np.ndarray | None:
        """(k,) dataset indices of the hits shown."""
        return decode(self.frame["indices"]) if self.frame else None

    # -- traits --------------------------------------------------------------------------------
    @t.validate("layer")
    def _validate_layer(self, proposal: dict) -> str:
        value = proposal["value"]
        try:
            self._layer_info(value)
            return resolve_layer(self._model, value)[0]
        except ValueError as exc:  # a TraitError too, so a held change is rolled back
            raise LayerError(str(exc)) from exc

    @t.validate("channel")
    def _validate_channel(self, proposal: dict) -> int:
        c = proposal["value"]
        if not self.layer:
            return c
        n = self._layer_info(self.layer).channels
        if not 0 <= c < n:
            raise t.TraitError(f"channel: expected an int in [0, {n}) for {self.layer!r}, got {c}")
        return c

    @t.validate("checkpoint")
    def _validate_checkpoint(self, proposal: dict) -> int | None:
        i = proposal["value"]
        n = len(self._checkpoints)
        if i is not None and not 0 <= i < n:
            raise t.TraitError(
                f"checkpoint: expected None or an int in [0, {n}), got {i}"
                + ("" if n else " (no checkpoints: link an EvolutionSlider)")
            )
        return i

    @t.validate("selected")
    def _validate_selected(self, proposal: dict) -> int | None:
        i = proposal["value"]
        if i is not None and (i < 0 or (self._n is not None and i >= self._n)):
            raise t.TraitError(
                f"selected: expected None or an image index in [0, {self._n}), got {i}"
            )
        return i

    @t.observe("layer")
    def _on_layer(self, change: dict) -> None:
        if not self._ready:
            return
        name = change["new"]
        info = self._layer_info(name)
        self._quiet += 1
        try:
            if name not in self.layers:
                self.layers = self._sorted([*self.layers, name])
            self.channels = info.channels
            if self.channel >= info.channels:
                self.channel = 0
        finally:
            self._quiet -= 1
        self._request()

    @t.observe("channel", "checkpoint")
    def _on_target(self, change: dict) -> None:
        self._request()

    # -- the work, through the job runner ------------------------------------------------------
    def _weights(self, checkpoint: int | None) -> tuple:
        """Which weights and data the hits of ``checkpoint`` depend on now."""
        return (checkpoint, self._serial, None if checkpoint is None else self._checkpoint_set)

    def _key(self) -> tuple:
        return (self.layer, self.channel, self._weights(self.checkpoint))

    def _request(self) -> None:
        """Ask for the frame of the current (checkpoint, layer, channel); supersedes any
        earlier request. Mining under way goes on when the new request needs the same
        checkpoint's hits; its frame is not sent."""
        if not self._ready or self._quiet or self._runner.closed:
            return
        key = self._key()
        if key == self._shown:  # back to the frame shown: drop what was asked since
            self._runner.supersede()
            if self.status != self._shown_status and self.frame:
                self.status = self._shown_status
            return
        layer, channel, weights = key
        checkpoint = weights[0]
        mined = self._atlases.get(checkpoint, {})
        request = _Request(
            checkpoint=checkpoint,
            layer=layer,
            channel=channel,
            weights=weights,
            state=None if checkpoint is None else self._checkpoints[checkpoint],
            atlas=mined.get(layer),
            layers=tuple(n for n in dict.fromkeys([*self.layers, layer]) if n not in mined),
            checkpoint_label=None if checkpoint is None else self.checkpoint_labels[checkpoint],
        )
        self.status = "computing" if request.atlas is not None else "mining"
        if request.atlas is None:
            self.progress = 0.0

        def apply(result: tuple[dict[str, Any], tuple[str, ...], Atlas | None]) -> None:
            frame, names, atlas = result
            if atlas is not None and weights == self._weights(checkpoint):
                store = self._atlases.setdefault(checkpoint, {})
                for n in names:
                    store.setdefault(n, atlas)
            self._shown, self._shown_status = key, "ready"
            with self.hold_sync():
                self.frame = frame
                self.caption = self._caption(frame["layer"], frame["channel"], checkpoint)
                self.error = ""
                self.progress = 1.0
                self.status = "ready"

        def error(exc: BaseException) -> None:
            self._shown, self._shown_status = key, "error"
            with self.hold_sync():
                self.error = f"{type(exc).__name__}: {exc}"
                self.status = "error"

        self._runner.submit(
            lambda job: self._work(request, job), apply, error=error, key=request.weights
        )

    def _on_progress(self, fraction: float) -> None:
        if self.status == "mining":
            self.progress = fraction

    def _set_status(self, status: str) -> None:
        self.status = status

    # -- the worker's side: nothing here sets a trait or touches the kernel's state -----------
    def _work(
        self, request: _Request, job: Job
    ) -> tuple[dict[str, Any], tuple[str, ...], Atlas | None]:
        """The frame of ``request``, and the hits mined for it (layer names and the atlas;
        ``()`` and None when it came with its atlas)."""
        names: tuple[str, ...] = ()
        atlas = request.atlas
        if atlas is None:
            names, atlas = self._mined(request, job)
        job.check()
        job.post(self._set_status, "computing")
        return self._frame(request, atlas), names, atlas

    def _load_weights(self, state: Mapping[str, Any] | None) -> None:
        """Give the private copy the weights of a checkpoint's ``state`` (None: the model's
        own, shared). Checkpoint tensors replace the copy's parameters (``assign``): nothing
        is written into the model's."""
        if state is self._loaded:
            return
        if state is None:
            weights = self._model.state_dict(keep_vars=True)
        else:
            weights = _weights_like(state, self._model.state_dict())
        self._shadow.load_state_dict(weights, strict=True, assign=True)
        self._loaded = state

    def _mined(self, request: _Request, job: Job) -> tuple[tuple[str, ...], Atlas]:
        """Mine ``request.layers`` in one pass over the data, or take the hits that a job
        superseded by this one (same weights, see ``Runner.submit(key=)``) mined to the end."""
        handoff = self._handoff
        if handoff is not None and handoff[0] == request.weights and request.layer in handoff[1]:
            return handoff[1], handoff[2]
        if self._source is None:
            raise RuntimeError(f"layer {request.layer!r}: no data to mine")
        self._load_weights(request.state)
        data = self._data
        tensor = isinstance(data, torch.Tensor)
        atlas = mine(
            self._shadow,
            data,
            layers=list(request.layers),
            k=self._k,
            batch_size=self._batch_size,
            transform=None if tensor else self._transform,
            progress=job.progress,
        )
        atlas.source = self._source  # one reader of the data for every crop
        self._handoff = (request.weights, request.layers, atlas)
        return request.layers, atlas

    def _frame(self, request: _Request, atlas: Atlas) -> dict[str, Any]:
        layer, channel = request.layer, request.channel
        self._load_weights(request.state)
        recon = atlas.reconstructions(layer, channel)  # (k, C, h, w), ZF deconvnet
        atlas.forget_reconstructions(keep=_KEEP_RECONSTRUCTIONS)
        patches = atlas.patches(layer, channel)
        # fewer than the atlas's k when its tiles hold only the top few (render(top=...))
        k = min(recon.shape[0], patches.shape[0])
        recon, patches = recon[:k], patches[:k]
        pair = pair_atlas(
            contrast_normalize(recon, "symmetric"),
            display_image(patches, self._mean, self._std),
            pad=1,
            max_tile=self._max_tile,
        )
        image, layout = pair.image, pair.layout
        every = [int(i) for i in atlas.indices[layer][channel].tolist()]
        labels, names = self._hit_classes(atlas, layer, channel, every)
        indices = atlas.indices[layer][channel][:k]
        payloads = pack(
            {
                "atlas": image,
                "values": atlas.values[layer][channel][:k].float(),
                "indices": indices.to(torch.int32),
            }
        )
        crop = list(atlas.crop_size(layer))
        return {
            "layer": layer,
            "channel": channel,
            "checkpoint": request.checkpoint,
            "checkpoint_label": request.checkpoint_label,
            "k": k,
            "grid": {
                "count": k,
                "columns": layout.columns,
                "rows": layout.rows,
                "tile": [layout.tile_h, layout.tile_w],
                "pad": layout.pad,
                "gap": pair.gap,
                "width": int(image.shape[1]),
                "height": int(image.shape[0]),
            },
            "crop": crop,
            "classes": label_names(labels[:k], names),
            # which classes the unit serves: all of its hits counted, strongest class first
            "top_classes": [[n, c] for n, c in count_classes(labels, names)],
            "counted": len(every),
            **payloads,
        }

    def _hit_classes(
        self, atlas: Atlas, layer: str, channel: int, indices: list[int]
    ) -> tuple[list[int | None], list[str] | None]:
        """The label of each hit of the unit and the class names: from ``labels=`` /
        ``classes=`` or the data (:func:`~zfwidgets.base.classes.find_labels`), else as stored
        with the atlas (:meth:`Atlas.hit_labels`, :meth:`Atlas.class_names`)."""
        labels = self._found.labels_of(indices)
        names = self._found.classes
        if all(y is None for y in labels):
            stored = atlas.labels.get(layer)  # read nothing more from the data
            if stored is not None:
                labels = [y if y >= 0 else None for y in stored[channel].tolist()]
                names = names if names is not None else atlas.class_names()
        return labels, names

    def _caption(self, layer: str, channel: int, checkpoint: int | None) -> str:
        n = self._info[layer].channels if layer in self._info else "?"
        of = f" of {self._n} images" if self._n is not None else ""
        text = f"{layer} · feature map {channel} / {n} · top {self._k}{of}"
        if checkpoint is not None and checkpoint < len(self.checkpoint_labels):
            text += f" · {self.checkpoint_labels[checkpoint]}"
        return text
