"""FilterGrid without a kernel: tiles, dominating / dead marks, checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from models import tiny_zf
from torch import nn

import zfwidgets as zf
from zfwidgets.base.codec import decode
from zfwidgets.base.images import GridLayout, to_rgba
from zfwidgets.engine.filters import DEAD, DOMINATING
from zfwidgets.widgets import FilterGrid


@pytest.fixture
def model():
    m = tiny_zf()
    with torch.no_grad():
        m[0].weight[2].mul_(20)  # RMS far above 0.1: dominating
        m[0].bias[5] = -1e4  # never positive: dead on any image
    return m


def flags_of(w: FilterGrid) -> np.ndarray:
    return decode(w.frame["flags"])


def test_tiles_and_marks(model):
    w = FilterGrid(model)
    f = w.frame
    assert f["layer"] == "0" and f["shape"] == [8, 3, 5, 5]
    assert f["dead_known"] is False and f["radius"] == 0.1
    flags = flags_of(w)
    assert flags.dtype == np.uint8 and flags.shape == (8,)
    expected = zf.dominating_filters(model).numpy()
    np.testing.assert_array_equal(flags & DOMINATING != 0, expected)
    assert flags[2] & DOMINATING and not (flags & DEAD).any()
    np.testing.assert_allclose(decode(f["rms"]), zf.filter_rms(model).numpy(), rtol=1e-6)
    g = f["grid"]
    atlas = decode(f["atlas"])
    assert atlas.shape == (g["height"], g["width"], 4)
    layout = GridLayout(g["count"], g["columns"], *g["tile"], g["pad"])
    x, y, tw, th = layout.rect(3)
    np.testing.assert_array_equal(
        atlas[y : y + th, x : x + tw], to_rgba(zf.filters(model)[3:4])[0].numpy()
    )
    assert w.caption == "0 · 8 filters 3×5×5"


def test_dead_filters_from_images_or_activations(model):
    images = torch.randn(4, 3, 32, 32)
    w = FilterGrid(model, images=images)
    flags = flags_of(w)
    assert w.frame["dead_known"] is True
    assert flags[5] & DEAD
    with zf.capture(model, ["0"]) as cap:
        model(images)
    expected = zf.dead_filters(cap.activations["0"]).dead.numpy()
    np.testing.assert_array_equal(flags & DEAD != 0, expected)
    w2 = FilterGrid(model, activations=cap.activations["0"])
    np.testing.assert_array_equal(flags_of(w2), flags)


def test_click_selects_a_filter(model, frontend):
    w = FilterGrid(model)
    fe = frontend(w)
    fe.set(channel=2)
    assert w.channel == 2
    assert w.caption.startswith("0 · filter 2 · RMS ") and w.caption.endswith("dominating")
    assert "caption" in fe.updates()


def test_checkpoints_slider(model, frontend):
    sd0 = {k: v.clone() for k, v in model.state_dict().items()}
    sd1 = {k: v.clone() for k, v in model.state_dict().items()}
    sd1["0.weight"] = torch.randn_like(sd1["0.weight"]) * 0.01
    weight_before = model[0].weight.detach().clone()
    w = FilterGrid(model, checkpoints=[sd0, sd1], labels=["epoch 1", "epoch 30"])
    assert w.checkpoint_labels == ["epoch 1", "epoch 30"]
    first = bytes(w.frame["atlas"]["view"])
    assert flags_of(w)[2] & DOMINATING
    fe = frontend(w)
    fe.set(checkpoint=1)
    assert bytes(w.frame["atlas"]["view"]) != first
    assert not (flags_of(w) & DOMINATING).any()
    assert "frame" in fe.updates()
    assert torch.equal(model[0].weight, weight_before)  # the model is never modified
    fe.set(checkpoint=0)
    assert bytes(w.frame["atlas"]["view"]) == first


def test_checkpoints_with_images_mark_dead_per_checkpoint(model):
    sd0 = model.state_dict()
    sd1 = {k: v.clone() for k, v in sd0.items()}
    sd1["0.bias"] = torch.zeros_like(sd1["0.bias"])
    w = FilterGrid(model, checkpoints=[sd0, sd1], images=torch.randn(2, 3, 32, 32))
    assert flags_of(w)[5] & DEAD
    w.checkpoint = 1
    assert not flags_of(w)[5] & DEAD
    assert model[0].bias[5] == -1e4


def test_bad_arguments(model):
    with pytest.raises(ValueError, match=r"'0.weight'"):
        FilterGrid(model, checkpoints=[{"conv.weight": torch.zeros(1)}])
    with pytest.raises(ValueError, match=r"shape \(8, 3, 5, 5\)"):
        FilterGrid(model, checkpoints=[{"0.weight": torch.zeros(8, 3, 3, 3)}])
    with pytest.raises(ValueError, match="2 labels"):
        FilterGrid(model, checkpoints=[model.state_dict()] * 2, labels=["a"])
    with pytest.raises(TypeError, match="expected an nn.Conv2d"):
        FilterGrid(model, "1")
    with pytest.raises(ValueError, match="no module named 'O'"):
        FilterGrid(model, "O")
    with pytest.raises(ValueError, match="no nn.Conv2d"):
        FilterGrid(nn.Sequential(nn.Linear(2, 2)))
    w = FilterGrid(model)
    with pytest.raises(Exception, match=r"\[0, 1\)"):
        w.checkpoint = 1


def test_grey_filters_for_one_input_channel():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(1, 6, 3), nn.ReLU())
    w = FilterGrid(m, "0")
    a = decode(w.frame["atlas"])
    opaque = a[a[..., 3] == 255]
    assert len(opaque) == 6 * 9
    assert (opaque[:, 0] == opaque[:, 1]).all() and (opaque[:, 1] == opaque[:, 2]).all()


def test_weights_instead_of_a_model(model):
    """The grid's core takes the filters themselves: the same frame as from the model."""
    from_model = FilterGrid(model, images=torch.randn(4, 3, 32, 32))
    dead = decode(from_model.frame["flags"]) & DEAD != 0
    w = FilterGrid(weights=model[0].weight, layer="0", dead=torch.from_numpy(dead))
    assert w.layer == "0" and w.caption == from_model.caption == "0 · 8 filters 3×5×5"
    for key in ("atlas", "flags", "rms"):
        assert bytes(w.frame[key]["view"]) == bytes(from_model.frame[key]["view"])
    assert w.frame["shape"] == [8, 3, 5, 5] and w.frame["dead_known"] is True
    plain = FilterGrid(weights=model[0].weight.detach().clone())
    assert plain.caption.startswith("filters · ") and plain.frame["dead_known"] is False
    assert flags_of(plain)[2] & DOMINATING
    # dominating flags as computed elsewhere (e.g. on the weights' own dtype) are taken as given
    none = torch.zeros(8, dtype=torch.bool)
    assert not (flags_of(FilterGrid(weights=model[0].weight, dominating=none)) & DOMINATING).any()


