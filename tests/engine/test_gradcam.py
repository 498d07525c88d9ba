import pytest
import torch
from captum.attr import LayerGradCam
from models import assert_unchanged, snapshot, tiny_zf, torchvision_model

import zfwidgets as zf


@pytest.mark.parametrize(
    ("name", "layer"),
    [("resnet18", "layer4"), ("vgg11_bn", "features.25"), ("alexnet", "features.10")],
)
def test_against_captum_layer_gradcam(name, layer):
    model = torchvision_model(name)
    torch.manual_seed(0)
    x = torch.randn(3, 3, 64 if name != "alexnet" else 96, 64 if name != "alexnet" else 96)
    before = snapshot(model)
    x0 = x.clone()
    targets = [1, 7, 500]
    ours = zf.grad_cam(model, x, layer=layer, target=targets)
    module = dict(model.named_modules())[layer]
    ref = LayerGradCam(model, module).attribute(x, target=targets, relu_attributions=True)
    torch.testing.assert_close(ours.map, ref[:, 0], atol=1e-6, rtol=1e-4)
    assert ours.upsampled.shape == (3,) + tuple(x.shape[2:])
    raw = zf.grad_cam(model, x, layer=layer, target=targets, relu=False)
    ref_raw = LayerGradCam(model, module).attribute(x, target=targets)
    torch.testing.assert_close(raw.map, ref_raw[:, 0], atol=1e-6, rtol=1e-4)
    assert torch.equal(x, x0)
    assert_unchanged(model, before)


def test_default_target_is_prediction_and_frozen_weights_work():
    model = tiny_zf()
    for p in model.parameters():
        p.requires_grad_(False)
    x = torch.randn(2, 3, 32, 32)
    res = zf.grad_cam(model, x)
    assert res.layer == "7"
    assert torch.equal(res.target, model(x).argmax(1))
    assert all(not p.requires_grad and p.grad is None for p in model.parameters())


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"layer": "10"}, ValueError, "feature maps"),  # Flatten: no spatial size
        ({"layer": "nope"}, ValueError, "no module"),
        ({"target": 99}, ValueError, "target"),
        ({"target": [1, 2, 3]}, ValueError, "one per image"),
    ],
)
def test_bad_input(kwargs, error, match):
    with pytest.raises(error, match=match):
        zf.grad_cam(tiny_zf(), torch.randn(2, 3, 32, 32), **kwargs)
