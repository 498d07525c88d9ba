"""Tiny seeded models shared by the tests."""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torchvision
from torch import nn


def seeded(fn, seed: int = 0):
    torch.manual_seed(seed)
    return fn()


def tiny_zf(num_classes: int = 10, inplace: bool = True) -> nn.Sequential:
    """ZFNet's pattern at 32x32: overlapping 3x3/2 max-pools, in-place ReLUs, LRN."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 5, stride=1, padding=2),
        nn.ReLU(inplace=inplace),
        nn.MaxPool2d(3, stride=2, ceil_mode=True),
        nn.LocalResponseNorm(5),
        nn.Conv2d(8, 12, 3, padding=1),
        nn.ReLU(inplace=inplace),
        nn.MaxPool2d(3, stride=2, ceil_mode=True),
        nn.Conv2d(12, 16, 3, padding=1),
        nn.ReLU(inplace=inplace),
        nn.AdaptiveAvgPool2d((2, 2)),
        nn.Flatten(),
        nn.Linear(64, num_classes),
    ).eval()


def tiny_2x2(num_classes: int = 10) -> nn.Sequential:
    """Non-overlapping 2x2 pools, dilation and stride in the convolutions."""
    torch.manual_seed(1)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 10, 3, padding=2, dilation=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(10, 12, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(12 * 4 * 4, num_classes),
    ).eval()


class FunctionalNet(nn.Module):
    """Calls F.relu, torch.relu and Tensor.relu_ instead of ReLU modules."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        torch.manual_seed(2)
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.conv3 = nn.Conv2d(8, 12, 3, padding=1)
        self.fc = nn.Linear(12, num_classes)

    def forward(self, x):
        x = self.pool(F.relu(self.conv1(x)))
        x = torch.relu(self.conv2(x))
        x = self.conv3(x).relu_()
        return self.fc(x.mean((2, 3)))


class ModuleTwin(nn.Module):
    """FunctionalNet with ReLU modules: the same weights, the same function."""

    def __init__(self, net: FunctionalNet):
        super().__init__()
        self.conv1, self.pool, self.conv2, self.conv3, self.fc = (
            net.conv1,
            net.pool,
            net.conv2,
            net.conv3,
            net.fc,
        )
        self.relu1, self.relu2, self.relu3 = nn.ReLU(), nn.ReLU(), nn.ReLU()

    def forward(self, x):
        x = self.pool(self.relu1(self.conv1(x)))
        x = self.relu2(self.conv2(x))
        x = self.relu3(self.conv3(x))
        return self.fc(x.mean((2, 3)))


def torchvision_model(name: str, seed: int = 0) -> nn.Module:
    """A torchvision model with random seeded weights (nothing downloads), in eval mode."""
    torch.manual_seed(seed)
    model = getattr(torchvision.models, name)(weights=None)
    for m in model.modules():  # non-trivial BatchNorm statistics
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def hook_count(model: nn.Module) -> int:
    return sum(
        len(m._forward_hooks)
        + len(m._forward_pre_hooks)
        + len(m._backward_hooks)
        + len(getattr(m, "_backward_pre_hooks", {}))
        for m in model.modules()
    )


def snapshot(model: nn.Module) -> dict:
    """Everything that must come back unchanged: parameters, buffers, flags, grads."""
    return {
        "state": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "training": [m.training for m in model.modules()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "grads": [p.grad is None for p in model.parameters()],
        "hooks": hook_count(model),
    }


def assert_unchanged(model: nn.Module, before: dict) -> None:
    after = snapshot(model)
    assert after["hooks"] == 0, "hooks left behind"
    assert after["training"] == before["training"]
    assert after["requires_grad"] == before["requires_grad"]
    assert after["grads"] == before["grads"], ".grad written"
    for k, v in before["state"].items():
        assert torch.equal(after["state"][k], v), f"{k} changed"


def atlas_images() -> torch.Tensor:
    """The 23 seeded 32x32 images (23: a last batch that is not full) the stored-atlas tests
    mine :func:`tiny_zf` over."""
    torch.manual_seed(0)
    return torch.rand(23, 3, 32, 32)


def saved_atlas(root, data, layers, k, render, **render_kwargs):
    """Mine ``layers`` of :func:`tiny_zf` over ``data`` (top ``k``), save the atlas folder at
    ``root`` and render the layers in ``render``; ``root``."""
    import zfwidgets as zf

    atlas = zf.mine(tiny_zf(), data, layers=layers, k=k, progress=False)
    atlas.save(root)
    atlas.render(layers=render, progress=False, **render_kwargs)
    return root


class FixedHead(nn.Module):
    """conv -> relu -> flatten -> linear over 4x20x20 features: takes 20x20 images only (a
    size off the square ladder :func:`~zfwidgets.engine.probe.check_input_size` tries)."""

    def __init__(self, num_classes: int = 5):
        super().__init__()
        torch.manual_seed(3)
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
        self.fc = nn.Linear(4 * 20 * 20, num_classes)

    def forward(self, x):
        return self.fc(self.features(x).flatten(1))
