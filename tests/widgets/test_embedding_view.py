"""EmbeddingView without a kernel: the figure against zf.embed, escaping, click -> Explorer."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import traitlets

import zfwidgets as zf
from zfwidgets.widgets.embedding import EmbeddingView


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
