"""zf.cam: the Grad-CAM identity on GAP networks, a hand computation, bad input."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from models import assert_unchanged, snapshot, tiny_zf, torchvision_model
from torch import nn

from zfwidgets.engine.cam import cam, find_gap
from zfwidgets.engine.gradcam import grad_cam


class GapNet(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(inplace=True))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Linear(6, 4)

    def forward(self, x):
        return self.head(self.pool(self.features(x)).flatten(1))


@pytest.fixture(scope="module")
def resnet():
    return torchvision_model("resnet18")


def test_resnet18_cam_is_grad_cam_times_hw(resnet):
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    x0 = x.clone()
    before = snapshot(resnet)
    c = cam(resnet, x, target=[3, 7])
    assert_unchanged(resnet, before)
    assert torch.equal(x, x0)
    assert (c.layer, c.fc) == ("layer4", "fc")
    g = grad_cam(resnet, x, layer="layer4", target=[3, 7], relu=False)
    h, w = c.map.shape[1:]
    assert (h, w) == (2, 2)
    torch.testing.assert_close(c.map, g.map * h * w, rtol=1e-4, atol=1e-5)
    assert c.upsampled.shape == (2, 64, 64)
    assert c.target.tolist() == [3, 7]


def test_hand_computation_and_default_target():
    model = GapNet()
    assert find_gap(model) == ("features", "pool", "head")
    x = torch.randn(3, 3, 8, 10, generator=torch.Generator().manual_seed(1))
    c = cam(model, x)
    with torch.no_grad():
        f = F.relu(model.features[0](x))
        t = model(x).argmax(1)
    expected = torch.stack(
        [(model.head.weight[t[i]][:, None, None] * f[i]).sum(0) for i in range(3)]
    )
    torch.testing.assert_close(c.map, expected.detach())
    assert torch.equal(c.target, t)
    up = F.interpolate(expected[:, None], size=(8, 10), mode="bilinear", align_corners=False)[:, 0]
    torch.testing.assert_close(c.upsampled, up.detach())
    # the spatial mean of the map plus the bias is the class score
    with torch.no_grad():
        score = model(x).gather(1, t[:, None])[:, 0]
    torch.testing.assert_close(c.map.mean((1, 2)) + model.head.bias[t].detach(), score)


def test_overrides():
    model = GapNet()
    x = torch.randn(1, 3, 8, 8)
    c = cam(model, x, layer=model.features, fc="head", target=2)
    assert (c.layer, c.fc, c.target.tolist()) == ("features", "head", [2])


def test_without_gap_raises_before_work():
    model = tiny_zf()  # AdaptiveAvgPool2d((2, 2)): not global
    before = snapshot(model)
    with pytest.raises(ValueError, match="global-average-pooling"):
        cam(model, torch.randn(1, 3, 32, 32))
    assert_unchanged(model, before)


def test_bad_input():
    model = GapNet()
    x = torch.randn(1, 3, 8, 8)
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        cam(model, x, target=9)
    with pytest.raises(ValueError, match="nn.Linear"):
        cam(model, x, fc="pool")
    with pytest.raises(ValueError, match="channels"):
        net = nn.Sequential(
            nn.Conv2d(3, 5, 1),
            nn.Conv2d(5, 4, 1),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(4, 2),
        )
        cam(net, x, layer="0")
    with pytest.raises(ValueError, match="4-d"):
        cam(model, torch.randn(3, 8, 8))
    with pytest.raises(ValueError, match="CAM does not apply"):
        cam(model, x, layer="features.0")  # before the ReLU: not what is pooled
    assert sum(len(m._forward_hooks) for m in model.modules()) == 0
