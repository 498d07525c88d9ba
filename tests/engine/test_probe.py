"""engine.probe.layer_shapes: layer output shapes, on meta or, failing that, one real pass."""

from __future__ import annotations

import torch
from models import assert_unchanged, hook_count, snapshot, tiny_zf
from torch import nn

from zfwidgets.engine.probe import dry_run, layer_shapes


class NoMeta(nn.Module):
    """A forward that reads a value (``.item()``), which the meta device cannot give."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.unused = nn.Conv2d(4, 4, 3)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        y = self.conv(x)
        if y.mean().item() > 1e9:
            y = -y
        return self.fc(y.mean((2, 3)))


def test_shapes_on_meta_for_the_layers_the_forward_calls():
    model = tiny_zf()
    before = snapshot(model)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    shapes = layer_shapes(model, x, ["4", "0", "11", "4"])
    with torch.no_grad():
        want = {n: tuple(model[: int(n) + 1](x).shape) for n in ("0", "4", "11")}
    assert shapes == want and list(shapes) == ["4", "0", "11"]
    assert layer_shapes(model, x, []) == {}
    assert_unchanged(model, before)


def test_a_model_that_cannot_run_on_meta_gets_one_real_pass():
    torch.manual_seed(0)
    model = NoMeta().train()
    x = torch.randn(1, 3, 8, 8)
    assert not dry_run(model, tuple(x.shape)).ok
    assert layer_shapes(model, x, ["conv", "unused", "fc"]) == {"conv": (1, 4, 6, 6), "fc": (1, 2)}
    assert model.training and hook_count(model) == 0
