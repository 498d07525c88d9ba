"""A static atlas site: a folder that shows an atlas in any browser, with no kernel.

``atlas.export_site("site/")`` (or ``export_site(atlas, "site/")``, or
``python -m zfwidgets site atlas/ site/``) works on any atlas and writes::

    site/
      index.html          # the page (no inline script, no request outside the folder)
      zfsite.js           # one classic-script bundle built from js/site/ by esbuild
      zfsite.css          # one stylesheet
      manifest.js         # the site manifest: a JSON object assigned to window.zfSiteManifest
      layers/<i>.js       # layer i's hits (values, image indices, classes), read when shown
      tiles/<i>-<token>/  # a stored, rendered atlas's own unit sprites, hard-linked unchanged
    or
      atlas/              # an atlas that had no tiles (just mined, a single file, or a folder
                          # with layers left to render): stored here and rendered here

An atlas folder whose every layer is rendered is linked as it is (no extra disk space). Any
other atlas is saved into the site's own ``atlas/`` (the tiles it already has hard-linked in)
and its missing layers are rendered there with the attached model and data (docs/method.md
Sec. 3.1, Fig. 2): one call from a freshly mined atlas to a page to share. The site's
``atlas/`` is a complete atlas folder (``zf.Atlas.load("site/atlas")``). Rendering works in the
hidden ``site/.atlas.partial/``: an export that is interrupted (or cancelled through
``progress=``) leaves the folder's previous site as it was, and the next export continues from
the units already rendered; a rerun over the same hits renders nothing again.

The manifest and the hits are JSON wrapped in a one-line script, so the page opens from
``file://`` (where a browser refuses to ``fetch()`` local JSON) as well as from any static web
server. The page shows the model's layers, a whole-layer overview (each unit's strongest
reconstruction, its top-k reconstructions or its top-k patches; paged, sorted by index or
strength) and, per unit, the top-k patches beside their deconvnet reconstructions
(docs/method.md Sec. 3.1, the paper's Fig. 2) with activation values and class names as text, and
the classes its k hits belong to, with counts (all k, also when fewer are rendered).
Every unit has a deep link (``index.html#/features.10/37``).
"""

from __future__ import annotations

import dataclasses
import errno
import html
import json
import math
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..base.classes import find_labels
from ..base.codec import IMAGE_FORMATS
from ..base.files import replace_dir, temporary_name
from ..base.progress import ProgressArg, check_progress
from ..base.static import bundle_path
from . import store as st
from .formats import hits_of, manifest_of, provenance_of

__all__ = ["SiteReport", "export_site", "SITE_FORMAT"]

SITE_FORMAT = "zfwidgets.site/1"
#: The bundles the page loads, built by ``npm run build`` into ``zfwidgets/static/site/``.
BUNDLES = ("zfsite.js", "zfsite.css")
#: Written first in manifest.js: marks a folder this module may replace.
_MARK = "/* zfwidgets atlas site */"
#: Significant digits kept for activation values (shown as text).
_DIGITS = 4
#: The atlas a site holds (when it was stored there), and where it is rendered until done.
ATLAS_DIR = "atlas"
_STAGING = ".atlas.partial"


