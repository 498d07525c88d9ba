import pytest
import torch
import torch.nn.functional as F
from models import assert_unchanged, hook_count, snapshot, tiny_zf, torchvision_model
from torch import nn

import zfwidgets as zf
from zfwidgets.engine.capture import Capture


@pytest.fixture(scope="module")
def alexnet():
    return torchvision_model("alexnet")


def test_activations_are_outputs_before_inplace_relu(alexnet):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 96, 96)
    before = snapshot(alexnet)
    with zf.capture(alexnet) as cap:
        alexnet(x)
    conv = alexnet.features[0](x)
    assert torch.allclose(cap.activations["features.0"], conv)
    assert (cap.activations["features.0"] < 0).any()  # not overwritten by the in-place ReLU
    assert torch.allclose(cap.activations["features.1"], F.relu(conv))
    _, idx = F.max_pool2d(F.relu(conv), 3, 2, return_indices=True)
    assert torch.equal(cap.switches["features.2"], idx)
    assert set(cap.switches) == {"features.2", "features.5", "features.12"}
    assert cap.activations["classifier.6"].shape == (2, 1000)
    assert all(not t.requires_grad for t in cap.activations.values())
    assert_unchanged(alexnet, before)
    for m in alexnet.modules():
        if isinstance(m, nn.MaxPool2d):
            assert m.return_indices is False


def test_only_requested_layers(alexnet):
    x = torch.randn(1, 3, 64, 64)
    with zf.capture(alexnet, ["features.3", alexnet.features[6]]) as cap:
        alexnet(x)
    assert sorted(cap.activations) == ["features.3", "features.6"]
    with pytest.raises(KeyError, match="not captured"):
        cap.activations["features.0"]


def test_reused_relu_keeps_last_call_and_counts():
    model = torchvision_model("resnet18")
    x = torch.randn(1, 3, 64, 64)
    with zf.capture(model, ["layer1.0.relu", "layer1.0.bn2"], clone=True) as cap:
        y = model(x)
    assert cap.calls["layer1.0.relu"] == 2
    # the block's output is the relu's last call
    with zf.capture(model, ["layer1.0"]) as cap2:
        model(x)
    assert torch.allclose(cap.activations["layer1.0.relu"], cap2.activations["layer1.0"])
    assert (cap.activations["layer1.0.bn2"] < 0).any()
    assert y.shape == (1, 1000)


def test_inplace_add_outside_modules_is_detected_not_silently_wrong():
    model = torchvision_model("resnet18")
    x = torch.randn(1, 3, 64, 64)
    with zf.capture(model, ["layer1.0.bn2"]) as cap:  # `out += identity` follows bn2
        model(x)
    with pytest.raises(KeyError, match="clone=True"):
        cap.activations["layer1.0.bn2"]
    with zf.capture(model, ["layer1.0.bn2"], clone=True) as cap:
        model(x)
    block = model.layer1[0]
    with torch.no_grad():
        h = model.maxpool(model.relu(model.bn1(model.conv1(x))))
        ref = block.bn2(block.conv2(block.relu(block.bn1(block.conv1(h)))))
    assert torch.allclose(cap.activations["layer1.0.bn2"], ref, atol=1e-6)


def test_hooks_removed_when_forward_raises():
    model = tiny_zf()
    with pytest.raises(RuntimeError), zf.capture(model) as cap:
        model(torch.randn(1, 4, 32, 32))  # wrong channel count: conv raises
    assert hook_count(model) == 0
    assert "0" not in cap.activations
    assert all(m.return_indices is False for m in model.modules() if isinstance(m, nn.MaxPool2d))


def test_unknown_layer_lists_close_names(alexnet):
    with pytest.raises(ValueError, match="features.10"):
        zf.capture(alexnet, ["feature.10"])
    assert hook_count(alexnet) == 0


def test_model_with_own_return_indices_pool_still_works():
    pool = nn.MaxPool2d(2, return_indices=True)
    x = torch.randn(1, 2, 4, 4)

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.pool = pool

        def forward(self, x):
            y, idx = self.pool(x)
            return y, idx

    m = M()
    with zf.capture(m) as cap:
        y, idx = m(x)
    assert torch.equal(cap.switches["pool"], idx)
    assert pool.return_indices is True


@pytest.mark.cuda
def test_capture_on_cuda():
    model = tiny_zf().cuda()
    x = torch.randn(2, 3, 32, 32, device="cuda")
    with zf.capture(model) as cap:
        model(x)
    assert cap.activations["0"].device.type == "cuda"
    assert cap.switches["2"].device.type == "cuda"


