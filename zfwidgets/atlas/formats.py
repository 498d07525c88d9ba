"""Saving and loading an :class:`~zfwidgets.Atlas`: the directory form and the single file.

:meth:`Atlas.save` and :meth:`Atlas.load` delegate here. What the files hold, and how every
field is validated before anything sized by it is allocated, is described in
:mod:`zfwidgets.atlas.store`; this module writes them (each file atomically, through
:mod:`zfwidgets.base.files`) and reads them back into the hits an atlas is built from.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..base.files import write_atomic, write_atomic_with
from . import store as st

__all__ = [
    "StoredHits",
    "hits_of",
    "labels_of",
    "load_dir",
    "load_file",
    "manifest_of",
    "provenance_of",
    "save_dir",
    "save_file",
]


@dataclass
class StoredHits:
    """What a saved atlas holds: ``arguments`` of :class:`~zfwidgets.Atlas` (``layers``, ``k``,
    ``values``, ``indices``, ``positions``, ``fields``, ``input_size``, ``spatial``,
    ``provenance``; not the model and the data), its
    :class:`~zfwidgets.atlas.store.Store`, and the crops a single file may carry (``cache``
    keys as :meth:`Atlas.patches`/:meth:`Atlas.reconstructions` use)."""

    arguments: dict[str, Any]
    store: st.Store
    cache: dict = field(default_factory=dict)


# -- what every file records ----------------------------------------------------------------
def provenance_of(atlas) -> dict:
    """The atlas's provenance, completed with the data size and model class when attached."""
    prov = dict(atlas.provenance or {})
    if "data" not in prov and atlas.source is not None:
        prov["data"] = {"n": len(atlas.source)}
    if "model" not in prov and atlas.model is not None:
        cls = type(atlas.model)
        prov["model"] = {"class": f"{cls.__module__}.{cls.__qualname__}"}
    return st.check_provenance(prov)


def hits_of(atlas, layer: str) -> str:
    """The digest of the hits ``layer`` holds (:func:`zfwidgets.atlas.store.hits_digest`)."""
    return st.hits_digest(
        layer, atlas.k, atlas.input_size, atlas.indices[layer], atlas.positions[layer]
    )


def manifest_of(atlas, tensors: str, records: dict[str, Any], provenance: dict) -> dict:
    """The directory manifest of ``atlas``: its hits in the file ``tensors``, tiles ``records``
    (layer -> :class:`~zfwidgets.atlas.store.ImagesRecord` or None)."""
    layers = []
    for n in atlas.layers:
        rec = records.get(n)
        layers.append(
            {
                "name": n,
                "channels": int(atlas.values[n].shape[0]),
                "spatial": bool(atlas.spatial.get(n, True)),
                "hits": hits_of(atlas, n),
                "field": dataclasses.asdict(atlas.field(n)),
                "images": None if rec is None else rec.to_json(),
            }
        )
    from ..version import __version__

    out = {
        "format": st.FORMAT_DIR,
        "library": f"zfwidgets {__version__}",
        "k": atlas.k,
        "input_size": list(atlas.input_size),
        "tensors": tensors,
        "layers": layers,
        "provenance": provenance,
    }
    if atlas.labels and atlas.classes is not None:
        out["classes"] = [str(c) for c in atlas.classes]
    return out


def labels_of(atlas) -> dict[str, torch.Tensor]:
    """``"<i>.labels"`` tensors of the layers whose hits have labels (stored, or read from the
    attached data now: :meth:`Atlas.hit_labels`); empty when the data has none."""
    out = {}
    for i, layer in enumerate(atlas.layers):
        labels = atlas.hit_labels(layer)
        if labels is not None:
            out[f"{i}.labels"] = labels.to(torch.int64).cpu().contiguous()
    if out:
        atlas.class_names()  # recorded beside them when the data names its classes
    return out


def _data_count(recorded: int | None, source) -> int | None:
    if source is None:
        return recorded
    if recorded is not None and recorded != len(source):
        raise ValueError(
            f"data: the atlas was mined over {recorded} images, the data given has "
            f"{len(source)}; its indices would point at other images"
        )
    return len(source)


