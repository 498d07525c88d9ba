"""The bundled default: the trained small ZFNet, its images, checkpoints and atlas."""

from __future__ import annotations

import gzip
import json
import pickle
import re
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision  # noqa: F401 (imported before any monkeypatching)
from PIL import Image
from safetensors import safe_open
from torch import nn

import zfwidgets.data as zd
from zfwidgets.models.default import ZFNetSmall, zfnet_small
from zfwidgets.models.train_default import PAPER_EPOCHS, checkpoint_steps, read_idx

CONV = ["features.0", "features.4", "features.8", "features.10", "features.12"]
PACKAGE = Path(zd.__file__).resolve().parent.parent
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Nothing here may reach the network."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


@pytest.fixture(scope="module")
def default():
    return zd.load_default()


@pytest.fixture(scope="module")
def history():
    return zd.load_history()


# -- the architecture --------------------------------------------------------------------------
def test_architecture_follows_the_papers_pattern():
    model = zfnet_small()
    assert isinstance(model, ZFNetSmall)
    kinds = [type(m).__name__ for m in model.features]
    assert kinds == [
        "Conv2d", "ReLU", "MaxPool2d", "LocalResponseNorm",
        "Conv2d", "ReLU", "MaxPool2d", "LocalResponseNorm",
        "Conv2d", "ReLU", "Conv2d", "ReLU", "Conv2d", "ReLU", "MaxPool2d",
    ]  # fmt: skip
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    assert convs == CONV  # the same indices as zfwidgets.models.ZFNet
    pools = [m for m in model.features if isinstance(m, nn.MaxPool2d)]
    assert all(p.kernel_size == 3 and p.stride == 2 for p in pools)  # overlapping, as the paper
    assert [type(m).__name__ for m in model.classifier] == [
        "Dropout", "Linear", "ReLU", "Dropout", "Linear", "ReLU", "Linear",
    ]  # fmt: skip
    assert all(m.p == 0.5 for m in model.classifier if isinstance(m, nn.Dropout))
    params = sum(p.numel() for p in model.parameters())
    assert params * 4 < 2e6
    sizes = {}
    x = torch.zeros(2, 1, 28, 28)
    for i, m in enumerate(model.eval().features):
        x = m(x)
        sizes[f"features.{i}"] = tuple(x.shape[1:])
    assert sizes["features.2"] == (16, 14, 14)
    assert sizes["features.6"] == (32, 7, 7)
    assert sizes["features.14"] == (32, 3, 3)
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    assert zfnet_small(5, 3)(torch.zeros(1, 3, 28, 28)).shape == (1, 5)


@pytest.mark.parametrize("kwargs", [{"num_classes": 0}, {"in_channels": True}, {"dropout": 2}])
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        zfnet_small(**kwargs)


# -- loading without pickle --------------------------------------------------------------------
def test_sources_use_no_pickle():
    files = [
        PACKAGE / "data" / "__init__.py",
        PACKAGE / "data" / "_build.py",
        PACKAGE / "models" / "default.py",
        PACKAGE / "models" / "train_default.py",
    ]
    for f in files:
        text = f.read_text()
        assert not re.search(r"torch\.(load|save)\(|import pickle|pickle\.", text), f


