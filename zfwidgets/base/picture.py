"""Static pictures of what a widget shows: numpy + Pillow drawing, no browser, no matplotlib.

The widgets' display bundles carry an ``image/png`` beside the live view (GitHub, nbviewer,
VS Code, PDF export and docs builds show it); ``zfwidgets/widgets/_snapshot.py`` draws each
widget with these widget-independent pieces, from the same arrays the front end receives:

- :func:`rgba_image`: a uint8 (H, W, 4) payload array over white, as a page shows a canvas.
- :func:`fit_scale` / :func:`scaled`: the front end's scale rule (``js/lib/grid.js``
  ``fitScale``: integer scales when the image fits, crisp pixels; the fraction otherwise).
- :func:`text_block`, :func:`stack`, :func:`outline`: text (Pillow's default font), layout
  and the selection / mark boxes of ``js/style.css``.
- :func:`colorbar` / :func:`map_colors`: colour maps through
  :func:`zfwidgets.base.images.colormap_lut` (the same table as ``js/lib/colormap.js``).
- :func:`line_chart`, :func:`bar_chart`: training curves and prediction bars.
- :func:`fmt`, :func:`fmt_value`, :func:`fmt_percent`: numbers as ``js/lib/dom.js`` writes them.
- :func:`png`: the picture as PNG bytes (unfiltered rows, zlib level 1: fast for flat colour).

User text (class names, labels, titles) is drawn as text, never interpreted.
"""

from __future__ import annotations

import functools
import math
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .images import colormap_lut

__all__ = [
    "ACCENT",
    "DEAD",
    "FG",
    "LINE",
    "MUTED",
    "SELECT",
    "WHITE",
    "Series",
    "bar_chart",
    "blank",
    "clean",
    "draw_text",
    "colorbar",
    "fit_scale",
    "fmt",
    "fmt_percent",
    "fmt_value",
    "font",
    "line_chart",
    "map_colors",
    "outline",
    "png",
    "rgba_image",
    "scaled",
    "stack",
    "text_block",
    "text_length",
]

#: The colours of ``js/style.css`` (``--zf-fg``, ``--zf-muted``, ...).
FG = (31, 35, 40)
MUTED = (89, 99, 110)
LINE = (208, 215, 222)
ACCENT = (232, 89, 12)
SELECT = (25, 113, 194)
DEAD = (134, 142, 150)
WHITE = (255, 255, 255)

Color = tuple[int, int, int]


@functools.lru_cache(maxsize=8)
def font(size: int = 12) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's default font at ``size`` pixels (cached)."""
    return ImageFont.load_default(size=size)


#: Characters the default font lacks, and what is drawn instead.
_SUBSTITUTES = str.maketrans(
    {"×": "x", "–": "-", "—": "-", "✓": "*", "⚠": "!", "▸": ">", "▾": "v", "→": "->", "±": "±"}
)


def clean(text: object) -> str:
    """``text`` as a string the default font can draw (a few symbols replaced)."""
    return str(text).translate(_SUBSTITUTES)


@functools.lru_cache(maxsize=4096)
def _glyph(size: int, ch: str) -> tuple[np.ndarray | None, int, int, float]:
    """One character rendered once: (uint8 coverage mask or None, x and y offset from the pen
    position at the ascender line, advance)."""
    f = font(size)
    advance = f.getlength(ch)
    x0, y0, x1, y1 = f.getbbox(ch)
    if x1 <= x0 or y1 <= y0:
        return None, 0, 0, advance
    mask = Image.new("L", (x1 - x0, y1 - y0), 0)
    ImageDraw.Draw(mask).text((-x0, -y0), ch, font=f, fill=255)
    return np.asarray(mask), x0, y0, advance


@functools.lru_cache(maxsize=4096)
def text_length(text: str, size: int = 12) -> float:
    """Width in pixels of ``text`` (already :func:`clean`) drawn by :func:`draw_text`: the sum
    of its characters' advances (no kerning, so widths add up)."""
    return sum(_glyph(size, ch)[3] for ch in text)


