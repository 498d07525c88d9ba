"""Rendering an atlas's tiles: every unit's k reconstructions and k patches as one sprite file.

docs/method.md Sec. 3.1, Fig. 2. :meth:`Atlas.render` validates its arguments and delegates
here; the sprite layout and the manifest's records are :mod:`zfwidgets.atlas.store`'s.

Under torchrun (an initialised default process group), every rank calls ``render`` on the same
atlas directory: each layer's units are cut into fixed groups (:func:`_groups`, a function of the
unit count only), rank r renders groups r, r + world, ... into the layer's partial folder, and
rank 0 names the folder in the manifest after a barrier, once every tile is on disk. The tiles
are the same bytes as a single process's; a killed render resumes per unit.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from ..base.files import write_atomic
from ..base.progress import Progress
from . import distributed
from . import store as st
from .crops import crop, hit_units
from .formats import hits_of, manifest_of, provenance_of

__all__ = ["check_render_args", "render_layers"]


def check_render_args(
    *, rule: str, format: str, quality: int, batch_size: int, max_tile: int | None
) -> None:
    """``ValueError`` for an unknown rule or format, or a quality, batch size or tile limit
    out of range."""
    from ..base.codec import IMAGE_FORMATS
    from ..engine.backprop import RULES

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


def render_layers(
    atlas,
    store: st.Store,
    names: list[str],
    *,
    rule: str,
    batch_size: int,
    device,
    progress,
    format: str,
    quality: int,
    mean,
    std,
    max_tile: int | None,
) -> None:
    """Render ``names`` of ``atlas`` (model and data attached, arguments checked) into its
    directory ``store`` (updated in place); see :meth:`Atlas.render`."""
    patch_display = _patch_display(atlas, mean, std)

    # the directory must hold the atlas in memory (its tiles are named by its hits)
    m = st.read_manifest(store.root)
    on_disk = {L.name: L for L in m.layers}
    for n in names:
        if n not in on_disk or on_disk[n].hits != hits_of(atlas, n):
            raise ValueError(
                f"render: layer {n!r} in {os.fspath(store.root)!r} differs from this atlas "
                "(it was changed or mined again after saving); save it again first"
            )
    store.images = {L.name: L.images for L in m.layers if L.images is not None}
    store.tensors = m.tensors

    from ..base.checks import model_device

    model, dev = atlas.model, model_device(atlas.model)
    if device is not None:
        want = torch.device(device)
        if want.type != dev.type or (want.index is not None and want.index != dev.index):
            model, dev = copy.deepcopy(atlas.model).to(want), want

    plans = []
    for n in names:
        crop_hw = atlas.crop_size(n)
        tile_hw = crop_hw
        if max_tile is not None and max(crop_hw) > max_tile:
            f = max_tile / max(crop_hw)
            tile_hw = (max(1, round(crop_hw[0] * f)), max(1, round(crop_hw[1] * f)))
        layout = st.SpriteLayout.for_tiles(atlas.k, tile_hw)
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
            hits=hits_of(atlas, n),
            crop=crop_hw,
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
    ctx = distributed.context(init=False)
    groups = {n: _groups(int(atlas.values[n].shape[0]), atlas.k, batch_size) for n, _ in plans}
    total = sum(len(g) for n, _ in plans for g in groups[n][ctx.rank :: ctx.world])
    show = progress if ctx.is_main or callable(progress) else False  # one bar: rank 0's
    with (
        Progress(show, total, desc="rendering", unit="unit") as bar,
        ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1))) as pool,
    ):
        for n, rec in plans:
            mine = groups[n][ctx.rank :: ctx.world]
            _render_layer(
                atlas, store, n, rec, model, dev, batch_size, max_tile, bar, pool, mine, ctx
            )


def _groups(C: int, k: int, batch_size: int) -> list[list[int]]:
    """The units of a layer cut into the groups rendered together (their hits in shared
    backward passes): a layout of the unit count only, so a unit's tile is the same bytes
    however the groups are spread over processes. Under torchrun, rank r renders groups
    r, r + world, ..."""
    size = max(1, (4 * batch_size) // k)
    return [list(range(s, min(C, s + size))) for s in range(0, C, size)]


def _patch_display(atlas, mean, std) -> dict:
    if (mean is None) != (std is None):
        raise ValueError("mean and std: give both or neither")
    if mean is None:
        found = _data_normalize(atlas.source)
        if found is not None:
            mean, std = found
    if mean is not None:
        m = [float(v) for v in torch.as_tensor(mean, dtype=torch.float64).reshape(-1)]
        s = [float(v) for v in torch.as_tensor(std, dtype=torch.float64).reshape(-1)]
        return st.check_display({"kind": "unnormalize", "mean": m, "std": s}, "mean/std")
    # judged from one image of the atlas (a hit: readable even in a folder with bad files)
    x = atlas.source.get(int(atlas.indices[atlas.layers[0]].reshape(-1)[0]))
    inside = bool(x.numel()) and float(x.min()) >= 0 and float(x.max()) <= 1
    return {"kind": "clip" if inside else "minmax"}


def _data_normalize(source) -> tuple[list[float], list[float]] | None:
    """``(mean, std)`` of a ``Normalize`` in the data's transforms (the ``transform=`` given
    to :meth:`Atlas.load`, the dataset's own), or of a dataset that normalises its images
    itself (``mean``/``std`` attributes); 1 to 4 numbers each (what the manifest records)."""
    from ..base.images import find_normalize

    items = getattr(source, "items", None)
    for obj in (source.transform, items, getattr(items, "transform", None)):
        found = find_normalize(obj)
        if found is not None:
            m = torch.as_tensor(found[0], dtype=torch.float64).reshape(-1)
            s = torch.as_tensor(found[1], dtype=torch.float64).reshape(-1)
            if m.numel() <= 4:
                return m.tolist(), s.tolist()
    return None


def _render_layer(
    atlas, store, layer, rec, model, device, batch_size, max_tile, bar, pool, groups, ctx
) -> None:
    """Render this process's ``groups`` of units of ``layer`` into ``tiles/<i>.partial``; then
    (rank 0, once every rank's tiles are on disk) name the finished folder in the manifest."""
    from ..base.images import contrast_normalize, unnormalize
    from ..engine.backprop import backprop

    i = atlas.layers.index(layer)
    partial = store.root / "tiles" / f"{i}.partial"
    settings = json.dumps(rec.settings(), sort_keys=True)
    marker = partial / "settings.json"
    if ctx.is_main:
        if partial.is_dir():
            ok = marker.is_file() and marker.stat().st_size < 1 << 16
            if not ok or marker.read_text() != settings:
                shutil.rmtree(partial)
        if not partial.is_dir():
            partial.mkdir(parents=True)
            write_atomic(marker, settings.encode())
    ctx.barrier()  # the folder is ready (and holds no tiles of other settings)
    todo = [[c for c in g if not (partial / f"{c:05d}.{rec.format}").is_file()] for g in groups]
    bar.update(sum(len(g) for g in groups) - sum(len(g) for g in todo))
    todo = [g for g in todo if g]
    size = rec.crop
    disp = rec.display["patches"]
    spatial = atlas.spatial.get(layer, True)
    mode: list[str] = []
    pending: list = []
    for channels in todo:
        wanted, inverse, units = hit_units(
            atlas.indices[layer], atlas.positions[layer], channels, spatial=spatial
        )
        images = atlas.source.stack(wanted).to(device)
        recon = backprop(
            model, images, layer=layer, units=units, rule=rec.rule, batch_size=batch_size
        )
        corners = [xy for c in channels for xy in atlas.corners(layer, c)]
        rec_crops = crop(recon, corners, size)
        patch_crops = crop(images, corners, size, which=inverse.tolist())
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
    ctx.barrier()  # every rank's tiles are on disk
    if ctx.is_main:
        if not mode:  # everything was on disk already: read the mode back from one tile
            from ..base.codec import decode_image

            px = decode_image((partial / f"{0:05d}.{rec.format}").read_bytes())
            mode.append("L" if px.ndim == 2 else "RGB")
        final = st.new_tile_dir(i)
        marker.unlink()
        os.replace(partial, store.root / final)
        store.images[layer] = dataclasses.replace(rec, dir=final, mode=mode[0])
        records = {n: store.images.get(n) for n in atlas.layers}
        st.write_manifest(
            store.root, manifest_of(atlas, store.tensors, records, provenance_of(atlas))
        )
        st.remove_unreferenced(
            store.root, store.tensors, {r.dir for r in records.values() if r is not None}
        )
    ctx.barrier()  # the manifest names the layer's tiles
    if not ctx.is_main:
        store.images[layer] = {L.name: L.images for L in st.read_manifest(store.root).layers}[layer]


def _sprites(
    rec_img: torch.Tensor,
    patch_img: torch.Tensor,
    layout: st.SpriteLayout,
    units: int,
    max_tile: int | None,
) -> torch.Tensor:
    """(units * k, C, h, w) reconstructions and patches in [0, 1] -> (units, H, W, c) uint8
    sprites laid out as ``layout`` (c = 1 for grey, else 3: :func:`fit_channels`)."""
    from ..base.images import fit_channels, pair_mosaic, resize_to_fit, to_uint8

    blocks = []
    for x in (rec_img, patch_img):
        x = resize_to_fit(fit_channels(x), max_tile)
        if tuple(x.shape[2:]) != layout.tile:
            x = torch.nn.functional.interpolate(x, size=layout.tile, mode="area")
        blocks.append(to_uint8(x))
    if blocks[0].shape[1] != blocks[1].shape[1]:  # grey projections beside RGB patches
        blocks = [b.expand(-1, 3, -1, -1) for b in blocks]
    left, right = (b.reshape(units, layout.k, *b.shape[1:]) for b in blocks)
    return pair_mosaic(left, right, columns=layout.columns, channels_last=True)[0]


def _write_tile(path: Path, pixels, rec) -> None:
    from ..base.codec import encode_image

    data = encode_image(pixels, rec.format, quality=rec.quality)
    write_atomic(path, data, sync=False)