def test_loads_without_pickle(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("pickle used")

    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    d = zd.load_default()
    zd.load_default_atlas(d)
    zd.load_photos()
    assert not d.model.training


def test_weight_files_are_safetensors():
    for path in (zd.WEIGHTS_FILE, zd.CHECKPOINTS_FILE, zd.ATLAS_FILE, zd.IMAGES_FILE):
        with safe_open(str(path), framework="pt") as f:
            assert len(list(f.keys())) > 0, path
    assert zd.WEIGHTS_FILE.stat().st_size < 2_000_000  # float32
    total = sum(p.stat().st_size for p in zd.WEIGHTS_DIR.iterdir() if p.is_file())
    assert total < 4_000_000


# -- the recorded accuracy ---------------------------------------------------------------------
def test_reproduces_recorded_accuracy_on_bundled_images(default, history):
    x, y = default.images.tensors()
    with torch.no_grad():
        logits = default.model(x)
    rec = history["bundled"]
    pred = logits.argmax(1)
    # Exact by count, and image by image: the smallest recorded logit gap (min_margin) is
    # far above float32 rounding between machines (~1e-5), so no prediction can flip.
    assert rec["min_margin"] > 1e-3
    assert int((pred == y).sum()) == rec["correct"]
    assert pred.tolist() == rec["predictions"]
    assert float(logits.double().sum()) == pytest.approx(rec["logits_sum"], abs=1e-2)
    assert rec["accuracy"] == pytest.approx(rec["correct"] / rec["n"], abs=1e-6)
    assert default.accuracy == history["test_accuracy"]
    assert default.accuracy >= 0.85


def test_dataset_path_matches_batched_path(default):
    x, y = default.images.tensors()
    for i in (0, 17, 299):
        xi, yi = default.images[i]
        assert xi.shape == (1, 28, 28) and xi.dtype == torch.float32
        assert torch.equal(xi, x[i]) and yi == int(y[i])


@pytest.mark.skipif(not FASHION_MNIST.is_dir(), reason="needs Debian's dataset-fashion-mnist")
def test_reproduces_recorded_accuracy_on_the_full_test_set(default, history):
    from zfwidgets.models.train_default import evaluate, load_split

    images, labels = load_split(FASHION_MNIST, "t10k")
    correct, _ = evaluate(default.model, images, labels)
    assert correct == history["test_correct"]


# -- images, classes, transform ------------------------------------------------------------------
def test_bundled_images_are_balanced(default):
    imgs = default.images
    assert len(imgs) == 300
    assert torch.bincount(imgs.labels, minlength=10).tolist() == [30] * 10
    assert default.classes == zd.CLASSES and len(set(default.classes)) == 10
    idx = imgs.source_indices
    assert idx.dtype == torch.int64 and bool((idx[1:] > idx[:-1]).all()) and int(idx[-1]) < 10000


def test_transform_matches_training_normalisation(default):
    for i in (0, 123):
        pil = Image.fromarray(default.images.images[i].numpy(), mode="L")
        assert torch.equal(default.transform(pil), default.images[i][0])
    x = default.images[5][0]
    pixels = x * default.std + default.mean
    assert torch.allclose(pixels * 255, default.images.images[5].float().unsqueeze(0), atol=1e-3)


def test_transform_accepts_a_photo(default):
    photos = zd.load_photos()
    assert list(photos) == list(zd.PHOTOS)
    for name, im in photos.items():
        assert im.mode == "RGB" and max(im.size) <= 256, name
        x = default.transform(im)
        assert x.shape == (1, 28, 28) and x.dtype == torch.float32
    with torch.no_grad():
        assert default.model(x.unsqueeze(0)).shape == (1, 10)
    licences = (zd.DATA_DIR / "LICENSES.md").read_text()
    for name in zd.PHOTOS:
        assert f"{name}.jpg" in licences


# -- checkpoints ---------------------------------------------------------------------------------
def test_checkpoints_load_and_differ(default, history):
    labels = [label for label, _ in default.checkpoints]
    assert labels == list(PAPER_EPOCHS)
    model = zfnet_small().eval()
    x, y = default.images.tensors()
    w1 = []
    correct = []
    for _, sd in default.checkpoints:
        model.load_state_dict(sd)  # strict
        w1.append(sd["features.0.weight"])
        with torch.no_grad():
            correct.append(int((model(x).argmax(1) == y).sum()))
    for a, b in zip(w1, w1[1:]):
        assert not torch.equal(a, b)
    for (_, a), (_, b) in zip(default.checkpoints, default.checkpoints[1:]):
        assert any(not torch.equal(a[k], b[k]) for k in a)
    assert correct[-1] == history["bundled"]["correct"]
    assert correct[0] < correct[-1]
    steps = [c["step"] for c in history["checkpoints"]]
    assert steps == sorted(set(steps))
    assert [c["paper_epoch"] for c in history["checkpoints"]] == list(PAPER_EPOCHS)


def test_checkpoint_steps_follow_the_papers_spacing():
    assert checkpoint_steps(6400) == {p: 100 * p for p in PAPER_EPOCHS}
    tiny = checkpoint_steps(3)
    assert list(tiny) == list(PAPER_EPOCHS) and tiny[64] == 3 and tiny[1] == 1


def test_history_is_complete(history):
    assert len(history["history"]) == history["config"]["epochs"]
    for h in history["history"]:
        assert {"epoch", "train_loss", "test_accuracy"} <= set(h)
    assert history["history"][-1]["test_accuracy"] == history["test_accuracy"]
    assert history["config"]["renormalize_radius"] > 0
    assert history["normalize"]["mean"] == zd.MEAN and history["normalize"]["std"] == zd.STD


# -- the atlas -----------------------------------------------------------------------------------
def test_atlas_points_at_bundled_images(default):
    atlas = zd.load_default_atlas(default)
    assert atlas.layers == CONV and atlas.k == 9 and atlas.input_size == (28, 28)
    x, _ = default.images.tensors()
    from zfwidgets.engine.capture import capture

    with capture(default.model, CONV) as cap, torch.no_grad():
        default.model(x)
    for layer in CONV:
        idx = atlas.indices[layer]
        assert idx.shape[1] == 9 and int(idx.min()) >= 0 and int(idx.max()) < len(x)
        act = cap.activations[layer].flatten(2).amax(2)  # (N, C)
        top = act.gather(0, idx.t()).t()  # (C, 9)
        assert torch.allclose(top, atlas.values[layer], rtol=1e-4, atol=1e-5)
    assert atlas.patches("features.4", 0).shape == (9, 1, 15, 15)
    assert atlas.reconstructions("features.12", 3).shape == (9, 1, 28, 28)


# -- the training script -------------------------------------------------------------------------
def _write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(n).to_bytes(4, "big") for n in array.shape
    )
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_read_idx_round_trip(tmp_path):
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    _write_idx(tmp_path / "a.gz", a)
    assert np.array_equal(read_idx(tmp_path / "a.gz"), a)