def draw_text(
    image: Image.Image,
    xy: tuple[float, float],
    text: object,
    *,
    size: int = 12,
    fill: Color = FG,
    anchor: str = "la",
) -> None:
    """Draw one line of text in place, from a cache of rendered glyphs: the line's coverage
    is put together from the cached glyph masks with numpy and pasted once (no FreeType
    layout or rendering per line).

    ``anchor`` as Pillow's: horizontal ``l`` / ``m`` / ``r``, vertical ``a`` (top of the
    ascender) / ``m`` (middle) / ``d`` (bottom of the descender).
    """
    line = clean(text)
    if not line:
        return
    x, y = xy
    width = text_length(line, size)
    ascent, descent = font(size).getmetrics()
    if anchor[0] != "l":
        x -= width / 2 if anchor[0] == "m" else width
    if anchor[1] != "a":
        y -= (ascent + descent) / 2 if anchor[1] == "m" else ascent + descent
    glyphs = [_glyph(size, ch) for ch in line]
    left = min(0, *(ox for _, ox, _, _ in glyphs))
    w = int(math.ceil(width)) - left + size
    h = ascent + descent + size // 2
    cover = np.zeros((h, w), np.uint8)
    pen = -left
    for mask, ox, oy, advance in glyphs:
        if mask is not None:
            gx, gy = round(pen + ox), max(0, oy)
            gh, gw = min(mask.shape[0], h - gy), min(mask.shape[1], w - gx)
            if gh > 0 and gw > 0:
                region = cover[gy : gy + gh, gx : gx + gw]
                np.maximum(region, mask[:gh, :gw], out=region)
        pen += advance
    image.paste(fill, (round(x + left), round(y)), Image.fromarray(cover))


def _exp(v: float, digits: int) -> str:
    """JavaScript's ``v.toExponential(digits)``: ``1.00e-4``, ``1.23e+5``."""
    mantissa, exponent = f"{v:.{digits}e}".split("e")
    return f"{mantissa}e{int(exponent):+d}"


def fmt(v: float) -> str:
    """A number as ``js/lib/dom.js`` ``fmt`` writes it (4 significant digits)."""
    v = float(v)
    if not math.isfinite(v):
        return "NaN" if math.isnan(v) else ("Infinity" if v > 0 else "-Infinity")
    if v != 0 and (abs(v) >= 1e5 or abs(v) < 1e-3):
        return _exp(v, 2)
    return f"{float(f'{v:.4g}'):g}"


def fmt_value(v: float) -> str:
    """A colour-bar label (3 significant digits), as ``js/lib/dom.js`` ``fmtValue``."""
    v = float(v)
    if not math.isfinite(v) or v == 0:
        return fmt(v) if not math.isfinite(v) else "0"
    if abs(v) >= 1e5 or abs(v) < 1e-3:
        return _exp(v, 2)
    return f"{float(f'{v:.3g}'):g}"


def fmt_percent(p: float) -> str:
    """A probability as a percentage, as ``js/lib/dom.js`` ``fmtPercent``."""
    v = float(p) * 100
    if not math.isfinite(v):
        return str(p)
    if v != 0 and abs(v) < 0.01:
        return f"{_exp(v, 1)}%"
    if abs(v) < 1:
        return f"{float(f'{v:.2g}'):g}%"
    return f"{v:.1f}%"


def blank(width: int, height: int, color: Color = WHITE) -> Image.Image:
    """A plain RGB image."""
    return Image.new("RGB", (max(1, int(width)), max(1, int(height))), color)


def rgba_image(array: np.ndarray) -> Image.Image:
    """A uint8 image array ((H, W), (H, W, 3) or (H, W, 4)) as RGB, alpha blended over white
    (a transparent atlas padding shows the page colour, as in the browser)."""
    a = np.asarray(array)
    if a.dtype != np.uint8:
        raise TypeError(f"array: expected uint8, got {a.dtype}")
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim == 2:
        return Image.fromarray(np.ascontiguousarray(a)).convert("RGB")
    if a.ndim != 3 or a.shape[2] not in (3, 4):
        raise ValueError(f"array: expected (H, W), (H, W, 3) or (H, W, 4), got {a.shape}")
    if a.shape[2] == 3:
        return Image.fromarray(np.ascontiguousarray(a))
    if a[:, :, 3].min() == 255:  # opaque: no blending
        return Image.fromarray(np.ascontiguousarray(a[:, :, :3]))
    alpha = a[:, :, 3:4].astype(np.uint16)
    rgb = (a[:, :, :3].astype(np.uint16) * alpha + 255 * (255 - alpha) + 127) // 255
    return Image.fromarray(rgb.astype(np.uint8))


