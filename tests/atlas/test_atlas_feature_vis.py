"""Feature visualisations stored with an atlas: render(feature_vis=...), read back, resumed,
added to sprites already on disk, validated when loaded."""

import json

import numpy as np
import pytest
import torch
from models import hook_count, tiny_zf

import zfwidgets as zf
from zfwidgets.atlas.core import Atlas
from zfwidgets.atlas.store import MANIFEST
from zfwidgets.base.progress import Cancelled

LAYERS = ["0", "4"]
FV = {"steps": 6}


@pytest.fixture(scope="module")
def data():
    torch.manual_seed(0)
    return torch.rand(12, 3, 32, 32)


@pytest.fixture(scope="module")
def model():
    return tiny_zf()


def manifest(path):
    return json.loads((path / MANIFEST).read_text())


def test_render_stores_one_picture_per_unit_equal_to_feature_vis(tmp_path, model, data):
    atlas = zf.mine(model, data, layers=LAYERS, k=3, progress=False)
    atlas.save(tmp_path / "a")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    atlas.render(format="png", feature_vis=FV, progress=False, batch_size=4)
    assert hook_count(model) == 0
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    m = manifest(tmp_path / "a")
    fv = m["layers"][1]["images"]["feature_vis"]
    assert fv["steps"] == 6 and fv["size"] == [32, 32] and fv["mode"] == "RGB"
    assert fv["files"] == "{channel:05d}.fv.png"
    back = Atlas.load(tmp_path / "a", model=model, data=data)
    assert back.has_feature_vis("4") and back.has_feature_vis("0")
    # the stored picture is feature_vis's (data in [0, 1]: no normalisation; the same batch:
    # units 0-4 form one group of the render, optimised 4 at a time), rounded to uint8
    ref = zf.feature_vis(
        model,
        "4",
        [0, 1, 2, 3],
        size=32,
        steps=6,
        mean=[0.0] * 3,
        std=[1.0] * 3,
        batch_size=4,
        progress=False,
    )
    want = torch.floor(ref.images[2].permute(1, 2, 0).clamp(0, 1) * 255 + 0.5).to(torch.uint8)
    got = back.feature_vis_image("4", 2)
    assert got.shape == (32, 32, 3) and got.dtype == np.uint8
    np.testing.assert_array_equal(got, want.numpy())
    # different units, different pictures
    assert not np.array_equal(back.feature_vis_image("4", 0), back.feature_vis_image("4", 1))


def test_adding_feature_vis_keeps_the_sprites_and_resumes(tmp_path, model, data, monkeypatch):
    atlas = zf.mine(model, data, layers=["4"], k=3, progress=False)
    atlas.save(tmp_path / "a")
    atlas.render(format="png", progress=False)
    sprite = atlas.unit_images("4", 5).data
    assert not atlas.has_feature_vis("4")
    with pytest.raises(ValueError, match=r"no stored feature visualisations.*feature_vis=True"):
        atlas.feature_vis_image("4", 0)
    # the sprites are not rendered again: the projection never runs
    import importlib

    bp = importlib.import_module("zfwidgets.engine.backprop")

    def boom(*a, **k):
        raise AssertionError("sprites rendered again")

    monkeypatch.setattr(bp, "backprop", boom)
    calls = []

    def stop(done, total):
        calls.append(done)
        if len(calls) == 2:
            raise Cancelled()

    with pytest.raises(Cancelled):
        atlas.render(format="png", feature_vis=FV, progress=stop, batch_size=1)
    assert not atlas.has_feature_vis("4")  # the manifest names only finished layers
    done_before = len(list((tmp_path / "a" / "tiles").glob("*.partial/*.fv.png")))
    assert done_before >= 1
    atlas.render(format="png", feature_vis=FV, progress=False, batch_size=1)
    assert atlas.has_feature_vis("4")
    assert atlas.unit_images("4", 5).data == sprite
    files = list((tmp_path / "a" / "tiles").glob("*/*.fv.png"))
    assert len(files) == atlas.values["4"].shape[0]
    # asking for the same again does nothing
    atlas.render(format="png", feature_vis=FV, progress=False)


def test_bad_feature_vis_arguments_are_refused_before_work(tmp_path, model, data):
    atlas = zf.mine(model, data, layers=["4"], k=3, progress=False)
    atlas.save(tmp_path / "a")
    for bad, err, msg in [
        ("yes", TypeError, r"feature_vis: expected True, False or a dict"),
        ({"size": 3}, ValueError, r"feature_vis: unknown setting\(s\) \['size'\]"),
        ({"steps": 0}, ValueError, r"feature_vis\['steps'\]: expected an int"),
        ({"lr": float("nan")}, ValueError, r"feature_vis\['lr'\]"),
        ({"transforms": "x"}, ValueError, r"feature_vis\['transforms'\]"),
        ({"seed": -1}, ValueError, r"feature_vis\['seed'\]"),
    ]:
        with pytest.raises(err, match=msg):
            atlas.render(feature_vis=bad, progress=False)
    assert not list((tmp_path / "a").glob("tiles/*"))


@pytest.mark.parametrize(
    "field, value, msg",
    [
        ("size", [16, 16], r"feature_vis.size: expected the input size"),
        ("mode", "CMYK", r"feature_vis.mode"),
        ("steps", "many", r"feature_vis.steps"),
        ("transforms", "<script>", r"feature_vis.transforms"),
    ],
)
def test_a_damaged_record_is_refused_on_load(tmp_path, model, data, field, value, msg):
    atlas = zf.mine(model, data, layers=["4"], k=3, progress=False)
    atlas.save(tmp_path / "a")
    atlas.render(format="png", feature_vis=FV, progress=False)
    m = manifest(tmp_path / "a")
    m["layers"][0]["images"]["feature_vis"][field] = value
    (tmp_path / "a" / MANIFEST).write_text(json.dumps(m))
    with pytest.raises(ValueError, match=msg):
        Atlas.load(tmp_path / "a")


def test_a_picture_of_another_size_is_refused(tmp_path, model, data):
    atlas = zf.mine(model, data, layers=["4"], k=3, progress=False)
    atlas.save(tmp_path / "a")
    atlas.render(format="png", feature_vis=FV, progress=False)
    from zfwidgets.base.codec import encode_image

    f = next((tmp_path / "a" / "tiles").glob("*/00001.fv.png"))
    f.write_bytes(encode_image(np.zeros((8, 8, 3), np.uint8), "png"))
    back = Atlas.load(tmp_path / "a")
    with pytest.raises(ValueError, match=r"00001\.fv\.png.*expected size"):
        back.feature_vis_image("4", 1)
