"""Explorer without a kernel: composition, wiring between parts, uploads, bad input."""

from __future__ import annotations

import functools
import io

import pytest
import torch
from models import hook_count, snapshot, tiny_zf
from PIL import Image

from zfwidgets import Explorer
from zfwidgets.base.codec import decode


def png(size=(40, 30), colour=(200, 20, 20)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def default():
    e = Explorer()
    e.top9.wait()
    return e


def test_default_opens_on_the_bundled_model_and_atlas(default):
    e = default
    assert len(e.images) == 32 and e.classes[0] == "T-shirt/top"
    assert e.grid.layer == e.layers[-1] == "features.12"
    assert e.top9.status == "ready" and e.top9.k == 9
    assert decode(e.strip.frame["atlas"]).shape[-1] == 4
    assert e.predictions is not None and e.occlusion_map is not None


def test_channel_click_projects_the_unit_and_drives_top9(default):
    e = default
    e.grid.channel = 5
    assert e.top9.channel == 5
    assert e.unit.frame["grid"]["count"] == 3  # image, deconvnet, guided backprop
    assert "channel 5" in e.unit.caption
    e.top9.wait()
    assert e.top9.status == "ready"


def test_layer_change_follows_in_top9(default):
    e = default
    e.grid.layer = "features.4"
    assert e.top9.layer == "features.4"
    e.top9.wait()
    assert e.top9.status == "ready"


def test_picking_an_image_updates_every_view(default):
    e = default
    before = bytes(e.grid.frame["atlas"]["view"])
    e.strip.selected = 7
    assert e.index == 7
    assert bytes(e.grid.frame["atlas"]["view"]) != before


def test_top9_click_opens_that_image(default):
    e = default
    n = len(e.images)
    hit = int(e.top9.indices[0])
    e.top9.selected = hit
    assert len(e.images) == n + 1 and e.index == n
    assert torch.equal(e.images[-1], e.dataset[hit][0])
    assert e.strip.captions[-1] == f"dataset image {hit}"


def test_upload_through_the_transform_and_bad_files(default):
    e = default
    n = len(e.images)
    e._on_upload({"new": ({"name": "<b>red</b>.png", "content": memoryview(png())},)})
    assert len(e.images) == n + 1 and e.index == n
    assert e.images[-1].shape == (1, 28, 28)
    assert e.strip.captions[-1] == "<b>red</b>.png"
    e._on_upload({"new": ({"name": "notes.txt", "content": memoryview(b"not an image")},)})
    assert "not an image" in e.message.value
    assert len(e.images) == n + 1  # the widget keeps working
    with pytest.raises(ValueError, match="limit"):
        e.load_upload(b"\0" * (21 * 2**20))


def test_user_model_and_images_left_as_they_were():
    model = tiny_zf()
    before = snapshot(model)
    g = torch.Generator().manual_seed(0)
    images = torch.randn(10, 3, 32, 32, generator=g)
    images0 = images.clone()
    e = Explorer(model, images, classes=[f"c{i}" for i in range(10)], occlusion=False)
    e.top9.wait()
    e.grid.channel = 2
    assert e.top9.channel == 2
    assert torch.equal(images, images0)
    assert hook_count(model) == 0
    assert [m.training for m in model.modules()] == before["training"]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"images": torch.randn(2, 1, 32, 32)}, ValueError, "channels"),
        (
            {"images": torch.randn(2, 3, 32, 32), "layers": ["nope"]},
            ValueError,
            "close matches|no module",
        ),
        ({"images": []}, ValueError, "at least one"),
        ({"images": 5}, TypeError, "expected"),
    ],
)
def test_bad_input_at_construction(kwargs, error, match):
    with pytest.raises(error, match=match):
        Explorer(tiny_zf(), **kwargs)


def test_unit_view_adds_the_feature_visualisation_once_per_unit(monkeypatch):
    """The selected map's feature visualisation joins its two projections when computed (in
    the background, once per (layer, channel)); a stored one is read, not computed."""
    import importlib

    fvmod = importlib.import_module("zfwidgets.engine.featurevis")
    calls = []
    real = fvmod.feature_vis

    @functools.wraps(real)
    def counted(*a, **k):
        calls.append((a[1], tuple(a[2])))
        return real(*a, **k)

    monkeypatch.setattr(fvmod, "feature_vis", counted)
    torch.manual_seed(0)
    model = tiny_zf()
    e = Explorer(model, images=torch.rand(3, 3, 32, 32), occlusion=False, feature_vis={"steps": 3})
    e.grid.layer = "4"
    e.grid.channel = 2
    assert e.wait(60)
    assert e.unit.frame["grid"]["count"] == 4
    assert e.unit.captions[-1] == "feature visualisation"
    assert calls == [("4", (2,))]
    tiles = decode(e.unit.frame["atlas"])
    e.grid.channel = 1
    assert e.wait(60)
    e.grid.channel = 2  # cached: shown at once, not computed again
    assert e.unit.frame["grid"]["count"] == 4 and calls == [("4", (2,)), ("4", (1,))]
    assert decode(e.unit.frame["atlas"]).shape == tiles.shape
    assert hook_count(model) == 0
    e.close()
    off = Explorer(model, images=torch.rand(3, 3, 32, 32), occlusion=False, feature_vis=False)
    off.grid.channel = 2
    assert off.wait(60) and off.unit.frame["grid"]["count"] == 3
    off.close()
    with pytest.raises(ValueError, match=r"feature_vis\['steps'\]"):
        Explorer(model, images=torch.rand(3, 3, 32, 32), feature_vis={"steps": 0})


def test_unit_view_reads_the_atlas_feature_visualisation(tmp_path, monkeypatch):
    import importlib

    import zfwidgets as zf

    torch.manual_seed(0)
    model, data = tiny_zf(), torch.rand(8, 3, 32, 32)
    atlas = zf.mine(model, data, layers=["4"], k=2, progress=False)
    atlas.save(tmp_path / "a")
    atlas.render(format="png", feature_vis={"steps": 2}, progress=False)
    fvmod = importlib.import_module("zfwidgets.engine.featurevis")

    @functools.wraps(fvmod.feature_vis)
    def boom(*a, **k):
        raise AssertionError("computed although stored")

    monkeypatch.setattr(fvmod, "feature_vis", boom)
    e = Explorer(model, images=data[:2], dataset=data, atlas=tmp_path / "a", occlusion=False)
    e.grid.layer = "4"
    e.grid.channel = 3
    assert e.wait(60)
    assert e.unit.frame["grid"]["count"] == 4
    shown = decode(e.unit.frame["atlas"])
    assert shown.std() > 0
    e.close()
