"""Incremental occlusion (only the square's forward cone recomputed) against the naive sweep."""

from __future__ import annotations

import logging
import sys

import pytest
import torch
from torch import nn

from tests.models import (
    FunctionalNet,
    assert_unchanged,
    snapshot,
    tiny_2x2,
    tiny_zf,
    torchvision_model,
)
from zfwidgets.engine import incremental
from zfwidgets.engine.occlusion import occlusion

occ_mod = sys.modules["zfwidgets.engine.occlusion"]  # the package exports a function by that name


def naive(model, x, **kwargs):
    """The sweep with every occluded image through the whole model."""
    saved = occ_mod.incremental_plan
    occ_mod.incremental_plan = lambda *a, **k: None
    try:
        return occlusion(model, x, **kwargs)
    finally:
        occ_mod.incremental_plan = saved


class Spy:
    """Records the plans the sweep builds (None: the naive sweep)."""

    def __init__(self, monkeypatch):
        self.plans = []
        real = incremental.plan

        def spy(*args, **kwargs):
            p = real(*args, **kwargs)
            self.plans.append(p)
            return p

        monkeypatch.setattr(occ_mod, "incremental_plan", spy)


def assert_same(res, ref):
    torch.testing.assert_close(res.activation, ref.activation, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(res.probability, ref.probability, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(res.top_probability, ref.top_probability, rtol=1e-5, atol=1e-6)
    assert torch.equal(res.top_class, ref.top_class)
    assert torch.equal(res.channel, ref.channel) and torch.equal(res.target, ref.target)


def check(model, x, monkeypatch, *, incremental_path=True, **kwargs):
    spy = Spy(monkeypatch)
    before = snapshot(model)
    x0 = x.clone()
    res = occlusion(model, x, **kwargs)
    assert torch.equal(x, x0)
    assert_unchanged(model, before)
    (p,) = spy.plans
    if incremental_path:
        assert p is not None
        assert "window" in p.modes.values()  # some layer really ran on rectangles
    else:
        assert p is None
    ref = naive(model, x, **kwargs)
    # the three maps vary: the comparison is not between flat maps
    assert ref.probability.std() > 0 and ref.activation.std() > 0
    assert_same(res, ref)
    return res, p


@pytest.mark.parametrize("inplace", [True, False])
def test_tiny_zf_lrn_overlapping_pools(monkeypatch, inplace):
    model = tiny_zf(inplace=inplace)
    torch.manual_seed(3)
    x = torch.randn(2, 3, 32, 32) * 2
    check(model, x, monkeypatch, window=8, stride=5)  # flush last position
    check(model, x, monkeypatch, window=(5, 9), stride=(3, 4), batch_size=7)
    check(model, x, monkeypatch, window=8, stride=4, layer="4", channel=[1, 5], fill=0.0)


def test_tiny_2x2_dilation_and_strided_conv(monkeypatch):
    model = tiny_2x2()
    torch.manual_seed(4)
    x = torch.randn(1, 3, 32, 32)
    check(model, x, monkeypatch, window=6, stride=3)


def test_alexnet(monkeypatch):
    model = torchvision_model("alexnet")
    torch.manual_seed(5)
    x = torch.randn(1, 3, 127, 127)
    _, p = check(model, x, monkeypatch, window=24, stride=20, batch_size=9)
    assert p.modes["features_0"] == "window"  # the first convolution on rectangles
    assert p.modes["classifier_6"] == "full"


def test_vgg_with_batchnorm(monkeypatch):
    model = torchvision_model("vgg11_bn")
    torch.manual_seed(6)
    x = torch.randn(1, 3, 64, 64)
    _, p = check(model, x, monkeypatch, window=16, stride=16)
    assert p.modes["features_1"] == "window"  # BatchNorm2d


def test_resnet_adds(monkeypatch):
    model = torchvision_model("resnet18")
    torch.manual_seed(7)
    x = torch.randn(1, 3, 64, 64)
    _, p = check(model, x, monkeypatch, window=16, stride=16)
    assert p.modes["add"] == "window"  # the first residual add on rectangles


def test_functional_relu_in_a_custom_forward_falls_back(monkeypatch, caplog):
    model = FunctionalNet()
    torch.manual_seed(8)
    x = torch.randn(1, 3, 24, 24)
    with caplog.at_level(logging.DEBUG, logger="zfwidgets.engine.occlusion"):
        check(model, x, monkeypatch, incremental_path=False, window=8, stride=4)
    assert "full forwards" in caplog.text and "FunctionalNet" in caplog.text


def test_unknown_operation_computed_in_full_from_there(monkeypatch, caplog):
    # ZeroPad2d and an upsampling the geometry does not follow: full maps from there on.
    torch.manual_seed(9)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(),
        nn.ZeroPad2d((1, 0, 2, 0)),
        nn.Conv2d(4, 4, 3),
        nn.Upsample(scale_factor=2),
        nn.Conv2d(4, 6, 3, stride=2, padding=1),
        nn.Flatten(),
        nn.Linear(6 * 32 * 31, 5),
    ).eval()
    x = torch.randn(1, 3, 32, 32)
    with caplog.at_level(logging.DEBUG, logger="zfwidgets.engine.occlusion"):
        _, p = check(model, x, monkeypatch, window=6, stride=6, layer="5")
    assert p.modes["_0"] == "window" and p.modes["_2"] == "full"
    assert "full maps assembled for _2" in caplog.text


def test_untraceable_model_falls_back(monkeypatch, caplog):
    class Branchy(nn.Module):  # data-dependent control flow: torch.fx cannot trace it
        def __init__(self):
            super().__init__()
            self.net = tiny_zf()

        def forward(self, x):
            return self.net(x) if x.sum() > -1e9 else -self.net(x)

    # A torch-only model whose forward cannot be traced: torch.nn.Module subclasses in a trusted
    # module are rare, so patch the trust check to reach the tracer.
    monkeypatch.setattr(incremental, "_untrusted", lambda model: None)
    torch.manual_seed(10)
    x = torch.randn(1, 3, 32, 32)
    with caplog.at_level(logging.DEBUG, logger="zfwidgets.engine.occlusion"):
        check(Branchy(), x, monkeypatch, incremental_path=False, window=8, stride=8)
    assert "cannot trace" in caplog.text