def fit_scale(width: int, available: float, max_scale: int = 4) -> float:
    """Scale of an image ``width`` pixels wide shown in ``available`` pixels: an integer up to
    ``max_scale`` when it fits, the fraction that fits otherwise (``js/lib/grid.js``)."""
    if not width > 0 or not available > 0:
        return 1.0
    s = available / width
    if s < 1:
        return s
    return float(max(1, min(max_scale, math.floor(s))))


def scaled(image: Image.Image, scale: float) -> Image.Image:
    """``image`` scaled by ``scale``: nearest neighbour when enlarging (crisp pixels, as the
    page's ``image-rendering: pixelated``), box filter when shrinking."""
    if scale == 1:
        return image
    w = max(1, round(image.width * scale))
    h = max(1, round(image.height * scale))
    return image.resize((w, h), Image.Resampling.NEAREST if scale > 1 else Image.Resampling.BOX)


def _wrap(text: str, width: int | None, size: int) -> list[str]:
    lines: list[str] = []
    space = text_length(" ", size)
    for para in str(text).splitlines() or [""]:
        if width is None or text_length(para, size) <= width:
            lines.append(para)
            continue
        line, used = "", 0.0
        for word in para.split(" "):
            n = text_length(word, size)
            if line and used + space + n > width:
                lines.append(line)
                line, used = word, n
            elif line:
                line, used = f"{line} {word}", used + space + n
            else:
                line, used = word, n
        lines.append(line)
    return lines