def test_a_list_of_weights_is_a_slider(model, frontend):
    w0 = model[0].weight.detach().clone()
    w1 = torch.randn(8, 3, 5, 5, generator=torch.Generator().manual_seed(0)) * 0.01
    dead1 = torch.zeros(8, dtype=torch.bool)
    dead1[4] = True
    w = FilterGrid(weights=[w0, w1], dead=[None, dead1], labels=["step 1", "step 2"], layer="c")
    assert w.checkpoint_labels == ["step 1", "step 2"] and w.caption.startswith("c · step 1 · ")
    assert flags_of(w)[2] & DOMINATING and not w.frame["dead_known"]
    fe = frontend(w)
    fe.set(checkpoint=1)
    assert w.caption.startswith("c · step 2 · ") and flags_of(w)[4] == DEAD
    assert not (flags_of(w) & DOMINATING).any()
    assert FilterGrid(weights=[w0, w1]).checkpoint_labels == ["checkpoint 0", "checkpoint 1"]


def test_set_weights_in_place(model, frontend):
    w = FilterGrid(weights=model[0].weight, layer="0")
    fe = frontend(w)
    fe.set(channel=7)
    new = torch.randn(8, 3, 5, 5, generator=torch.Generator().manual_seed(1)) * 0.01
    w.set_weights(new, label="step 9")
    assert w.caption.startswith("0 · step 9 · filter 7 · RMS ") and "frame" in fe.updates()
    assert not (flags_of(w) & DOMINATING).any() and w.checkpoint_labels == ["step 9"]
    w.set_weights(torch.randn(4, 3, 5, 5))  # fewer filters: the selection goes
    assert w.channel is None and w.frame["grid"]["count"] == 4 and w.checkpoint_labels == []
    with pytest.raises(ValueError, match=r"dead: expected shape \(4,\)"):
        w.set_weights(torch.randn(4, 3, 5, 5), dead=torch.zeros(3, dtype=torch.bool))
    several = FilterGrid(model, checkpoints=[model.state_dict()] * 2)
    with pytest.raises(ValueError, match="holds 2 checkpoints"):
        several.set_weights(new)


def test_bad_weights_arguments(model):
    w = model[0].weight
    with pytest.raises(ValueError, match="not both"):
        FilterGrid(model, weights=w)
    with pytest.raises(ValueError, match="dead="):
        FilterGrid(weights=w, images=torch.randn(2, 3, 32, 32))
    with pytest.raises(ValueError, match="go with weights="):
        FilterGrid(model, dead=torch.zeros(8, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"\(Cout, Cin, kh, kw\)"):
        FilterGrid(weights=torch.zeros(8, 3))
    with pytest.raises(ValueError, match=r"weights\[1\]"):
        FilterGrid(weights=[w, torch.zeros(3)])
    with pytest.raises(ValueError, match=r"dead: expected shape \(8,\)"):
        FilterGrid(weights=w, dead=torch.zeros(7, dtype=torch.bool))
    with pytest.raises(ValueError, match="2 entries"):
        FilterGrid(weights=[w, w], dead=[None])
    with pytest.raises(ValueError, match="2 labels"):
        FilterGrid(weights=[w, w], labels=["a"])
    with pytest.raises(TypeError, match="torch.nn.Module"):
        FilterGrid()