@dataclass
class SiteReport:
    """What :func:`export_site` wrote.

    Attributes
    ----------
    path : the site folder
    layers : every layer in the site
    rendered : the layers shown with pictures (the others show their values only)
    missing : ``{layer: [channels]}`` of units whose tile file was missing in the atlas
    tile_bytes : bytes of the tiles (shared with the atlas when hard-linked)
    other_bytes : bytes of everything else (page, bundles, manifest, hits; the stored atlas's
        manifest and hits when it is in the site)
    linked : whether the tiles taken from another folder were hard-linked (else copied)
    atlas : the atlas folder inside the site (``path / "atlas"``) when the atlas was stored
        there to render its tiles; None when the site links the tiles of the atlas's folder
    """

    path: Path
    layers: list[str]
    rendered: list[str]
    missing: dict[str, list[int]] = field(default_factory=dict)
    tile_bytes: int = 0
    other_bytes: int = 0
    linked: bool = True
    atlas: Path | None = None

    def summary(self) -> str:
        """One paragraph for the command line."""
        lines = [
            f"site written to {os.fspath(self.path)}: {len(self.layers)} layer(s), "
            f"{len(self.rendered)} with pictures; tiles {self.tile_bytes / 1e6:.1f} MB "
            f"({self._tiles_how()}), everything else {self.other_bytes / 1e3:.0f} kB"
        ]
        if self.atlas is not None:
            lines.append(
                f"the atlas is stored in {os.fspath(self.atlas)} "
                f"(zf.Atlas.load({os.fspath(self.atlas)!r}))"
            )
        unrendered = [n for n in self.layers if n not in self.rendered]
        if unrendered:
            lines.append(
                "no tiles for " + ", ".join(unrendered) + " (values only; to render them, "
                "export from Python with the model and data attached: "
                "zf.Atlas.load('atlas/', model=model, data=data).export_site('site/'))"
            )
        for layer, chans in self.missing.items():
            shown = ", ".join(str(c) for c in chans[:10]) + (" ..." if len(chans) > 10 else "")
            lines.append(f"layer {layer}: {len(chans)} tile file(s) missing in the atlas ({shown})")
        lines.append(f"open {os.fspath(self.path / 'index.html')}")
        return "\n".join(lines)

    def _tiles_how(self) -> str:
        if self.atlas is not None:
            return "in the site's atlas"
        return "hard-linked" if self.linked else "copied"


def _scaled(values: list[float]) -> tuple[list[int], int]:
    """``values`` as integers times ``10**e``, ``e`` chosen so the largest keeps ``_DIGITS``
    significant digits (every value to within 0.05 % of the layer's largest): a short,
    exact text form for the page, which shows them with 4 significant digits."""
    finite = [abs(v) for v in values if math.isfinite(v)]
    top = max(finite, default=0.0)
    if top == 0:
        return [0 for _ in values], 0
    e = math.floor(math.log10(top)) - (_DIGITS - 1)
    scale = 10.0**-e
    return [round(v * scale) if math.isfinite(v) else 0 for v in values], e


def _text(v: Any, what: str, limit: int = 1000) -> str:
    if not isinstance(v, str):
        raise TypeError(f"{what}: expected a string, got {type(v).__name__}")
    return v[:limit]


def _labels_of(atlas: Any, labels: Any, wanted: list[int]) -> dict[int, int]:
    """Image index -> integer label for the images in ``wanted``: from ``labels`` when given
    (:func:`find_labels`; empty when some image has no label), else the labels stored with the
    atlas or read from its data (:meth:`Atlas.hit_labels`; images without one left out)."""
    if labels is None:
        stored: dict[int, int] = {}
        for n in atlas.layers:
            hit = atlas.hit_labels(n)
            if hit is None:
                return {}
            for i, y in zip(atlas.indices[n].reshape(-1).tolist(), hit.reshape(-1).tolist()):
                if y >= 0:
                    stored[int(i)] = int(y)
        return stored
    n = None
    data = atlas.provenance.get("data") if isinstance(atlas.provenance, dict) else None
    if isinstance(data, dict) and isinstance(data.get("n"), int):
        n = data["n"]
    found = find_labels(atlas.source, labels=labels, n=n)
    if labels is not None:
        seq = found.labels
        bad = [i for i in wanted if i >= len(seq)]
        if bad:
            raise ValueError(
                f"labels: {len(seq)} labels, but the atlas names image {bad[0]} (one label per "
                "image of the data the atlas was mined over)"
            )
    out = {}
    for i in wanted:  # read one at a time: stop at the first image without a label
        y = found.labels_of([i])[0]
        if y is None:
            return {}
        out[i] = y
    return out


def _classes_of(atlas: Any, classes: Any) -> list[str] | None:
    if classes is None:
        return atlas.class_names()
    return find_labels(atlas.source, classes=classes).classes


def _place(src: Path, dst: Path, link: bool) -> bool:
    """Hard-link ``src`` at ``dst`` (copy when links are refused); True when linked."""
    if link:
        try:
            os.link(src, dst)
            return True
        except OSError as e:
            if e.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EACCES):
                raise
    shutil.copyfile(src, dst)
    return False