def text_block(
    text: str,
    width: int | None = None,
    *,
    size: int = 12,
    color: Color = FG,
    max_lines: int = 4,
    bold: bool = False,
    shrink: bool = False,
) -> Image.Image:
    """Text as an image: wrapped to ``width`` pixels (one line per paragraph when None), at
    most ``max_lines`` lines (the last one ends with an ellipsis when cut); ``shrink``: no
    wider than its longest line."""
    lines = _wrap(clean(text), width, size)
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = lines[-1] + " …"
    lengths = [text_length(s, size) for s in lines]
    if width is not None:
        lines = [_clip(s, width, size) if n > width else s for s, n in zip(lines, lengths)]
        lengths = [min(n, width) for n in lengths]
    line_h = size + max(2, size // 3)
    natural = int(max(lengths, default=1)) + 2
    w = natural if width is None else (min(width, natural) if shrink else width)
    im = blank(w, line_h * len(lines) + 2)
    for i, line in enumerate(lines):
        draw_text(im, (0, i * line_h), line, size=size, fill=color)
        if bold:
            draw_text(im, (1, i * line_h), line, size=size, fill=color)
    return im


def _clip(line: str, width: int, size: int) -> str:
    if text_length(line, size) <= width:
        return line
    lo, hi = 0, len(line)  # the longest prefix that fits with the ellipsis
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if text_length(line[:mid] + "…", size) <= width:
            lo = mid
        else:
            hi = mid - 1
    return line[:lo] + "…"


def stack(
    parts: Sequence[Image.Image | None],
    *,
    direction: str = "v",
    gap: int = 6,
    center: bool = False,
) -> Image.Image:
    """Images one under the other (``"v"``) or side by side (``"h"``) on white; ``None``
    entries are skipped."""
    if direction not in ("v", "h"):
        raise ValueError(f"direction: expected 'v' or 'h', got {direction!r}")
    ims = [p for p in parts if p is not None]
    if not ims:
        return blank(1, 1)
    if len(ims) == 1:
        return ims[0]
    if direction == "v":
        w = max(p.width for p in ims)
        h = sum(p.height for p in ims) + gap * (len(ims) - 1)
    else:
        w = sum(p.width for p in ims) + gap * (len(ims) - 1)
        h = max(p.height for p in ims)
    out = blank(w, h)
    pos = 0
    for p in ims:
        if direction == "v":
            out.paste(p, ((w - p.width) // 2 if center else 0, pos))
            pos += p.height + gap
        else:
            out.paste(p, (pos, (h - p.height) // 2 if center else 0))
            pos += p.width + gap
    return out


def outline(
    image: Image.Image,
    rect: tuple[float, float, float, float],
    color: Color,
    width: int = 2,
    *,
    dashed: bool = False,
) -> None:
    """Draw a box ``(x, y, w, h)`` (image pixels) in place: ``width`` pixels around it
    (``dashed``: inside it), as the page's selection and mark outlines."""
    x, y, w, h = (round(v) for v in rect)
    d = ImageDraw.Draw(image)
    if not dashed:
        d.rectangle(
            (x - width, y - width, x + w + width - 1, y + h + width - 1), outline=color, width=width
        )
        return
    dash = 4
    x1, y1 = x + w - 1, y + h - 1
    for a in range(x, x1 + 1, 2 * dash):
        b = min(a + dash - 1, x1)
        d.rectangle((a, y, b, y + width - 1), fill=color)
        d.rectangle((a, y1 - width + 1, b, y1), fill=color)
    for a in range(y, y1 + 1, 2 * dash):
        b = min(a + dash - 1, y1)
        d.rectangle((x, a, x + width - 1, b), fill=color)
        d.rectangle((x1 - width + 1, a, x1, b), fill=color)


def map_colors(values: np.ndarray, name: str, lo: float, hi: float) -> np.ndarray:
    """RGBA of values over ``[lo, hi]`` (clipped) with a colour map, NaN transparent: the
    arithmetic of ``js/lib/colormap.js`` ``applyColormap``.

    Returns
    -------
    ndarray (..., 4), uint8
    """
    table = colormap_lut(name).numpy()
    v = np.asarray(values, dtype=np.float64)
    span = hi - lo
    t = (v - lo) / span if span > 0 else np.zeros_like(v)
    t = np.nan_to_num(t, nan=0.0)
    # Math.round: halves go up
    idx = np.floor(np.clip(t, 0, 1) * 255 + 0.5).astype(np.int64)
    out = table[idx]
    out[np.isnan(v)] = 0
    return out


def colorbar(name: str, width: int, height: int) -> Image.Image:
    """A horizontal colour bar, low values on the left (``js/lib/colormap.js`` ``colorbar``)."""
    table = colormap_lut(name).numpy()
    x = np.arange(width)
    j = np.floor(x / max(1, width - 1) * 255 + 0.5).astype(np.int64) if width > 1 else x * 0
    row = table[j][:, :3]
    return Image.fromarray(np.ascontiguousarray(np.broadcast_to(row, (height, width, 3))))


@dataclass(frozen=True)
class Series:
    """One line of a :func:`line_chart`: points, colour, and which y axis it reads."""

    x: Sequence[float]
    y: Sequence[float | None]
    color: Color
    label: str = ""
    width: int = 2
    axis: int = 0  # 0: left axis, 1: right axis
    faint: bool = False
    markers: bool = False
    lines: bool = True


def _ticks(lo: float, hi: float, n: int = 4) -> list[float]:
    if not hi > lo:
        return [lo]
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.ceil(lo / step) * step
    return [start + i * step for i in range(int((hi - start) / step + 1e-9) + 1)]


def line_chart(
    series: Sequence[Series],
    width: int = 620,
    height: int = 280,
    *,
    xlabel: str = "",
    ylabels: tuple[str, str] = ("", ""),
) -> Image.Image:
    """Lines on up to two y axes (left, right) over one x axis, with ticks and a legend."""
    im = blank(width, height)
    d = ImageDraw.Draw(im)
    left, right, top, bottom = 50, 50, 26, 36
    pw, ph = width - left - right, height - top - bottom
    xs = [float(v) for s in series for v in s.x]
    x0, x1 = (min(xs), max(xs)) if xs else (0.0, 1.0)
    if x1 <= x0:
        x1 = x0 + 1
    ranges = []
    for axis in (0, 1):
        ys = [
            float(v)
            for s in series
            if s.axis == axis
            for v in s.y
            if v is not None and math.isfinite(v)
        ]
        lo, hi = (min(ys), max(ys)) if ys else (0.0, 1.0)
        if hi <= lo:
            lo, hi = lo - 0.5, hi + 0.5
        pad = (hi - lo) * 0.05
        ranges.append((lo - pad, hi + pad, bool(ys)))
    d.rectangle((left, top, left + pw, top + ph), outline=LINE)
    for t in _ticks(x0, x1):
        px = left + (t - x0) / (x1 - x0) * pw
        d.line((px, top + ph, px, top + ph + 3), fill=MUTED)
        draw_text(im, (px, top + ph + 5), fmt(t), size=11, fill=MUTED, anchor="ma")
    for axis, (lo, hi, used) in enumerate(ranges):
        if not used:
            continue
        for t in _ticks(lo, hi):
            py = top + ph - (t - lo) / (hi - lo) * ph
            if axis == 0:
                d.line((left, py, left + pw, py), fill=(238, 240, 242))
                draw_text(im, (left - 4, py), fmt(t), size=11, fill=MUTED, anchor="rm")
            else:
                draw_text(im, (left + pw + 4, py), fmt(t), size=11, fill=MUTED, anchor="lm")
        name = ylabels[axis]
        if name:
            lab = text_block(name, size=11, color=MUTED).rotate(90, expand=True)
            im.paste(lab, (2 if axis == 0 else width - lab.width - 2, top + (ph - lab.height) // 2))
    if xlabel:
        draw_text(im, (left + pw / 2, height - 2), xlabel, size=11, fill=MUTED, anchor="md")
    for s in series:
        lo, hi, _ = ranges[s.axis]
        color = s.color if not s.faint else tuple(int(c + (255 - c) * 0.75) for c in s.color)
        run: list[tuple[float, float]] = []
        points = []
        for xv, yv in zip(s.x, s.y):
            if yv is None or not math.isfinite(yv):
                if len(run) > 1 and s.lines:
                    d.line(run, fill=color, width=s.width)
                run = []
                continue
            p = (
                left + (float(xv) - x0) / (x1 - x0) * pw,
                top + ph - (float(yv) - lo) / (hi - lo) * ph,
            )
            run.append(p)
            points.append(p)
        if len(run) > 1 and s.lines:
            d.line(run, fill=color, width=s.width)
        if s.markers or len(points) == 1:
            r = 3 if s.lines else 2
            for px, py in points:
                d.ellipse((px - r, py - r, px + r, py + r), fill=color)
    x = left
    for s in series:
        if not s.label:
            continue
        d.line((x, 10, x + 16, 10), fill=s.color, width=2)
        draw_text(im, (x + 20, 10), s.label, size=11, fill=FG, anchor="lm")
        x += 28 + int(text_length(clean(s.label), 11))
    return im


def bar_chart(
    labels: Sequence[str],
    values: Sequence[float],
    width: int = 360,
    *,
    color: Color = SELECT,
) -> Image.Image:
    """Horizontal bars in [0, 1] with their label on the left and percentage on the right."""
    row = 20
    label_w = min(width // 2, max((int(text_length(clean(s))) for s in labels), default=0) + 8)
    value_w = 56
    bar_w = max(10, width - label_w - value_w)
    im = blank(width, row * max(1, len(labels)))
    d = ImageDraw.Draw(im)
    for i, (name, v) in enumerate(zip(labels, values)):
        y = i * row
        draw_text(im, (label_w - 6, y + row // 2), _clip(clean(name), label_w - 8, 12), anchor="rm")
        d.rectangle((label_w, y + 4, label_w + bar_w - 1, y + row - 5), fill=(241, 243, 245))
        frac = min(max(float(v), 0.0), 1.0) if math.isfinite(float(v)) else 0.0
        if frac > 0:
            d.rectangle(
                (label_w, y + 4, label_w + max(1, round(frac * bar_w)) - 1, y + row - 5), fill=color
            )
        draw_text(im, (label_w + bar_w + 6, y + row // 2), fmt_percent(v), fill=FG, anchor="lm")
    return im


def png(image: Image.Image) -> bytes:
    """The picture as PNG bytes (deterministic for the same pixels).

    Written here rather than by Pillow's encoder: every row unfiltered and zlib at level 1.
    The pictures are mostly flat colour, where PNG's per-row filter search buys nothing
    (the files come out the same size) and costs more than half of Pillow's encoding time.
    """
    a = np.asarray(image if image.mode == "RGB" else image.convert("RGB"))
    h, w = a.shape[:2]
    rows = np.empty((h, 1 + 3 * w), np.uint8)
    rows[:, 0] = 0  # filter type 0 (none) on every row
    rows[:, 1:] = a.reshape(h, -1)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    return b"".join(
        (
            b"\x89PNG\r\n\x1a\n",
            chunk(b"IHDR", header),
            chunk(b"IDAT", zlib.compress(rows, 1)),  # rows: a C-contiguous buffer
            chunk(b"IEND", b""),
        )
    )