# -- the single file ------------------------------------------------------------------------
def save_file(atlas, path: Path, *, images: bool, rule: str) -> st.Store:
    """Write the single-file form (``zfwidgets.atlas/1``); float16 crops when ``images``."""
    from safetensors.torch import save_file as write_safetensors

    tensors: dict[str, torch.Tensor] = {}
    for i, layer in enumerate(atlas.layers):
        tensors[f"{i}.values"] = atlas.values[layer].detach().float().cpu().contiguous()
        tensors[f"{i}.indices"] = atlas.indices[layer].cpu().contiguous()
        tensors[f"{i}.positions"] = atlas.positions[layer].cpu().contiguous()
        if images:
            C = atlas.values[layer].shape[0]
            tensors[f"{i}.patches"] = (
                torch.stack([atlas.patches(layer, c) for c in range(C)]).half().cpu().contiguous()
            )
            tensors[f"{i}.reconstructions"] = (
                atlas.reconstructions(layer, rule=rule).half().cpu().contiguous()
            )
    tensors.update(labels_of(atlas))
    meta = {
        "format": st.FORMAT_FILE,
        "layers": atlas.layers,
        "k": atlas.k,
        "input_size": list(atlas.input_size),
        "fields": {n: dataclasses.asdict(atlas.field(n)) for n in atlas.layers},
        "rule": rule,
        "spatial": {n: atlas.spatial.get(n, True) for n in atlas.layers},
        "provenance": provenance_of(atlas),
    }
    if atlas.labels and atlas.classes is not None:
        meta["classes"] = [str(c) for c in atlas.classes]
    write_atomic_with(
        path,
        lambda tmp: write_safetensors(
            tensors, os.fspath(tmp), metadata={"zfwidgets": json.dumps(meta)}
        ),
    )
    return st.Store(path, "file")