def _script(name: str, payload: Any) -> bytes:
    """``payload`` as JSON inside a one-line classic script (ASCII only, so U+2028 and the
    like are escaped)."""
    body = json.dumps(payload, ensure_ascii=True, allow_nan=False, separators=(",", ":"))
    return f"{_MARK}\n{name}({body});\n".encode("ascii")


def _index_html(title: str) -> str:
    t = html.escape(title, quote=True)
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>{t}</title>
<link rel="stylesheet" href="zfsite.css">
</head>
<body>
<noscript>This atlas is drawn by zfsite.js: enable JavaScript to browse it.</noscript>
<div id="zf-site" class="zf-site"></div>
<script src="manifest.js"></script>
<script src="zfsite.js"></script>
</body>
</html>
"""


def _bundle(name: str) -> Path:
    return bundle_path(f"site/{name}")


def _is_site(path: Path) -> bool:
    """Whether ``path`` is a folder this module wrote: a site (its manifest.js starts with the
    mark), or the rendering folder of a first export that was interrupted, alone."""
    m = path / "manifest.js"
    try:
        with open(m, "rb") as f:
            return f.read(len(_MARK)) == _MARK.encode()
    except OSError:
        pass
    try:
        return [p.name for p in path.iterdir()] == [_STAGING]
    except OSError:
        return False


def _link_dir(src: Path, dst: Path, link: bool) -> bool:
    """The files of the flat folder ``src`` at ``dst`` (new), hard-linked when ``link`` and
    the file system allows; True when every file was linked."""
    dst.mkdir(parents=True)
    linked = True
    for p in sorted(src.iterdir()):
        if p.is_file():
            linked = _place(p, dst / p.name, link) and linked
    return linked


def _within(path: Path, folder: Path) -> bool:
    path, folder = path.resolve(), folder.resolve()
    return path == folder or folder in path.parents


def _stage(
    atlas: Any,
    out: Path,
    own: Path | None,
    *,
    render: bool,
    link: bool,
    progress: ProgressArg,
    mean: Any,
    std: Any,
    feature_vis: dict | None = None,
) -> tuple[Any, Path, bool]:
    """Store ``atlas`` in ``out/.atlas.partial`` and render the layers it has no tiles of.

    The tiles are taken, in this order, from: the atlas's own folder ``own`` (kept as they
    are, whatever their settings), what an interrupted export left in the rendering folder,
    the site's previous ``atlas/`` (both re-rendered by :meth:`Atlas.render` when their
    settings differ from this call's). Returns the stored copy of the atlas (the caller's is
    not changed), its folder, and whether every file taken from ``own`` was hard-linked.
    """
    work = out / _STAGING
    if work.exists():
        try:
            st.read_manifest(work)
        except (ValueError, OSError):
            shutil.rmtree(work)  # unreadable leftovers: start again
    copy = dataclasses.replace(
        atlas, _store=None, fields=dict(atlas.fields), _cache=dict(atlas._cache)
    )
    copy.save(work)  # keeps the tiles it already holds for the same hits
    store = copy._store
    hits = {n: hits_of(copy, n) for n in copy.layers}
    linked = True
    kept: set[str] = set()

    def adopt(n: str, rec: st.ImagesRecord, src: Path, how: bool) -> bool:
        now = store.images.get(n)
        if now is not None and now.dir == rec.dir and now.settings() == rec.settings():
            return True  # taken over by the export that was interrupted
        name = rec.dir
        if (work / name).exists():
            name = st.new_tile_dir(copy.layers.index(n))
        (work / "tiles").mkdir(exist_ok=True)
        ok = _link_dir(src, work / name, how)
        store.images[n] = dataclasses.replace(rec, dir=name)
        return ok

    if own is not None:
        for n in copy.layers:
            rec = atlas._store.images.get(n)
            if rec is not None and rec.hits == hits[n]:
                src = st.inside(own, rec.dir)
                if src.is_dir():
                    linked = adopt(n, rec, src, link) and linked
                    kept.add(n)
    previous = out / ATLAS_DIR
    if (out / "manifest.js").is_file() and previous.is_dir() and own != previous.resolve():
        try:
            m = st.read_manifest(previous)
        except (ValueError, OSError):
            m = None
        for L in m.layers if m is not None else []:
            rec = L.images
            if L.name in hits and store.images.get(L.name) is None and rec is not None:
                src = st.inside(previous, rec.dir)
                if rec.hits == hits[L.name] and src.is_dir():
                    adopt(L.name, rec, src, True)
    records = {n: store.images.get(n) for n in copy.layers}
    st.write_manifest(work, manifest_of(copy, store.tensors, records, provenance_of(copy)))
    st.remove_unreferenced(work, store.tensors, {r.dir for r in records.values() if r is not None})
    todo = [n for n in copy.layers if n not in kept]
    if render and todo:
        copy.render(layers=todo, progress=progress, mean=mean, std=std, feature_vis=feature_vis)
    if render and feature_vis is not None:
        # kept layers gain their feature visualisations with the settings of their sprites
        # (which render() then keeps, hard-linked)
        for n in copy.layers:
            rec = store.images.get(n)
            if n in kept and rec is not None and rec.feature_vis is None:
                disp = rec.display["patches"]
                unnorm = disp["kind"] == "unnormalize"
                copy.render(
                    layers=[n],
                    rule=rec.rule,
                    format=rec.format,
                    quality=rec.quality or 85,
                    top=rec.layout.k,
                    max_tile=max(rec.layout.tile) if tuple(rec.layout.tile) != rec.crop else None,
                    mean=disp["mean"] if unnorm else None,
                    std=disp["std"] if unnorm else None,
                    progress=progress,
                    feature_vis=feature_vis,
                )
    return copy, work, linked


def export_site(
    atlas: Any,
    path: str | os.PathLike,
    *,
    classes: Sequence[str] | None = None,
    labels: Sequence[int] | None = None,
    title: str | None = None,
    link: bool = True,
    render: bool = True,
    progress: ProgressArg = True,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    feature_vis: bool | dict = False,
) -> SiteReport:
    """Write a static site of ``atlas`` to ``path`` (see the module docstring).

    Parameters
    ----------
    atlas : Atlas
        Any atlas. A folder (``atlas.save("atlas/")``) whose layers are all rendered
        (:meth:`~zfwidgets.Atlas.render`) is linked as it is. Any other (just mined, loaded
        from a single file, a folder with layers left to render) is stored in the site's
        ``atlas/`` and its missing layers are rendered there, which needs the model and the
        data attached (:func:`zfwidgets.mine` attaches them;
        ``zf.Atlas.load(path, model=model, data=data)`` does when loading).
    path : str or PathLike
        A new or empty folder, or a site written here before (replaced).
    classes : list of str, optional
        Class names, indexed by label (default: the data's ``classes`` when the atlas has
        data attached). Shown as text, never as HTML.
    labels : sequence of int, optional
        One label per image of the data the atlas was mined over (default: read from the
        attached data: its ``labels``/``targets``, else its ``(image, label)`` items).
    title : str, optional
        The page title (default: the model's class and the atlas's name).
    link : bool
        Hard-link the tiles of the atlas's folder (no extra disk space; falls back to copying
        across file systems). ``False`` always copies.
    render : bool
        Render the layers that have no tiles (default). ``False``: they show their values
        only, and an atlas with no model attached makes a site of values only.
    progress : bool or callable
        For the rendering, as :meth:`~zfwidgets.Atlas.render`: ``True`` a tqdm bar over
        units; a callable ``progress(done, total)`` may raise (e.g.
        :class:`zfwidgets.base.progress.Cancelled`) to stop, the folder's previous site left
        as it was and the units rendered so far kept for the next export.
    mean, std : sequences of floats, optional
        The data's ``Normalize`` for showing the patches (as :meth:`~zfwidgets.Atlas.render`;
        default: found in the data's transform or the dataset).
    feature_vis : bool or dict
        Also show each unit's feature visualisation first on its page and as an overview
        mode: layers without them get them rendered (as :meth:`~zfwidgets.Atlas.render`'s
        ``feature_vis``; ``True`` its defaults), which needs the model attached. Layers that
        already have them show them whatever this says.

    Returns
    -------
    SiteReport
        The folder, the layers with and without pictures, missing tiles, sizes, and the
        atlas folder inside the site when it was stored there.

    Raises
    ------
    ValueError
        Tiles to render and no model or data attached (the message says how to attach them),
        or a ``path`` that is a file or a non-empty folder that is not a site, inside the
        atlas's folder, or holding the atlas's folder (other than the site's own ``atlas/``).
    """
    if not all(hasattr(atlas, a) for a in ("layers", "has_images", "unit_images", "image_file")):
        raise TypeError(f"atlas: expected a zfwidgets.Atlas, got {type(atlas).__name__}")
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path: expected a folder path, got {type(path).__name__}")
    if not isinstance(render, bool):
        raise TypeError(f"render: expected True or False, got {type(render).__name__}")
    progress = check_progress(progress)
    if (mean is None) != (std is None):
        raise ValueError("mean and std: give both or neither")
    from .render import check_feature_vis

    fv = check_feature_vis(feature_vis)
    out = Path(os.fspath(path))
    if out.exists() and not out.is_dir():
        raise ValueError(f"path: {os.fspath(out)!r} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not _is_site(out):
        raise ValueError(
            f"path: {os.fspath(out)!r} is a non-empty folder that is not an atlas site; "
            "refusing to write into it (give a new or empty folder)"
        )
    root = None if atlas.path is None else Path(atlas.path)
    own = root.resolve() if root is not None and root.is_dir() else None
    if own is not None:
        if _within(out, own):
            raise ValueError("path: the site must not be written inside the atlas directory")
        if _within(own, out) and own != (out / ATLAS_DIR).resolve():
            raise ValueError(
                f"path: the atlas directory {os.fspath(root)!r} is inside the site folder, "
                "which is replaced; give another folder"
            )
    elif root is not None and _within(root, out):
        raise ValueError(
            f"path: the atlas file {os.fspath(root)!r} is inside the site folder, which is "
            "replaced; give another folder"
        )
    if title is not None:
        title = _text(title, "title", 200)
    for name in BUNDLES:
        _bundle(name)

    missing_tiles = [
        n
        for n in atlas.layers
        if own is None
        or not atlas.has_images(n)
        or (fv is not None and not atlas.has_feature_vis(n))
    ]
    attached = atlas.model is not None and atlas.source is not None
    if render and own is None and not attached:
        what = " and ".join(
            w for w, v in (("model", atlas.model), ("data", atlas.source)) if v is None
        )
        raise ValueError(
            f"atlas: its tiles must be rendered for the site, which needs the {what} it was "
            "mined with, and this atlas has none attached. Attach them when loading: "
            "zf.Atlas.load(path, model=model, data=data).export_site(...) (zf.mine attaches "
            "both); or pass render=False for a site of the values only"
        )
    in_site = (render and attached and bool(missing_tiles)) or (
        own is not None and _within(own, out)
    )

    prov = atlas.provenance if isinstance(atlas.provenance, dict) else {}
    model_info = prov.get("model") if isinstance(prov.get("model"), dict) else {}
    model_class = str(model_info.get("class", "")) if model_info else ""
    if not model_class and atlas.model is not None:
        cls = type(atlas.model)
        model_class = f"{cls.__module__}.{cls.__qualname__}"
    n_images = prov.get("data", {}).get("n") if isinstance(prov.get("data"), dict) else None
    if n_images is None and atlas.source is not None:
        n_images = len(atlas.source)
    if title is None:
        short = model_class.rsplit(".", 1)[-1] if model_class else "model"
        name = "" if root is None else f" ({root.name if own else root.stem})"
        title = f"{short} atlas{name}"

    hits = sorted(
        {int(i) for n in atlas.layers for i in atlas.indices[n].reshape(-1).tolist() if i >= 0}
    )
    label_of = _labels_of(atlas, labels, hits)
    names = _classes_of(atlas, classes)
    # the class table holds only the names the hits use
    used = sorted(set(label_of.values()))
    table = [
        (names[y] if names is not None and 0 <= y < len(names) else f"class {y}") for y in used
    ]
    slot = {y: j for j, y in enumerate(used)}

    report = SiteReport(path=out, layers=list(atlas.layers), rendered=[])
    work = None
    if in_site:
        out.mkdir(parents=True, exist_ok=True)
        atlas, work, report.linked = _stage(
            atlas,
            out,
            own,
            render=render and attached,
            link=link,
            progress=progress,
            mean=mean,
            std=std,
            feature_vis=fv,
        )
        base, prefix = work.resolve(), ATLAS_DIR + "/"
        report.atlas = out / ATLAS_DIR
    else:
        base, prefix = own, ""

    tmp = temporary_name(out)
    tmp.mkdir(parents=True)
    try:
        (tmp / "layers").mkdir()
        layers_meta = []
        k = atlas.k
        for i, n in enumerate(atlas.layers):
            values = atlas.values[n].detach().float().cpu()
            indices = atlas.indices[n].cpu()
            C = int(values.shape[0])
            rf = atlas.fields.get(n)
            entry: dict[str, Any] = {
                "name": n,
                "channels": C,
                "spatial": bool(atlas.spatial.get(n, True)),
                "data": f"layers/{i}.js",
                "tiles": None,
            }
            if rf is not None:
                entry["field"] = {
                    "size": list(rf.size),
                    "stride": list(rf.stride),
                    "output": list(rf.output_size),
                }
            if base is not None and atlas.has_images(n):
                rec = atlas._store.images[n]
                rel = atlas.image_file(n, 0).resolve().relative_to(base)
                tile_dir = prefix + rel.parent.as_posix()
                suffix = rel.suffix
                if work is None:
                    (tmp / tile_dir).mkdir(parents=True)
                missing, fv_missing = [], []
                fv = rec.feature_vis
                for c in range(C):
                    files = [(atlas.image_file(n, c), missing)]
                    if fv is not None:
                        files.append((atlas.feature_vis_file(n, c), fv_missing))
                    for src, absent in files:
                        if not src.is_file():
                            absent.append(c)
                            continue
                        if work is None:
                            dst = tmp / tile_dir / src.name
                            report.linked = _place(src, dst, link) and report.linked
                            report.tile_bytes += dst.stat().st_size
                        else:
                            report.tile_bytes += src.stat().st_size
                if missing:
                    report.missing[n] = missing
                report.rendered.append(n)
                # the sprite's geometry as the atlas's manifest records it (js/site/route.js)
                layout = rec.layout.to_json()
                entry["tiles"] = {
                    "dir": tile_dir,
                    "ext": suffix,
                    "digits": len(rel.stem),
                    "mime": IMAGE_FORMATS[rec.format],
                    **{
                        key: layout[key]
                        for key in ("k", "columns", "rows", "tile", "width", "height")
                    },
                    "missing": missing,
                    # each unit's feature visualisation beside its sprite (render(feature_vis=))
                    "fv": None
                    if fv is None
                    else {
                        "ext": ".fv" + suffix,
                        "size": list(fv["size"]),
                        "missing": fv_missing,
                    },
                }
            vals, e = _scaled(values.reshape(-1).tolist())
            idx = [int(v) for v in indices.reshape(-1).tolist()]
            data: dict[str, Any] = {"v": vals, "e": e, "i": idx}
            if label_of:
                data["y"] = [slot.get(label_of.get(j, -1), -1) for j in idx]
            (tmp / "layers" / f"{i}.js").write_bytes(_script("zfSiteLayer", [i, data]))
            layers_meta.append(entry)
        manifest = {
            "format": SITE_FORMAT,
            "title": title,
            "model": model_class,
            "k": k,
            "input_size": list(atlas.input_size),
            "images": n_images,
            "classes": table if label_of else None,
            "layers": layers_meta,
        }
        (tmp / "manifest.js").write_text(
            f"{_MARK}\nwindow.zfSiteManifest = "
            + json.dumps(manifest, ensure_ascii=True, allow_nan=False, separators=(",", ":"))
            + ";\n",
            encoding="ascii",
        )
        (tmp / "index.html").write_text(_index_html(title), encoding="utf-8")
        for name in BUNDLES:
            shutil.copyfile(_bundle(name), tmp / name)
        tiles = {"tiles", ATLAS_DIR + "/tiles"}
        report.other_bytes = sum(
            p.stat().st_size
            for p in tmp.rglob("*")
            if p.is_file()
            and not any(p.relative_to(tmp).as_posix().startswith(t + "/") for t in tiles)
        )
        if work is not None:
            report.other_bytes += sum(p.stat().st_size for p in work.iterdir() if p.is_file())
            os.replace(work, tmp / ATLAS_DIR)
        replace_dir(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return report
