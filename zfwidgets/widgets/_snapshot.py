"""A picture of every widget, for front ends that cannot run it (GitHub, nbviewer, VS Code
without the kernel, PDF export, docs builds).

:class:`Pictured` is mixed into :class:`~zfwidgets.widgets._base.ZFWidget` and into the
ipywidgets composites (Explorer, MonitorView, InvarianceCurves, EmbeddingView,
CorrespondenceTable). Their display bundle (``_repr_mimebundle_``) keeps the live widget view
and adds an ``image/png`` of the state shown at display time and a one-line ``text/plain``;
``widget.snapshot()`` returns the same PNG bytes and ``widget.snapshot("file.png")`` also
writes them (atomically, :mod:`zfwidgets.base.files`).

Every picture is drawn here, in one place, from what the front end receives: the widget's
traits, payloads decoded with :mod:`zfwidgets.base.codec`, with the drawing pieces of
:mod:`zfwidgets.base.picture` (numpy + Pillow; the same colour tables, layout rules and
number formats as ``js/``). Composites stack the pictures of their children (a ``VBox`` one
under the other, an ``HBox`` side by side); labels and HTML become text; plotly figures are
drawn from their traces. A picture that fails to draw never breaks display: the bundle then
has text only (the failure is logged at debug level).
"""

from __future__ import annotations

import base64
import html
import logging
import math
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageColor, ImageDraw

from ..base import picture as P
from ..base.codec import decode
from ..base.files import write_atomic

__all__ = ["Pictured", "draw", "register"]

_log = logging.getLogger("zfwidgets.snapshot")

#: Widest picture, in pixels (a notebook column).
MAX_WIDTH = 960

Drawer = Callable[[Any], Image.Image]
Describer = Callable[[Any], str]
_DRAWERS: dict[str, Drawer] = {}


def register(name: str) -> Callable[[Drawer], Drawer]:
    """Register the drawer of the widget class called ``name`` (and its subclasses)."""

    def deco(fn: Drawer) -> Drawer:
        _DRAWERS[name] = fn
        return fn

    return deco


def _lookup(table: dict[str, Any], widget: Any) -> Any:
    for cls in type(widget).__mro__:
        hit = table.get(cls.__name__)
        if hit is not None:
            return hit
    return None


def draw(widget: Any) -> Image.Image | None:
    """The picture of any widget: a registered drawer, else a composite of its children, else
    its text (labels, HTML); None for widgets with nothing to show (buttons, uploads)."""
    layout = getattr(widget, "layout", None)
    if (
        getattr(layout, "display", None) == "none"
        or getattr(layout, "visibility", None) == "hidden"
    ):
        return None
    drawer = _lookup(_DRAWERS, widget)
    if drawer is not None:
        return drawer(widget)
    return _generic(widget)


class Pictured:
    """Mixin: ``snapshot()`` and a display bundle with ``image/png`` and one-line ``text/plain``.

    Put it before the ipywidgets / anywidget base class.
    """

    def snapshot(self, path: str | os.PathLike | None = None) -> bytes:
        """A PNG picture of what the widget shows now.

        Parameters
        ----------
        path : str or os.PathLike, optional
            Also write the PNG there (atomically: a reader sees the old file or the new one);
            its name must end in ``.png`` and its folder must exist.

        Returns
        -------
        bytes
            The PNG file's bytes (the same bytes the display bundle carries as ``image/png``).
        """
        target = None
        if path is not None:
            if isinstance(path, bool) or not isinstance(path, (str, os.PathLike)):
                raise TypeError(
                    f"path: expected a str or os.PathLike file name, got {type(path).__name__}"
                )
            target = Path(os.fspath(path))
            if target.suffix.lower() != ".png":
                raise ValueError(f"path: expected a file name ending in .png, got {str(target)!r}")
            if not target.parent.is_dir():
                raise ValueError(f"path: the folder {str(target.parent)!r} does not exist")
            if target.is_dir():
                raise ValueError(f"path: {str(target)!r} is a folder, expected a file name")
        data = P.png(self._picture())
        if target is not None:
            write_atomic(target, data)
        return data

    def _picture(self) -> Image.Image:
        im = draw(self)
        return im if im is not None else P.text_block(self._describe())

    def _describe(self) -> str:
        text = (_lookup(_DESCRIBE, self) or _describe_default)(self)
        return " ".join(text.split())  # one line

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        bundle = super()._repr_mimebundle_(**kwargs)  # type: ignore[misc]
        if bundle is None:  # closed
            return None
        data, meta = bundle if isinstance(bundle, tuple) else (bundle, None)
        data = dict(data)
        try:
            data["text/plain"] = self._describe()
        except Exception:  # never break display
            _log.debug("zfwidgets: no text for %s", type(self).__name__, exc_info=True)
        try:
            data["image/png"] = base64.b64encode(self.snapshot()).decode("ascii")
        except Exception:  # never break display: text only
            _log.debug("zfwidgets: no picture for %s", type(self).__name__, exc_info=True)
        return (data, meta) if meta is not None else data


