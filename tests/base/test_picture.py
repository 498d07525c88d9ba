"""base/picture.py: the drawing pieces of the widgets' static pictures."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from zfwidgets.base import picture as P
from zfwidgets.base.codec import decode_image
from zfwidgets.base.images import colormap_lut


def test_png_round_trips_exactly():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    data = P.png(Image.fromarray(a))
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    np.testing.assert_array_equal(decode_image(data, formats=("png",)), a)
    assert P.png(Image.fromarray(a)) == data  # deterministic


def test_map_colors_is_the_front_end_arithmetic():
    lut = colormap_lut("viridis").numpy()
    v = np.array([0.0, 1.0, 2.0, np.nan, -5.0, 9.0])
    out = P.map_colors(v, "viridis", 0.0, 2.0)
    np.testing.assert_array_equal(out[0], lut[0])
    np.testing.assert_array_equal(out[1], lut[128])  # Math.round(0.5 * 255) = 128
    np.testing.assert_array_equal(out[2], lut[255])
    assert out[3].tolist() == [0, 0, 0, 0]  # NaN: transparent
    np.testing.assert_array_equal(out[4], lut[0])  # clipped
    np.testing.assert_array_equal(out[5], lut[255])
    const = P.map_colors(np.ones(3), "inferno", 1.0, 1.0)  # a constant map: entry 0
    np.testing.assert_array_equal(const, np.tile(colormap_lut("inferno").numpy()[0], (3, 1)))


def test_colorbar_runs_low_to_high():
    bar = np.asarray(P.colorbar("jet", 256, 4))
    lut = colormap_lut("jet").numpy()[:, :3]
    np.testing.assert_array_equal(bar[0], lut)
    np.testing.assert_array_equal(bar[3], lut)


def test_rgba_over_white():
    a = np.zeros((2, 2, 4), np.uint8)
    a[0, 0] = (255, 0, 0, 255)
    a[0, 1] = (255, 0, 0, 0)  # transparent: the page colour
    out = np.asarray(P.rgba_image(a))
    assert out[0, 0].tolist() == [255, 0, 0] and out[0, 1].tolist() == [255, 255, 255]
    with pytest.raises(TypeError, match="uint8"):
        P.rgba_image(a.astype(np.float32))
    with pytest.raises(ValueError, match="expected"):
        P.rgba_image(np.zeros((2, 2, 5), np.uint8))


@pytest.mark.parametrize(
    "width, available, want", [(100, 450, 4.0), (100, 250, 2.0), (100, 50, 0.5), (0, 10, 1.0)]
)
def test_fit_scale_is_grid_js(width, available, want):
    assert P.fit_scale(width, available) == want


def test_numbers_as_the_front_end_writes_them():
    assert P.fmt(1234.5678) == "1235" and P.fmt(0.5) == "0.5" and P.fmt(1e-4) == "1.00e-4"
    assert P.fmt(123456) == "1.23e+5" and P.fmt(float("nan")) == "NaN"
    assert P.fmt_value(0) == "0" and P.fmt_value(0.12345) == "0.123"
    assert P.fmt_percent(0.948) == "94.8%" and P.fmt_percent(0.0029) == "0.29%"
    assert P.fmt_percent(1e-6) == "1.0e-4%"


def test_text_wraps_clips_and_replaces_missing_glyphs():
    one = P.text_block("short", 200)
    two = P.text_block("a long line of words " * 8, 200)
    assert one.width == two.width == 200 and two.height > one.height
    assert two.height == P.text_block("a\nb\nc\nd", 200).height  # 4 lines at most
    cut = P.text_block("word " * 200, 100, max_lines=2)
    assert cut.height == P.text_block("a\nb", 100).height
    assert P.text_block("x", 500, shrink=True).width < 30
    assert P.clean("4×4 – ok ✓") == "4x4 - ok *"
    ink = np.asarray(P.text_block("Hello", 80)).min()
    assert ink < 100  # drawn


def test_stack_and_outline():
    a, b = P.blank(10, 5), P.blank(20, 8)
    assert P.stack([a, None, b], gap=2).size == (20, 15)
    assert P.stack([a, b], direction="h", gap=2).size == (32, 8)
    with pytest.raises(ValueError, match="direction"):
        P.stack([a], direction="x")
    im = P.blank(40, 40)
    P.outline(im, (10, 10, 10, 10), P.SELECT, 2)
    px = np.asarray(im)
    assert px[9, 15].tolist() == list(P.SELECT) and px[15, 15].tolist() == [255, 255, 255]
    dashed = P.blank(40, 40)
    P.outline(dashed, (10, 10, 20, 20), P.DEAD, 2, dashed=True)
    row = np.all(np.asarray(dashed)[10, 10:30] == P.DEAD, axis=-1)
    assert 0 < row.sum() < 20  # dashes, not a line


def test_charts_draw_their_data():
    chart = P.line_chart(
        [P.Series([0, 1, 2, 3], [1.0, None, 2.0, 3.0], (214, 39, 40), "loss")], 300, 200
    )
    red = np.all(np.asarray(chart) == (214, 39, 40), axis=-1)
    assert chart.size == (300, 200) and red.sum() > 50
    bars = P.bar_chart(["cat", "dog"], [0.75, 0.25], 300)
    blue = np.all(np.asarray(bars) == P.SELECT, axis=-1)
    first, second = blue[:20].sum(), blue[20:].sum()
    assert first == pytest.approx(3 * second, rel=0.1)
