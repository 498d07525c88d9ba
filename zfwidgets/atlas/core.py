"""The result of :func:`zfwidgets.mine`: top-k hits per feature map, their crops, and the files
it is kept in (no pickle anywhere).

``atlas.save("atlas/")`` writes a directory: a JSON manifest, the hits as safetensors, and,
after :meth:`Atlas.render`, every unit's patches and reconstructions as one uint8 PNG/WebP
sprite per unit, read lazily when shown (see :mod:`zfwidgets.atlas.store` for the layout).
``atlas.save("atlas.safetensors")`` writes the older single file.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..base.progress import Progress, ProgressArg, check_progress
from . import store as st

__all__ = ["Atlas"]

_FORMAT = st.FORMAT_FILE


def _crop(
    images: torch.Tensor,
    boxes: list[tuple[int, int]],
    size: tuple[int, int],
    which: list[int] | None = None,
) -> torch.Tensor:
    """Crop (N, C, H, W) at top-left corners ``boxes`` (may lie outside the image) to ``size``,
    zero-padding what falls outside; crop ``i`` comes from image ``which[i]`` (default ``i``).
    Returns (len(boxes), C, h, w)."""
    _, C, H, W = images.shape
    h, w = size
    out = images.new_zeros((len(boxes), C, h, w))
    for i, (top, left) in enumerate(boxes):
        n = i if which is None else which[i]
        t0, l0 = max(top, 0), max(left, 0)
        t1, l1 = min(top + h, H), min(left + w, W)
        if t1 > t0 and l1 > l0:
            out[i, :, t0 - top : t1 - top, l0 - left : l1 - left] = images[n, :, t0:t1, l0:l1]
    return out


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
        return _crop(
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
        from ..engine.backprop import backprop

        channels = range(self.values[layer].shape[0]) if channel is None else [channel]
        idx = self.indices[layer][list(channels)].cpu()  # (c, k)
        uniq, inverse = torch.unique(idx.flatten(), return_inverse=True)
        from ..base.checks import model_device

        images = self.source.stack(uniq.tolist()).to(model_device(self.model))
        pos = self.positions[layer][list(channels)].cpu().reshape(-1, 2)
        chan = torch.tensor(list(channels)).repeat_interleave(self.k)
        if self.spatial.get(layer, True):
            units = torch.stack([inverse, chan, pos[:, 0], pos[:, 1]], 1)
        else:
            units = torch.stack([inverse, chan], 1)
        recon = backprop(
            self.model, images, layer=layer, units=units, rule=rule, batch_size=batch_size
        )
        size = self.crop_size(layer)
        crops = []
        for j, c in enumerate(channels):
            block = recon[j * self.k : (j + 1) * self.k]
            crops.append(_crop(block, self.corners(layer, c), size))
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
            self._save_file(p, images=images, rule=rule)
            return
        self._save_dir(p)
        if images:
            self.render(rule=rule)

    def _save_file(self, path: Path, *, images: bool, rule: str) -> None:
        from safetensors.torch import save_file

        tensors: dict[str, torch.Tensor] = {}
        for i, layer in enumerate(self.layers):
            tensors[f"{i}.values"] = self.values[layer].detach().float().cpu().contiguous()
            tensors[f"{i}.indices"] = self.indices[layer].cpu().contiguous()
            tensors[f"{i}.positions"] = self.positions[layer].cpu().contiguous()
            if images:
                C = self.values[layer].shape[0]
                tensors[f"{i}.patches"] = (
                    torch.stack([self.patches(layer, c) for c in range(C)])
                    .half()
                    .cpu()
                    .contiguous()
                )
                tensors[f"{i}.reconstructions"] = (
                    self.reconstructions(layer, rule=rule).half().cpu().contiguous()
                )
        meta = {
            "format": _FORMAT,
            "layers": self.layers,
            "k": self.k,
            "input_size": list(self.input_size),
            "fields": {n: dataclasses.asdict(self.field(n)) for n in self.layers},
            "rule": rule,
            "spatial": {n: self.spatial.get(n, True) for n in self.layers},
            "provenance": self._provenance(),
        }
        tmp = path.with_name(path.name + ".tmp")
        save_file(tensors, os.fspath(tmp), metadata={"zfwidgets": json.dumps(meta)})
        os.replace(tmp, path)
        self._store = st.Store(path, "file")

    def _provenance(self) -> dict:
        prov = dict(self.provenance or {})
        if "data" not in prov and self.source is not None:
            prov["data"] = {"n": len(self.source)}
        if "model" not in prov and self.model is not None:
            cls = type(self.model)
            prov["model"] = {"class": f"{cls.__module__}.{cls.__qualname__}"}
        return st.check_provenance(prov)

    def _hits(self, layer: str) -> str:
        return st.hits_digest(
            layer, self.k, self.input_size, self.indices[layer], self.positions[layer]
        )

    def _manifest(self, tensors: str, records: dict[str, Any], provenance: dict) -> dict:
        layers = []
        for n in self.layers:
            rec = records.get(n)
            layers.append(
                {
                    "name": n,
                    "channels": int(self.values[n].shape[0]),
                    "spatial": bool(self.spatial.get(n, True)),
                    "hits": self._hits(n),
                    "field": dataclasses.asdict(self.field(n)),
                    "images": None if rec is None else rec.to_json(),
                }
            )
        from ..version import __version__

        return {
            "format": st.FORMAT_DIR,
            "library": f"zfwidgets {__version__}",
            "k": self.k,
            "input_size": list(self.input_size),
            "tensors": tensors,
            "layers": layers,
            "provenance": provenance,
        }

    def _save_dir(self, root: Path) -> None:
        from safetensors.torch import save

        if root.exists() and not root.is_dir():
            raise ValueError(f"atlas: {os.fspath(root)!r} exists and is not a directory")
        existing = None
        if (root / st.MANIFEST).is_file():
            try:
                existing = st.read_manifest(root)
            except (ValueError, OSError):
                existing = None  # replaced below
        elif root.is_dir():
            # hidden entries (a mining checkpoint, ".DS_Store") may share the folder
            foreign = sorted(p.name for p in root.iterdir() if not p.name.startswith("."))
            if foreign:
                raise ValueError(
                    f"atlas: {os.fspath(root)!r} holds {foreign[0]!r} and no {st.MANIFEST}; "
                    "refusing to write an atlas into it (give a new or empty folder)"
                )
        root.mkdir(parents=True, exist_ok=True)
        provenance = self._provenance()
        for n in self.layers:
            self.field(n)
        tensors: dict[str, torch.Tensor] = {}
        for i, layer in enumerate(self.layers):
            tensors[f"{i}.values"] = self.values[layer].detach().float().cpu().contiguous()
            tensors[f"{i}.indices"] = self.indices[layer].to(torch.int64).cpu().contiguous()
            tensors[f"{i}.positions"] = self.positions[layer].to(torch.int64).cpu().contiguous()
        blob = save(tensors)
        name = f"tensors-{hashlib.sha256(blob).hexdigest()[:32]}.safetensors"
        if not (root / name).is_file():
            st.write_atomic(root / name, blob)

        # tiles rendered from the same hits stay valid: keep them, or copy them over
        records: dict[str, Any] = {}
        old = self._store if self._store is not None and self._store.kind == "dir" else None
        on_disk = {} if existing is None else {L.name: L.images for L in existing.layers}
        for i, n in enumerate(self.layers):
            hits = self._hits(n)
            rec = old.images.get(n) if old is not None else None
            if rec is not None and rec.hits == hits:
                src = st.inside(old.root, rec.dir)
                if old.root.resolve() != root.resolve() and src.is_dir():
                    new = st.new_tile_dir(i)
                    (root / "tiles").mkdir(exist_ok=True)
                    shutil.copytree(src, root / new)
                    rec = dataclasses.replace(rec, dir=new)
                elif not src.is_dir():
                    rec = None
            else:
                rec = on_disk.get(n)
                if rec is not None and (rec.hits != hits or not (root / rec.dir).is_dir()):
                    rec = None
            records[n] = rec
        st.write_manifest(root, self._manifest(name, records, provenance))
        st.remove_unreferenced(root, name, {r.dir for r in records.values() if r is not None})
        st.remove_stale_partials(root, [self._hits(n) for n in self.layers])
        self._store = st.Store(root, "dir", records, tensors=name)

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
            return cls._load_dir(p, model=model, source=source)
        if not p.is_file():
            raise FileNotFoundError(f"atlas: no file or directory at {os.fspath(p)!r}")
        return cls._load_file(p, model=model, source=source)

    @classmethod
    def _load_dir(cls, root: Path, *, model, source) -> Atlas:
        from safetensors.torch import load_file

        m = st.read_manifest(root)
        tpath = st.inside(root, m.tensors)
        expected: dict[str, tuple] = {}
        for i, L in enumerate(m.layers):
            expected.update(st.hits_expectation(i, L.channels, m.k))
        if not tpath.is_file():
            raise st._bad("manifest.tensors", f"no file {m.tensors!r} in the atlas directory")
        names = st.check_tensor_header(tpath, expected)
        extra = sorted(names - set(expected))
        if extra:
            raise st._bad(m.tensors, f"unexpected tensor {extra[0]!r}")
        tensors = load_file(os.fspath(tpath))
        n = cls._data_count(st.data_count(m.provenance), source)
        values, indices, positions = {}, {}, {}
        for i, L in enumerate(m.layers):
            v, idx, pos = (tensors[f"{i}.{w}"] for w in ("values", "indices", "positions"))
            st.check_hits(L.name, v, idx, pos, field=L.field, n=n)
            idx, pos = idx.to(torch.int64), pos.to(torch.int64)
            if st.hits_digest(L.name, m.k, m.input_size, idx, pos) != L.hits:
                raise st._bad(
                    f"manifest.layers[{i}].hits",
                    "the tensors do not hold the hits the manifest names",
                )
            values[L.name], indices[L.name], positions[L.name] = v, idx, pos
        return cls(
            layers=[L.name for L in m.layers],
            k=m.k,
            values=values,
            indices=indices,
            positions=positions,
            fields={L.name: L.field for L in m.layers},
            input_size=m.input_size,
            model=model,
            source=source,
            spatial={L.name: L.spatial for L in m.layers},
            provenance=m.provenance,
            _store=st.Store(
                root, "dir", {L.name: L.images for L in m.layers if L.images}, tensors=m.tensors
            ),
        )

    @staticmethod
    def _data_count(recorded: int | None, source) -> int | None:
        if source is None:
            return recorded
        if recorded is not None and recorded != len(source):
            raise ValueError(
                f"data: the atlas was mined over {recorded} images, the data given has "
                f"{len(source)}; its indices would point at other images"
            )
        return len(source)

    @classmethod
    def _load_file(cls, path: Path, *, model, source) -> Atlas:
        from safetensors import SafetensorError, safe_open
        from safetensors.torch import load_file

        try:
            with safe_open(os.fspath(path), framework="pt") as f:
                raw = (f.metadata() or {}).get("zfwidgets")
        except (SafetensorError, OSError, ValueError) as e:
            raise ValueError(
                f"atlas: {os.fspath(path)!r} is not a readable safetensors file ({e})"
            ) from e
        if not raw:
            raise ValueError(
                f"atlas: {os.fspath(path)!r} is not a zfwidgets atlas (expected format {_FORMAT!r})"
            )
        try:
            meta = json.loads(raw)
        except json.JSONDecodeError as e:
            raise ValueError(f"atlas: {os.fspath(path)!r} has corrupt metadata ({e})") from e
        if not isinstance(meta, dict) or meta.get("format") != _FORMAT:
            raise ValueError(
                f"atlas: {os.fspath(path)!r} is not a zfwidgets atlas (expected format {_FORMAT!r})"
            )
        layers, k, input_size, fields, spatial, rule = st.parse_file_meta(meta)
        provenance = st.check_provenance(meta.get("provenance", {}), "metadata.provenance")
        # shapes from the header: C from values, everything else must agree with it
        shapes = st.check_tensor_header(
            path, {f"{i}.values": ((None, k), st._FLOATS) for i in range(len(layers))}
        )
        expected: dict[str, tuple] = {}
        with safe_open(os.fspath(path), framework="pt") as f:
            for i, n in enumerate(layers):
                C = f.get_slice(f"{i}.values").get_shape()[0]
                if not 1 <= C <= st.MAX_CHANNELS:
                    raise st._bad(f"tensor '{i}.values'", f"{C} channels is out of range")
                rf = fields[n]
                if rf.channels is not None and rf.channels != C:
                    raise st._bad(
                        f"metadata.fields[{n!r}].channels",
                        f"{rf.channels}, but the tensors hold {C}",
                    )
                expected.update(st.hits_expectation(i, C, k))
                h, w = st.crop_size(rf, input_size)
                for what in ("patches", "reconstructions"):
                    if f"{i}.{what}" in shapes:
                        expected[f"{i}.{what}"] = ((C, k, None, h, w), st._FLOATS)
        st.check_tensor_header(path, expected)
        extra = sorted(shapes - set(expected))
        if extra:
            raise st._bad(os.path.basename(path), f"unexpected tensor {extra[0]!r}")
        tensors = load_file(os.fspath(path))
        n_images = cls._data_count(st.data_count(provenance), source)
        for i, n in enumerate(layers):
            v, idx, pos = (tensors[f"{i}.{w}"] for w in ("values", "indices", "positions"))
            st.check_hits(n, v, idx, pos, field=fields[n], n=n_images)
        atlas = cls(
            layers=layers,
            k=k,
            values={n: tensors[f"{i}.values"] for i, n in enumerate(layers)},
            indices={n: tensors[f"{i}.indices"] for i, n in enumerate(layers)},
            positions={n: tensors[f"{i}.positions"] for i, n in enumerate(layers)},
            fields=fields,
            input_size=input_size,
            model=model,
            source=source,
            spatial=spatial,
            provenance=provenance,
            _store=st.Store(path, "file"),
        )
        for i, n in enumerate(layers):
            if f"{i}.patches" in tensors:
                atlas._cache[("patches", n)] = tensors[f"{i}.patches"].float()
            if f"{i}.reconstructions" in tensors:
                atlas._cache[("reconstructions", n, rule)] = tensors[f"{i}.reconstructions"].float()
        return atlas

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
        from ..base.codec import IMAGE_FORMATS
        from ..engine.backprop import RULES

        store = self._store
        if store is None or store.kind != "dir":
            raise RuntimeError(
                "render: this atlas has no directory to render into; save it first with "
                "atlas.save('atlas/') (or load one with Atlas.load('atlas/', model=..., data=...))"
            )
        self._need_data("render")
        if rule not in RULES:
            raise ValueError(f"rule: expected one of {RULES}, got {rule!r}")
        if format not in IMAGE_FORMATS:
            raise ValueError(f"format: expected one of {sorted(IMAGE_FORMATS)}, got {format!r}")
        if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100:
            raise ValueError(f"quality: expected an int in [1, 100], got {quality!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size: expected a positive int, got {batch_size!r}")
        if max_tile is not None and (
            isinstance(max_tile, bool) or not isinstance(max_tile, int) or max_tile < 1
        ):
            raise ValueError(f"max_tile: expected a positive int or None, got {max_tile!r}")
        progress = check_progress(progress)
        if layers is None:
            names = list(self.layers)
        else:
            names = [layers] if isinstance(layers, str) else list(layers)
            for n in names:
                self._check(n, None)
        patch_display = self._patch_display(mean, std)

        # the directory must hold the atlas in memory (its tiles are named by its hits)
        m = st.read_manifest(store.root)
        on_disk = {L.name: L for L in m.layers}
        for n in names:
            if n not in on_disk or on_disk[n].hits != self._hits(n):
                raise ValueError(
                    f"render: layer {n!r} in {os.fspath(store.root)!r} differs from this atlas "
                    "(it was changed or mined again after saving); save it again first"
                )
        store.images = {L.name: L.images for L in m.layers if L.images is not None}
        store.tensors = m.tensors

        from ..base.checks import model_device

        model, dev = self.model, model_device(self.model)
        if device is not None:
            want = torch.device(device)
            if want.type != dev.type or (want.index is not None and want.index != dev.index):
                model, dev = copy.deepcopy(self.model).to(want), want

        plans = []
        for n in names:
            rf = self.field(n)
            crop = tuple(min(r, s) for r, s in zip(rf.size, self.input_size))
            tile_hw = crop
            if max_tile is not None and max(crop) > max_tile:
                f = max_tile / max(crop)
                tile_hw = (max(1, round(crop[0] * f)), max(1, round(crop[1] * f)))
            layout = st.SpriteLayout.for_tiles(self.k, tile_hw)
            if max(layout.width, layout.height) > st.MAX_SPRITE:
                raise ValueError(
                    f"render: a sprite of {layout.width}x{layout.height} pixels for layer {n!r} "
                    f"is too large; pass max_tile= (e.g. {max(1, st.MAX_SPRITE // (2 * layout.columns))})"
                )
            rec = st.ImagesRecord(
                dir="",
                format=format,
                quality=quality if format == "webp" else None,
                rule=rule,
                hits=self._hits(n),
                crop=crop,
                layout=layout,
                mode="RGB",
                display={
                    "reconstructions": {"kind": "contrast", "mode": "symmetric"},
                    "patches": patch_display,
                },
            )
            done = store.images.get(n)
            if done is not None and done.settings() == rec.settings():
                continue
            plans.append((n, rec))
        total = sum(int(self.values[n].shape[0]) for n, _ in plans)
        with (
            Progress(progress, total, desc="rendering", unit="unit") as bar,
            ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1))) as pool,
        ):
            for n, rec in plans:
                self._render_layer(n, rec, model, dev, batch_size, max_tile, bar, pool)

    def _patch_display(self, mean, std) -> dict:
        if (mean is None) != (std is None):
            raise ValueError("mean and std: give both or neither")
        if mean is None:
            found = _find_normalize(self.source)
            if found is not None:
                mean, std = found
        if mean is not None:
            m = [float(v) for v in torch.as_tensor(mean, dtype=torch.float64).reshape(-1)]
            s = [float(v) for v in torch.as_tensor(std, dtype=torch.float64).reshape(-1)]
            return st._display({"kind": "unnormalize", "mean": m, "std": s}, "mean/std")
        # judged from one image of the atlas (a hit: readable even in a folder with bad files)
        x = self.source.get(int(self.indices[self.layers[0]].reshape(-1)[0]))
        inside = bool(x.numel()) and float(x.min()) >= 0 and float(x.max()) <= 1
        return {"kind": "clip" if inside else "minmax"}

    def _render_layer(self, layer, rec, model, device, batch_size, max_tile, bar, pool) -> None:
        from ..base.images import contrast_normalize, unnormalize
        from ..engine.backprop import backprop

        store = self._store
        i = self.layers.index(layer)
        partial = store.root / "tiles" / f"{i}.partial"
        settings = json.dumps(rec.settings(), sort_keys=True)
        marker = partial / "settings.json"
        if partial.is_dir():
            ok = marker.is_file() and marker.stat().st_size < 1 << 16
            if not ok or marker.read_text() != settings:
                shutil.rmtree(partial)
        if not partial.is_dir():
            partial.mkdir(parents=True)
            st.write_atomic(marker, settings.encode())
        C = int(self.values[layer].shape[0])
        todo = [c for c in range(C) if not (partial / f"{c:05d}.{rec.format}").is_file()]
        bar.update(C - len(todo))
        size = rec.crop
        disp = rec.display["patches"]
        mode: list[str] = []
        chunk = max(1, (4 * batch_size) // self.k)
        pending: list = []
        for s in range(0, len(todo), chunk):
            channels = todo[s : s + chunk]
            idx = self.indices[layer][channels].cpu()  # (c, k)
            uniq, inverse = torch.unique(idx.flatten(), return_inverse=True)
            images = self.source.stack(uniq.tolist()).to(device)
            pos = self.positions[layer][channels].cpu().reshape(-1, 2)
            chan = torch.tensor(channels).repeat_interleave(self.k)
            if self.spatial.get(layer, True):
                units = torch.stack([inverse, chan, pos[:, 0], pos[:, 1]], 1)
            else:
                units = torch.stack([inverse, chan], 1)
            recon = backprop(
                model, images, layer=layer, units=units, rule=rec.rule, batch_size=batch_size
            )
            corners = [xy for c in channels for xy in self.corners(layer, c)]
            rec_crops = _crop(recon, corners, size)
            patch_crops = _crop(images, corners, size, which=inverse.tolist())
            del recon
            rec_img = contrast_normalize(rec_crops, "symmetric")
            if disp["kind"] == "unnormalize":
                patch_img = unnormalize(patch_crops, disp["mean"], disp["std"])
            elif disp["kind"] == "clip":
                patch_img = patch_crops.float().clamp(0, 1)
            else:
                patch_img = contrast_normalize(patch_crops, "minmax")
            sprites = _sprites(rec_img, patch_img, rec.layout, len(channels), max_tile)
            mode.append("L" if sprites.shape[-1] == 1 else "RGB")
            host = sprites.cpu().numpy()
            # encode + write off this thread while the device works on the next chunk
            for f in pending:
                f.result()
            pending = [
                pool.submit(_write_tile, partial / f"{c:05d}.{rec.format}", host[j], rec)
                for j, c in enumerate(channels)
            ]
            bar.update(len(channels))
        for f in pending:
            f.result()
        if not mode:  # everything was on disk already: read the mode back from one tile
            from ..base.codec import decode_image

            px = decode_image((partial / f"{0:05d}.{rec.format}").read_bytes())
            mode.append("L" if px.ndim == 2 else "RGB")
        final = st.new_tile_dir(i)
        marker.unlink()
        os.replace(partial, store.root / final)
        store.images[layer] = dataclasses.replace(rec, dir=final, mode=mode[0])
        records = {n: store.images.get(n) for n in self.layers}
        st.write_manifest(store.root, self._manifest(store.tensors, records, self._provenance()))
        st.remove_unreferenced(
            store.root, store.tensors, {r.dir for r in records.values() if r is not None}
        )

    # -- sharing outside Python -----------------------------------------------------------------
    def export_site(self, path: str | os.PathLike, **kwargs: Any):
        """Write a static site of this atlas (a directory atlas, rendered) to ``path``: it opens
        in any browser, from ``file://`` or a web server, with no kernel. Keyword arguments
        (``classes``, ``labels``, ``title``, ``link``) and the returned report as
        :func:`zfwidgets.atlas.site.export_site`."""
        from .site import export_site

        return export_site(self, path, **kwargs)

    def __repr__(self) -> str:
        shapes = ", ".join(f"{n}: {tuple(self.values[n].shape[:1])}" for n in self.layers)
        return f"Atlas(k={self.k}, input_size={self.input_size}, layers={{{shapes}}})"


def _sprites(
    rec_img: torch.Tensor,
    patch_img: torch.Tensor,
    layout: st.SpriteLayout,
    units: int,
    max_tile: int | None,
) -> torch.Tensor:
    """(units * k, C, h, w) reconstructions and patches in [0, 1] -> (units, H, W, c) uint8
    sprites laid out as ``layout`` (c = 1 for grey, else 3; other channel counts averaged)."""
    from ..base.images import resize_to_fit

    blocks = []
    for x in (rec_img, patch_img):
        if x.shape[1] not in (1, 3):
            x = x.mean(1, keepdim=True)
        x = resize_to_fit(x, max_tile)
        if tuple(x.shape[2:]) != layout.tile:
            x = torch.nn.functional.interpolate(x, size=layout.tile, mode="area")
        x = torch.floor(x.clamp(0, 1) * 255 + 0.5).to(torch.uint8)
        k, cols, rows = layout.k, layout.columns, layout.rows
        C, th, tw = x.shape[1:]
        x = x.reshape(units, k, C, th, tw)
        if rows * cols > k:
            x = torch.cat([x, x.new_zeros((units, rows * cols - k, C, th, tw))], 1)
        x = x.reshape(units, rows, cols, C, th, tw).permute(0, 1, 4, 2, 5, 3)
        blocks.append(x.reshape(units, rows * th, cols * tw, C))
    if blocks[0].shape[-1] != blocks[1].shape[-1]:  # grey projections beside RGB patches
        blocks = [b.expand(-1, -1, -1, 3) for b in blocks]
    return torch.cat(blocks, 2).contiguous()


def _find_normalize(source, depth: int = 0) -> tuple[list[float], list[float]] | None:
    """``(mean, std)`` of a ``Normalize`` in the data's transforms, or of a dataset that
    normalises its images itself (``mean``/``std`` attributes, 1 to 4 finite numbers each)."""
    candidates = [source] if depth else []
    if depth == 0:
        items = getattr(source, "items", None)
        candidates = [source.transform, items, getattr(items, "transform", None)]
    for obj in candidates:
        if obj is None or isinstance(obj, torch.Tensor):
            continue
        mean, std = getattr(obj, "mean", None), getattr(obj, "std", None)
        if mean is not None and std is not None and not callable(mean) and not callable(std):
            try:
                m = torch.as_tensor(mean, dtype=torch.float64).reshape(-1)
                s = torch.as_tensor(std, dtype=torch.float64).reshape(-1)
            except (TypeError, ValueError, RuntimeError):
                m = s = None
            if (
                m is not None
                and 1 <= m.numel() <= 4
                and m.numel() == s.numel()
                and bool(torch.isfinite(m).all() and torch.isfinite(s).all() and (s != 0).all())
            ):
                return m.tolist(), s.tolist()
        if depth < 4:
            for inner in getattr(obj, "transforms", None) or []:
                found = _find_normalize(inner, depth + 1)
                if found is not None:
                    return found
    return None


def _write_tile(path: Path, pixels, rec) -> None:
    from ..base.codec import encode_image

    data = encode_image(pixels, rec.format, quality=rec.quality)
    st.write_atomic(path, data, sync=False)
