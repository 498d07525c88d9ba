"""EvolutionSlider without a kernel: checkpoints, links to TopNine and FilterGrid (Fig. 4)."""

from __future__ import annotations

import copy
import threading

import numpy as np
import pytest
import torch
import traitlets
from models import tiny_zf
from torch.utils.data import Dataset

import zfwidgets as zf
from zfwidgets.widgets.evolution import EvolutionSlider, check_state_dict, parse_checkpoints
from zfwidgets.widgets.filter_grid import FilterGrid
from zfwidgets.widgets.top_nine import TopNine


@pytest.fixture
def images():
    return torch.randn(16, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def checkpoints_of(model, n: int = 3) -> list[dict]:
    """n state dicts of the model's architecture, each with other weights."""
    out = []
    for seed in range(n):
        torch.manual_seed(100 + seed)
        other = copy.deepcopy(model)
        for p in other.parameters():
            p.data.normal_(0, 0.3)
        out.append({k: v.clone() for k, v in other.state_dict().items()})
    return out


def state_of(model) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def loaded(model, state_dict):
    m = copy.deepcopy(model)
    m.load_state_dict(state_dict)
    return m


def test_checkpoint_forms_and_labels(model):
    cps = checkpoints_of(model, 2)
    s = EvolutionSlider(cps)
    assert s.labels == ["checkpoint 0", "checkpoint 1"] and s.index == 0 and len(s) == 2
    assert s.checkpoints[1] is cps[1] and s.state_dict is cps[0]
    assert EvolutionSlider([(1, cps[0]), (64, cps[1])]).labels == ["epoch 1", "epoch 64"]
    assert EvolutionSlider({"init": cps[0], "end": cps[1]}).labels == ["init", "end"]
    assert EvolutionSlider(cps, labels=["a", "b"], index=1).labels == ["a", "b"]
    with pytest.raises(ValueError, match="at least one"):
        EvolutionSlider([])
    with pytest.raises(TypeError, match="single state dict"):
        EvolutionSlider(cps[0])
    with pytest.raises(ValueError, match="expected 2 labels"):
        EvolutionSlider(cps, labels=["a"])
    with pytest.raises(ValueError, match=r"index: expected an int in \[0, 2\)"):
        EvolutionSlider(cps, index=2)
    with pytest.raises(TypeError, match=r"checkpoints\[1\]: expected a state dict"):
        EvolutionSlider([cps[0], "weights.pt"])
    bad = dict(cps[1])
    del bad["0.weight"]
    bad["extra.bias"] = torch.zeros(2)
    with pytest.raises(
        ValueError,
        match=r"checkpoints\[1\] does not match checkpoints\[0\]: missing keys '0.weight'; "
        r"unexpected keys 'extra.bias'",
    ):
        EvolutionSlider([cps[0], bad])
    s.index = 1
    with pytest.raises(traitlets.TraitError, match=r"\[0, 2\)"):
        s.index = 2


def test_state_dict_errors_name_keys_and_prefixes(model):
    ref = model.state_dict()
    check_state_dict(ref, state_of(model), "cp")
    wrapped = {f"module.{k}": v for k, v in ref.items()}
    with pytest.raises(ValueError, match=r"missing keys '0.weight'.*prefix 'module\.'"):
        check_state_dict(ref, wrapped, "checkpoints[0]")
    shaped = state_of(model)
    shaped["0.weight"] = torch.zeros(8, 3, 3, 3)
    with pytest.raises(ValueError, match=r"mismatched shapes '0.weight' \(8, 3, 3, 3\) "):
        check_state_dict(ref, shaped, "cp")
    states, labels = parse_checkpoints([("init", ref)])
    assert states == [ref] and labels == ["init"]


def test_slider_swaps_topnine_weights_on_a_private_copy(model, images, frontend):
    cps = checkpoints_of(model)
    before = state_of(model)
    top = TopNine(model, images, layer="4", channel=3).wait()
    own = top.values.copy()
    slider = EvolutionSlider(cps, labels=["epoch 1", "epoch 5", "epoch 20"])
    assert slider.link(top) is slider
    assert top.checkpoint == 0 and top.checkpoint_labels == ["epoch 1", "epoch 5", "epoch 20"]
    top.wait()
    fe = frontend(slider)
    for i in (1, 2, 0):
        fe.set(index=i)  # the slider moved in the browser
        top.wait()
        assert top.frame["checkpoint"] == i and top.frame["checkpoint_label"] == slider.labels[i]
        # the private copy holds the checkpoint; the user's model is untouched
        for k, v in top._shadow.state_dict().items():
            assert torch.equal(v, cps[i][k]), k
        for k, v in model.state_dict().items():
            assert torch.equal(v, before[k]), k
        ref = zf.mine(loaded(model, cps[i]), images, layers=["4"], k=9, progress=False)
        np.testing.assert_allclose(top.values, ref.values["4"][3].numpy(), rtol=1e-5)
        np.testing.assert_array_equal(top.indices, ref.indices["4"][3].numpy())
        assert top.caption.endswith(slider.labels[i])
    assert not np.allclose(top.values, own)
    # each checkpoint is mined once: going back reuses its hits
    atlas = top.atlas
    slider.index = 1
    top.wait()
    slider.index = 0
    top.wait()
    assert top.atlas is atlas
    # channel changes under a checkpoint use that checkpoint's weights
    top.channel = 5
    top.wait()
    ref = zf.mine(loaded(model, cps[0]), images, layers=["4"], k=9, progress=False)
    np.testing.assert_allclose(top.values, ref.values["4"][5].numpy(), rtol=1e-5)
    recon = ref.reconstructions("4", 5)
    np.testing.assert_allclose(top.atlas.reconstructions("4", 5), recon, atol=1e-6)
    # unlinked, the widget keeps its checkpoint; None goes back to the model's own weights
    slider.unlink(top)
    slider.index = 2
    assert top.checkpoint == 0
    top.checkpoint = None
    top.wait()
    ref = zf.mine(model, images, layers=["4"], k=9, progress=False)
    np.testing.assert_allclose(top.values, ref.values["4"][5].numpy(), rtol=1e-6)
    with pytest.raises(ValueError, match="not linked"):
        slider.unlink(top)


def test_slider_drives_filter_grid_both_ways(model):
    cps = checkpoints_of(model)
    slider = EvolutionSlider(cps, labels=["a", "b", "c"])
    grid = FilterGrid(model, checkpoints=slider.checkpoints, labels=slider.labels)
    first = bytes(grid.frame["atlas"]["view"])
    slider.link(grid).link(grid)  # linking twice is a no-op
    assert slider.linked == [grid]
    slider.index = 2
    assert grid.checkpoint == 2 and bytes(grid.frame["atlas"]["view"]) != first
    grid.checkpoint = 1  # FilterGrid's own slider moves the EvolutionSlider too
    assert slider.index == 1
    with pytest.raises(ValueError, match=r"FilterGrid holds 0 checkpoint\(s\), the slider 3"):
        slider.link(FilterGrid(model))
    with pytest.raises(ValueError, match="holds 2 checkpoint"):
        slider.link(FilterGrid(model, checkpoints=cps[:2]))
    with pytest.raises(TypeError, match="'checkpoint' trait"):
        slider.link(object())


def test_checkpoints_that_do_not_match_the_model(model, images, tmp_path):
    top = TopNine(model, images, layer="4")
    cps = checkpoints_of(model, 2)
    renamed = [{f"module.{k}": v for k, v in cp.items()} for cp in cps]
    slider = EvolutionSlider(renamed)
    with pytest.raises(ValueError, match=r"missing keys '0.weight', .*unexpected keys 'module"):
        slider.link(top)
    assert top.checkpoint is None and slider.linked == []
    other = tiny_zf(num_classes=3)
    with pytest.raises(ValueError, match=r"mismatched shapes '11.weight' \(3, 64\)"):
        EvolutionSlider([other.state_dict()]).link(top)
    # a TopNine with only an atlas (crops inside, no data) cannot mine checkpoints
    path = tmp_path / "atlas.safetensors"
    zf.mine(model, images, layers=["4"], progress=False).save(path, images=True)
    bare = TopNine(model, atlas=zf.Atlas.load(path), layer="4")
    with pytest.raises(ValueError, match="build it with data="):
        EvolutionSlider(cps).link(bare)
    top.wait()
    bare.wait()


class Gated(Dataset):
    def __init__(self, x: torch.Tensor, after: int):
        self.x, self.after, self.gate = x, after, threading.Event()
        self.armed = False

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        if self.armed and i >= self.after:
            assert self.gate.wait(20), "gate never opened"
        return self.x[i]


def test_mining_a_checkpoint_no_longer_wanted_stops(model, images):
    cps = checkpoints_of(model)
    data = Gated(images, after=8)
    top = TopNine(model, data, layer="4", batch_size=4).wait()
    slider = EvolutionSlider(cps).link(top)
    top.wait()
    data.armed = True
    slider.index = 1  # mining checkpoint 1 stops at the gate ...
    slider.index = 2  # ... and is abandoned for checkpoint 2
    data.gate.set()
    top.wait()
    assert top.frame["checkpoint"] == 2
    assert 1 not in top._atlases or "4" not in top._atlases[1]
    ref = zf.mine(loaded(model, cps[2]), images, layers=["4"], k=9, progress=False)
    np.testing.assert_allclose(top.values, ref.values["4"][0].numpy(), rtol=1e-5)
