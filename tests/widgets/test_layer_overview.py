"""LayerOverview and zfwidgets.atlas.overview: a whole layer from an atlas, a page at a time."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from models import atlas_images, saved_atlas, tiny_zf
from torch import nn

import zfwidgets as zf
from zfwidgets.atlas.core import Atlas
from zfwidgets.atlas.overview import overview_page, unit_order
from zfwidgets.base.codec import decode
from zfwidgets.widgets.layer_overview import LayerOverview


def wide_model() -> nn.Sequential:
    torch.manual_seed(3)
    return nn.Sequential(nn.Conv2d(3, 70, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)).eval()


@pytest.fixture(scope="module")
def data():
    return atlas_images()


@pytest.fixture(scope="module")
def stored(tmp_path_factory, data):
    """A folder: layer "4" rendered (PNG), layers "0" and "8" not."""
    root = tmp_path_factory.mktemp("overview") / "atlas"
    return saved_atlas(root, data, ["0", "4", "8"], 4, render=["4"], format="png")


@pytest.fixture(scope="module")
def wide(tmp_path_factory):
    root = tmp_path_factory.mktemp("wide") / "atlas"
    atlas = zf.mine(wide_model(), torch.rand(6, 3, 12, 12), layers=["0"], k=2, progress=False)
    atlas.save(root)
    atlas.render(progress=False, format="png")
    return root


def test_unit_order_by_strength_ties_by_index():
    atlas = zf.mine(tiny_zf(), torch.rand(9, 3, 32, 32), layers=["4"], k=2, progress=False)
    atlas.values["4"][:, 0] = torch.tensor([1.0, 3, 3, 0, 2, float("nan"), 1, 1, 0, 5, 5, 0])
    assert unit_order(atlas, "4", "index") == list(range(12))
    assert unit_order(atlas, "4", "strength") == [9, 10, 1, 2, 4, 0, 6, 7, 3, 8, 11, 5]
    with pytest.raises(ValueError, match="sort"):
        unit_order(atlas, "4", "random")
    with pytest.raises(ValueError, match="not in this atlas"):
        unit_order(atlas, "9", "index")


def test_stored_page_is_the_tiles(stored):
    atlas = Atlas.load(stored)  # no model, no data: the tiles are all there is
    p = overview_page(atlas, "4", side=22, sort="strength")
    assert p.source == "stored" and p.pages == 1 and p.missing == []
    assert p.units == unit_order(atlas, "4", "strength")
    np.testing.assert_allclose(p.values, atlas.values["4"][p.units, 0].numpy())
    for i, c in enumerate(p.units):
        x, y, w, h = p.layout.rect(i)
        got = p.image[y : y + h, x : x + w].numpy()
        want = atlas.unit_images("4", c).reconstructions[0]  # 11 x 11, enlarged 2x
        want = np.repeat(np.repeat(want, 2, 0), 2, 1)
        assert (got[:, :, 3] == 255).all()
        np.testing.assert_array_equal(got[:, :, :3], want)
    mosaic = overview_page(atlas, "4", side=44, show="patches")
    x, y, w, h = mosaic.layout.rect(0)
    u = atlas.unit_images("4", 0)
    block = u.sprite[:, u.layout.width // 2 :]  # 22 x 22 patches, enlarged 2x
    want = np.repeat(np.repeat(block, 2, 0), 2, 1)
    np.testing.assert_array_equal(mosaic.image[y : y + h, x : x + w, :3].numpy(), want)
    with pytest.raises(ValueError, match="no stored tiles"):
        overview_page(atlas, "0")


def test_unrendered_layer_is_computed_with_model_and_data(stored, data):
    atlas = Atlas.load(stored, model=tiny_zf(), data=data)
    p = overview_page(atlas, "8", show="reconstructions", side=32)
    assert p.source == "computed" and len(p.units) == 16
    assert p.image[..., 3].float().mean() > 0


def test_pages_of_a_wide_layer(wide):
    atlas = Atlas.load(wide)
    first = overview_page(atlas, "0", page_size=32)
    last = overview_page(atlas, "0", page=99, page_size=32)
    assert first.pages == 3 and first.units == list(range(32))
    assert last.page == 2 and last.units == list(range(64, 70))


def test_widget_pages_sorts_and_selects(wide, frontend):
    w = LayerOverview(wide, page_size=32, side=12)
    fe = frontend(w)
    assert w.layer == "0" and w.pages == 3 and w.frame["units"] == list(range(32))
    assert "70 units" in w.caption and "page 1 of 3" in w.caption and not w.error
    atlas = decode(w.frame["atlas"])
    assert atlas.shape == (w.frame["grid"]["height"], w.frame["grid"]["width"], 4)
    fe.set(page=2)
    w.wait()
    assert w.frame["units"] == list(range(64, 70)) and w.frame["page"] == 2
    fe.set(sort="strength")
    w.wait()
    assert w.page == 0 and w.frame["units"] == unit_order(w.atlas, "0", "strength")[:32]
    fe.set(show="patches")
    w.wait()
    assert w.frame["units"] == unit_order(w.atlas, "0", "strength")[:32]
    fe.set(selected=5)
    assert w.selected == 5
    with pytest.raises(ValueError, match="sort"):
        w.sort = "random"
    with pytest.raises(ValueError, match="channel"):
        w.select(70)


def test_widget_says_what_it_cannot_show(stored, data):
    w = LayerOverview(stored)  # no model: layer "0" has no tiles
    assert w.frame == {} and "no stored tiles" in w.error
    w.layer = "4"
    w.wait()
    assert w.frame["units"] == list(range(12)) and w.error == "" and w.note == ""
    computed = LayerOverview(stored, "8", model=tiny_zf(), data=data)
    assert computed.frame and "computed from the model" in computed.note
    with pytest.raises(ValueError, match="layer"):
        LayerOverview(stored, "nope")
    with pytest.raises(TypeError, match="atlas"):
        LayerOverview(42)


def test_click_opens_the_unit_in_a_top_nine(stored, data):
    atlas = Atlas.load(stored, model=tiny_zf(), data=data)
    top = zf.TopNine(tiny_zf(), data, layer="0", channel=0, atlas=atlas).wait()
    w = LayerOverview(atlas, "4").link(top)
    w.select(7)
    top.wait()
    assert top.layer == "4" and top.channel == 7
