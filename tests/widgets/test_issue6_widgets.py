"""Kernel-free tests of the issue-6 widgets: InvarianceCurves, CorrespondenceTable,
EmbeddingView (figures against the engine's results, escaping, the click -> Explorer path)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
import traitlets

import zfwidgets as zf
from zfwidgets.widgets.correspondence_table import CorrespondenceTable
from zfwidgets.widgets.embedding import EmbeddingView
from zfwidgets.widgets.gallery import Gallery
from zfwidgets.widgets.invariance_curves import InvarianceCurves


@pytest.fixture(scope="module")
def default():
    torch.set_num_threads(1)
    return zf.load_default()


@pytest.fixture(scope="module")
def batch(default):
    x, y = default.images.tensors()
    return x[:4], y[:4]


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


def _corr_result(default, batch, parts):
    x, _ = batch
    return zf.correspondence(default.model, x, parts, n_random=3)


def test_correspondence_table_escapes_and_marks(default, batch):
    evil = '<img src=x onerror="alert(1)">&top'
    res = _corr_result(default, batch, {evil: (0, 0, 14, 28), "bottom": (14, 0, 28, 28)})
    w = CorrespondenceTable(res)
    html_ = w.value
    assert "<img" not in html_ and 'onerror="' not in html_
    assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;&amp;top" in html_
    for layer in res.layers:
        assert f">{layer}<" in html_
    # every score, baseline and std is in the table; ✓ exactly where score < random
    n_below = 0
    for part in res.score:
        for layer in res.layers:
            s, r, sd = res.score[part][layer], res.random[part][layer], res.random_std[part][layer]
            assert f"{s:.3f}" in html_ and f"{r:.3f} ± {sd:.3f}" in html_
            n_below += s < r
    assert html_.count('class="zf-consistent"') == n_below
    assert html_.count("<tr>") == 2 + len(res.score)
    with pytest.raises(TypeError):
        CorrespondenceTable({"not": "a result"})


def test_correspondence_table_marker_logic():
    res = zf.Correspondence(
        layers=["L<1>"],
        score={"a": {"L<1>": 1.0}, "b": {"L<1>": 5.0}},
        random={"a": {"L<1>": 2.0}, "b": {"L<1>": 3.0}},
        random_std={"a": {"L<1>": 0.5}, "b": {"L<1>": 0.1}},
        boxes={},
        random_boxes={},
    )
    v = CorrespondenceTable(res).value
    assert v.count("zf-consistent") == 1 and "L&lt;1&gt;" in v
    row_a, row_b = v.split("<tr>")[3:5]
    assert "✓" in row_a and "✓" not in row_b


def _pts(i):
    return SimpleNamespace(point_inds=[i], xs=[], ys=[], trace_index=0)


def test_embedding_figure_matches_engine(default):
    w = EmbeddingView(default.model, default.images, method="pca", classes=default.classes,
                      mean=default.mean, std=default.std, max_points=120)  # fmt: skip
    res = zf.embed(default.model, default.images, method="pca", max_points=120)
    assert torch.equal(w.result.indices, res.indices)
    assert torch.allclose(w.result.coords, res.coords)
    scatter = w.figure.data[:-1]
    assert w.figure.data[-1].name == "selected" and len(w.figure.data[-1].x) == 0
    # one trace per class present, named by class; every point exactly once at its coords
    present = sorted({int(v) for v in res.labels})
    assert [tr.name for tr in scatter] == [default.classes[c] for c in present]
    seen = []
    for tr, c in zip(scatter, present):
        for j, pos in enumerate(tr.customdata):
            assert int(res.labels[pos]) == c
            assert abs(tr.x[j] - float(res.coords[pos, 0])) < 1e-5
            assert abs(tr.y[j] - float(res.coords[pos, 1])) < 1e-5
            seen.append(int(pos))
    assert sorted(seen) == list(range(120))
    # hover: the handler puts the hovered point's image in the Gallery
    tr = scatter[1]
    pos = int(tr.customdata[3])
    w._on_hover(tr, _pts(3), None)
    assert w.preview.title == w.caption(pos)
    assert w.preview.captions == [w.caption(pos)]
    idx = int(res.indices[pos])
    assert w.caption(pos).startswith(f"#{idx} · {default.classes[int(res.labels[pos])]}")
    assert torch.equal(w.image(pos), default.images[idx][0])
    # click without an explorer: selection + highlight only
    w._on_click(tr, _pts(3), None)
    assert w.selected == pos
    assert list(w.figure.data[-1].x) == pytest.approx([float(res.coords[pos, 0])])
    w.selected = None
    assert len(w.figure.data[-1].x) == 0
    with pytest.raises(traitlets.TraitError):
        w.selected = 10_000
    w._on_hover(tr, SimpleNamespace(point_inds=[]), None)  # leaving: nothing happens


def test_embedding_names_escaped():
    x = torch.rand(12, 1, 28, 28)
    d = zf.load_default()
    classes = [f"<b>c{i}</b>" for i in range(10)]
    w = EmbeddingView(d.model, x, classes=classes, max_points=None)
    assert all(tr.name.startswith("&lt;b&gt;") for tr in w.figure.data[:-1])
    assert all("<b>" not in s for tr in w.figure.data[:-1] for s in tr.text)
    assert w.result.labels is None  # coloured by the predictions


def test_embedding_click_opens_in_explorer(default):
    ex = zf.Explorer(default.model, images=[default.images[i][0] for i in range(3)],
                     classes=default.classes, occlusion=False)  # fmt: skip
    n0 = len(ex.images)
    w = EmbeddingView(default.model, default.images, classes=default.classes, explorer=ex,
                      max_points=50)  # fmt: skip
    tr = w.figure.data[0]
    pos = int(tr.customdata[0])
    w._on_click(tr, _pts(0), None)
    assert w.selected == pos
    assert len(ex.images) == n0 + 1 and ex.index == n0
    assert torch.equal(ex.images[-1], w.image(pos))
    assert ex.strip.captions[-1] == w.caption(pos)
    # the same point again: selected again, not added twice; another point is added
    w.selected = None
    w._on_click(tr, _pts(0), None)
    assert len(ex.images) == n0 + 1 and ex.index == n0
    w._on_click(tr, _pts(1), None)
    assert len(ex.images) == n0 + 2 and ex.index == n0 + 1
    assert w.open_in_explorer(pos) == n0 and ex.index == n0
