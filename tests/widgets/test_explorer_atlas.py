"""Explorer on a stored atlas: opened without mining, tiles read, bad folders said and skipped."""

from __future__ import annotations

import shutil

import pytest
import torch
from models import atlas_images, saved_atlas, tiny_2x2, tiny_zf

from zfwidgets import Explorer


@pytest.fixture(scope="module")
def data():
    return atlas_images()


@pytest.fixture(scope="module")
def folder(tmp_path_factory, data):
    """Layers "4" (rendered) and "7" (not) of tiny_zf over ``data``."""
    root = tmp_path_factory.mktemp("explorer-atlas") / "atlas"
    return saved_atlas(root, data, ["4", "7"], 4, render=["4"])


def explorer(atlas, data=None, model=None):
    return Explorer(
        model or tiny_zf(),
        data[:4] if data is not None else torch.rand(4, 3, 32, 32),
        dataset=data,
        atlas=atlas,
        occlusion=False,
    )


def test_opens_a_folder_without_mining(folder, data, monkeypatch):
    import zfwidgets.atlas.mining as mining

    def no_mining(*a, **k):
        raise AssertionError("mined although the atlas holds the layer")

    monkeypatch.setattr(mining, "mine", no_mining)
    e = explorer(folder, data)
    e.wait()
    assert e.atlas is not None and e.atlas.has_images("4")
    assert e.grid.layer == "7"  # the deepest conv the atlas holds
    assert e.top9.status == "ready" and e.top9.layer == "7"
    assert "No stored tiles for 7" in e.atlas_note.value
    assert "Not in the atlas: 0" in e.atlas_note.value  # offered, mined when shown
    # stored tiles: the overview opens at once, on the grid's layer
    assert e.overview_box.selected_index == 0 and e.overview is not None
    assert e.overview.layer == "7" and e.overview.frame  # computed: no tiles for "7"
    e.grid.layer = "4"
    e.wait()
    assert e.overview.layer == "4" and e.overview.note == ""
    # a click in the overview opens the unit in the grid, the unit view and the top-9
    e.overview.select(6)
    e.wait()
    assert e.grid.channel == 6 and e.top9.channel == 6 and e.top9.layer == "4"
    assert "channel 6" in e.unit.caption


def test_layers_the_atlas_lacks_are_mined(folder, data):
    e = explorer(folder, data)
    e.grid.layer = "0"
    e.wait()
    assert e.top9.layer == "0" and e.top9.status == "ready"


def test_without_a_dataset_the_stored_tiles_are_enough(folder):
    e = explorer(folder)
    e.wait()
    assert e.grid.layer == "4" and e.top9.layer == "4"  # the only layer with tiles
    e.grid.layer = "4"
    e.wait()
    assert e.top9.layer == "4" and e.top9.status == "ready"
    e.grid.layer = "0"  # not in the atlas, nothing to mine: said, the rest goes on
    assert "top-9:" in e.message.value and "not in the atlas" in e.message.value
    assert e.top9.layer == "4"
    e.top9.selected = 3
    assert "pass dataset=" in e.message.value


@pytest.mark.parametrize("case", ["missing", "corrupt", "other model", "other data"])
def test_bad_folders_are_said_and_mined_instead(tmp_path, folder, data, case):
    path, model, d = tmp_path / "atlas", tiny_zf(), data
    if case != "missing":
        shutil.copytree(folder, path)
    if case == "corrupt":
        (path / "manifest.json").write_bytes(b"\x00garbage")
    elif case == "other model":
        model = tiny_2x2()
    elif case == "other data":
        d = data[:12]
    e = explorer(path, d, model)
    e.wait()
    assert e.atlas is None and e.overview is None
    assert "mining the top-9 instead" in e.atlas_note.value
    assert e.top9.status == "ready"  # mined instead; everything else works
    e.grid.channel = 1
    assert "channel 1" in e.unit.caption
