"""Occlusion maps (docs/method.md Sec. 3.5, Fig. 7) against a brute-force loop and against Captum."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torchvision.models.feature_extraction import create_feature_extractor

from tests.models import assert_unchanged, hook_count, snapshot, tiny_zf, torchvision_model
from zfwidgets.base.progress import Cancelled
from zfwidgets.engine.occlusion import OcclusionResult, occlusion


def _positions(size: int, window: int, stride: int) -> list[int]:
    pos = []
    p = 0
    while p + window <= size:
        pos.append(p)
        p += stride
    if pos[-1] != size - window:
        pos.append(size - window)
    return pos


def brute_force(direct, x, *, window, stride, fill, target, channel):
    """One occluded image at a time through ``direct(img) -> (feature map, logits)``."""
    wh, ww = window
    sh, sw = stride
    n, c, h, w = x.shape
    rows, cols = _positions(h, wh, sh), _positions(w, ww, sw)
    act = torch.zeros(n, len(rows), len(cols))
    prob = torch.zeros(n, len(rows), len(cols))
    top_c = torch.zeros(n, len(rows), len(cols), dtype=torch.long)
    top_p = torch.zeros(n, len(rows), len(cols))
    with torch.no_grad():
        for i in range(n):
            for a, r in enumerate(rows):
                for b, q in enumerate(cols):
                    img = x[i : i + 1].clone()
                    img[:, :, r : r + wh, q : q + ww] = fill[i].reshape(1, c, 1, 1)
                    fmap, logits = direct(img)
                    p = torch.softmax(logits, dim=1)[0]
                    act[i, a, b] = fmap[0, channel[i]].relu().sum()
                    prob[i, a, b] = p[target[i]]
                    top_p[i, a, b], top_c[i, a, b] = p.max(dim=0)
    return rows, cols, act, prob, top_c, top_p


def assert_matches(res: OcclusionResult, expected, *, atol=1e-5):
    rows, cols, act, prob, top_c, top_p = expected
    assert res.rows.tolist() == rows and res.cols.tolist() == cols
    assert res.rows.dtype == torch.long and res.cols.dtype == torch.long
    shape = (act.shape[0], len(rows), len(cols))
    for t in (res.activation, res.probability, res.top_class, res.top_probability):
        assert t.shape == shape
    assert res.top_class.dtype == torch.long
    torch.testing.assert_close(res.activation, act, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(res.probability, prob, rtol=1e-4, atol=atol)
    torch.testing.assert_close(res.top_probability, top_p, rtol=1e-4, atol=atol)
    assert torch.equal(res.top_class, top_c)


@pytest.fixture
def tiny():
    model = tiny_zf()
    torch.manual_seed(3)
    x = torch.randn(2, 3, 32, 32) * 2
    return model, x


def tiny_direct(model):
    return lambda img: (model[:8](img), model(img))  # "7" is the last Conv2d


def test_tiny_zf_defaults_match_brute_force(tiny):
    model, x = tiny
    x0, before = x.clone(), snapshot(model)
    res = occlusion(model, x, window=8, stride=5)  # (32 - 8) % 5 != 0: a flush last position
    assert res.rows.tolist() == [0, 5, 10, 15, 20, 24] == res.cols.tolist()
    assert res.layer == "7" and res.window == (8, 8) and res.stride == (5, 5)
    with torch.no_grad():
        fmap, logits = tiny_direct(model)(x)
    channel = fmap.amax(dim=(2, 3)).argmax(dim=1)
    target = logits.argmax(dim=1)
    fill = x.mean(dim=(2, 3))  # the paper's grey: each image's per-channel mean
    assert torch.equal(res.channel, channel) and torch.equal(res.target, target)
    assert torch.equal(res.baseline_top_class, target)
    torch.testing.assert_close(res.fill, fill)
    idx = torch.arange(2)
    torch.testing.assert_close(
        res.baseline_probability, torch.softmax(logits, 1)[idx, target], rtol=1e-5, atol=1e-6
    )
    torch.testing.assert_close(
        res.baseline_activation, fmap[idx, channel].relu().sum(dim=(1, 2)), rtol=1e-5, atol=1e-5
    )
    expected = brute_force(
        tiny_direct(model), x, window=(8, 8), stride=(5, 5), fill=fill, target=target,
        channel=channel,
    )  # fmt: skip
    assert_matches(res, expected)
    assert torch.equal(x, x0)
    assert_unchanged(model, before)


@pytest.mark.parametrize(
    "fill",
    [0.0, -1.5, [0.1, -0.2, 0.3], torch.tensor([[0.5, 0.0, -0.5], [1.0, 1.0, 1.0]])],
    ids=["zero", "float", "per-channel", "per-image"],
)
def test_tiny_zf_options_match_brute_force(tiny, fill):
    model, x = tiny
    res = occlusion(
        model, x, window=(8, 12), stride=(6, 7), fill=fill, target=[3, 7], channel=(5, 11),
        batch_size=7,
    )  # fmt: skip
    assert res.rows.tolist() == [0, 6, 12, 18, 24] and res.cols.tolist() == [0, 7, 14, 20]
    fills = torch.as_tensor(fill, dtype=x.dtype).expand(2, 3)
    expected = brute_force(
        tiny_direct(model), x, window=(8, 12), stride=(6, 7), fill=fills, target=[3, 7],
        channel=[5, 11],
    )  # fmt: skip
    assert_matches(res, expected)
    assert res.target.tolist() == [3, 7] and res.channel.tolist() == [5, 11]


def test_layer_by_module_and_non_conv_layer(tiny):
    model, x = tiny
    by_name = occlusion(model, x, window=16, stride=16, layer="4")
    by_module = occlusion(model, x, window=16, stride=16, layer=model[4])
    assert by_module.layer == "4"
    torch.testing.assert_close(by_name.activation, by_module.activation)
    # A (N, classes) output as the "feature map": its rectified value.
    res = occlusion(model, x, window=16, stride=16, layer="11", channel=2)
    expected = brute_force(
        lambda img: (model(img), model(img)), x, window=(16, 16), stride=(16, 16),
        fill=x.mean(dim=(2, 3)), target=res.target, channel=[2, 2],
    )  # fmt: skip
    assert_matches(res, expected)


def test_resnet18_matches_brute_force():
    model = torchvision_model("resnet18")
    with torch.no_grad():
        model.fc.weight.mul_(20)  # peaked probabilities: a meaningful comparison
    before = snapshot(model)
    torch.manual_seed(4)
    x = torch.randn(2, 3, 64, 64)
    x0 = x.clone()
    res = occlusion(model, x, window=20, stride=16)
    assert res.layer == "layer4.1.conv2"
    assert res.rows.tolist() == [0, 16, 32, 44]
    extractor = create_feature_extractor(model, {"layer4.1.conv2": "f", "fc": "logits"})

    def direct(img):
        out = extractor(img)
        return out["f"], out["logits"]

    with torch.no_grad():
        fmap, logits = direct(x)
    channel = fmap.amax(dim=(2, 3)).argmax(dim=1)
    assert torch.equal(res.channel, channel)
    assert torch.equal(res.target, logits.argmax(dim=1))
    expected = brute_force(
        direct, x, window=(20, 20), stride=(16, 16), fill=x.mean(dim=(2, 3)), target=res.target,
        channel=channel,
    )  # fmt: skip
    assert_matches(res, expected)
    assert torch.equal(x, x0)
    assert_unchanged(model, before)


def test_resnet18_in_training_mode_runs_in_eval_and_restores_flags():
    model = torchvision_model("resnet18")
    torch.manual_seed(5)
    x = torch.randn(1, 3, 64, 64)
    expected = occlusion(model, x, window=32, stride=32)
    model.train()
    model.layer1.eval()  # a mixed state must come back exactly
    before = snapshot(model)
    res = occlusion(model, x, window=32, stride=32)
    torch.testing.assert_close(res.probability, expected.probability)
    torch.testing.assert_close(res.activation, expected.activation)
    assert_unchanged(model, before)  # running stats untouched, flags restored


def test_matches_captum_occlusion(tiny):
    captum_attr = pytest.importorskip("captum.attr")
    model, x = tiny
    window, stride = 8, 4  # (32 - 8) % 4 == 0: Captum's positions are ours
    res = occlusion(model, x, window=window, stride=stride)
    baselines = res.fill[:, :, None, None].expand_as(x).contiguous()
    attr = captum_attr.Occlusion(lambda inp: torch.softmax(model(inp), dim=1)).attribute(
        x,
        sliding_window_shapes=(3, window, window),
        strides=(3, stride, stride),
        baselines=baselines,
        target=res.target.tolist(),
        perturbations_per_eval=8,
    )
    # Captum: each pixel gets the mean, over the windows covering it, of the probability drop.
    drop = res.baseline_probability[:, None, None] - res.probability  # (N, R, Cc)
    total = torch.zeros(2, 32, 32)
    count = torch.zeros(2, 32, 32)
    for i, r in enumerate(res.rows.tolist()):
        for j, q in enumerate(res.cols.tolist()):
            total[:, r : r + window, q : q + window] += drop[:, i, j, None, None]
            count[:, r : r + window, q : q + window] += 1
    ours = (total / count)[:, None].expand_as(x)
    assert drop.abs().max() > 1e-3  # the comparison is not between two flat maps
    torch.testing.assert_close(attr, ours, rtol=0, atol=1e-5)


class Counting(nn.Module):
    """Counts forward calls; returns ``transform(net(x))``."""

    def __init__(self, net: nn.Module, transform=None):
        super().__init__()
        self.net = net
        self.transform = transform
        self.calls = 0
        self.batches: list[int] = []

    def forward(self, x):
        if x.device.type == "meta":  # a shape-only pass: no data runs
            return self.net(x) if self.transform is None else self.transform(self.net(x))
        self.calls += 1
        self.batches.append(x.shape[0])
        out = self.net(x)
        return out if self.transform is None else self.transform(out)


def test_one_sweep_in_chunks_of_batch_size(tiny):
    model, x = tiny
    counted = Counting(model)
    res = occlusion(counted, x, window=8, stride=4, batch_size=10)
    positions = 2 * 7 * 7
    assert counted.calls == 1 + math.ceil(positions / 10)  # the unoccluded forward + the sweep
    assert counted.batches == [2] + [10] * 9 + [8]
    assert res.batch_size == 10
    one = occlusion(model, x, window=8, stride=4, max_memory=1)  # one image per chunk
    assert one.batch_size == 1
    torch.testing.assert_close(one.probability, res.probability)
    torch.testing.assert_close(one.activation, res.activation, rtol=1e-5, atol=1e-5)
    default = occlusion(model, x, window=8, stride=4)  # 1 GiB: everything in one chunk
    assert default.batch_size == positions
    torch.testing.assert_close(default.top_probability, res.top_probability)


def test_max_memory_sets_the_chunk_from_activation_bytes(tiny):
    model, x = tiny
    counted = Counting(model)
    # tiny_zf's leaf outputs for one 32x32 image are ~60 kB; 1 MB fits a handful per chunk.
    res = occlusion(counted, x, window=8, stride=4, max_memory=10**6)
    assert 1 < res.batch_size < 98
    assert max(counted.batches[1:]) == res.batch_size


def test_no_grad_written_and_x_untouched(tiny):
    model, x = tiny
    x = x.clone().requires_grad_()
    occlusion(model, x, window=16, stride=8)
    assert x.grad is None
    assert all(p.grad is None for p in model.parameters())


def _raises(model, x, exc, match, *, calls=0, **kwargs):
    counted = Counting(model)
    with pytest.raises(exc, match=match):
        occlusion(counted, x, **kwargs)
    assert counted.calls == calls, f"{counted.calls} forward(s) before the error"
    assert hook_count(counted) == 0


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"window": 0}, ValueError, "window"),
        ({"window": 33}, ValueError, "no larger than the image"),
        ({"window": (8, 40)}, ValueError, "no larger than the image"),
        ({"window": "8"}, TypeError, "window"),
        ({"window": 8, "stride": 0}, ValueError, "stride"),
        ({"window": 8, "stride": (2, 3, 4)}, TypeError, "stride"),
        ({"window": 8, "target": -1}, ValueError, "target"),
        ({"window": 8, "target": [1, 2, 3]}, ValueError, "one per image"),
        ({"window": 8, "target": 1.5}, TypeError, "target"),
        ({"window": 8, "channel": 16}, ValueError, "16 feature maps"),
        ({"window": 8, "fill": [0.0, 0.0]}, ValueError, "3 per-channel values"),
        ({"window": 8, "fill": "grey"}, TypeError, "fill"),
        ({"window": 8, "layer": "net.77"}, ValueError, "close matches: 'net.7'"),
        ({"window": 8, "batch_size": 0}, ValueError, "batch_size"),
    ],
)
def test_bad_arguments_raise_before_any_forward(tiny, kwargs, exc, match):
    model, x = tiny
    _raises(model, x, exc, match, **kwargs)


def test_bad_images_raise_before_any_forward(tiny):
    model, x = tiny
    _raises(model, x[0], ValueError, "4-d")
    _raises(model, (x * 10).long(), TypeError, "floating-point")
    _raises(model, x[:, :2], ValueError, "3 channels")
    bad = x.clone()
    bad[0, 0, 0, 0] = float("nan")
    _raises(model, bad, ValueError, "finite")


def test_errors_needing_the_output_raise_before_any_forward(tiny):
    model, x = tiny
    # The number of classes / feature maps of a non-conv layer come from a shape-only pass.
    _raises(model, x, ValueError, r"target: .*\[0, 10\)", window=8, target=10)
    _raises(model, x, ValueError, "12 feature maps", window=8, layer="net.5", channel=12)
    _raises(Counting(model, lambda o: o[:, :, None]), x, ValueError, r"\(2, classes\)")
    _raises(Counting(model, lambda o: (o, o)), x, ValueError, "got tuple")


def test_no_hooks_left_when_the_model_raises(tiny):
    model, x = tiny

    class Boom(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = model
            self.calls = 0

        def forward(self, x):
            self.calls += x.device.type != "meta"
            if self.calls > 1:
                raise RuntimeError("boom")
            return self.net(x)

    boom = Boom()
    before = snapshot(boom)
    with pytest.raises(RuntimeError, match="boom"):
        occlusion(boom, x, window=8)
    assert_unchanged(boom, before)


def test_progress_counts_images_and_may_cancel(tiny):
    model, x = tiny
    seen = []
    res = occlusion(
        model, x, window=8, stride=4, batch_size=10, progress=lambda d, t: seen.append((d, t))
    )
    n, r, c = res.probability.shape
    total = n * (1 + r * c)
    assert seen[0] == (n, total) and seen[-1] == (total, total)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    ref = occlusion(model, x, window=8, stride=4, batch_size=10)
    torch.testing.assert_close(res.probability, ref.probability)

    def stop(done, total):
        if done > n:
            raise Cancelled()

    model.train()
    before = snapshot(model)
    with pytest.raises(Cancelled):
        occlusion(model, x, window=8, stride=4, batch_size=10, progress=stop)
    assert_unchanged(model, before)
    assert hook_count(model) == 0 and model.training
    with pytest.raises(TypeError, match="progress"):
        occlusion(model, x, window=8, stride=4, progress="yes")
