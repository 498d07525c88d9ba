"""engine.attribution: the maps the Explorer shows beside occlusion, against the functions they
are made of (the numbers the Explorer computed itself before, bit for bit)."""

from __future__ import annotations

import pytest
import torch
from models import assert_unchanged, hook_count, snapshot, tiny_zf
from torch import nn

import zfwidgets as zf
from zfwidgets.base.layers import eval_mode
from zfwidgets.engine.attribution import VIEWS, AttributionMaps, attribution_maps, method_map


@pytest.fixture
def x():
    return torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))


class Gradient:
    """A Captum-style method: the input gradient of the target score."""

    def __init__(self, model):
        self.model = model

    def attribute(self, x, target):
        x = x.requires_grad_(True)
        (g,) = torch.autograd.grad(self.model(x)[0, target], x)
        return (g,)


class Broken:
    def __init__(self, model):
        pass

    def attribute(self, x, target):
        raise RuntimeError("nope")


def heat(p: torch.Tensor) -> torch.Tensor:
    return p[0].abs().sum(0).float()


def test_a_unit_every_view_and_method(x):
    model = tiny_zf()
    before = snapshot(model)
    out = attribution_maps(
        model, x, layer="4", channel=3, methods={"gradient": Gradient, "broken": Broken}
    )
    assert isinstance(out, AttributionMaps)
    pred = int(model(x).argmax(1))
    assert out.predicted == pred
    unit = {"layer": "4", "channel": 3}
    expect = {
        "deconv": zf.deconv(model, x, **unit),
        "guided": zf.guided_backprop(model, x, **unit),
        "saliency": zf.saliency(model, x, **unit),
    }
    assert sorted(out.projections) == sorted(expect)
    for rule, p in expect.items():
        assert torch.equal(out.projections[rule], p), rule
    assert list(out.maps) == ["Grad-CAM", *VIEWS, "gradient"]
    assert torch.equal(out.maps["Grad-CAM"], zf.grad_cam(model, x, target=pred).upsampled[0])
    for name, rule in VIEWS.items():
        assert torch.equal(out.maps[name], heat(expect[rule])), name
    with eval_mode(model):
        (gradient,) = Gradient(model).attribute(x.clone(), pred)
    assert torch.equal(out.maps["gradient"], heat(gradient))
    assert out.errors == {"broken": "RuntimeError: nope"}
    assert out.tried == ["Grad-CAM", *VIEWS, "gradient", "broken"]
    assert_unchanged(model, before)
    assert hook_count(model) == 0


def test_no_unit_projects_the_predicted_class_score(x):
    model = tiny_zf()
    out = attribution_maps(model, x, layer="4")
    pred = int(model(x).argmax(1))
    assert out.projections == {}  # no unit: nothing for the unit view
    sal = zf.saliency(model, x, layer="11", units=[[0, pred]])
    assert torch.equal(out.maps["saliency"], heat(sal))
    # without a classifier layer there is no class score to project
    convs = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    out = attribution_maps(convs, x, methods={"gradient": Gradient})
    assert list(out.maps) == ["Grad-CAM", "gradient"] and out.projections == {}


def test_what_each_option_leaves_out(x):
    model = tiny_zf()
    unit_only = attribution_maps(
        model, x, layer="4", channel=3, image_maps=False, methods={"g": Gradient}
    )
    assert list(unit_only.maps) == list(VIEWS) and unit_only.tried == list(VIEWS)
    no_views = attribution_maps(
        model, x, layer="4", channel=3, views=False, methods={"g": Gradient}
    )
    assert list(no_views.maps) == ["g"] and sorted(no_views.projections) == ["deconv", "guided"]
    # a projection that fails is an error under its view's name, the others go on
    bad = attribution_maps(model, x, layer="4", channel=99)
    assert set(bad.errors) == set(VIEWS) and bad.projections == {}
    assert "Grad-CAM" in bad.maps


def test_method_map_checks_the_shape(x):
    model = tiny_zf()

    class Flat:
        def __init__(self, model):
            pass

        def attribute(self, x, target):
            return x.flatten()

    with pytest.raises(ValueError, match=r"expected an attribution of shape \(1, C, H, W\)"):
        method_map(model, Flat, x, 0)
    assert method_map(model, Gradient, x, 1).shape == (32, 32)