def test_inplace_flags_restored_and_custom_inplace_modules_copied(alexnet):
    x = torch.randn(1, 3, 64, 64)
    with zf.capture(alexnet, ["features.0", "features.3"]) as cap:
        alexnet(x)
    assert all(m.inplace for m in alexnet.modules() if isinstance(m, nn.ReLU))

    class MyClamp(nn.Module):  # honours `inplace`, unknown to the library
        def __init__(self):
            super().__init__()
            self.inplace = True

        def forward(self, t):
            return t.clamp_(min=0) if self.inplace else t.clamp(min=0)

    model = nn.Sequential(nn.Conv2d(3, 4, 3), MyClamp())
    with zf.capture(model, ["0"]) as cap:
        model(x)
    torch.testing.assert_close(cap.activations["0"], model[0](x))
    assert (cap.activations["0"] < 0).any()
    assert hook_count(model) == 0 and model[1].inplace is True


@pytest.mark.parametrize(
    "pool",
    [
        nn.MaxPool2d(3, 2),  # overlapping, as ZFNet and AlexNet
        nn.MaxPool2d(3, 2, padding=1, ceil_mode=True),
        nn.MaxPool2d(2, dilation=2),
    ],
    ids=["overlap", "pad-ceil", "dilated"],
)
def test_switches_read_later_equal_the_pools_own_indices(pool):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(inplace=True), pool, nn.Conv2d(4, 2, 1))
    x = torch.randn(2, 3, 17, 17)
    seen = []
    handle = pool.register_forward_hook(lambda m, i, o: seen.append(m.return_indices))
    with zf.capture(model) as cap:
        model(x)
    handle.remove()
    assert seen == [False]  # the forward pooled without indices, as a plain forward does
    relu = F.relu(model[0](x))
    _, expected = F.max_pool2d(
        relu, pool.kernel_size, pool.stride, pool.padding, pool.dilation, pool.ceil_mode, True
    )
    assert list(cap.switches) == ["2"] and len(cap.switches) == 1
    assert torch.equal(cap.switches["2"], expected)
    assert cap.switches["2"] is cap.switches["2"]  # computed once
    with zf.capture(model, clone=True) as eager:  # recorded as the pool runs
        model(x)
    assert torch.equal(eager.switches["2"], expected)
    assert pool.return_indices is False


def test_switches_after_an_inplace_change_of_the_pools_input_say_so():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.pool = nn.MaxPool2d(2)

        def forward(self, x):
            h = self.conv(x)
            y = self.pool(h)
            h.mul_(-1)  # outside any module, after the pool read it
            return y

    m = M()
    x = torch.randn(1, 3, 12, 12)
    with zf.capture(m, ["pool"]) as cap:
        m(x)
    with pytest.raises(
        KeyError, match=r"input of the max-pool 'pool' was modified in place.*clone=True"
    ):
        cap.switches["pool"]
    with zf.capture(m, ["pool"], clone=True) as cap:
        m(x)
    _, expected = F.max_pool2d(m.conv(x), 2, return_indices=True)
    assert torch.equal(cap.switches["pool"], expected)


def test_switches_of_a_maxpool_subclass_are_recorded_as_it_runs():
    class Pool(nn.MaxPool2d):
        def forward(self, x):
            return super().forward(x * 2)

    model = nn.Sequential(nn.Conv2d(3, 4, 3), Pool(2))
    x = torch.randn(1, 3, 10, 10)
    with zf.capture(model) as cap:
        model(x)
    _, expected = F.max_pool2d(model[0](x) * 2, 2, return_indices=True)
    assert torch.equal(cap.switches["1"], expected)
    assert model[1].return_indices is False


def test_relu_outputs_are_recomputed_when_read_not_held(alexnet):
    """A captured ReLU that reads a captured conv output keeps no tensor of its own during the
    forward (memory as a plain forward needs); reading gives exactly the module's output."""
    import weakref

    torch.manual_seed(0)
    x = torch.randn(2, 3, 96, 96)
    outs: dict[str, weakref.ref] = {}
    relu = alexnet.features[1]
    handle = relu.register_forward_hook(lambda m, i, o: outs.update(relu=weakref.ref(o)))
    try:
        with zf.capture(alexnet) as cap:
            alexnet(x)
    finally:
        handle.remove()
    assert outs["relu"]() is None  # the forward's ReLU output was freed
    expected = F.relu(alexnet.features[0](x))
    assert torch.equal(cap.activations["features.1"], expected)
    values = dict(cap.activations)  # every way of reading gives tensors
    assert all(isinstance(v, torch.Tensor) for v in values.values())
    assert all(isinstance(v, torch.Tensor) for v in cap.activations.values())
    assert all(isinstance(v, torch.Tensor) for _, v in cap.activations.items())
    assert torch.equal(cap.activations.get("features.4"), values["features.4"])
    # the pool after it: switches from the recomputed ReLU output, as the pool's own
    _, idx = F.max_pool2d(expected, 3, 2, return_indices=True)
    assert torch.equal(cap.switches["features.2"], idx)


