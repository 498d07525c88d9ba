"""ZFNet as in the paper (docs/method.md Sec. 1, the table of its Fig. 3)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import zfwidgets as zf
from zfwidgets.models import ZFNet, zfnet


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return zfnet().eval()


def test_layers_are_the_papers(model):
    assert isinstance(model, ZFNet) and isinstance(model.features, nn.Sequential)
    f = model.features
    expected = [
        (nn.Conv2d, dict(in_channels=3, out_channels=96, kernel_size=(7, 7), stride=(2, 2), padding=(1, 1))),
        (nn.ReLU, dict(inplace=True)),
        (nn.MaxPool2d, dict(kernel_size=3, stride=2, ceil_mode=True)),
        (nn.LocalResponseNorm, dict(size=5, alpha=1e-4, beta=0.75, k=2.0)),
        (nn.Conv2d, dict(in_channels=96, out_channels=256, kernel_size=(5, 5), stride=(2, 2), padding=(0, 0))),
        (nn.ReLU, dict(inplace=True)),
        (nn.MaxPool2d, dict(kernel_size=3, stride=2, ceil_mode=True)),
        (nn.LocalResponseNorm, dict(size=5, alpha=1e-4, beta=0.75, k=2.0)),
        (nn.Conv2d, dict(in_channels=256, out_channels=384, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1))),
        (nn.ReLU, {}),
        (nn.Conv2d, dict(in_channels=384, out_channels=384, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1))),
        (nn.ReLU, {}),
        (nn.Conv2d, dict(in_channels=384, out_channels=256, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1))),
        (nn.ReLU, {}),
        (nn.MaxPool2d, dict(kernel_size=3, stride=2, ceil_mode=False)),
    ]  # fmt: skip
    assert len(f) == len(expected)
    for module, (kind, attrs) in zip(f, expected):
        assert type(module) is kind
        for key, value in attrs.items():
            assert getattr(module, key) == value, (module, key)
    assert isinstance(model.avgpool, nn.AdaptiveAvgPool2d) and model.avgpool.output_size == (6, 6)
    kinds = [type(m) for m in model.classifier]
    assert kinds == [nn.Dropout, nn.Linear, nn.ReLU, nn.Dropout, nn.Linear, nn.ReLU, nn.Linear]
    linears = [m for m in model.classifier if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [
        (9216, 4096),
        (4096, 4096),
        (4096, 1000),
    ]
    assert all(m.p == 0.5 for m in model.classifier if isinstance(m, nn.Dropout))


def test_sizes_of_the_papers_table(model):
    names = {
        "features.0": (96, 110, 110),  # conv1
        "features.2": (96, 55, 55),  # pool1: layer 1 is 55x55x96
        "features.3": (96, 55, 55),  # contrast norm
        "features.4": (256, 26, 26),  # conv2
        "features.6": (256, 13, 13),  # pool2: layer 2 is 13x13x256
        "features.8": (384, 13, 13),  # conv3
        "features.10": (384, 13, 13),  # conv4
        "features.12": (256, 13, 13),  # conv5
        "features.14": (256, 6, 6),  # pool3: layer 5 is 6x6x256
        "classifier.1": (4096,),  # fc6
        "classifier.4": (4096,),  # fc7
    }
    torch.manual_seed(1)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad(), zf.capture(model, list(names), switches=False) as cap:
        out = model(x)
    assert out.shape == (1, 1000) and bool(torch.isfinite(out).all())
    for name, shape in names.items():
        assert tuple(cap.activations[name].shape) == (1, *shape), name


def test_parameter_count(model):
    convs = [(3, 96, 7), (96, 256, 5), (256, 384, 3), (384, 384, 3), (384, 256, 3)]
    fcs = [(256 * 6 * 6, 4096), (4096, 4096), (4096, 1000)]
    expected = sum(o * i * k * k + o for i, o, k in convs) + sum(i * o + o for i, o in fcs)
    assert expected == 62_357_608
    assert sum(p.numel() for p in model.parameters()) == expected


def test_initialisation_is_the_papers_and_seeded(model):
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            assert torch.all(m.bias == 0)
            w = m.weight.detach()
            assert abs(float(w.std()) - 0.01) < 0.001 and abs(float(w.mean())) < 0.001
    torch.manual_seed(0)
    again = zfnet(10, in_channels=1)
    torch.manual_seed(0)
    same = zfnet(10, in_channels=1)
    for a, b in zip(again.parameters(), same.parameters()):
        assert torch.equal(a, b)
    assert again.features[0].weight.shape == (96, 1, 7, 7)
    assert again.training  # like every freshly built module
    with torch.no_grad():
        assert again.eval()(torch.randn(2, 1, 96, 96)).shape == (2, 10)


@pytest.mark.parametrize(
    "kwargs", [{"num_classes": 0}, {"in_channels": 0}, {"num_classes": 2.5}, {"dropout": 1.5}]
)
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        zfnet(**kwargs)
