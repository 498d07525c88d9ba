"""zf.feature_vis: shapes, range, determinism, the objective rises, the guarantees, every error."""

import numpy as np
import pytest
import torch
from models import assert_unchanged, hook_count, snapshot, tiny_zf, torchvision_model
from torch import nn

import zfwidgets as zf
from zfwidgets.base.progress import Cancelled
from zfwidgets.engine.featurevis import COLOR_CORRELATION, TRANSFORMS


def grey_net() -> nn.Sequential:
    """A 1-channel net whose classifier takes 28x28 only (a flatten into a Linear)."""
    torch.manual_seed(4)
    return nn.Sequential(
        nn.Conv2d(1, 6, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 8, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.Flatten(),
        nn.Linear(8 * 14 * 14, 10),
    ).eval()


FAST = {"size": 32, "steps": 12, "progress": False}


def test_shapes_range_and_activation_rises():
    model = tiny_zf()
    r = zf.feature_vis(model, "4", [0, 3, 11], **FAST)
    assert isinstance(r, zf.FeatureVis)
    assert r.layer == "4" and r.channels.tolist() == [0, 3, 11] and r.units is None
    assert r.images.shape == (3, 3, 32, 32) and r.inputs.shape == (3, 3, 32, 32)
    assert r.activation.shape == (3,) and r.start.shape == (3,)
    assert float(r.images.min()) >= 0 and float(r.images.max()) <= 1
    assert bool((r.activation > r.start).all())
    # inputs are the images under ImageNet's normalisation (the default for 3 channels)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    torch.testing.assert_close(r.inputs, (r.images - mean) / std)
    # the activation reported is the objective measured on .inputs (the mean, here)
    m = zf.feature_vis(model, "4", [3], objective="mean", **FAST)
    with zf.capture(model, ["4"]) as cap, torch.no_grad():
        model(m.inputs)
    torch.testing.assert_close(cap.activations["4"][0, 3].mean(), m.activation[0])
    assert "FeatureVis" in repr(r)


def test_deterministic_and_independent_of_the_batch():
    model = tiny_zf()
    a = zf.feature_vis(model, "7", [1, 5, 2], seed=3, **FAST)
    b = zf.feature_vis(model, "7", [1, 5, 2], seed=3, **FAST)
    assert torch.equal(a.images, b.images) and torch.equal(a.inputs, b.inputs)
    c = zf.feature_vis(model, "7", [1, 5, 2], seed=4, **FAST)
    assert not torch.equal(a.images, c.images)
    # each unit has its own generator: the same picture alone or in a batch
    d = zf.feature_vis(model, "7", [5], seed=3, batch_size=1, **FAST)
    torch.testing.assert_close(d.images[0], a.images[1], atol=1e-4, rtol=0)


def test_units_and_flat_layers():
    model = tiny_zf()
    r = zf.feature_vis(model, "4", units=[(2, 3, 4), (0, 0, 0)], **FAST)
    assert r.units.tolist() == [[2, 3, 4], [0, 0, 0]] and r.channels.tolist() == [2, 0]
    assert bool((r.activation > r.start).all())
    with zf.capture(model, ["4"]) as cap, torch.no_grad():
        model(r.inputs)
    torch.testing.assert_close(cap.activations["4"][0, 2, 3, 4], r.activation[0])
    # channels as NumPy ints, a tensor or a range: the same request
    for same in (np.array([2, 0]), torch.tensor([2, 0]), range(2, -1, -2)):
        assert zf.feature_vis(model, "4", same, **{**FAST, "steps": 1}).channels.tolist() == [2, 0]
    # a (B, C) layer: the class logit
    logit = zf.feature_vis(model, "11", [7], **FAST)
    assert bool(logit.activation[0] > logit.start[0])


def test_model_restored_and_nothing_accumulated():
    model = tiny_zf()
    model[0].weight.requires_grad_(False)
    model.train()
    model[4].eval()
    before = snapshot(model)
    zf.feature_vis(model, "7", [0, 1], **FAST)
    assert_unchanged(model, before)
    assert all(p.grad is None for p in model.parameters())
    # cancelled through progress=: restored too
    calls = []

    def cancel(done, total):
        calls.append((done, total))
        if done == 3:
            raise Cancelled()

    with pytest.raises(Cancelled):
        zf.feature_vis(model, "7", [0, 1, 2], **{**FAST, "progress": cancel, "batch_size": 2})
    assert calls[0] == (1, 24)  # 2 batches x 12 steps
    assert_unchanged(model, before)
    assert hook_count(model) == 0


def test_one_channel_model_its_fixed_size_and_mean_std():
    model = grey_net()
    r = zf.feature_vis(model, "3", [0, 7], steps=8, progress=False)
    assert r.images.shape == (2, 1, 28, 28)  # the one size the classifier takes
    torch.testing.assert_close(r.inputs, r.images)  # 1 channel, no statistics: identity
    s = zf.feature_vis(model, "3", [0], steps=8, mean=0.5, std=[0.25], progress=False)
    torch.testing.assert_close(s.inputs, (s.images - 0.5) / 0.25)
    # the head after the layer is never run: another size is fine
    assert zf.feature_vis(model, "3", [0], size=20, steps=2, progress=False).images.shape[-1] == 20


def test_model_with_its_own_size_and_statistics():
    model = tiny_zf()
    model.input_size = (24, 24)
    model.mean, model.std = (0.5, 0.5, 0.5), (0.2, 0.2, 0.2)  # as find_normalize finds them
    r = zf.feature_vis(model, "0", [1], steps=4, progress=False)
    assert r.images.shape == (1, 3, 24, 24)
    torch.testing.assert_close(r.inputs, (r.images - 0.5) / 0.2)


def test_the_bundled_model_gives_structure():
    d = zf.load_default()
    r = zf.feature_vis(
        d.model, "features.4", [0, 1], size=28, steps=48, mean=d.mean, std=d.std, progress=False
    )
    assert r.images.shape == (2, 1, 28, 28)
    assert bool((r.activation > r.start).all())
    # not a flat image: the pattern uses the range
    assert float(r.images.std((1, 2, 3)).min()) > 0.1


def test_torchvision_resnet18():
    model = torchvision_model("resnet18")
    before = snapshot(model)
    r = zf.feature_vis(model, "layer2.0.conv1", [0, 5], size=64, steps=6, progress=False)
    assert r.images.shape == (2, 3, 64, 64)
    assert bool((r.activation > r.start).all())
    assert_unchanged(model, before)


def test_colour_matrix_and_transforms_are_published():
    assert len(COLOR_CORRELATION) == 3 and set(TRANSFORMS) >= {"standard", "none"}
    model = tiny_zf()
    r = zf.feature_vis(model, "4", [1], transforms="none", **FAST)
    assert bool(r.activation[0] > r.start[0])


@pytest.mark.parametrize(
    ("kwargs", "error", "words"),
    [
        ({"layer": "nope", "channels": [0]}, ValueError, "layer: no module named 'nope'"),
        ({"channels": [0, 12]}, ValueError, "channels: expected ints in [0, 12)"),
        ({"channels": [-1]}, ValueError, "channels: expected ints in [0, 12)"),
        ({"channels": []}, ValueError, "channels: expected at least one"),
        ({"channels": [0.5]}, TypeError, "channels: expected ints"),
        ({"channels": "0"}, TypeError, "channels: expected an int or a sequence"),
        ({"channels": np.array([0.5])}, TypeError, "channels: expected integer indices"),
        ({"channels": torch.tensor([1.0])}, TypeError, "channels: expected integer indices"),
        ({"channels": None}, ValueError, "expected exactly one of"),
        ({"units": [(0, 1, 1)]}, ValueError, "expected exactly one of"),
        ({"channels": None, "units": [(0, 16, 0)]}, ValueError, "units: unit 0 = (0, 16, 0)"),
        ({"channels": None, "units": [(12, 0, 0)]}, ValueError, "is out of range"),
        ({"channels": None, "units": [(0, 1)]}, TypeError, "units: expected (c, y, x)"),
        ({"channels": None, "units": []}, ValueError, "units: expected at least one"),
        ({"layer": "7", "size": 2}, ValueError, "size: Sequential needs images of at least 4x4"),
        ({"size": 0}, ValueError, "size: expected an int >= 1"),
        ({"size": 2.5}, TypeError, "size: expected an int"),
        ({"steps": 0}, ValueError, "steps: expected an int >= 1"),
        ({"steps": 1.0}, TypeError, "steps: expected an int"),
        ({"lr": 0}, ValueError, "lr: expected a positive number"),
        ({"lr": float("nan")}, ValueError, "lr: expected a finite number"),
        ({"lr": "big"}, TypeError, "lr: expected a number"),
        ({"batch_size": 0}, ValueError, "batch_size: expected an int >= 1"),
        ({"transforms": "wild"}, ValueError, "transforms: expected one of"),
        ({"transforms": None}, TypeError, "transforms: expected one of"),
        ({"objective": "min"}, ValueError, "objective: expected 'max' or 'mean'"),
        ({"mean": 0.5}, ValueError, "mean, std: expected both or neither"),
        ({"mean": [0.1, 0.2], "std": 1.0}, ValueError, "mean: expected 1 or 3 values"),
        ({"mean": 0.0, "std": 0.0}, ValueError, "std: expected non-zero"),
        ({"mean": float("inf"), "std": 1.0}, ValueError, "mean: expected finite"),
        ({"progress": "yes"}, TypeError, "progress: expected True, False, None"),
        ({"device": "meta"}, ValueError, "device: the model is on cpu"),
        ({"seed": 1.5}, TypeError, "seed: expected an int"),
    ],
)
def test_bad_input_refused_before_any_work(kwargs, error, words):
    model = tiny_zf()
    before = snapshot(model)
    args = {"layer": "4", "channels": [0], **FAST, **kwargs}
    layer, channels = args.pop("layer"), args.pop("channels")
    with pytest.raises(error) as info:
        zf.feature_vis(model, layer, channels, **args)
    assert words in str(info.value)
    assert_unchanged(model, before)


def test_not_a_model_and_a_layer_without_channels():
    with pytest.raises(TypeError, match="model: expected a torch.nn.Module"):
        zf.feature_vis("model", "0", [0])
    model = tiny_zf()
    with pytest.raises(ValueError, match="units: layer '11' has no spatial size"):
        zf.feature_vis(model, "11", units=[(0, 0, 0)], **FAST)


@pytest.mark.cuda
def test_cuda():
    model = tiny_zf().cuda()
    r = zf.feature_vis(model, "4", [0, 1], device="cuda", **FAST)
    assert r.inputs.device.type == "cuda" and r.images.device.type == "cpu"
    assert bool((r.activation > r.start).all())
