"""Rendering an atlas's tiles: every unit's k reconstructions and k patches as one sprite file.

docs/method.md Sec. 3.1, Fig. 2. :meth:`Atlas.render` validates its arguments and delegates
here; the sprite layout and the manifest's records are :mod:`zfwidgets.atlas.store`'s.

Under torchrun (an initialised default process group), every rank calls ``render`` on the same
atlas directory: each layer's units are cut into fixed groups (:func:`_groups`, a function of the
unit count only); the (layer, group) pairs of all layers, in order, are dealt round the ranks
(rank r renders pairs r, r + world, ... into the layers' partial folders, with no wait between
layers), and rank 0 names the folders in the manifest after a barrier, once every tile is on
disk. One process names each layer as soon as it is done. The tiles are the same bytes as a
single process's; a killed render resumes per unit.
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

__all__ = ["check_feature_vis", "check_render_args", "render_layers"]

#: What ``render(feature_vis={...})`` may set: arguments of
#: :func:`zfwidgets.engine.featurevis.feature_vis` (the picture size is the atlas's input size).
FEATURE_VIS_ARGS = ("steps", "lr", "transforms", "seed", "objective")


def check_feature_vis(feature_vis) -> dict | None:
    """``render``'s ``feature_vis`` argument as the settings to store (None: no pictures).

    ``False``/``None``: none; ``True``: the defaults of
    :func:`~zfwidgets.engine.featurevis.feature_vis`; a dict: some of :data:`FEATURE_VIS_ARGS`
    over those defaults. ``ValueError``/``TypeError`` naming the bad entry.
    """
    import inspect

    from ..engine.featurevis import OBJECTIVES, TRANSFORMS
    from ..engine.featurevis import feature_vis as fv_fn

    if feature_vis is None or feature_vis is False:
        return None
    if feature_vis is not True and not isinstance(feature_vis, dict):
        raise TypeError(
            "feature_vis: expected True, False or a dict of feature_vis arguments "
            f"{list(FEATURE_VIS_ARGS)}, got {type(feature_vis).__name__}"
        )
    given = {} if feature_vis is True else dict(feature_vis)
    unknown = sorted(set(given) - set(FEATURE_VIS_ARGS), key=str)
    if unknown:
        raise ValueError(
            f"feature_vis: unknown setting(s) {unknown}; expected some of {list(FEATURE_VIS_ARGS)}"
        )
    params = inspect.signature(fv_fn).parameters
    out = {k: given.get(k, params[k].default) for k in FEATURE_VIS_ARGS}
    steps, lr, seed = out["steps"], out["lr"], out["seed"]
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= 1 << 20:
        raise ValueError(f"feature_vis['steps']: expected an int in [1, 2**20], got {steps!r}")
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not 0 < lr < float("inf"):
        raise ValueError(f"feature_vis['lr']: expected a finite number > 0, got {lr!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 1 << 63:
        raise ValueError(f"feature_vis['seed']: expected an int in [0, 2**63), got {seed!r}")
    if out["transforms"] not in TRANSFORMS:
        raise ValueError(
            f"feature_vis['transforms']: expected one of {list(TRANSFORMS)}, "
            f"got {out['transforms']!r}"
        )
    if out["objective"] not in OBJECTIVES:
        raise ValueError(
            f"feature_vis['objective']: expected 'max' or 'mean', got {out['objective']!r}"
        )
    out["lr"] = float(lr)
    return out


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
    top: int | None = None,
    feature_vis: dict | None = None,
) -> None:
    """Render ``names`` of ``atlas`` (model and data attached, arguments checked) into its
    directory ``store`` (updated in place); see :meth:`Atlas.render`. Each unit's sprite holds
    its ``top`` strongest hits (default all k; the layout's ``k``); with ``feature_vis``
    (settings from :func:`check_feature_vis`) each unit also gets its feature visualisation."""
    patch_display = _patch_display(atlas, mean, std)
    fv_record = None
    if feature_vis is not None:
        first = atlas.source.get(int(atlas.indices[atlas.layers[0]].reshape(-1)[0]))
        mode = "RGB" if first.shape[0] == 3 else "L"  # fit_channels: 3 stays RGB, else grey
        fv_record = {"size": list(atlas.input_size), "mode": mode, **feature_vis}

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
        layout = st.SpriteLayout.for_tiles(top or atlas.k, tile_hw)
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
            feature_vis=fv_record,
        )
        done = store.images.get(n)
        if done is not None and done.settings() == rec.settings():
            continue
        # the same sprites with other (or no) feature visualisations: keep the sprites
        same_tiles = (
            done is not None
            and dataclasses.replace(done, feature_vis=None).settings()
            == dataclasses.replace(rec, feature_vis=None).settings()
        )
        plans.append((n, rec, done.dir if same_tiles else None))
    ctx = distributed.context(init=False)
    groups = {  # sized by the hits each sprite shows (top), not the atlas's k
        n: _groups(int(atlas.values[n].shape[0]), rec.layout.k, batch_size) for n, rec, _ in plans
    }
    every = [g for n, _, _ in plans for g in groups[n]]
    total = sum(len(g) for g in every[ctx.rank :: ctx.world])
    show = progress if ctx.is_main or callable(progress) else False  # one bar: rank 0's
    with (
        Progress(show, total, desc="rendering", unit="unit") as bar,
        ThreadPoolExecutor(max_workers=max(1, min(4, os.cpu_count() or 1))) as pool,
    ):
        work = (atlas, store, model, dev, batch_size, max_tile, bar, pool)
        if ctx.world == 1:  # each layer named in the manifest as soon as its tiles are done
            for n, rec, keep in plans:
                _prepare_layer(atlas, store, n, rec, keep, ctx)
                mode = _render_groups(*work, n, rec, groups[n])
                _finish_layer(atlas, store, n, rec, mode)
        else:
            # every (layer, group) pair in one list dealt round the ranks, so no rank waits at
            # the end of each layer; the manifest names them all once every tile is on disk
            for n, rec, keep in plans:
                _prepare_layer(atlas, store, n, rec, keep, ctx)
            ctx.barrier()  # the folders are ready (and hold no tiles of other settings)
            pairs = [(n, g) for n, _, _ in plans for g in groups[n]][ctx.rank :: ctx.world]
            modes = {}
            for n, rec, _ in plans:
                modes[n] = _render_groups(*work, n, rec, [g for m, g in pairs if m == n])
            ctx.barrier()  # every rank's tiles are on disk
            if ctx.is_main:
                for n, rec, _ in plans:
                    _finish_layer(atlas, store, n, rec, modes[n])
            ctx.barrier()  # the manifest names the tiles
            if not ctx.is_main:
                named = {L.name: L.images for L in st.read_manifest(store.root).layers}
                for n, _, _ in plans:
                    store.images[n] = named[n]


def _groups(C: int, k: int, batch_size: int) -> list[list[int]]:
    """The units of a layer cut into the groups rendered together (their hits in shared
    backward passes; ``k`` the hits each sprite shows): a layout of the unit count only, so a
    unit's tile is the same bytes however the groups are spread over processes (see the
    module docstring)."""
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


def _partial(store, atlas, layer: str) -> Path:
    return store.root / "tiles" / f"{atlas.layers.index(layer)}.partial"


def _prepare_layer(atlas, store, layer, rec, keep, ctx) -> None:
    """(Rank 0) the layer's ``tiles/<i>.partial`` folder, holding no tiles of other settings.
    ``keep``: a tile folder of the same sprites (other feature visualisations) whose sprites
    are linked into it rather than rendered again."""
    partial = _partial(store, atlas, layer)
    settings = json.dumps(rec.settings(), sort_keys=True)
    marker = partial / "settings.json"
    if ctx.is_main:
        if partial.is_dir():
            ok = marker.is_file() and marker.stat().st_size < 1 << 16
            if not ok or marker.read_text() != settings:
                shutil.rmtree(partial)
        if not partial.is_dir():
            partial.mkdir(parents=True)
            if keep is not None:
                _link_sprites(st.inside(store.root, keep), partial, rec.format)
            write_atomic(marker, settings.encode())


def _render_groups(
    atlas, store, model, device, batch_size, max_tile, bar, pool, layer, rec, groups
) -> list[str]:
    """Render ``groups`` of units of ``layer`` (those not on disk yet) into its partial folder;
    the image modes of the sprites drawn."""
    from ..base.images import contrast_normalize, unnormalize
    from ..engine.backprop import backprop

    partial = _partial(store, atlas, layer)
    fv = rec.feature_vis

    def missing(c: int) -> tuple[bool, bool]:
        tile = not (partial / f"{c:05d}.{rec.format}").is_file()
        return tile, fv is not None and not (partial / f"{c:05d}.fv.{rec.format}").is_file()

    todo = [[c for c in g if any(missing(c))] for g in groups]
    bar.update(sum(len(g) for g in groups) - sum(len(g) for g in todo))
    todo = [g for g in todo if g]
    size = rec.crop
    disp = rec.display["patches"]
    spatial = atlas.spatial.get(layer, True)
    top = rec.layout.k  # the strongest hits of each unit that its sprite shows
    mode: list[str] = []
    pending: list = []
    for group in todo:
        need = {c: missing(c) for c in group}
        channels = [c for c in group if need[c][0]]
        drawn = [c for c in group if need[c][1]]
        if drawn:
            pictures = _feature_vis(atlas, model, layer, drawn, fv, rec, device, batch_size)
            for f in pending:
                f.result()
            pending = [
                pool.submit(_write_tile, partial / f"{c:05d}.fv.{rec.format}", pictures[j], rec)
                for j, c in enumerate(drawn)
            ]
        if not channels:
            bar.update(len(group))
            continue
        wanted, inverse, units = hit_units(
            atlas.indices[layer][:, :top],
            atlas.positions[layer][:, :top],
            channels,
            spatial=spatial,
        )
        images = atlas.source.stack(wanted).to(device)
        recon = backprop(
            model, images, layer=layer, units=units, rule=rec.rule, batch_size=batch_size
        )
        corners = [xy for c in channels for xy in atlas.corners(layer, c)[:top]]
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
        bar.update(len(group))
    for f in pending:
        f.result()
    return mode


def _finish_layer(atlas, store, layer, rec, mode: list[str]) -> None:
    """(Rank 0, every tile on disk) name the finished folder in the manifest."""
    partial = _partial(store, atlas, layer)
    if not mode:  # everything was on disk already: read the mode back from one tile
        from ..base.codec import decode_image

        px = decode_image((partial / f"{0:05d}.{rec.format}").read_bytes())
        mode.append("L" if px.ndim == 2 else "RGB")
    final = st.new_tile_dir(atlas.layers.index(layer))
    (partial / "settings.json").unlink()
    os.replace(partial, store.root / final)
    store.images[layer] = dataclasses.replace(rec, dir=final, mode=mode[0])
    records = {n: store.images.get(n) for n in atlas.layers}
    st.write_manifest(store.root, manifest_of(atlas, store.tensors, records, provenance_of(atlas)))
    st.remove_unreferenced(
        store.root, store.tensors, {r.dir for r in records.values() if r is not None}
    )


def _link_sprites(src: Path, dst: Path, fmt: str) -> None:
    """Hard-link (or copy) the unit sprites of tile folder ``src`` into ``dst``; their
    feature visualisations (of other settings) stay behind."""
    if not src.is_dir():
        return
    for p in src.iterdir():
        if p.is_file() and p.name.endswith(f".{fmt}") and ".fv." not in p.name:
            try:
                os.link(p, dst / p.name)
            except OSError:
                shutil.copyfile(p, dst / p.name)


def _feature_vis(atlas, model, layer, channels, fv, rec, device, batch_size):
    """uint8 (K, H, W, c) feature visualisations of ``channels`` of ``layer`` with the
    settings ``fv``, in the data's normalisation (what the patches record)."""
    from ..base.images import fit_channels, to_uint8
    from ..engine.featurevis import feature_vis

    disp = rec.display["patches"]
    mean = std = None
    if disp["kind"] == "unnormalize":
        mean, std = disp["mean"], disp["std"]
    elif disp["kind"] == "clip":  # the data is in [0, 1] as it is
        c = int(atlas.source.get(int(atlas.indices[layer].reshape(-1)[0])).shape[0])
        mean, std = [0.0] * c, [1.0] * c
    out = feature_vis(
        model,
        layer,
        channels,
        size=tuple(fv["size"]),
        steps=fv["steps"],
        lr=fv["lr"],
        transforms=fv["transforms"],
        seed=fv["seed"],
        objective=fv["objective"],
        mean=mean,
        std=std,
        batch_size=batch_size,
        device=device,
        progress=False,
    )
    return to_uint8(fit_channels(out.images)).permute(0, 2, 3, 1).cpu().numpy()


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