def load_file(path: Path, *, source) -> StoredHits:
    """Read and validate a single-file atlas (``source``: the data to be attached, or None)."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file as read_safetensors

    fmt = st.FORMAT_FILE
    try:
        with safe_open(os.fspath(path), framework="pt") as f:
            raw = (f.metadata() or {}).get("zfwidgets")
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(
            f"atlas: {os.fspath(path)!r} is not a readable safetensors file ({e})"
        ) from e
    if not raw:
        raise ValueError(
            f"atlas: {os.fspath(path)!r} is not a zfwidgets atlas (expected format {fmt!r})"
        )
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ValueError(f"atlas: {os.fspath(path)!r} has corrupt metadata ({e})") from e
    if not isinstance(meta, dict) or meta.get("format") != fmt:
        raise ValueError(
            f"atlas: {os.fspath(path)!r} is not a zfwidgets atlas (expected format {fmt!r})"
        )
    layers, k, input_size, fields, spatial, rule = st.parse_file_meta(meta)
    provenance = st.check_provenance(meta.get("provenance", {}), "metadata.provenance")
    classes = st.parse_classes(meta.get("classes"), "metadata.classes")
    # shapes from the header: C from values, everything else must agree with it
    shapes = st.check_tensor_header(
        path, {f"{i}.values": ((None, k), st.FLOAT_DTYPES) for i in range(len(layers))}
    )
    expected: dict[str, tuple] = {}
    with safe_open(os.fspath(path), framework="pt") as f:
        for i, n in enumerate(layers):
            C = f.get_slice(f"{i}.values").get_shape()[0]
            if not 1 <= C <= st.MAX_CHANNELS:
                raise st.invalid(f"tensor '{i}.values'", f"{C} channels is out of range")
            rf = fields[n]
            if rf.channels is not None and rf.channels != C:
                raise st.invalid(
                    f"metadata.fields[{n!r}].channels",
                    f"{rf.channels}, but the tensors hold {C}",
                )
            expected.update(st.hits_expectation(i, C, k))
            if f"{i}.labels" in shapes:
                expected.update(st.labels_expectation(i, C, k))
            h, w = st.crop_size(rf, input_size)
            for what in ("patches", "reconstructions"):
                if f"{i}.{what}" in shapes:
                    expected[f"{i}.{what}"] = ((C, k, None, h, w), st.FLOAT_DTYPES)
    st.check_tensor_header(path, expected)
    extra = sorted(shapes - set(expected))
    if extra:
        raise st.invalid(os.path.basename(path), f"unexpected tensor {extra[0]!r}")
    tensors = read_safetensors(os.fspath(path))
    n_images = _data_count(st.data_count(provenance), source)
    for i, n in enumerate(layers):
        v, idx, pos = (tensors[f"{i}.{w}"] for w in ("values", "indices", "positions"))
        st.check_hits(n, v, idx, pos, field=fields[n], n=n_images)
    labels = {
        n: st.check_labels(n, tensors[f"{i}.labels"])
        for i, n in enumerate(layers)
        if f"{i}.labels" in tensors
    }
    cache = {}
    for i, n in enumerate(layers):
        if f"{i}.patches" in tensors:
            cache[("patches", n)] = tensors[f"{i}.patches"].float()
        if f"{i}.reconstructions" in tensors:
            cache[("reconstructions", n, rule)] = tensors[f"{i}.reconstructions"].float()
    arguments = {
        "layers": layers,
        "k": k,
        **{
            what: {n: tensors[f"{i}.{what}"] for i, n in enumerate(layers)}
            for what in ("values", "indices", "positions")
        },
        "fields": fields,
        "input_size": input_size,
        "spatial": spatial,
        "provenance": provenance,
        "labels": labels,
        "classes": classes if labels else None,
    }
    return StoredHits(arguments, st.Store(path, "file"), cache)


# -- the directory --------------------------------------------------------------------------
def save_dir(atlas, root: Path, old: st.Store | None) -> st.Store:
    """Write the directory form; tiles of ``old`` (the atlas's previous store) rendered from
    the same hits are kept, or copied over from its folder."""
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
    provenance = provenance_of(atlas)
    for n in atlas.layers:
        atlas.field(n)
    tensors: dict[str, torch.Tensor] = {}
    for i, layer in enumerate(atlas.layers):
        tensors[f"{i}.values"] = atlas.values[layer].detach().float().cpu().contiguous()
        tensors[f"{i}.indices"] = atlas.indices[layer].to(torch.int64).cpu().contiguous()
        tensors[f"{i}.positions"] = atlas.positions[layer].to(torch.int64).cpu().contiguous()
    tensors.update(labels_of(atlas))
    blob = save(tensors)
    name = f"tensors-{hashlib.sha256(blob).hexdigest()[:32]}.safetensors"
    if not (root / name).is_file():
        write_atomic(root / name, blob)

    # tiles rendered from the same hits stay valid: keep them, or copy them over
    records: dict[str, Any] = {}
    old = old if old is not None and old.kind == "dir" else None
    on_disk = {} if existing is None else {L.name: L.images for L in existing.layers}
    for i, n in enumerate(atlas.layers):
        hits = hits_of(atlas, n)
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
    st.write_manifest(root, manifest_of(atlas, name, records, provenance))
    st.remove_unreferenced(root, name, {r.dir for r in records.values() if r is not None})
    st.remove_stale_partials(root, [hits_of(atlas, n) for n in atlas.layers])
    return st.Store(root, "dir", records, tensors=name)


def load_dir(root: Path, *, source) -> StoredHits:
    """Read and validate an atlas directory's manifest and hits (its tiles stay on disk)."""
    from safetensors.torch import load_file as read_safetensors

    m = st.read_manifest(root)
    tpath = st.inside(root, m.tensors)
    expected: dict[str, tuple] = {}
    for i, L in enumerate(m.layers):
        expected.update(st.hits_expectation(i, L.channels, m.k))
    if not tpath.is_file():
        raise st.invalid("manifest.tensors", f"no file {m.tensors!r} in the atlas directory")
    names = st.check_tensor_header(tpath, expected)
    labelled = [i for i in range(len(m.layers)) if f"{i}.labels" in names]
    if labelled:  # optional: the class label of each hit
        for i in labelled:
            expected.update(st.labels_expectation(i, m.layers[i].channels, m.k))
        st.check_tensor_header(tpath, expected)
    extra = sorted(names - set(expected))
    if extra:
        raise st.invalid(m.tensors, f"unexpected tensor {extra[0]!r}")
    tensors = read_safetensors(os.fspath(tpath))
    n = _data_count(st.data_count(m.provenance), source)
    values, indices, positions = {}, {}, {}
    for i, L in enumerate(m.layers):
        v, idx, pos = (tensors[f"{i}.{w}"] for w in ("values", "indices", "positions"))
        st.check_hits(L.name, v, idx, pos, field=L.field, n=n)
        idx, pos = idx.to(torch.int64), pos.to(torch.int64)
        if st.hits_digest(L.name, m.k, m.input_size, idx, pos) != L.hits:
            raise st.invalid(
                f"manifest.layers[{i}].hits",
                "the tensors do not hold the hits the manifest names",
            )
        values[L.name], indices[L.name], positions[L.name] = v, idx, pos
    labels = {
        m.layers[i].name: st.check_labels(m.layers[i].name, tensors[f"{i}.labels"])
        for i in labelled
    }
    arguments = {
        "layers": [L.name for L in m.layers],
        "k": m.k,
        "values": values,
        "indices": indices,
        "positions": positions,
        "fields": {L.name: L.field for L in m.layers},
        "input_size": m.input_size,
        "spatial": {L.name: L.spatial for L in m.layers},
        "provenance": m.provenance,
        "labels": labels,
        "classes": m.classes if labels else None,
    }
    images = {L.name: L.images for L in m.layers if L.images}
    return StoredHits(arguments, st.Store(root, "dir", images, tensors=m.tensors))
