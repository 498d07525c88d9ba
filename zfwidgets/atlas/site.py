"""A static atlas site: a folder that shows a stored atlas in any browser, with no kernel.

``export_site(atlas, "site/")`` (or ``atlas.export_site("site/")``, or
``python -m zfwidgets site atlas/ site/``) writes::

    site/
      index.html          # the page (no inline script, no request outside the folder)
      zfsite.js           # one classic-script bundle built from js/site/ by esbuild
      zfsite.css          # one stylesheet
      manifest.js         # the site manifest: a JSON object assigned to window.zfSiteManifest
      layers/<i>.js       # layer i's hits (values, image indices, classes), read when shown
      tiles/<i>-<token>/  # the atlas's own unit sprites, hard-linked (or copied) unchanged

The manifest and the hits are JSON wrapped in a one-line script, so the page opens from
``file://`` (where a browser refuses to ``fetch()`` local JSON) as well as from any static web
server. The page shows the model's layers, a whole-layer overview (each unit's strongest
reconstruction, its top-k reconstructions or its top-k patches; paged, sorted by index or
strength) and, per unit, the top-k patches beside their deconvnet reconstructions
(docs/method.md Sec. 3.1, the paper's Fig. 2) with activation values and class names as text.
Every unit has a deep link (``index.html#/features.10/37``).
"""

from __future__ import annotations

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
from ..base.files import replace_dir, temporary_name
from ..base.static import bundle_path

__all__ = ["SiteReport", "export_site", "SITE_FORMAT"]

SITE_FORMAT = "zfwidgets.site/1"
#: The bundles the page loads, built by ``npm run build`` into ``zfwidgets/static/site/``.
BUNDLES = ("zfsite.js", "zfsite.css")
#: Written first in manifest.js: marks a folder this module may replace.
_MARK = "/* zfwidgets atlas site */"
#: Significant digits kept for activation values (shown as text).
_DIGITS = 4


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
    other_bytes : bytes of everything else (page, bundles, manifest, hits)
    linked : whether the tiles were hard-linked (else copied)
    """

    path: Path
    layers: list[str]
    rendered: list[str]
    missing: dict[str, list[int]] = field(default_factory=dict)
    tile_bytes: int = 0
    other_bytes: int = 0
    linked: bool = True

    def summary(self) -> str:
        """One paragraph for the command line."""
        lines = [
            f"site written to {os.fspath(self.path)}: {len(self.layers)} layer(s), "
            f"{len(self.rendered)} with pictures; tiles {self.tile_bytes / 1e6:.1f} MB "
            f"({'hard-linked' if self.linked else 'copied'}), everything else "
            f"{self.other_bytes / 1e3:.0f} kB"
        ]
        unrendered = [n for n in self.layers if n not in self.rendered]
        if unrendered:
            lines.append(
                "no tiles for " + ", ".join(unrendered) + " (values only; render them with "
                "atlas.render(layers=[...]) and export again)"
            )
        for layer, chans in self.missing.items():
            shown = ", ".join(str(c) for c in chans[:10]) + (" ..." if len(chans) > 10 else "")
            lines.append(f"layer {layer}: {len(chans)} tile file(s) missing in the atlas ({shown})")
        lines.append(f"open {os.fspath(self.path / 'index.html')}")
        return "\n".join(lines)


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
    """Image index -> integer label for the images in ``wanted`` (:func:`find_labels`; empty
    when some image has no label)."""
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
    m = path / "manifest.js"
    try:
        with open(m, "rb") as f:
            return f.read(len(_MARK)) == _MARK.encode()
    except OSError:
        return False


def export_site(
    atlas: Any,
    path: str | os.PathLike,
    *,
    classes: Sequence[str] | None = None,
    labels: Sequence[int] | None = None,
    title: str | None = None,
    link: bool = True,
) -> SiteReport:
    """Write a static site of a stored atlas to ``path`` (see the module docstring).

    Parameters
    ----------
    atlas : Atlas
        Saved to a directory (``atlas.save("atlas/")``); the layers rendered with
        :meth:`~zfwidgets.Atlas.render` are shown with pictures, the others with their values.
    path : str or PathLike
        A new or empty folder, or a site written here before (replaced).
    classes : list of str, optional
        Class names, indexed by label (default: the data's ``classes`` when the atlas has
        data attached). Shown as text, never as HTML.
    labels : sequence of int, optional
        One label per image of the data the atlas was mined over (default: read from the
        attached data: its ``labels``/``targets``, else its ``(image, label)`` items).
    title : str, optional
        The page title (default: the model's class and the atlas's folder name).
    link : bool
        Hard-link the tiles (no extra disk space; falls back to copying across file
        systems). ``False`` always copies.

    Returns
    -------
    SiteReport
        The folder, the layers with and without pictures, missing tiles, sizes.

    Raises
    ------
    ValueError
        An atlas with no directory, or a ``path`` that is a file or a non-empty folder that is
        not a site.
    """
    if not all(hasattr(atlas, a) for a in ("layers", "has_images", "unit_images", "image_file")):
        raise TypeError(f"atlas: expected a zfwidgets.Atlas, got {type(atlas).__name__}")
    root = atlas.path
    if root is None or not Path(root).is_dir():
        raise ValueError(
            "atlas: a site is made from an atlas directory; save it first with "
            "atlas.save('atlas/') and render its tiles with atlas.render()"
        )
    root = Path(root)
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path: expected a folder path, got {type(path).__name__}")
    out = Path(os.fspath(path))
    if out.exists() and not out.is_dir():
        raise ValueError(f"path: {os.fspath(out)!r} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not _is_site(out):
        raise ValueError(
            f"path: {os.fspath(out)!r} is a non-empty folder that is not an atlas site; "
            "refusing to write into it (give a new or empty folder)"
        )
    if out.resolve() == root.resolve() or root.resolve() in out.resolve().parents:
        raise ValueError("path: the site must not be written inside the atlas directory")
    if title is not None:
        title = _text(title, "title", 200)
    for name in BUNDLES:
        _bundle(name)

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
        title = f"{short} atlas ({root.name})"

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

    tmp = temporary_name(out)
    tmp.mkdir(parents=True)
    report = SiteReport(path=out, layers=list(atlas.layers), rendered=[])
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
            if atlas.has_images(n):
                first = atlas.unit_images(n, 0)
                rel = atlas.image_file(n, 0).resolve().relative_to(root.resolve())
                tile_dir = rel.parent.as_posix()
                suffix = rel.suffix
                (tmp / tile_dir).mkdir(parents=True)
                missing = []
                for c in range(C):
                    src = atlas.image_file(n, c)
                    if not src.is_file():
                        missing.append(c)
                        continue
                    dst = tmp / tile_dir / src.name
                    report.linked = _place(src, dst, link) and report.linked
                    report.tile_bytes += dst.stat().st_size
                if missing:
                    report.missing[n] = missing
                report.rendered.append(n)
                # the sprite's geometry as the atlas's manifest records it (js/site/route.js)
                layout = first.layout.to_json()
                entry["tiles"] = {
                    "dir": tile_dir,
                    "ext": suffix,
                    "digits": len(rel.stem),
                    "mime": first.mime,
                    **{
                        key: layout[key]
                        for key in ("k", "columns", "rows", "tile", "width", "height")
                    },
                    "missing": missing,
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
        report.other_bytes = sum(
            p.stat().st_size
            for p in tmp.rglob("*")
            if p.is_file() and not p.relative_to(tmp).as_posix().startswith("tiles/")
        )
        replace_dir(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return report
