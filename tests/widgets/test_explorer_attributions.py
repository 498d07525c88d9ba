"""Explorer's attribution views in the occlusion widget, without a kernel."""

from __future__ import annotations

import pytest
import torch
from models import assert_unchanged, snapshot, tiny_zf

import zfwidgets as zf
from zfwidgets import Explorer
from zfwidgets.base.codec import decode

BUILT_IN = ["Grad-CAM", "saliency", "guided backprop", "deconvnet"]


@pytest.fixture
def images():
    return torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def _overlay(e, name):
    return torch.as_tensor(decode(e.occlusion_map.overlays[name]))


def _names(e):
    return [v["name"] for v in e.occlusion_map.views]


def test_views_appear_with_the_right_names_and_shapes(images):
    model = tiny_zf()
    before = snapshot(model)
    e = Explorer(model, images, classes=[f"c{i}" for i in range(10)])
    assert _names(e)[3:] == BUILT_IN
    assert e.attribution_errors == {}
    for name in BUILT_IN:
        assert tuple(_overlay(e, name).shape) == (32, 32)
    assert e.occlusion_map.view == "probability"  # added without switching
    # Grad-CAM is zf.grad_cam's upsampled map of the current image
    g = zf.grad_cam(model, images[:1]).upsampled[0]
    torch.testing.assert_close(_overlay(e, "Grad-CAM"), g)
    # with no unit selected: the predicted class score's saliency
    pred = int(model(images[:1]).argmax(1))
    sal = zf.saliency(model, images[:1], layer="11", units=[[0, pred]])[0].abs().sum(0)
    torch.testing.assert_close(_overlay(e, "saliency"), sal)
    assert_unchanged(model, before)


def test_views_follow_the_unit_and_the_image(images):
    model = tiny_zf()
    e = Explorer(model, images)
    e.grid.layer = "4"
    e.grid.channel = 3
    d = zf.deconv(model, images[:1], layer="4", channel=3)[0].abs().sum(0)
    torch.testing.assert_close(_overlay(e, "deconvnet"), d)
    e.occlusion_map.view = "guided backprop"
    e.select_image(2)
    assert _names(e)[3:] == BUILT_IN
    assert e.occlusion_map.view == "guided backprop"  # the chosen view survives
    gb = zf.guided_backprop(model, images[2:3], layer="4", channel=3)[0].abs().sum(0)
    torch.testing.assert_close(_overlay(e, "guided backprop"), gb)
    torch.testing.assert_close(
        _overlay(e, "Grad-CAM"), zf.grad_cam(model, images[2:3]).upsampled[0]
    )


def test_captum_method_plugs_in(images):
    from captum.attr import IntegratedGradients, Saliency

    model = tiny_zf()
    before = snapshot(model)
    e = Explorer(
        model,
        images,
        attributions={"Integrated Gradients": IntegratedGradients, "captum saliency": Saliency},
        attribution_views=False,
    )
    assert _names(e)[3:] == ["Integrated Gradients", "captum saliency"]
    assert e.attribution_errors == {}
    x = images[:1]
    pred = int(model(x).argmax(1))
    ig = IntegratedGradients(model).attribute(x.clone(), target=pred)[0].abs().sum(0)
    torch.testing.assert_close(_overlay(e, "Integrated Gradients"), ig.detach())
    # captum's plain gradient is zf.saliency of the class score
    sal = zf.saliency(model, x, layer="11", units=[[0, pred]])[0].abs().sum(0)
    torch.testing.assert_close(_overlay(e, "captum saliency"), sal)
    assert_unchanged(model, before)


def test_a_failing_method_is_reported_not_raised(images):
    class Broken:
        def __init__(self, model):
            pass

        def attribute(self, x, target):
            raise RuntimeError("nope")

    e = Explorer(tiny_zf(), images, attributions={"broken": Broken}, attribution_views=False)
    assert "broken" not in _names(e)
    assert e.attribution_errors == {"broken": "RuntimeError: nope"}


@pytest.mark.parametrize(
    "attributions,err,match",
    [
        (["IG"], TypeError, "dict"),
        ({"probability": object}, ValueError, "built-in"),
        ({"Grad-CAM": object}, ValueError, "built-in"),
        ({"x": 3}, TypeError, "attribution class"),
    ],
)
def test_bad_attributions(images, attributions, err, match):
    with pytest.raises(err, match=match):
        Explorer(tiny_zf(), images, attributions=attributions)


def test_no_views_without_occlusion(images):
    e = Explorer(tiny_zf(), images, occlusion=False)
    assert e.occlusion_map is None
