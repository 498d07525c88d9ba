"""The result of :func:`zfwidgets.mine`: top-k hits per feature map, their crops, and the files
it is kept in (no pickle anywhere).

``atlas.save("atlas/")`` writes a directory: a JSON manifest, the hits as safetensors, and,
after :meth:`Atlas.render`, every unit's patches and reconstructions as one uint8 PNG/WebP
sprite per unit, read lazily when shown (see :mod:`zfwidgets.atlas.store` for the layout).
``atlas.save("atlas.safetensors")`` writes the older single file.

This module holds the hits and their crops; the files are written and read by
:mod:`zfwidgets.atlas.formats`, the tiles rendered by :mod:`zfwidgets.atlas.render`, the static
site written by :mod:`zfwidgets.atlas.site` (the methods here delegate to them).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..base.progress import ProgressArg, check_progress
from . import formats
from . import store as st
from .crops import crop, hit_units
from .render import check_render_args, render_layers

__all__ = ["Atlas"]


@dataclass
class Atlas:
    """Top-k activations per feature map (docs/method.md Sec. 3.1, Fig. 2), strongest first.

    Attributes
    ----------
    values[layer] : (C, k) float — each hit's spatial maximum
    indices[layer] : (C, k) long — dataset index of each hit
    positions[layer] : (C, k, 2) long — ``(y, x)`` of the maximum in the layer's output
    fields[layer] : ReceptiveField — maps positions to input boxes (see :meth:`field`)
    provenance : dict — where the hits came from (JSON types only), written to the manifest:
        ``{"data": {"n": int, "fingerprint": str}, "model": {"class": str, "structure": str,
        "parameters": str}, "skipped": [...]}`` as :func:`zfwidgets.mine` fills it
    path : the directory (or file) the atlas was saved to or loaded from, else None
    """

    layers: list[str]
    k: int
    values: dict[str, torch.Tensor]
    indices: dict[str, torch.Tensor]
    positions: dict[str, torch.Tensor]
    fields: dict[str, Any]
    input_size: tuple[int, int]
    model: nn.Module | None = field(default=None, repr=False)
    source: Any = field(default=None, repr=False)
    spatial: dict[str, bool] = field(default_factory=dict)
    _cache: dict = field(default_factory=dict, repr=False)
    provenance: dict = field(default_factory=dict)
    _store: Any = field(default=None, repr=False)

    # -- geometry ----------------------------------------------------------------------------
    def field(self, layer: str):
        """The receptive field of ``layer`` at the atlas's input size (computed once)."""
        if layer not in self.fields:
            self._need_data("field")
            from ..engine.receptive import receptive_field

            self.fields[layer] = receptive_field(self.model, layer, input_size=self.input_size)
        return self.fields[layer]

    def _check(self, layer: str, channel: int | None) -> None:
        if layer not in self.values:
            raise ValueError(f"layer: {layer!r} is not in this atlas; it holds {self.layers}")
        if channel is not None:
            C = self.values[layer].shape[0]
            if isinstance(channel, bool) or not isinstance(channel, int) or not 0 <= channel < C:
                raise ValueError(
                    f"channel: expected an int in [0, {C}) for layer {layer!r}, got {channel!r}"
                )

    def crop_size(self, layer: str) -> tuple[int, int]:
        """(h, w) of every patch of ``layer``: the receptive field, at most the image size."""
        rf = self.field(layer)
        return tuple(min(r, s) for r, s in zip(rf.size, self.input_size))

    def corners(self, layer: str, channel: int) -> list[tuple[int, int]]:
        """Top-left corner (may be negative) of each hit's crop, centred on its receptive field."""
        rf = self.field(layer)
        h, w = self.crop_size(layer)
        out = []
        for y, x in self.positions[layer][channel].tolist():
            if rf.is_global:
                out.append((0, 0))
                continue
            top = rf.offset[0] + y * rf.stride[0] + (rf.size[0] - h) // 2
            left = rf.offset[1] + x * rf.stride[1] + (rf.size[1] - w) // 2
            out.append((top, left))
        return out

    def _need_data(self, what: str) -> None:
        if self.model is None or self.source is None:
            raise RuntimeError(
                f"{what}: this atlas has no model/data attached and no stored images; "
                "load it with Atlas.load(path, model=model, data=data)"
            )

    def _images(self, layer: str, channel: int) -> torch.Tensor:
        from ..base.checks import model_device

        idx = self.indices[layer][channel].tolist()
        return self.source.stack(idx).to(model_device(self.model))

    # -- Fig. 2 crops -------------------------------------------------------------------------
    def patches(self, layer: str, channel: int) -> torch.Tensor:
        """(k, C, h, w) crops of the input images around each hit's receptive field.

        Cut from the data when it is attached. An atlas loaded without data returns its stored
        tiles instead: float32 decoded from uint8 on the CPU, mapped back through the display
        normalisation when it can be inverted (``mean``/``std`` given to :meth:`render`), so up
        to quantisation (and clipping) they are the model-input crops; (k, C', h', w') with
        the tile's size and 1 or 3 channels.
        """
        self._check(layer, channel)
        key = ("patches", layer)
        if key in self._cache:
            return self._cache[key][channel]
        if self.source is None and self.has_images(layer):
            return self._stored(layer, channel, "patches")
        self._need_data("patches")
        return crop(
            self._images(layer, channel), self.corners(layer, channel), self.crop_size(layer)
        )

    def reconstructions(
        self, layer: str, channel: int | None = None, *, rule: str = "deconv", batch_size: int = 32
    ) -> torch.Tensor:
        """(k, C, h, w) deconvnet projections of the hits, cropped like :meth:`patches`.

        With ``channel=None``: (C_layer, k, C, h, w) for every feature map, computed in one
        batched pass (the units share images where hits coincide) and cached.

        When the layer has stored tiles of this ``rule`` (:meth:`render`), they are read from
        disk instead of computed: float32 on the CPU, decoded from uint8 and scaled so that
        the peak absolute value of each projection is 1 (the display's contrast
        normalisation undone up to that scale), with the tile's size and 1 or 3 channels.
        """
        self._check(layer, channel)
        key = ("reconstructions", layer, rule)
        if key in self._cache:
            full = self._cache[key]
            return full if channel is None else full[channel]
        if channel is not None and (key, channel) in self._cache:
            return self._cache[(key, channel)]
        if self.has_images(layer, rule=rule):
            if channel is None:
                C = self.values[layer].shape[0]
                return torch.stack([self._stored(layer, c, "reconstructions") for c in range(C)])
            return self._stored(layer, channel, "reconstructions")
        self._need_data("reconstructions")
        from ..base.checks import model_device
        from ..engine.backprop import backprop

        channels = range(self.values[layer].shape[0]) if channel is None else [channel]
        wanted, _, units = hit_units(
            self.indices[layer],
            self.positions[layer],
            channels,
            spatial=self.spatial.get(layer, True),
        )
        images = self.source.stack(wanted).to(model_device(self.model))
        recon = backprop(
            self.model, images, layer=layer, units=units, rule=rule, batch_size=batch_size
        )
        size = self.crop_size(layer)
        crops = []
        for j, c in enumerate(channels):
            block = recon[j * self.k : (j + 1) * self.k]
            crops.append(crop(block, self.corners(layer, c), size))
        out = torch.stack(crops)
        if channel is None:
            self._cache[key] = out
            return out
        self._cache[(key, channel)] = out[0]
        return out[0]

    # -- sharing -------------------------------------------------------------------------------
    def attached(self, model: nn.Module, source: Any = None) -> Atlas:
        """A copy of this atlas that computes its crops with ``model`` (and reads images from
        ``source`` when given, else this atlas's). The hits are shared; the copy has its own
        cache, starting with the crops already cached here. This atlas is not changed."""
        return dataclasses.replace(
            self,
            model=model,
            source=self.source if source is None else source,
            fields=dict(self.fields),
            _cache=dict(self._cache),
        )

    def forget_reconstructions(self, keep: int = 0) -> None:
        """Drop the per-channel reconstructions cached by :meth:`reconstructions`, all but the
        ``keep`` most recent (crops stored with the atlas and whole-layer results stay)."""
        keys = [
            key
            for key in self._cache
            if isinstance(key, tuple) and len(key) == 2 and isinstance(key[0], tuple)
        ]
        for key in keys[: max(0, len(keys) - keep)]:
            del self._cache[key]

    # -- stored images -------------------------------------------------------------------------
    @property
    def path(self) -> Path | None:
        """The directory (or single file) this atlas was saved to or loaded from; else None."""
        return None if self._store is None else self._store.root

    def has_images(self, layer: str, *, rule: str | None = None) -> bool:
        """Whether ``layer`` has rendered tiles on disk (of ``rule``, when given)."""
        store = self._store
        if store is None or store.kind != "dir" or layer not in store.images:
            return False
        rec = store.images[layer]
        return rec is not None and (rule is None or rec.rule == rule)

    def unit_images(self, layer: str, channel: int) -> st.UnitImages:
        """One unit's stored sprite, read from disk now (nothing is kept in memory).

        Returns
        -------
        UnitImages
            ``.data`` the PNG/WebP bytes (what a browser shows), ``.mime``, ``.layout``
            (where each hit's tile lies), ``.display`` (the normalisation of each block),
            ``.reconstructions`` and ``.patches`` as uint8 arrays (k, h, w, 3) or (k, h, w).
        """
        self._check(layer, channel)
        if not self.has_images(layer):
            raise ValueError(
                f"layer {layer!r} has no stored images; save the atlas to a directory and call "
                "atlas.render() (or load one that was rendered)"
            )
        from ..base.codec import IMAGE_FORMATS

        rec = self._store.images[layer]
        return st.UnitImages(
            layer=layer,
            channel=channel,
            data=self._store.read(layer, channel),
            mime=IMAGE_FORMATS[rec.format],
            layout=rec.layout,
            display=rec.display,
            mode=rec.mode,
        )

    def image_file(self, layer: str, channel: int) -> Path:
        """The path of one unit's sprite (for a static page that links to the files)."""
        self._check(layer, channel)
        if not self.has_images(layer):
            raise ValueError(f"layer {layer!r} has no stored images")
        return self._store.file(layer, channel)

    def _stored(self, layer: str, channel: int, block: str) -> torch.Tensor:
        u = self.unit_images(layer, channel)
        arr = u.reconstructions if block == "reconstructions" else u.patches
        t = torch.from_numpy(arr).float() / 255
        if t.dim() == 3:
            t = t.unsqueeze(-1)
        t = t.permute(0, 3, 1, 2).contiguous()
        disp = u.display[block]
        if disp["kind"] == "contrast" and disp["mode"] == "symmetric":
            t = t * 2 - 1
        elif disp["kind"] == "unnormalize" and len(disp["mean"]) in (1, t.shape[1]):
            mean = torch.tensor(disp["mean"]).reshape(-1, 1, 1)
            std = torch.tensor(disp["std"]).reshape(-1, 1, 1)
            t = (t - mean) / std
        return t

    # -- files ---------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike, *, images: bool = False, rule: str = "deconv") -> None:
        """Write the atlas (no pickle anywhere).

        Parameters
        ----------
        path : str or PathLike
            A directory (created if needed): ``manifest.json`` (format, layers, k, input size,
            receptive fields, provenance, tile records), the hits as safetensors, and the tiles
            that :meth:`render` writes. Tiles already rendered for the same hits are kept (or
            copied from the atlas's previous directory). Each file is written atomically
            (temporary file + rename): a crash never leaves a half manifest.
            A path ending in ``.safetensors`` (or an existing file): the single-file format.
        images : bool
            Directory: also :meth:`render` every layer's tiles (``rule``). Single file: store
            every patch and reconstruction as float16 tensors (large: prefer a directory).
        """
        p = Path(os.fspath(path))
        if p.suffix == ".safetensors" or p.is_file():
            self._store = formats.save_file(self, p, images=images, rule=rule)
            return
        self._store = formats.save_dir(self, p, self._store)
        if images:
            self.render(rule=rule)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike,
        *,
        model: nn.Module | None = None,
        data: Any = None,
        transform=None,
    ) -> Atlas:
        """Read an atlas written by :meth:`save` (a directory or a single ``.safetensors``).

        A directory opens lazily: the manifest and the hits are read now, each unit's images
        only when asked for (:meth:`unit_images`, :meth:`patches`, :meth:`reconstructions`).
        Everything is validated first (manifest types, lengths and ranges; tensor shapes and
        dtypes from the safetensors headers; indices in range of the data, positions inside
        each layer's output): a damaged or hostile file raises ``ValueError`` naming the field
        and never makes the loader allocate more than its own size.

        Parameters
        ----------
        model, data : optional
            Attach them to compute crops, reconstructions, or :meth:`render` tiles.
            ``data`` must have as many images as the atlas was mined over (when recorded).
        transform : callable, optional
            Applied to PIL images (as in :func:`zfwidgets.mine`).
        """
        from ..base.source import ImageSource

        p = Path(os.fspath(path))
        source = None if data is None else ImageSource(data, transform=transform)
        if p.is_dir():
            stored = formats.load_dir(p, source=source)
        elif p.is_file():
            stored = formats.load_file(p, source=source)
        else:
            raise FileNotFoundError(f"atlas: no file or directory at {os.fspath(p)!r}")
        return cls(
            **stored.arguments,
            model=model,
            source=source,
            _cache=stored.cache,
            _store=stored.store,
        )

    # -- rendering ------------------------------------------------------------------------------
    def render(
        self,
        layers: list[str] | str | None = None,
        *,
        rule: str = "deconv",
        batch_size: int = 64,
        device: torch.device | str | None = None,
        progress: ProgressArg = True,
        format: str = "webp",
        quality: int = 85,
        mean=None,
        std=None,
        max_tile: int | None = None,
    ) -> None:
        """Render every unit's k patches and k reconstructions into the atlas directory.

        docs/method.md Sec. 3.1, Fig. 2: each hit's deconvnet projection and image patch,
        cropped to the unit's receptive field. The projections run in batched
        receptive-field-crop passes (:func:`zfwidgets.engine.backprop.backprop`) on ``device``; each unit becomes one
        sprite file (reconstructions left, patches right, see
        :class:`zfwidgets.atlas.store.SpriteLayout`), encoded off the device thread.

        Resumable per layer: a layer whose tiles are complete with the same settings is
        skipped; an interrupted layer continues from the units already written. The manifest
        names a layer's tiles only once all of them are on disk.

        Under ``torchrun`` (an initialised default process group) it is a collective, like
        :func:`zfwidgets.mine`: call it on every rank, each with this atlas saved to (or loaded
        from) the same directory; the units are split over the ranks and the files are the
        same bytes as one process's.

        Parameters
        ----------
        layers : name or list of names, optional
            Default: every layer of the atlas.
        rule : "deconv" | "guided" | "saliency"
        batch_size : int
            Receptive-field crops per forward/backward pass.
        device : optional
            Where to compute (default: the model's device). A model elsewhere is copied
            there; the model itself is never moved.
        progress : bool or callable
            ``True``: a tqdm bar over units; a callable ``progress(done, total)`` may raise
            (e.g. :class:`zfwidgets.base.progress.Cancelled`) to stop; finished units are kept.
        format : {"webp", "png"}
            WebP (lossy, ``quality``) keeps a full AlexNet atlas far below 150 MB; PNG is
            lossless and several times larger.
        quality : int
            WebP quality, 1-100.
        mean, std : sequences of floats, optional
            The data's ``Normalize``: patches are shown as ``x * std + mean``. Without them:
            the ``Normalize`` found in the data's transform (the ``transform=`` given to
            :meth:`load`, or the dataset's ``transform``) or a dataset's own ``mean``/``std``
            (the command line's image folders); else images already in [0, 1] (judged from one
            hit) are shown as they are, others min-max scaled per patch. Reconstructions are contrast-normalised per hit
            (``0.5 + x / (2 max|x|)``). The manifest records both.
        max_tile : int, optional
            Shrink tiles larger than this (either side) by area averaging.
        """
        store = self._store
        if store is None or store.kind != "dir":
            raise RuntimeError(
                "render: this atlas has no directory to render into; save it first with "
                "atlas.save('atlas/') (or load one with Atlas.load('atlas/', model=..., data=...))"
            )
        self._need_data("render")
        check_render_args(
            rule=rule, format=format, quality=quality, batch_size=batch_size, max_tile=max_tile
        )
        progress = check_progress(progress)
        if layers is None:
            names = list(self.layers)
        else:
            names = [layers] if isinstance(layers, str) else list(layers)
            for n in names:
                self._check(n, None)
        render_layers(
            self,
            store,
            names,
            rule=rule,
            batch_size=batch_size,
            device=device,
            progress=progress,
            format=format,
            quality=quality,
            mean=mean,
            std=std,
            max_tile=max_tile,
        )

    # -- sharing outside Python -----------------------------------------------------------------
    def export_site(
        self,
        path: str | os.PathLike,
        *,
        classes: list[str] | None = None,
        labels: list[int] | None = None,
        title: str | None = None,
        link: bool = True,
        render: bool = True,
        progress: ProgressArg = True,
        mean=None,
        std=None,
    ):
        """Write a static site of this atlas to ``path``: it opens in any browser, from
        ``file://`` or a web server, with no kernel.

        Works on any atlas: a folder whose layers are all rendered is linked as it is; any
        other atlas (just mined, loaded from a single file, not rendered) is stored in the
        site's ``atlas/`` and rendered there with the attached model and data
        (``progress``, ``mean``, ``std`` as :meth:`render`). Keyword arguments and the
        returned report as :func:`zfwidgets.atlas.site.export_site`.
        """
        from .site import export_site

        return export_site(
            self,
            path,
            classes=classes,
            labels=labels,
            title=title,
            link=link,
            render=render,
            progress=progress,
            mean=mean,
            std=std,
        )

    def __repr__(self) -> str:
        shapes = ", ".join(f"{n}: {tuple(self.values[n].shape[:1])}" for n in self.layers)
        return f"Atlas(k={self.k}, input_size={self.input_size}, layers={{{shapes}}})"