# -- text/plain ---------------------------------------------------------------------------------
def _args(widget: Any, *names: str) -> str:
    parts = []
    for n in names:
        v = getattr(widget, n, None)
        parts.append(f"{n}={v!r}")
    return f"{type(widget).__name__}({', '.join(parts)})"


def _count(widget: Any) -> int:
    frame = getattr(widget, "frame", None) or {}
    return int(frame.get("grid", {}).get("count", 0))


def _describe_default(widget: Any) -> str:
    return f"{type(widget).__name__}()"


_DESCRIBE: dict[str, Describer] = {
    "LayerGrid": lambda w: _args(w, "layer", "channel"),
    "TopNine": lambda w: _args(w, "layer", "channel"),
    "OcclusionMap": lambda w: _args(w, "view"),
    "FilterGrid": lambda w: _args(w, "layer", "channel"),
    "EvolutionSlider": lambda w: (
        f"EvolutionSlider(index={w.index!r}, label="
        f"{(w.labels[w.index] if 0 <= w.index < len(w.labels) else '')!r})"
    ),
    "Predictions": lambda w: f"Predictions(top={w.labels[0]!r})" if w.labels else "Predictions()",
    "Gallery": lambda w: f"Gallery(images={_count(w)}, selected={w.selected!r})",
    "LayerOverview": lambda w: _args(w, "layer", "page", "selected"),
    "Explorer": lambda w: (
        f"Explorer(layer={w.grid.layer!r}, channel={w.grid.channel!r}, image={w.index!r})"
    ),
    "MonitorView": lambda w: f"MonitorView(run={_run_name(w)!r})",
    "InvarianceCurves": lambda w: (
        f"InvarianceCurves(transform={w.result.transform!r}, image={w.selector.label!r})"
    ),
    "EmbeddingView": lambda w: f"EmbeddingView(points={_points(w)})",
    "CorrespondenceTable": lambda w: (
        f"CorrespondenceTable(parts={len(w.result.score)}, layers={list(w.result.layers)!r})"
    ),
}


def _run_name(w: Any) -> str:
    try:
        return str(w.monitor.state().name)
    except Exception:
        return ""


def _points(w: Any) -> int:
    return sum(len(getattr(tr, "x", None) or ()) for tr in w.figure.data)


# -- shared pieces ------------------------------------------------------------------------------
def _texts(*lines: tuple[str, dict] | str | None, width: int) -> Image.Image | None:
    """Lines of text (skipping empty ones); a tuple gives text_block options."""
    parts = []
    for line in lines:
        if not line:
            continue
        text, opts = (line, {}) if isinstance(line, str) else line
        if text:
            parts.append(P.text_block(text, max(60, width), **opts))
    return P.stack(parts, gap=2) if parts else None


def _error(widget: Any) -> tuple[str, dict] | None:
    err = getattr(widget, "error", "")
    return (f"⚠ {err}", {"color": (201, 42, 42)}) if err else None


