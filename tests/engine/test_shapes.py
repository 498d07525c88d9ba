"""Issue 19, items 4 and 5: an input the model cannot take is refused with a ``ValueError``
or ``TypeError`` naming the argument (and, for a size, the size the model takes) before the
first real forward; a projection of a unit stops after its layer, so a head that wants another
size does not matter there."""

from __future__ import annotations

import pytest
import torch
from models import FixedHead, assert_unchanged, hook_count, snapshot, tiny_zf
from torch import nn

import zfwidgets as zf
from zfwidgets.engine.probe import check_input_size


class _Forwards:
    """Counts real (non-meta) forward passes of ``model`` by a forward pre-hook."""

    def __init__(self, model: nn.Module):
        self.n = 0

        def count(_, inp):
            if inp and isinstance(inp[0], torch.Tensor) and inp[0].device.type != "meta":
                self.n += 1

        self.handle = model.register_forward_pre_hook(count)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def _images(size: int, n: int = 2) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(0))


def test_check_input_size_finds_a_fixed_size_off_the_ladder():
    model = FixedHead().eval()
    check_input_size(model, (2, 3, 20, 20))  # the size it takes
    with pytest.raises(ValueError, match=r"^x: FixedHead takes images of 20x20 pixels.*got 24x24"):
        check_input_size(model, (2, 3, 24, 24))
    with pytest.raises(ValueError, match=r"^image: FixedHead takes images of 20x20 pixels"):
        check_input_size(model, (1, 3, 9, 30), name="image")
    # a pool before the head: a range of sizes gives the same features
    pooled = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 10 * 10, 3)
    )
    with pytest.raises(ValueError, match=r"takes images of 20x20 to 21x21 pixels.*got 30x30"):
        check_input_size(pooled, (1, 3, 30, 30))


@pytest.mark.parametrize(
    "call",
    [
        lambda m, x: zf.occlusion(m, x, window=8, stride=8),
        lambda m, x: zf.grad_cam(m, x),
        lambda m, x: zf.grad_cam(m, x, layer="features.0", target=1),
        lambda m, x: zf.deconv(m, x, layer="fc", units=[(0, 1)]),
        lambda m, x: zf.saliency(m, x, layer="fc", units=[(0, 1)]),
    ],
    ids=["occlusion", "grad_cam", "grad_cam_conv_layer", "deconv_head", "saliency_head"],
)
def test_a_head_that_wants_another_size_is_named_before_the_work(call):
    model = FixedHead().eval()
    before = snapshot(model)
    with (
        _Forwards(model) as fw,
        pytest.raises(ValueError, match=r"^x: FixedHead takes images of 20x20 pixels"),
    ):
        call(model, _images(24))
    assert fw.n == 0
    assert hook_count(model) == 0
    assert_unchanged(model, before)


@pytest.mark.parametrize("fn", [zf.deconv, zf.guided_backprop, zf.saliency])
@pytest.mark.parametrize("strategy", ["shared", "crop", "auto"])
def test_projection_of_a_conv_unit_stops_after_its_layer(fn, strategy):
    """The head wants 20x20; a unit of a convolution (or its ReLU) at 24x24 is projected as
    by the convolutional part alone."""
    model = FixedHead().eval()
    x = _images(24)
    before = snapshot(model)
    for layer, kwargs in [
        ("features.0", {"channel": 1}),
        ("features.1", {"units": [(0, 2, 5, 7), (1, 3, 20, 2), (1, 0, 0, 0)]}),
    ]:
        got = fn(model, x, layer=layer, strategy=strategy, **kwargs)
        want = fn(model.features, x, layer=layer.split(".")[1], strategy=strategy, **kwargs)
        torch.testing.assert_close(got, want)
    assert hook_count(model) == 0
    assert_unchanged(model, before)


def test_a_channel_count_that_differs_is_named():
    model = FixedHead().eval()
    with _Forwards(model) as fw:
        for call in (
            lambda: zf.occlusion(model, torch.randn(1, 1, 20, 20), window=8, stride=8),
            lambda: zf.deconv(model, torch.randn(1, 4, 24, 24), layer="features.0", channel=0),
            lambda: zf.grad_cam(model, torch.randn(1, 2, 20, 20)),
        ):
            with pytest.raises(ValueError, match=r"^x: the model's first convolution 'features.0'"):
                call()
        with pytest.raises(ValueError, match=r"^in_channels: .*failed before reaching layer"):
            zf.receptive_field(model, "features.1", 20, in_channels=1)
    assert fw.n == 0


def test_receptive_field_argument_errors_come_before_a_forward():
    model = tiny_zf()
    with _Forwards(model) as fw:
        for size in (2, 32, 224, (1, 64)):
            for channels in (1, 2, 4):
                with pytest.raises(ValueError, match=r"^in_channels: .*takes 3 channels, got"):
                    zf.receptive_field(
                        model, "11" if size == 2 else "4", size, in_channels=channels
                    )
    assert fw.n == 0


@pytest.mark.parametrize(
    "fill",
    [1e308, -1e39, [0.0, 1e308, 0.0], torch.tensor([1e300] * 3, dtype=torch.float64), 10**400],
)
def test_occlusion_fill_beyond_the_dtype_names_fill(fill):
    model = tiny_zf()
    with _Forwards(model) as fw, pytest.raises((ValueError, TypeError), match=r"^fill: "):
        zf.occlusion(model, _images(32), window=16, stride=16, fill=fill)
    assert fw.n == 0
    # within float64 the same value is a fill like any other
    r = zf.occlusion(model.double(), _images(32).double(), window=16, stride=16, fill=1e300)
    assert bool(torch.isfinite(r.probability).all())


def test_mine_transform_not_callable_names_transform():
    model = tiny_zf()
    with (
        _Forwards(model) as fw,
        pytest.raises(TypeError, match=r"^transform: expected a callable or None, got int"),
    ):
        zf.mine(model, _images(32, 4), layers=["4"], k=2, transform=5, progress=False)
    assert fw.n == 0


def test_embed_of_images_of_mixed_sizes_names_data():
    model = tiny_zf()
    mixed = [torch.rand(3, 32, 32), torch.rand(3, 28, 28), torch.rand(3, 32, 32)]
    with _Forwards(model) as fw:
        with pytest.raises(ValueError, match=r"^data: images must share one size; .*image 1"):
            zf.embed(model, mixed, layer="4", method="pca")
        # with labels, and in a later batch than the first
        labelled = [(t, i) for i, t in enumerate(reversed(mixed))]
        with pytest.raises(ValueError, match=r"^data: images must share one size"):
            zf.embed(model, labelled, layer="4", method="pca", batch_size=1)

    class Mixed(torch.utils.data.Dataset):  # a dataset: each batch is checked as it is stacked
        def __len__(self):
            return 3

        def __getitem__(self, i):
            return mixed[i]

    with pytest.raises(ValueError, match=r"^data: images must share one size"):
        zf.embed(model, Mixed(), layer="4", method="pca")
    assert fw.n == 0


def test_embed_of_a_meta_tensor_names_data():
    with pytest.raises(ValueError, match=r"^data: .*meta device"):
        zf.embed(tiny_zf(), torch.empty(3, 3, 32, 32, device="meta"), layer="4", method="pca")


@pytest.mark.parametrize("threshold", [float("inf"), -float("inf"), float("nan")])
def test_dead_filters_threshold_must_be_finite(threshold):
    with pytest.raises(ValueError, match=r"^threshold: expected a finite number"):
        zf.dead_filters(torch.rand(4, 6, 5, 5), threshold=threshold)