def test_training_script_smoke(tmp_path):
    """The full script on the bundled images standing in for Fashion-MNIST (2 steps)."""
    from zfwidgets.models import train_default

    imgs = zd.load_fashion_mnist_images()
    data = tmp_path / "fm"
    data.mkdir()
    for split in ("train", "t10k"):
        _write_idx(data / f"{split}-images-idx3-ubyte.gz", imgs.images.numpy())
        _write_idx(data / f"{split}-labels-idx1-ubyte.gz", imgs.labels.numpy())
    out = tmp_path / "out"
    args = ["--data", str(data), "--epochs", "1", "--train-subset", "256", "--threads", "2"]
    record = train_default.main([*args, "--out", str(out)])
    again = tmp_path / "again"
    train_default.main([*args, "--out", str(again), "--no-atlas"])
    from safetensors.torch import load_file

    for suffix in (".safetensors", "_checkpoints.safetensors"):  # seeded: the same tensors
        name = f"zfnet_small_fashion_mnist{suffix}"
        a, b = load_file(str(out / name)), load_file(str(again / name))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(
        f"zfnet_small_fashion_mnist{s}"
        for s in (".json", ".safetensors", "_checkpoints.safetensors", "_atlas.safetensors")
    )
    saved = json.loads((out / "zfnet_small_fashion_mnist.json").read_text())
    assert saved["config"]["steps"] == 2 and len(saved["history"]) == 1
    assert saved["test_correct"] == record["test_correct"]
    zfnet_small().load_state_dict(load_file(str(out / "zfnet_small_fashion_mnist.safetensors")))