def _atlas(
    frame: dict,
    available: float,
    *,
    selected: int | None = None,
    marks: list[tuple[int, str]] = (),  # type: ignore[assignment]
    max_scale: int = 4,
) -> Image.Image:
    """An atlas payload with its grid (``js/lib/atlas_view.js``): scaled to fit, selection
    and marks outlined."""
    g = frame["grid"]
    im = P.rgba_image(decode(frame["atlas"]))
    s = P.fit_scale(im.width, available, max_scale)
    im = P.scaled(im, s)
    border = 3
    out = P.blank(im.width + 2 * border, im.height + 2 * border)
    out.paste(im, (border, border))
    th, tw = g["tile"]
    pad, cols, count = g["pad"], g["columns"], g["count"]

    def rect(i: int) -> tuple[float, float, float, float]:
        x = pad + (i % cols) * (tw + pad)
        y = pad + (i // cols) * (th + pad)
        return (x * s + border, y * s + border, tw * s, th * s)

    for i, kind in marks:
        if 0 <= i < count:
            if kind == "dominating":
                P.outline(out, rect(i), P.ACCENT, 2)
            else:
                P.outline(out, rect(i), P.DEAD, 2, dashed=True)
    if selected is not None and 0 <= selected < count:
        P.outline(out, rect(selected), P.SELECT, 2)
    return out


# -- the anywidget widgets ----------------------------------------------------------------------
@register("LayerGrid")
def _layer_grid(w: Any) -> Image.Image:
    width = min(w.max_width + 176, MAX_WIDTH)
    head = P.text_block(
        f"layer {w.layer} · colours {w.colormap} · range {'per map' if w.scale == 'map' else 'per layer'}",
        width,
        color=P.MUTED,
    )
    thumb = None
    if w.thumbnail:
        t = P.rgba_image(decode(w.thumbnail))
        thumb = P.scaled(t, 160 / t.width)
    body = None
    if w.frame:
        body = _atlas(w.frame, min(w.max_width, MAX_WIDTH - 176), selected=w.channel)
    return P.stack(
        [
            head,
            P.stack([thumb, body], direction="h", gap=16),
            _texts(w.caption, _error(w), width=width),
        ]
    )


@register("Gallery")
def _gallery(w: Any) -> Image.Image:
    width = min(w.max_width, MAX_WIDTH)
    body = None
    if w.frame:
        body = _atlas(w.frame, width, selected=w.selected if w.selectable else None)
    width = max(body.width if body else 0, 160)
    return P.stack(
        [
            _texts((w.title, {"bold": True}), width=width),
            body,
            _texts((w.caption, {"color": P.MUTED}), width=width),
        ],
        gap=4,
    )


@register("FilterGrid")
def _filter_grid(w: Any) -> Image.Image:
    from ..engine.filters import DEAD, DOMINATING

    width = min(w.max_width, MAX_WIDTH)
    parts: list[Image.Image | None] = []
    if w.checkpoint_labels and len(w.checkpoint_labels) > 1:
        label = (
            w.checkpoint_labels[w.checkpoint]
            if 0 <= w.checkpoint < len(w.checkpoint_labels)
            else ""
        )
        parts.append(
            P.text_block(
                f"checkpoint {w.checkpoint + 1} / {len(w.checkpoint_labels)} · {label}",
                width,
                color=P.MUTED,
            )
        )
    f = w.frame
    legend = None
    if f:
        flags = decode(f["flags"])
        marks = []
        for i, v in enumerate(flags.tolist()):
            if v & DOMINATING:
                marks.append((i, "dominating"))
            if v & DEAD:
                marks.append((i, "dead"))
        parts.append(P.text_block(str(f.get("layer", "")), width, bold=True))
        parts.append(_atlas(f, width, selected=w.channel, marks=marks, max_scale=8))
        n_dom = int(np.count_nonzero(flags & DOMINATING))
        n_dead = int(np.count_nonzero(flags & DEAD))
        items = [(P.ACCENT, f"dominating, RMS > {P.fmt(f['radius'])}: {n_dom}")]
        if f.get("dead_known"):
            items.append((P.DEAD, f"dead on the images: {n_dead}"))
        legend = _legend("", items, 0, max(width, 200))
    parts.append(legend)
    parts.append(_texts(w.caption, width=max(width, 200)))
    return P.stack(parts, gap=4)


@register("EvolutionSlider")
def _evolution(w: Any) -> Image.Image:
    n = len(w.labels)
    width = 420
    im = P.blank(width, 28)
    d = ImageDraw.Draw(im)
    P.draw_text(im, (0, 14), w.description, fill=P.MUTED, anchor="lm")
    x0 = int(P.text_length(P.clean(w.description))) + 12
    x1 = x0 + 200
    d.line((x0, 14, x1, 14), fill=P.LINE, width=4)
    frac = w.index / (n - 1) if n > 1 else 0.0
    cx = x0 + frac * (x1 - x0)
    d.line((x0, 14, cx, 14), fill=P.SELECT, width=4)
    d.ellipse((cx - 7, 7, cx + 7, 21), fill=P.SELECT)
    label = w.labels[w.index] if 0 <= w.index < n else ""
    P.draw_text(im, (x1 + 12, 14), f"{label}  ({w.index + 1} / {n})", anchor="lm")
    return im


@register("Predictions")
def _predictions(w: Any) -> Image.Image:
    width = 360
    bars = None
    if w.top:
        probs = decode(w.top["probability"]).tolist()
        bars = P.bar_chart(list(w.labels), probs, width)
    return P.stack([bars, _texts((w.caption, {"color": P.MUTED}), _error(w), width=width)], gap=4)


@register("LayerOverview")
def _layer_overview(w: Any) -> Image.Image:
    width = min(w.max_width, MAX_WIDTH)
    head = P.text_block(
        f"layer {w.layer} · by {w.sort} · {w.show} · page {w.page + 1} of {w.pages}",
        width,
        color=P.MUTED,
    )
    body = None
    if w.frame:
        units = list(w.frame.get("units", []))
        sel = units.index(w.selected) if w.selected in units else None
        body = _atlas(w.frame, width, selected=sel)
    return P.stack(
        [head, body, _texts(w.caption, (w.note, {"color": P.MUTED}), _error(w), width=width)], gap=4
    )


@register("TopNine")
def _top_nine(w: Any) -> Image.Image:
    width = min(w.max_width, MAX_WIDTH)
    f = w.frame
    status = ""
    if w.status == "mining":
        status = f"mining the top {w.k}… {round(100 * w.progress)}%"
    elif w.status == "computing":
        status = "computing…"
    if not f:
        return P.stack([_texts(status or "no hits yet", w.caption, _error(w), width=width)])
    g = f["grid"]
    atlas = P.rgba_image(decode(f["atlas"]))
    values = decode(f["values"]).tolist()
    indices = decode(f["indices"]).tolist()
    names = [str(n) for n in f.get("classes") or []]
    th, tw = g["tile"]
    pad, cols, k, gap = g["pad"], g["columns"], g["count"], g["gap"]
    block_w = pad + cols * (tw + pad)
    # js/lib/top9_layout.js pairScale: integer scales up to 12 when they fit
    s = P.fit_scale(atlas.width, max(120, width), 12)
    sel = w.selected
    label_h = 16
    stw, sth = max(1, round(tw * s)), max(1, round(th * s))
    spad = max(1, round(pad * s))
    blocks = []
    for b, head in enumerate(("deconvnet projections", "image patches")):
        rows = math.ceil(k / cols)
        lab = label_h if b == 1 and stw >= 44 else 0
        bw = spad + cols * (stw + spad)
        bh = spad + rows * (sth + spad + lab)
        im = P.blank(bw, bh)
        for r in range(k):
            x = pad + (r % cols) * (tw + pad) + b * (block_w + gap)
            y = pad + (r // cols) * (th + pad)
            tile = P.scaled(atlas.crop((x, y, x + tw, y + th)), s)
            tile = tile.resize((stw, sth)) if tile.size != (stw, sth) else tile
            px = spad + (r % cols) * (stw + spad)
            py = spad + (r // cols) * (sth + spad + lab)
            im.paste(tile, (px, py))
            if sel is not None and r < len(indices) and indices[r] == sel:
                P.outline(im, (px, py, stw, sth), P.SELECT, 2)
            if lab:
                v = P.fmt(values[r]) if r < len(values) else ""
                name = names[r] if r < len(names) else ""
                txt = f"{v} · {name}" if name else v
                im.paste(P.text_block(txt, stw, size=11, max_lines=1), (px, py + sth + 1))
        blocks.append(P.stack([P.text_block(head, bw, color=P.MUTED), im], gap=2))
    pair = P.stack(blocks, direction="h", gap=max(8, round(gap * s)))
    top = f"layer {f['layer']} · feature map {f['channel']}"
    if f.get("checkpoint_label"):
        top += f" · {f['checkpoint_label']}"
    return P.stack(
        [
            P.text_block(top, pair.width, color=P.MUTED),
            pair,
            _texts(status, w.caption, _error(w), width=pair.width),
        ],
        gap=4,
    )


#: Tableau's 10 colours then their light variants (``js/lib/heatmap.js`` PALETTE).
PALETTE = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
    (174, 199, 232), (255, 187, 120), (152, 223, 138), (255, 152, 150), (197, 176, 213),
    (196, 156, 148), (247, 182, 210), (199, 199, 199), (219, 219, 141), (158, 218, 229),
)  # fmt: skip
OTHER = (60, 60, 60)
LEGEND_MAX = 12


def _square_cells(starts: np.ndarray, window: int, size: int) -> np.ndarray:
    """Cell of each image pixel along one axis (``js/lib/heatmap.js`` squareCells +
    pixelCells): boundaries halfway between square centres."""
    starts = np.asarray(starts, dtype=np.float64)
    inner = (starts[:-1] + starts[1:] + window) / 2
    return np.searchsorted(inner, np.arange(size) + 0.5, side="right")


def _uniform_cells(n: int, size: int) -> np.ndarray:
    inner = np.arange(1, n) * size / n
    return np.searchsorted(inner, np.arange(size) + 0.5, side="right")


@register("OcclusionMap")
def _occlusion(w: Any) -> Image.Image:
    f = w.frame
    width = min(w.max_width, MAX_WIDTH)
    busy = f"sweeping… {round(100 * w.progress)}%" if w.busy else ""
    if not f or "image" not in f:
        return P.stack([_texts(busy, w.caption, _error(w), width=width)])
    image = decode(f["image"])
    H, W = image.shape[:2]
    views = list(w.views)
    view = next((v for v in views if v["name"] == w.view), views[0] if views else None)
    heat = None
    scale_part = None
    classes = list(w.classes)
    if view is not None and "probability" in f:
        rows_of = cols_of = None
        if view.get("kind") == "map":
            payload = w.overlays.get(view["name"])
            if payload is not None:
                vals = decode(payload).astype(np.float64)
                rows_of = _uniform_cells(vals.shape[0], H)
                cols_of = _uniform_cells(vals.shape[1], W)
                fin = vals[np.isfinite(vals)]
                lo, hi = (float(fin.min()), float(fin.max())) if fin.size else (0.0, 0.0)
                cells = P.map_colors(vals, view["colormap"], lo, hi)
                scale_part = _bar(view["label"], view["colormap"], lo, hi, None)
        else:
            rows = decode(f["rows"])
            cols = decode(f["cols"])
            rows_of = _square_cells(rows, f["window"][0], H)
            cols_of = _square_cells(cols, f["window"][1], W)
            if view["name"] == "top_class":
                top = decode(f["top_class"]).astype(np.int64)
                uniq, counts = np.unique(top, return_counts=True)
                order = sorted(zip(uniq.tolist(), counts.tolist()), key=lambda c: (-c[1], c[0]))
                colors = {
                    c: (PALETTE[r] if r < len(PALETTE) else OTHER) for r, (c, _) in enumerate(order)
                }
                cells = np.zeros((*top.shape, 4), np.uint8)
                for c, col in colors.items():
                    cells[top == c] = (*col, 255)
                base_top = f["baseline"]["top_class"]
                items = []
                for c, n in order[:LEGEND_MAX]:
                    name = classes[c] if c < len(classes) else f"class {c}"
                    un = ", unoccluded" if c == base_top else ""
                    items.append((colors[c], f"{name} {round(100 * n / top.size)}%{un}"))
                more = max(0, len(order) - LEGEND_MAX)
                scale_part = _legend(
                    "most probable class with the square at each position", items, more, width
                )
            else:
                vals = decode(f[view["name"]]).astype(np.float64)
                fin = vals[np.isfinite(vals)]
                lo, hi = (float(fin.min()), float(fin.max())) if fin.size else (0.0, 0.0)
                cells = P.map_colors(vals, view["colormap"], lo, hi)
                base = f["baseline"][view["name"]]
                if view["name"] == "activation":
                    title = f"total activation of {f['layer']}, map {f['channel']} · unoccluded {P.fmt_value(base)}"
                else:
                    tname = (
                        classes[f["target"]]
                        if f["target"] < len(classes)
                        else f"class {f['target']}"
                    )
                    title = f"probability of {tname} · unoccluded {P.fmt_value(base)}"
                scale_part = _bar(title, view["colormap"], lo, hi, base)
        if rows_of is not None:
            heat = cells[rows_of][:, cols_of]
    base_rgb = np.asarray(P.rgba_image(image), dtype=np.float32)
    if heat is not None:
        a = (heat[..., 3:4] / 255.0) * float(w.opacity)
        mixed = base_rgb * (1 - a) + heat[..., :3].astype(np.float32) * a
        shown = Image.fromarray(np.clip(mixed + 0.5, 0, 255).astype(np.uint8))
    else:
        shown = Image.fromarray(base_rgb.astype(np.uint8))
    shown = P.scaled(shown, P.fit_scale(W, width, 8))
    buttons = "   ".join(
        ("[" + v["label"] + "]") if v["name"] == w.view else v["label"] for v in views
    )
    return P.stack(
        [
            P.text_block(buttons, max(shown.width, 240), color=P.MUTED) if views else None,
            shown,
            scale_part,
            _texts(busy, w.caption, _error(w), width=max(shown.width, 240)),
        ],
        gap=4,
    )


def _bar(title: str, cmap: str, lo: float, hi: float, baseline: float | None) -> Image.Image:
    """Title, low label, colour bar, high label, and a tick at the unoccluded value."""
    bar_w, bar_h = 200, 12
    a, b = P.fmt_value(lo), P.fmt_value(hi)
    for digits in range(4, 9):
        if a != b or lo == hi:
            break
        a, b = f"{float(f'{lo:.{digits}g}'):g}", f"{float(f'{hi:.{digits}g}'):g}"
    la, lb = P.text_block(a, size=11), P.text_block(b, size=11)
    bar = P.colorbar(cmap, bar_w, bar_h)
    box = P.blank(bar_w, bar_h + 6)
    box.paste(bar, (0, 3))
    if baseline is not None and math.isfinite(baseline):
        t = 0.5 if not hi > lo else min(1.0, max(0.0, (baseline - lo) / (hi - lo)))
        x = round(t * (bar_w - 1))
        ImageDraw.Draw(box).rectangle((x - 1, 0, x + 1, bar_h + 5), fill=P.FG)
    row = P.stack([la, box, lb], direction="h", gap=6, center=True)
    return P.stack([P.text_block(title, max(row.width, 240), size=11), row], gap=2)


def _legend(
    title: str, items: list[tuple[tuple[int, int, int], str]], more: int, width: int
) -> Image.Image:
    rows: list[Image.Image] = []
    line: list[Image.Image] = []
    used = 0
    for color, text in items + ([] if not more else [(None, f"+{more} more")]):
        sw = 12 if color is not None else 0
        tw = int(P.text_length(P.clean(text), 11)) + sw + 18
        if line and used + tw > width:
            rows.append(P.stack(line, direction="h", gap=0))
            line, used = [], 0
        im = P.blank(tw, 16)
        d = ImageDraw.Draw(im)
        if color is not None:
            d.rectangle((0, 2, 11, 13), fill=color)
        P.draw_text(im, (sw + 4, 8), text, size=11, fill=P.FG, anchor="lm")
        line.append(im)
        used += tw
    if line:
        rows.append(P.stack(line, direction="h", gap=0))
    return P.stack([P.text_block(title, width, size=11) if title else None, *rows], gap=2)


# -- composites ---------------------------------------------------------------------------------
_TAGS = re.compile(r"<[^>]+>")
_BREAKS = re.compile(r"<\s*(br|/div|/p|/tr|/li)\b[^>]*>", re.I)


def _html_text(value: str) -> str:
    """Text of an HTML string (tags dropped, entities decoded, block ends as new lines)."""
    text = _TAGS.sub("", _BREAKS.sub("\n", str(value)))
    return "\n".join(s.strip() for s in html.unescape(text).splitlines() if s.strip())


def _generic(widget: Any) -> Image.Image | None:
    import ipywidgets as W

    if type(widget).__name__ == "FigureWidget":
        return _plotly(widget)
    if isinstance(widget, (W.Accordion, W.Tab)):
        i = widget.selected_index
        kids = list(widget.children)
        titles = list(getattr(widget, "titles", ()) or ())
        if i is None or not 0 <= i < len(kids):
            return (
                P.text_block("▸ " + ", ".join(t for t in titles if t), color=P.MUTED)
                if titles
                else None
            )
        head = P.text_block("▾ " + (titles[i] if i < len(titles) else ""), color=P.MUTED)
        return P.stack([head, draw(kids[i])], gap=2)
    if isinstance(widget, W.Box):
        parts = [draw(c) for c in widget.children]
        horizontal = isinstance(widget, W.HBox) or getattr(widget.layout, "flex_flow", "") in (
            "row",
            "row wrap",
        )
        if horizontal:
            return _wrap_row([p for p in parts if p is not None])
        return P.stack(parts, gap=8)
    if isinstance(widget, W.Label):
        return P.text_block(widget.value, MAX_WIDTH, shrink=True) if widget.value else None
    if isinstance(widget, W.HTML):
        text = _html_text(widget.value)
        return P.text_block(text, MAX_WIDTH, max_lines=12, shrink=True) if text else None
    return None


def _wrap_row(parts: list[Image.Image], gap: int = 24) -> Image.Image | None:
    """Side by side, wrapping to new rows past MAX_WIDTH (a ``flex-flow: row wrap``)."""
    if not parts:
        return None
    rows: list[list[Image.Image]] = [[]]
    used = 0
    for p in parts:
        if rows[-1] and used + gap + p.width > MAX_WIDTH:
            rows.append([])
            used = 0
        used += p.width + (gap if rows[-1] else 0)
        rows[-1].append(p)
    return P.stack([P.stack(r, direction="h", gap=gap) for r in rows], gap=8)


#: plotly's default colour sequence (the plotly_white template's colorway).
_PLOTLY = ("#636efa", "#EF553B", "#00cc96", "#ab63fa", "#FFA15A", "#19d3f3", "#FF6692", "#B6E880")


def _rgb(color: Any, i: int) -> tuple[int, int, int]:
    try:
        if isinstance(color, str):
            return ImageColor.getrgb(color)[:3]  # type: ignore[return-value]
    except ValueError:
        pass
    return ImageColor.getrgb(_PLOTLY[i % len(_PLOTLY)])[:3]  # type: ignore[return-value]


def _plotly(fig: Any) -> Image.Image:
    """A plotly figure's traces as line charts (one panel per x axis, the first two y axes of
    a panel on the left and right), markers as points."""
    layout = fig.layout
    panels: dict[str, list] = {}
    for i, tr in enumerate(fig.data):
        panels.setdefault(getattr(tr, "xaxis", None) or "x", []).append((i, tr))
    n = max(1, len(panels))
    width = int(layout.width or 620)
    height = int(layout.height or 300)
    pw = max(220, width // n) if n > 1 else width
    images = []
    for xname, traces in panels.items():
        yaxes: list[str] = []
        series = []
        for i, tr in traces:
            ya = getattr(tr, "yaxis", None) or "y"
            if ya not in yaxes:
                yaxes.append(ya)
            mode = getattr(tr, "mode", None) or "lines"
            line = getattr(tr, "line", None)
            marker = getattr(tr, "marker", None)
            color = (getattr(line, "color", None) if line is not None else None) or (
                getattr(marker, "color", None) if marker is not None else None
            )
            x = list(tr.x) if tr.x is not None else []
            y = list(tr.y) if tr.y is not None else []
            if not x and y:
                x = list(range(len(y)))
            y = [float(v) if v is not None else None for v in y]
            faint = tr.opacity is not None and tr.opacity < 0.5
            label = "" if tr.showlegend is False or faint else html.unescape(tr.name or "")
            series.append(
                P.Series(
                    x=[float(v) for v in x],
                    y=y,
                    color=_rgb(color, i),
                    label=label,
                    width=1 if faint else 2,
                    axis=min(yaxes.index(ya), 1),
                    faint=faint,
                    markers="markers" in mode,
                    lines="lines" in mode,
                )
            )
        xkey = "xaxis" + xname[1:]
        title = _axis_title(layout, xkey)
        ylabels = tuple(_axis_title(layout, "yaxis" + ya[1:]) for ya in (yaxes + ["", ""])[:2])
        images.append(
            P.line_chart(series, pw, height, xlabel=title, ylabels=ylabels)  # type: ignore[arg-type]
        )
    titles = [html.unescape(a.text or "") for a in (layout.annotations or ())]
    head = P.text_block("  ·  ".join(t for t in titles if t), pw * len(images)) if titles else None
    return P.stack([head, _wrap_row(images, gap=4)], gap=2)


def _axis_title(layout: Any, key: str) -> str:
    try:
        ax = layout[key if key not in ("xaxis", "yaxis") else key]
    except (KeyError, ValueError):
        return ""
    t = getattr(getattr(ax, "title", None), "text", None)
    return html.unescape(t) if t else ""


@register("MonitorView")
def _monitor(w: Any) -> Image.Image:
    return _generic(w)  # status, curves, filters and top-9 tiles, alerts


def _num(v: float) -> str:
    """A score as the HTML table writes it."""
    return f"{v:.3f}" if math.isfinite(v) else "–"


@register("CorrespondenceTable")
def _correspondence(w: Any) -> Image.Image:
    r = w.result
    header = ["part"] + [f"{layer}: score | random ± std" for layer in r.layers]
    rows = []
    bold = []
    for part in r.score:
        cells = [str(part)]
        marks = [False]
        for layer in r.layers:
            s = float(r.score[part][layer])
            rr = float(r.random[part][layer])
            sd = float(r.random_std[part][layer])
            below = math.isfinite(s) and math.isfinite(rr) and s < rr
            cells.append(f"{_num(s)}{' ✓' if below else ''} | {_num(rr)} ± {_num(sd)}")
            marks.append(below)
        rows.append(cells)
        bold.append(marks)
    widths = [
        max(int(P.text_length(P.clean(row[c]))) for row in [header, *rows]) + 20
        for c in range(len(header))
    ]
    line_h = 20
    im = P.blank(sum(widths), line_h * (len(rows) + 1) + 4)
    d = ImageDraw.Draw(im)
    for ri, row in enumerate([header, *rows]):
        x = 0
        y = ri * line_h
        for ci, cell in enumerate(row):
            if ri > 0 and bold[ri - 1][ci]:
                d.rectangle((x, y, x + widths[ci] - 1, y + line_h - 1), fill=(232, 244, 232))
            P.draw_text(
                im, (x + 10, y + line_h // 2), cell, fill=P.FG if ri else P.MUTED, anchor="lm"
            )
            x += widths[ci]
        d.line(
            (0, y + line_h - 1, im.width, y + line_h - 1),
            fill=(136, 136, 136) if ri == 0 else P.LINE,
        )
    return im
