"""Filter images, RMS renormalisation (docs/method.md Sec. 1) and dead-filter statistics (Sec. 4)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import zfwidgets as zf
from tests.models import assert_unchanged, snapshot, tiny_zf
from zfwidgets.engine.filters import (
    FilterStats,
    conv_layer,
    dead_filters,
    dominating_filters,
    filter_rms,
    filters,
    over_radius,
    renormalize_filters_,
    weight_images,
    weight_rms,
)


def rms_conv(rms: list[float], seed: int = 0) -> nn.Sequential:
    """A Conv2d(3, len(rms), 3) whose filter i has RMS rms[i], then a ReLU and a second conv."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(3, len(rms), 3), nn.ReLU(), nn.Conv2d(len(rms), 2, 1))
    with torch.no_grad():
        w = torch.randn_like(model[0].weight)
        w /= w.pow(2).mean(dim=(1, 2, 3), keepdim=True).sqrt()
        model[0].weight.copy_(w * torch.tensor(rms).reshape(-1, 1, 1, 1))
        model[2].weight.fill_(0.05)
    return model


def test_filters_per_filter_range_and_copy():
    model = tiny_zf()
    before = snapshot(model)
    img = filters(model)
    w = model[0].weight
    assert img.shape == w.shape == (8, 3, 5, 5)
    assert not img.requires_grad and img.device == w.device and img.dtype == w.dtype
    flat = img.reshape(8, -1)
    torch.testing.assert_close(flat.amin(dim=1), torch.zeros(8))
    torch.testing.assert_close(flat.amax(dim=1), torch.ones(8))
    lo = w.detach().reshape(8, -1).amin(1, keepdim=True)
    hi = w.detach().reshape(8, -1).amax(1, keepdim=True)
    torch.testing.assert_close(flat, (w.detach().reshape(8, -1) - lo) / (hi - lo))
    img.zero_()  # a copy: the weights do not change
    assert_unchanged(model, before)


def test_filters_per_layer_keeps_relative_strength():
    model = tiny_zf()
    img = filters(model, "4", normalize="layer")
    w = model[4].weight.detach()
    assert img.shape == (12, 8, 3, 3)
    assert float(img.min()) == 0.0 and float(img.max()) == 1.0
    torch.testing.assert_close(img, (w - w.min()) / (w.max() - w.min()))
    assert torch.equal(filters(model, model[4], normalize="layer"), img)


def test_filters_constant_filter_is_grey_and_errors():
    model = rms_conv([0.5, 0.2])
    with torch.no_grad():
        model[0].weight[1].fill_(0.3)
    img = filters(model)
    assert torch.all(img[1] == 0.5)
    assert float(img[0].min()) == 0.0 and float(img[0].max()) == 1.0
    with pytest.raises(TypeError, match="expected an nn.Conv2d, got '1' \\(ReLU\\)"):
        filters(model, "1")
    with pytest.raises(ValueError, match="close matches"):
        filters(model, "0.weight")
    with pytest.raises(ValueError, match="normalize"):
        filters(model, normalize="global")
    with pytest.raises(ValueError, match="no nn.Conv2d"):
        filters(nn.Sequential(nn.Linear(2, 2)))


def test_filter_rms_and_dominating_filters():
    model = rms_conv([0.5, 0.05, 0.2, 0.1])
    torch.testing.assert_close(filter_rms(model), torch.tensor([0.5, 0.05, 0.2, 0.1]))
    w = model[2].weight.detach()
    torch.testing.assert_close(filter_rms(model, "2"), w.reshape(2, -1).pow(2).mean(1).sqrt())
    assert dominating_filters(model).tolist() == [True, False, True, False]
    assert dominating_filters(model, radius=0.3).tolist() == [True, False, False, False]
    with pytest.raises(ValueError, match="radius"):
        dominating_filters(model, radius=0)


def test_weight_helpers_match_the_model_functions():
    """The weight-tensor helpers (a snapshot's or a checkpoint's weights, no model around
    them) give what the model functions give for the same convolution."""
    model = rms_conv([0.5, 0.05, 0.2, 0.1])
    name, conv = conv_layer(model)
    assert name == "0" and conv is model[0]
    assert conv_layer(model, "2") == ("2", model[2])
    w = model[0].weight
    torch.testing.assert_close(weight_rms(w), filter_rms(model))
    assert not weight_rms(w).requires_grad
    assert torch.equal(over_radius(weight_rms(w), 0.1), dominating_filters(model))
    for normalize in ("filter", "layer"):
        assert torch.equal(
            weight_images(w, normalize=normalize), filters(model, normalize=normalize)
        )
    # rounding: a filter rescaled to the radius in half precision is not over it
    half = torch.full((1, 1, 2, 2), 0.1, dtype=torch.float16)
    assert weight_rms(half).dtype == torch.float32
    assert not over_radius(weight_rms(half), 0.1, torch.float16).any()
    with pytest.raises(ValueError, match=r"\(Cout, Cin, kh, kw\)"):
        weight_images(torch.zeros(3, 3))
    with pytest.raises(ValueError, match="normalize"):
        weight_images(w, normalize="global")
    with pytest.raises(TypeError, match="expected an nn.Conv2d"):
        conv_layer(model, "1")
    with pytest.raises(ValueError, match="no nn.Conv2d"):
        conv_layer(nn.Sequential(nn.Linear(2, 2)))


