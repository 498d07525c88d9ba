"""The result of :func:`zfwidgets.mine`: top-k hits per feature map, their crops, and a file
format that loads without pickle (safetensors tensors + JSON metadata)."""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

__all__ = ["Atlas"]

_FORMAT = "zfwidgets.atlas/1"


def _crop(
    images: torch.Tensor, boxes: list[tuple[int, int]], size: tuple[int, int]
) -> torch.Tensor:
    """Crop (K, C, H, W) at per-image top-left corners ``boxes`` (may lie outside the image) to
    ``size``, zero-padding what falls outside. Returns (K, C, h, w)."""
    K, C, H, W = images.shape
    h, w = size
    out = images.new_zeros((K, C, h, w))
    for i, (top, left) in enumerate(boxes):
        t0, l0 = max(top, 0), max(left, 0)
        t1, l1 = min(top + h, H), min(left + w, W)
        if t1 > t0 and l1 > l0:
            out[i, :, t0 - top : t1 - top, l0 - left : l1 - left] = images[i, :, t0:t1, l0:l1]
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

    # -- geometry ----------------------------------------------------------------------------
    def field(self, layer: str):
        """The receptive field of ``layer`` at the atlas's input size (computed once)."""
        if layer not in self.fields:
            self._need_data("field")
            from .receptive import receptive_field

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
        from ._checks import model_device

        idx = self.indices[layer][channel].tolist()
        return self.source.stack(idx).to(model_device(self.model))

    # -- Fig. 2 crops -------------------------------------------------------------------------
    def patches(self, layer: str, channel: int) -> torch.Tensor:
        """(k, C, h, w) crops of the input images around each hit's receptive field."""
        self._check(layer, channel)
        key = ("patches", layer)
        if key in self._cache:
            return self._cache[key][channel]
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
        """
        self._check(layer, channel)
        key = ("reconstructions", layer, rule)
        if key in self._cache:
            full = self._cache[key]
            return full if channel is None else full[channel]
        if channel is not None and (key, channel) in self._cache:
            return self._cache[(key, channel)]
        self._need_data("reconstructions")
        from .backprop import backprop

        channels = range(self.values[layer].shape[0]) if channel is None else [channel]
        idx = self.indices[layer][list(channels)].cpu()  # (c, k)
        uniq, inverse = torch.unique(idx.flatten(), return_inverse=True)
        from ._checks import model_device

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

    # -- files ---------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike, *, images: bool = False, rule: str = "deconv") -> None:
        """Write a ``.safetensors`` file (no pickle). ``images=True`` also stores every patch and
        reconstruction (float16), so the file is usable without the model and data."""
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
        }
        save_file(tensors, os.fspath(path), metadata={"zfwidgets": json.dumps(meta)})

    @classmethod
    def load(
        cls,
        path: str | os.PathLike,
        *,
        model: nn.Module | None = None,
        data: Any = None,
        transform=None,
    ) -> Atlas:
        """Read a file written by :meth:`save`; attach ``model`` and ``data`` to compute crops."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        from ._data import ImageSource
        from .receptive import ReceptiveField

        path = os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"atlas: no file at {path!r}")
        try:
            from safetensors import safe_open

            with safe_open(path, framework="pt") as f:
                raw = (f.metadata() or {}).get("zfwidgets")
            tensors = load_file(path)
        except (SafetensorError, OSError, ValueError) as e:
            raise ValueError(f"atlas: {path!r} is not a readable safetensors file ({e})") from e
        try:
            meta = json.loads(raw) if raw else None
        except json.JSONDecodeError as e:
            raise ValueError(f"atlas: {path!r} has corrupt metadata ({e})") from e
        if not meta or meta.get("format") != _FORMAT:
            raise ValueError(
                f"atlas: {path!r} is not a zfwidgets atlas (expected format {_FORMAT!r})"
            )
        layers = meta["layers"]
        fields = {}
        for n in layers:
            d = meta["fields"][n]
            fields[n] = ReceptiveField(
                **{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
            )
        try:
            atlas = cls(
                layers=layers,
                k=int(meta["k"]),
                values={n: tensors[f"{i}.values"] for i, n in enumerate(layers)},
                indices={n: tensors[f"{i}.indices"] for i, n in enumerate(layers)},
                positions={n: tensors[f"{i}.positions"] for i, n in enumerate(layers)},
                fields=fields,
                input_size=tuple(meta["input_size"]),
                model=model,
                source=None if data is None else ImageSource(data, transform=transform),
                spatial={n: bool(meta.get("spatial", {}).get(n, True)) for n in layers},
            )
        except KeyError as e:
            raise ValueError(f"atlas: {path!r} is missing tensor {e}") from e
        for i, n in enumerate(layers):
            if f"{i}.patches" in tensors:
                atlas._cache[("patches", n)] = tensors[f"{i}.patches"].float()
            if f"{i}.reconstructions" in tensors:
                atlas._cache[("reconstructions", n, meta.get("rule", "deconv"))] = tensors[
                    f"{i}.reconstructions"
                ].float()
        return atlas

    def __repr__(self) -> str:
        shapes = ", ".join(f"{n}: {tuple(self.values[n].shape[:1])}" for n in self.layers)
        return f"Atlas(k={self.k}, input_size={self.input_size}, layers={{{shapes}}})"
