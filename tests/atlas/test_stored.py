"""zfwidgets.atlas.stored.open_atlas: what a front end may use of the atlas the user passed."""

from __future__ import annotations

import shutil

import pytest
import torch
from models import atlas_images, saved_atlas, tiny_2x2, tiny_zf

from zfwidgets.atlas.core import Atlas
from zfwidgets.atlas.stored import open_atlas


@pytest.fixture(scope="module")
def data():
    return atlas_images()


@pytest.fixture(scope="module")
def folder(tmp_path_factory, data):
    root = tmp_path_factory.mktemp("stored") / "atlas"
    return saved_atlas(root, data, ["0", "4"], 3, render=["4"])


def test_a_good_folder_opens_with_notes(folder, data):
    got = open_atlas(folder, model=tiny_zf(), data=data, layers=["0", "4", "7"])
    assert isinstance(got.atlas, Atlas) and not got.refused
    assert got.stored == ["4"] and got.atlas.source is not None
    assert "No stored tiles for 0" in got.message and "Not in the atlas: 7" in got.message
    assert open_atlas(None, model=tiny_zf()).atlas is None


@pytest.mark.parametrize("case", ["missing", "corrupt", "partial", "count", "class", "weights"])
def test_bad_folders_are_refused_with_a_reason(tmp_path, folder, data, case):
    path, model, d = tmp_path / "atlas", tiny_zf(), data
    if case != "missing":
        shutil.copytree(folder, path)
    if case == "corrupt":
        (path / "manifest.json").write_text("{not json")
    elif case == "partial":
        for p in path.glob("tensors-*.safetensors"):
            p.unlink()
    elif case == "count":
        d = data[:10]
    elif case == "class":
        model = tiny_2x2()
    elif case == "weights":
        torch.manual_seed(7)
        for p in model.parameters():
            p.data.normal_()
    got = open_atlas(path, model=model, data=d)
    assert got.atlas is None and got.refused
    expect = {
        "missing": "No atlas at",
        "corrupt": "cannot be used",
        "partial": "cannot be used",
        "count": "mined over 23 images",
        "class": "not from this model",
        "weights": "other weights",
    }[case]
    assert expect in got.message and "mining the top-9 instead" in got.message


def test_an_atlas_object_with_other_weights_is_used_with_a_note(folder):
    model = tiny_zf()
    with torch.no_grad():
        model[0].weight.add_(1.0)
    got = open_atlas(Atlas.load(folder), model=model)
    assert got.atlas is not None and "other weights" in got.message
    assert got.atlas.model is model
    with pytest.raises(TypeError, match="atlas"):
        open_atlas(3, model=model)
