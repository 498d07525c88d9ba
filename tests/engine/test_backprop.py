import pytest
import torch
from captum.attr import NeuronDeconvolution, NeuronGradient, NeuronGuidedBackprop
from models import (
    FunctionalNet,
    ModuleTwin,
    assert_unchanged,
    hook_count,
    snapshot,
    tiny_2x2,
    tiny_zf,
    torchvision_model,
)
from torch import nn

import zfwidgets as zf
from zfwidgets.engine.literal import deconv_literal, unpool

CAPTUM = {"deconv": NeuronDeconvolution, "guided": NeuronGuidedBackprop, "saliency": NeuronGradient}
RULES = ["deconv", "guided", "saliency"]


def strongest_units(model, x, layer, channels):
    """(n, c, y, x) at the strongest location of each channel in each image."""
    with zf.capture(model, [layer], clone=True) as cap, torch.no_grad():
        model(x)
    a = cap.activations[layer]
    units = []
    for n in range(x.shape[0]):
        for c in channels:
            pos = int(a[n, c].flatten().argmax())
            units.append((n, c, pos // a.shape[3], pos % a.shape[3]))
    return units


# -- the literal chain (docs/method.md Sec. 2) is the reference for the fast path --------------------
@pytest.mark.parametrize("strategy", ["shared", "crop"])
@pytest.mark.parametrize(
    ("make", "layers"),
    [(tiny_zf, [0, 2, 4, 6, 8]), (tiny_2x2, [1, 3, 5, 7])],
    ids=["overlapping-pools+LRN", "2x2-pools+dilation+stride"],
)
def test_fast_path_equals_literal_chain(make, layers, strategy):
    model = make()
    torch.manual_seed(3)
    x = torch.randn(3, 3, 32, 32)
    for layer in layers:
        with torch.no_grad():
            shape = model[: layer + 1](x).shape
        for unit in [(1, 0, 0), (2, shape[2] // 2, shape[3] // 2), (0, shape[2] - 1, shape[3] - 1)]:
            rules = RULES if make is tiny_2x2 or layer < 3 else ["deconv"]
            for rule in rules:
                ref = deconv_literal(model, x, layer=layer, unit=unit, rule=rule)
                units = [(n,) + unit for n in range(3)]
                fast = zf.backprop(
                    model, x, layer=str(layer), units=units, rule=rule, strategy=strategy
                )
                torch.testing.assert_close(fast, ref, atol=1e-6, rtol=1e-5)


def test_overlapping_pool_sums_shared_switches():
    # one input location is the argmax of all four overlapping 3x3/2 windows
    x = torch.zeros(1, 1, 5, 5)
    x[0, 0, 2, 2] = 1.0
    _, switches = torch.nn.functional.max_pool2d(x, 3, 2, return_indices=True)
    assert bool((switches == 12).all())
    signal = torch.ones(1, 1, 2, 2)
    summed = unpool(signal, switches, (5, 5))
    assert float(summed[0, 0, 2, 2]) == 4.0  # the adjoint: every window's signal arrives
    last_wins = torch.nn.functional.max_unpool2d(signal, switches, 3, 2, output_size=(5, 5))
    assert float(last_wins[0, 0, 2, 2]) == 1.0  # what F.max_unpool2d would give instead
    pool = nn.Sequential(nn.MaxPool2d(3, stride=2))
    fast = zf.deconv(pool, x, layer="0", units=[(0, 0, i, j) for i in range(2) for j in range(2)])
    assert float(fast.sum(0)[0, 2, 2]) == 4.0


# -- against Captum on real torchvision architectures ------------------------------------------
@pytest.mark.parametrize(
    ("name", "layer", "size"),
    [
        ("alexnet", "features.10", 96),  # conv followed by an in-place ReLU
        ("alexnet", "features.7", 96),
        ("vgg11_bn", "features.14", 64),  # BatchNorm
        ("resnet18", "layer2.0.conv2", 64),  # residual adds, reused ReLU modules
        ("resnet18", "layer3.1", 64),
    ],
)
def test_against_captum(name, layer, size):
    model = torchvision_model(name)
    torch.manual_seed(0)
    x = torch.randn(2, 3, size, size)
    units = strongest_units(model, x, layer, channels=[3, 17])
    module = dict(model.named_modules())[layer]
    before = snapshot(model)
    x0 = x.clone()
    for rule in RULES:
        ours = zf.backprop(model, x, layer=layer, units=units, rule=rule)
        for k, (n, c, yy, xx) in enumerate(units):
            ref = CAPTUM[rule](model, module).attribute(x[n : n + 1], neuron_selector=(c, yy, xx))
            torch.testing.assert_close(ours[k : k + 1], ref, atol=1e-6, rtol=1e-4)
    assert torch.equal(x, x0)
    assert_unchanged(model, before)


def test_functional_relus_follow_the_rule():
    """F.relu / torch.relu / Tensor.relu_ get the rule too (Captum only overrides modules)."""
    net = FunctionalNet()
    twin = ModuleTwin(net)
    torch.manual_seed(1)
    x = torch.randn(2, 3, 24, 24)
    units = strongest_units(net, x, "conv3", channels=[0, 5])
    for rule in RULES:
        ours = zf.backprop(net, x, layer="conv3", units=units, rule=rule)
        for k, (n, c, yy, xx) in enumerate(units):
            ref = CAPTUM[rule](twin, twin.conv3).attribute(
                x[n : n + 1], neuron_selector=(c, yy, xx)
            )
            torch.testing.assert_close(ours[k : k + 1], ref, atol=1e-6, rtol=1e-4)
    # the deconv rule differs from the plain gradient, so the test can fail
    assert not torch.allclose(
        zf.deconv(net, x, layer="conv3", units=units),
        zf.saliency(net, x, layer="conv3", units=units),
    )


@pytest.mark.parametrize("name", ["alexnet", "resnet18", "vgg11_bn"])
def test_crop_equals_full_image(name):
    model = torchvision_model(name)
    torch.manual_seed(4)
    x = torch.randn(3, 3, 96, 96)
    layer = {"alexnet": "features.4", "resnet18": "layer2.0.conv1", "vgg11_bn": "features.8"}[name]
    with zf.capture(model, [layer]) as cap, torch.no_grad():
        model(x)
    _, C, h, w = cap.activations[layer].shape
    units = [
        (0, 1, 0, 0),
        (1, 2, h // 2, w // 2),
        (2, C - 1, h - 1, w - 1),
        (0, 5, 0, w - 1),
        (1, 0, h - 2, 1),
    ]
    for rule in RULES:
        full = zf.backprop(model, x, layer=layer, units=units, rule=rule, strategy="shared")
        crop = zf.backprop(
            model, x, layer=layer, units=units, rule=rule, strategy="crop", batch_size=2
        )
        torch.testing.assert_close(crop, full, atol=1e-6, rtol=1e-4)
        assert full.abs().sum() > 0


def test_channel_mode_is_strongest_location():
    model = tiny_zf()
    torch.manual_seed(5)
    x = torch.randn(4, 3, 32, 32)
    units = strongest_units(model, x, "4", channels=[7])
    for strategy in ["shared", "crop"]:
        a = zf.deconv(model, x, layer="4", channel=7, strategy=strategy)
        b = zf.deconv(model, x, layer="4", units=units)
        assert a.shape == (4, 3, 32, 32)
        torch.testing.assert_close(a, b)


def test_many_units_per_image_in_one_call_equal_single_calls():
    model = torchvision_model("resnet18")
    torch.manual_seed(6)
    x = torch.randn(2, 3, 64, 64)
    units = [(0, 1, 2, 2), (0, 2, 1, 3), (0, 1, 0, 0), (1, 4, 3, 3), (0, 9, 2, 1)]
    together = zf.guided_backprop(model, x, layer="layer2.1.conv1", units=units, strategy="shared")
    for k, u in enumerate(units):
        alone = zf.guided_backprop(model, x, layer="layer2.1.conv1", units=[u])
        torch.testing.assert_close(together[k : k + 1], alone, atol=1e-6, rtol=1e-4)


def test_model_state_restored_train_mode_and_frozen_params():
    model = torchvision_model("resnet18")
    model.train()
    model.layer1[0].bn1.eval()  # a mixed state comes back as it was
    for p in model.layer1.parameters():
        p.requires_grad_(False)
    before = snapshot(model)
    x = torch.randn(2, 3, 64, 64)
    x0 = x.clone()
    version = x._version
    zf.deconv(model, x, layer="layer2.0.conv1", channel=3)
    zf.deconv(model, x, layer="layer2.0.conv1", channel=3, strategy="crop")
    assert torch.equal(x, x0) and x._version == version
    assert_unchanged(model, before)  # also: BatchNorm running stats untouched (eval inside)


# -- bad input ----------------------------------------------------------------------------------
class Counting(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = tiny_zf()
        self.calls = 0

    def forward(self, x):
        self.calls += x.device.type != "meta"  # a shape-only pass runs no data
        return self.net(x)


@pytest.mark.parametrize(
    ("kwargs", "x", "error", "match"),
    [
        ({"channel": 0, "layer": "net.0"}, torch.randn(3, 32, 32), ValueError, "4-d"),
        (
            {"channel": 0, "layer": "net.0"},
            torch.zeros(1, 3, 32, 32, dtype=torch.uint8),
            TypeError,
            "floating",
        ),
        (
            {"channel": 0, "layer": "net.0"},
            torch.full((1, 3, 32, 32), float("nan")),
            ValueError,
            "NaN",
        ),
        ({"channel": 0, "layer": "net.0"}, torch.randn(1, 1, 32, 32), ValueError, "3 channels"),
        ({"channel": 0, "layer": "net.O"}, torch.randn(1, 3, 32, 32), ValueError, "close matches"),
        ({"layer": "net.0"}, torch.randn(1, 3, 32, 32), ValueError, "exactly one"),
        (
            {"layer": "net.0", "channel": 0, "units": [(0, 0, 0, 0)]},
            torch.randn(1, 3, 32, 32),
            ValueError,
            "exactly one",
        ),
        (
            {"layer": "net.4", "units": [(0, 12, 0, 0)]},
            torch.randn(1, 3, 32, 32),
            ValueError,
            "out of range",
        ),
        (
            {"layer": "net.4", "units": [(0, 0, 99, 0)]},
            torch.randn(1, 3, 32, 32),
            ValueError,
            "out of range",
        ),
        (
            {"layer": "net.4", "units": [(1, 0, 0, 0)]},
            torch.randn(1, 3, 32, 32),
            ValueError,
            "1 image",
        ),
        (
            {"layer": "net.4", "units": [(0, 0, 0)]},
            torch.randn(1, 3, 32, 32),
            ValueError,
            "out of range|indices",
        ),
        (
            {"layer": "net.4", "units": [(0.5, 0, 0, 0)]},
            torch.randn(1, 3, 32, 32),
            TypeError,
            "ints",
        ),
        ({"layer": "net.4", "units": []}, torch.randn(1, 3, 32, 32), ValueError, "at least one"),
        (
            {"layer": "net.4", "channel": 0, "rule": "deconvnet"},
            torch.randn(1, 3, 32, 32),
            ValueError,
            "rule",
        ),
        ({"layer": "net.4", "channel": 99}, torch.randn(1, 3, 32, 32), ValueError, "channel"),
        (
            {"layer": "net.4", "channel": 0, "batch_size": 0},
            torch.randn(1, 3, 32, 32),
            ValueError,
            "batch_size",
        ),
    ],
)
def test_bad_input_raises_before_work(kwargs, x, error, match):
    model = Counting()
    before = snapshot(model)
    with pytest.raises(error, match=match):
        zf.backprop(model, x, **kwargs)
    assert hook_count(model) == 0
    assert_unchanged(model, before)
    # checks that need the layer's output shape may run one structural probe (a zero image
    # traced for the receptive field / shape); nothing more
    needs_shape = match in ("out of range", "channel", "out of range|indices")
    assert model.calls <= (1 if needs_shape else 0), "work was done before the error"


def test_device_mismatch_message():
    model = tiny_zf()
    x = torch.randn(1, 3, 32, 32, device="meta")
    with pytest.raises(ValueError, match="device"):
        zf.deconv(model, x, layer="4", channel=0)


def test_hooks_removed_when_forward_raises():
    class Raises(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.relu = nn.ReLU()

        def forward(self, x):
            self.conv(x)
            raise RuntimeError("boom")  # before the projected layer (relu) is reached

    model = Raises()
    with pytest.raises(RuntimeError, match="boom"):
        zf.deconv(
            model, torch.randn(1, 3, 8, 8), layer="relu", units=[(0, 0, 0, 0)], strategy="shared"
        )
    assert hook_count(model) == 0
    assert all(p.grad is None for p in model.parameters())
    # a forward that raises after the projected layer: the projection stops after the layer
    # (as mining does), so what comes later never runs
    for strategy in ("shared", "crop"):
        g = zf.deconv(
            model, torch.randn(1, 3, 8, 8), layer="conv", units=[(0, 0, 0, 0)], strategy=strategy
        )
        assert g.shape == (1, 3, 8, 8) and bool(torch.isfinite(g).all())
    assert hook_count(model) == 0
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.cuda
def test_cuda_matches_cpu():
    model = torchvision_model("alexnet")
    torch.manual_seed(0)
    x = torch.randn(2, 3, 96, 96)
    cpu = zf.deconv(model, x, layer="features.10", channel=5)
    gpu = zf.deconv(model.cuda(), x.cuda(), layer="features.10", channel=5)
    model.cpu()
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-4, rtol=1e-3)
