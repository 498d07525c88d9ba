"""The static picture of every widget: ``snapshot()`` and the ``image/png`` of the display
bundle (widgets/_snapshot.py, base/picture.py), for front ends without a kernel."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from models import tiny_zf

import zfwidgets as zf
from zfwidgets.base.codec import decode_image
from zfwidgets.base.images import colormap_lut
from zfwidgets.widgets import (
    CorrespondenceTable,
    EmbeddingView,
    EvolutionSlider,
    Explorer,
    FilterGrid,
    Gallery,
    InvarianceCurves,
    LayerGrid,
    LayerOverview,
    OcclusionMap,
    Predictions,
    TopNine,
    _snapshot,
)

VIEW = "application/vnd.jupyter.widget-view+json"


def _monitor():
    from zfwidgets.monitor import TrainingMonitor

    model = tiny_zf().train()
    probe = torch.randn(16, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    mon = TrainingMonitor(
        model, probe, every=4, snapshot_every=8, budget=1.0, units={"4": [0]}, name="run a"
    )
    g = torch.Generator().manual_seed(0)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    for _ in range(16):
        x = torch.randn(8, 3, 32, 32, generator=g)
        y = torch.randint(0, 10, (8,), generator=g)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        mon.step(loss=loss)
    mon.epoch_end(val_loss=2.0)
    return mon.widget


def _stored_atlas(root):
    torch.manual_seed(3)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 12, 3, padding=1), torch.nn.ReLU()).eval()
    atlas = zf.mine(model, torch.rand(6, 3, 12, 12), layers=["0"], k=2, progress=False)
    atlas.save(root)
    atlas.render(progress=False, format="png")
    return root


def _builders(d, x, y, tmp=None):
    """name -> function building the widget (after its first frame)."""
    kw = {"mean": d.mean, "std": d.std}
    images = d.images.tensors()[0][:24]
    return {
        "LayerGrid": lambda: LayerGrid(d.model, x[0], "features.3", **kw),
        "TopNine": lambda: TopNine(
            d.model, images, layer="features.3", channel=1, classes=d.classes, **kw
        ).wait(),
        "OcclusionMap": lambda: _waited(
            OcclusionMap(d.model, x[0], classes=d.classes, window=8, stride=4, **kw)
        ),
        "FilterGrid": lambda: FilterGrid(d.model, images=x),
        "EvolutionSlider": lambda: EvolutionSlider(
            [d.model.state_dict(), d.model.state_dict()], labels=["epoch 1", "epoch 30"]
        ),
        "Predictions": lambda: Predictions(d.model, x[0], classes=d.classes),
        "Gallery": lambda: Gallery(torch.rand(3, 3, 20, 20), ["a", "b", "c"], title="three"),
        "LayerOverview": lambda: _waited(LayerOverview(_stored_atlas(tmp / "atlas"), side=12)),
        "MonitorView": _monitor,
        "Explorer": lambda: _waited(
            Explorer(tiny_zf(), torch.rand(6, 3, 32, 32), classes=[f"c{i}" for i in range(10)])
        ),
        "InvarianceCurves": lambda: InvarianceCurves(
            d.model, x, transform="rotate", target=y, classes=d.classes, **kw
        ),
        "EmbeddingView": lambda: EmbeddingView(
            d.model, images, method="pca", classes=d.classes, **kw
        ),
        "CorrespondenceTable": lambda: CorrespondenceTable(
            zf.correspondence(
                d.model, x, {"top": (0, 0, 14, 28), "bottom": (14, 0, 28, 28)}, n_random=2
            )
        ),
    }


def _waited(w):
    w.wait()
    if hasattr(w, "top9") and w.top9 is not None:
        w.top9.wait()
    return w


NAMES = [
    "LayerGrid", "TopNine", "OcclusionMap", "FilterGrid", "EvolutionSlider", "Predictions",
    "Gallery", "LayerOverview", "MonitorView", "Explorer", "InvarianceCurves", "EmbeddingView",
    "CorrespondenceTable",
]  # fmt: skip


@pytest.fixture(scope="module")
def widgets(default, batch, tmp_path_factory):
    torch.manual_seed(0)
    x, y = batch
    built = _builders(default, x, y, tmp_path_factory.mktemp("snapshot"))
    assert sorted(built) == sorted(NAMES)
    return {name: build() for name, build in built.items()}


@pytest.mark.parametrize("name", NAMES)
def test_every_widget_has_a_picture_in_its_bundle(widgets, name):
    w = widgets[name]
    assert not getattr(w, "error", "")  # the widget drew its state, not an error
    png = w.snapshot()
    image = decode_image(png, formats=("png",))
    h, wd = image.shape[:2]
    assert 60 <= wd <= 1200 and 20 <= h <= 3000, (wd, h)
    assert image.std() > 5  # not a blank page
    bundle = w._repr_mimebundle_()
    data = bundle[0] if isinstance(bundle, tuple) else bundle
    assert VIEW in data  # live front ends still show the live widget
    assert base64.b64decode(data["image/png"]) == png  # the same bytes
    text = data["text/plain"]
    assert text.startswith(f"{name}(") and "\n" not in text
    json.dumps(data)  # a valid notebook output


def test_text_names_the_state(widgets):
    assert widgets["LayerGrid"]._describe() == "LayerGrid(layer='features.3', channel=None)"
    assert widgets["TopNine"]._describe() == "TopNine(layer='features.3', channel=1)"
    assert widgets["OcclusionMap"]._describe() == "OcclusionMap(view='probability')"


def _pixels(w) -> np.ndarray:
    return decode_image(w.snapshot(), formats=("png",))


def test_layer_grid_picture_follows_layer_and_channel(widgets):
    w = widgets["LayerGrid"]
    before = w.snapshot()
    w.channel = 4
    picked = w.snapshot()
    assert picked != before
    # the selection box: the page's selection colour (--zf-select) appears
    sel = np.all(_pixels(w) == (25, 113, 194), axis=-1).sum()
    assert sel > 20
    w.channel = None
    assert w.snapshot() == before  # same state, same bytes
    w.layer = "features.0"
    w.wait()
    assert w.snapshot() != before
    w.layer = "features.3"
    w.wait()


def test_top_nine_picture_follows_the_channel(widgets):
    w = widgets["TopNine"]
    one = w.snapshot()
    w.channel = 2
    w.wait()
    assert w.snapshot() != one
    w.channel = 1
    w.wait()
    assert w.snapshot() == one


def test_occlusion_heatmap_colours(widgets):
    w = widgets["OcclusionMap"]
    size = w.frame["size"]
    values = torch.zeros(4, 4)
    values[:2, :2] = 1.0  # the top-left quarter holds the maximum
    w.show_map("quarter", values, colormap="viridis")
    w.view = "quarter"
    top = tuple(colormap_lut("viridis")[255, :3].tolist())  # (253, 231, 37)
    w.opacity = 1.0
    full = np.all(_pixels(w) == top, axis=-1)
    w.opacity = 0.0
    none = np.all(_pixels(w) == top, axis=-1)
    # a quarter of the (scaled) image has the colour map's top colour; without the heatmap
    # only the colour bar's right end has it
    ys, xs = np.nonzero(full & ~none)
    assert len(ys) >= size[0] * size[1] // 4
    assert xs.max() - xs.min() + 1 == ys.max() - ys.min() + 1  # a square quarter
    assert none.sum() < 60
    w.opacity = 0.6
    a = w.snapshot()
    w.view = "top_class"
    assert w.snapshot() != a
    w.view = "probability"


def test_filter_grid_marks_dominating_filters(widgets):
    w = widgets["FilterGrid"]
    from zfwidgets.base.codec import decode
    from zfwidgets.engine.filters import DOMINATING

    n_dom = int((decode(w.frame["flags"]) & DOMINATING).astype(bool).sum())
    accent = np.all(_pixels(w) == (232, 89, 12), axis=-1).sum()
    assert (accent > 100) == (n_dom > 0)


def test_gallery_picture_follows_images():
    g = Gallery(torch.zeros(2, 3, 8, 8), ["a", "b"], selectable=False)
    dark = _pixels(g)
    g.set_images(torch.ones(2, 3, 8, 8), ["a", "b"])
    light = _pixels(g)
    assert light.mean() > dark.mean()


def test_snapshot_writes_the_same_bytes(widgets, tmp_path):
    w = widgets["Gallery"]
    path = tmp_path / "g.png"
    data = w.snapshot(path)
    assert path.read_bytes() == data == w.snapshot()
    w.snapshot(str(path))  # replaced in place, no temporary left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.png"]


def test_snapshot_path_is_checked(widgets, tmp_path):
    w = widgets["Gallery"]
    with pytest.raises(TypeError, match="path: expected a str or os.PathLike"):
        w.snapshot(3)
    with pytest.raises(ValueError, match=r"path: expected a file name ending in \.png"):
        w.snapshot(tmp_path / "g.jpg")
    with pytest.raises(ValueError, match="path: the folder .* does not exist"):
        w.snapshot(tmp_path / "missing" / "g.png")
    (tmp_path / "d.png").mkdir()
    with pytest.raises(ValueError, match="is a folder"):
        w.snapshot(tmp_path / "d.png")


def test_a_failing_picture_leaves_the_live_view(widgets, monkeypatch):
    w = widgets["Gallery"]

    def broken(widget):
        raise RuntimeError("no picture")

    monkeypatch.setitem(_snapshot._DRAWERS, "Gallery", broken)
    data = w._repr_mimebundle_()
    data = data[0] if isinstance(data, tuple) else data
    assert VIEW in data and "image/png" not in data
    assert data["text/plain"].startswith("Gallery(")
    with pytest.raises(RuntimeError, match="no picture"):
        w.snapshot()


def test_user_text_is_drawn_as_text():
    evil = "<b>bold</b> & <script>"
    g = Gallery(torch.rand(1, 3, 8, 8), [evil], title=evil)
    assert decode_image(g.snapshot(), formats=("png",)).shape[1] > 60
    assert _snapshot._html_text("<div>a &lt;b&gt;</div><div>c</div>") == "a <b>\nc"


@pytest.mark.slow
def test_executed_notebook_stores_the_picture(tmp_path):
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(
            "import torch\nfrom zfwidgets.widgets import Gallery\n"
            "Gallery(torch.rand(2, 3, 16, 16), ['one', 'two'], title='two images')"
        )
    ]
    NotebookClient(
        nb,
        timeout=120,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
        store_widget_state=True,
    ).execute()
    (out,) = nb.cells[0].outputs
    assert out["output_type"] == "execute_result"
    png = base64.b64decode(out["data"]["image/png"])
    assert decode_image(png, formats=("png",)).shape[1] > 60
    assert VIEW in out["data"] and out["data"]["text/plain"].startswith("Gallery(")


def test_other_pictures_follow_their_state(widgets, batch):
    x, _ = batch
    ev = widgets["EvolutionSlider"]
    first = ev.snapshot()
    ev.index = 1
    assert ev.snapshot() != first
    ev.index = 0
    assert ev.snapshot() == first

    pred = widgets["Predictions"]
    before = pred.snapshot()
    pred.set_image(x[1])
    pred.wait()
    assert pred.labels and pred.snapshot() != before

    ov = widgets["LayerOverview"]
    before = ov.snapshot()
    ov.selected = ov.frame["units"][0]
    assert np.all(_pixels(ov) == (25, 113, 194), axis=-1).sum() > 10  # the selection box
    ov.selected = None
    assert ov.snapshot() == before

    e = widgets["Explorer"]  # the composite follows its parts
    before = e.snapshot()
    e.grid.channel = 1
    e.wait()
    assert e.snapshot() != before