def test_reused_relu_without_clone_keeps_its_last_call():
    model = torchvision_model("resnet18")
    x = torch.randn(1, 3, 64, 64)
    with zf.capture(model, ["layer1.0.relu", "layer1.0.bn1", "layer1.0"]) as cap:
        model(x)
    assert cap.calls["layer1.0.relu"] == 2
    assert torch.equal(cap.activations["layer1.0.relu"], cap.activations["layer1.0"])
    with zf.capture(model, ["layer1.0.relu", "layer1.0.bn1"], clone=True) as eager:
        model(x)
    assert torch.equal(cap.activations["layer1.0.relu"], eager.activations["layer1.0.relu"])
    assert torch.equal(cap.activations["layer1.0.bn1"], eager.activations["layer1.0.bn1"])


class _Negate(nn.Module):
    """A module of another package that works in place (unknown to torch's flags)."""

    inplace = True

    def forward(self, x):
        return x.mul_(-1)


def test_relu_read_from_an_output_changed_later():
    class M(nn.Module):
        def __init__(self, change):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.relu = nn.ReLU()
            self.negate = _Negate()
            self.change = change

        def forward(self, x):
            h = self.conv(x)
            y = self.relu(h)
            if self.change == "module":
                self.negate(h)  # a module flagged in place: what it overwrites is kept first
            else:
                h.mul_(-1)  # outside any module: detected
            return y

    torch.manual_seed(0)
    x = torch.randn(1, 3, 10, 10)
    m = M("module")
    expected = F.relu(m.conv(x))
    with zf.capture(m, ["conv", "relu"]) as cap:
        m(x)
    assert torch.equal(cap.activations["relu"], expected)
    assert torch.equal(cap.activations["conv"], m.conv(x))
    m.change = "op"
    with zf.capture(m, ["conv", "relu"]) as cap:
        m(x)
    with pytest.raises(KeyError, match=r"'relu' is recomputed.*clone=True"):
        cap.activations["relu"]
    with zf.capture(m, ["conv", "relu"], clone=True) as cap:
        m(x)
    assert torch.equal(cap.activations["relu"], expected)


def test_relu_of_a_module_called_again_keeps_what_it_read():
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3, padding=1)
            self.relu = nn.ReLU(inplace=True)

        def forward(self, x):
            return self.conv(self.relu(self.conv(x)))  # conv called twice

    torch.manual_seed(0)
    m = M()
    x = torch.randn(1, 3, 8, 8)
    first = m.conv(x)
    with zf.capture(m, ["conv", "relu"]) as cap:
        y = m(x)
    assert cap.calls == {"conv": 2, "relu": 1}
    assert torch.equal(cap.activations["relu"], F.relu(first))
    assert torch.equal(cap.activations["conv"], y)


def test_a_capture_entered_again_records_afresh(alexnet):
    """One Capture per loop (as ``mine`` uses it): each ``with`` has its own records, those
    read after an earlier one stay as they were, and the hooks leave with each block."""
    torch.manual_seed(7)
    a, b = torch.randn(1, 3, 64, 64), torch.randn(2, 3, 64, 64)
    before = hook_count(alexnet)
    cap = Capture(alexnet, ["features.0", "features.2"], stop_at=("features.2", 0))
    with cap:
        alexnet(a)
    first, switches = cap.activations, cap.switches
    assert cap.stopped and cap.calls == {"features.0": 1, "features.2": 1}
    assert hook_count(alexnet) == before
    with cap:
        alexnet(b)
    assert cap.stopped and cap.calls == {"features.0": 1, "features.2": 1}  # not 2
    assert cap.activations is not first and cap.switches is not switches
    assert first["features.0"].shape[0] == 1 and switches["features.2"].shape[0] == 1
    assert torch.allclose(cap.activations["features.0"], alexnet.features[0](b))
    assert cap.switches["features.2"].shape[0] == 2
    assert hook_count(alexnet) == before