def test_renormalize_rescales_only_filters_over_the_radius():
    model = rms_conv([0.5, 0.05, 0.2, 0.1])
    w0 = model[0].weight.detach().clone()
    b0 = model[0].bias.detach().clone()
    w2 = model[2].weight.detach().clone()  # RMS 0.05: untouched
    counts = renormalize_filters_(model, radius=0.1)
    assert counts == {"0": 2, "2": 0}
    w = model[0].weight.detach()
    torch.testing.assert_close(filter_rms(model), torch.tensor([0.1, 0.05, 0.1, 0.1]))
    # Rescaled, not reshaped: the same direction, the rescaled ones by radius / rms.
    torch.testing.assert_close(w[0], w0[0] * (0.1 / 0.5))
    torch.testing.assert_close(w[2], w0[2] * (0.1 / 0.2))
    assert torch.equal(w[1], w0[1]) and torch.equal(w[3], w0[3])
    assert torch.equal(model[0].bias, b0) and torch.equal(model[2].weight, w2)
    assert renormalize_filters_(model) == {"0": 0, "2": 0}  # idempotent


def test_renormalize_layers_argument_and_errors():
    model = rms_conv([0.5, 0.3])
    with torch.no_grad():
        model[2].weight.fill_(1.0)  # RMS 1 for both filters of the second conv
    assert renormalize_filters_(model, 0.2, layers=["2"]) == {"2": 2}
    torch.testing.assert_close(filter_rms(model, "2"), torch.tensor([0.2, 0.2]))
    torch.testing.assert_close(filter_rms(model), torch.tensor([0.5, 0.3]))  # not asked for
    assert renormalize_filters_(model, 0.2, layers=model[0]) == {"0": 2}
    with pytest.raises(TypeError, match="nn.Conv2d"):
        renormalize_filters_(model, layers=["1"])
    with pytest.raises(ValueError, match="radius"):
        renormalize_filters_(model, radius=-0.1)
    with pytest.raises(ValueError, match="no module named '3'"):
        renormalize_filters_(model, layers="3")


def test_renormalize_writes_no_grad_and_keeps_requires_grad():
    model = rms_conv([0.5, 0.3])
    model[2].weight.requires_grad_(False)
    before = snapshot(model)
    renormalize_filters_(model, 0.1)
    after = snapshot(model)
    assert after["requires_grad"] == before["requires_grad"] == [True, True, False, True]
    assert all(p.grad is None for p in model.parameters())
    assert after["hooks"] == 0
    # After a training step: the gradient kept, the weight still trainable.
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model(torch.randn(2, 3, 8, 8)).sum().backward()
    grad = model[0].weight.grad.clone()
    opt.step()
    renormalize_filters_(model, 0.1)
    assert torch.equal(model[0].weight.grad, grad) and model[0].weight.requires_grad
    assert torch.all(filter_rms(model) <= 0.1 + 1e-6)


def test_dead_filters_on_a_crafted_tensor():
    a = torch.zeros(4, 5, 2, 3)
    # channel 0: zero everywhere (dead); 1: active at one position of image 2 only;
    # 2: negative everywhere (dead); 3: positive everywhere; 4: 0.5 in images 0 and 1.
    a[2, 1, 1, 2] = 3.0
    a[:, 2] = -1.0
    a[:, 3] = torch.arange(1.0, 1.0 + 4 * 6).reshape(4, 2, 3)
    a[0:2, 4] = 0.5
    stats = dead_filters(a)
    assert isinstance(stats, FilterStats)
    assert stats.dead.tolist() == [True, False, True, False, False]
    assert stats.num_dead == 2 and stats.threshold == 0.0
    torch.testing.assert_close(stats.max, torch.tensor([0.0, 3.0, -1.0, 24.0, 0.5]))
    torch.testing.assert_close(stats.mean, a.mean(dim=(0, 2, 3)))
    torch.testing.assert_close(stats.fraction_active, torch.tensor([0.0, 0.25, 0.0, 1.0, 0.5]))
    high = dead_filters(a, threshold=1.0)  # strictly greater than the threshold
    assert high.dead.tolist() == [True, False, True, False, True]
    torch.testing.assert_close(high.fraction_active, torch.tensor([0.0, 0.25, 0.0, 1.0, 0.0]))
    flat = dead_filters(a.amax(dim=(2, 3)))  # (N, C), e.g. pooled codes
    assert torch.equal(flat.dead, stats.dead) and torch.equal(flat.max, stats.max)
    torch.testing.assert_close(flat.fraction_active, stats.fraction_active)


def test_dead_filters_from_a_capture_and_errors():
    model = tiny_zf()
    with torch.no_grad():
        model[4].bias[:3] = -100.0  # three feature maps that no input can light up
    torch.manual_seed(0)
    with torch.no_grad(), zf.capture(model, ["5"]) as cap:
        model(torch.randn(6, 3, 32, 32))
    stats = dead_filters(cap.activations["5"])
    assert stats.dead[:3].all() and stats.dead.shape == (12,)
    with pytest.raises(TypeError, match="torch.Tensor"):
        dead_filters([[0.0]])
    with pytest.raises(ValueError, match=r"\(N, C\)"):
        dead_filters(torch.zeros(5))
    with pytest.raises(TypeError, match="floating-point"):
        dead_filters(torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="at least one"):
        dead_filters(torch.zeros(0, 3))


def test_filter_flags_bits_and_errors():
    from zfwidgets.engine.filters import DEAD, DOMINATING, filter_flags

    dominating = torch.tensor([True, False, True, False])
    dead = torch.tensor([False, False, True, True])
    flags = filter_flags(dominating, dead)
    assert flags.dtype == torch.uint8
    assert flags.tolist() == [DOMINATING, 0, DOMINATING | DEAD, DEAD]
    assert filter_flags(dominating).tolist() == [DOMINATING, 0, DOMINATING, 0]
    with pytest.raises(ValueError, match=r"dead: expected shape \(4,\)"):
        filter_flags(dominating, dead[:3])
    with pytest.raises(ValueError, match="dominating: expected a 1-D"):
        filter_flags(dominating[None])
