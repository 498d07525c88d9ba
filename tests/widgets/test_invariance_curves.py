"""InvarianceCurves without a kernel: the figure against zf.invariance, gaps for NaN."""

from __future__ import annotations

import math

import pytest

import zfwidgets as zf
from zfwidgets.widgets.gallery import Gallery
from zfwidgets.widgets.invariance_curves import InvarianceCurves


def _close(a, b):
    return all(
        (u is None and math.isnan(v)) or abs(u - v) < 1e-6 for u, v in zip(a, b, strict=True)
    )


@pytest.mark.parametrize("transform", ["translate", "scale", "rotate"])
def test_invariance_curves_match_engine(default, batch, transform):
    x, y = batch
    w = InvarianceCurves(
        default.model, x, transform=transform, target=y, classes=default.classes,
        mean=default.mean, std=default.std,
    )  # fmt: skip
    res = zf.invariance(default.model, x, transform=transform, target=y)
    assert w.result.layers == res.layers
    n, a = res.probability.shape
    panels = res.layers + ["probability"]
    # one thin line per image + the bold mean per panel
    assert len(w.figure.data) == len(panels) * (n + 1)
    amounts = res.amounts.tolist()
    for p, name in enumerate(panels):
        traces = [tr for tr in w.figure.data if tr.meta == name]
        assert len(traces) == n + 1
        axis = "x" if p == 0 else f"x{p + 1}"
        assert {tr.xaxis for tr in traces} == {axis}
        per_image = res.probability if name == "probability" else res.distance[name]
        mean = res.mean_probability if name == "probability" else res.mean_distance[name]
        for i in range(n):
            assert _close(list(traces[i].x), amounts)
            assert _close(list(traces[i].y), per_image[i].tolist())
        assert traces[-1].name == "mean" and traces[-1].line.width == 3
        assert _close(list(traces[-1].y), mean.tolist())
    # subplot titles: one per layer + probability; Fig. 5 layout in one row
    titles = [a.text for a in w.figure.layout.annotations]
    assert titles == [f"{layer}: distance" for layer in res.layers] + ["probability of the class"]
    # the strip: image 0's A transformed versions, with amount/probability captions
    assert isinstance(w.strip, Gallery)
    assert w.strip.frame["grid"]["count"] == a
    assert len(w.strip.captions) == a and "p = " in w.strip.captions[0]
    w.show_image(2)
    assert w.selector.value == 2 and w.strip.title.startswith("image 2")
    w.selector.value = 1
    assert w.strip.title.startswith("image 1")
    with pytest.raises(ValueError):
        w.show_image(9)


def test_invariance_curves_from_result(default, batch):
    x, _ = batch
    res = zf.invariance(default.model, x[:2], transform="rotate", amounts=[0, 90, 180])
    w = InvarianceCurves.from_result(res)
    assert w.result is res
    assert len(w.figure.data) == (len(res.layers) + 1) * 3
    assert w.strip.frame["grid"]["count"] == 3 and w.strip.captions[1].startswith("90°")
    with pytest.raises(TypeError):
        InvarianceCurves.from_result("nope")


def test_invariance_nan_becomes_gap(default, batch):
    x, _ = batch
    res = zf.invariance(default.model, x[:2], amounts=[-2, 0, 2])
    layer = res.layers[0]
    res.distance[layer][0, 1] = float("nan")
    w = InvarianceCurves.from_result(res)
    tr = [t for t in w.figure.data if t.meta == layer][0]
    assert tr.y[1] is None
