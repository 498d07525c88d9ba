"""Predictions without a kernel: the bars are torch.topk of the softmax, sent as one binary
transfer; names are sent verbatim (the front end sets them as text)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from ipywidgets.widgets.widget import _remove_buffers
from torch import nn

from zfwidgets.base.codec import decode
from zfwidgets.widgets.predictions import Predictions

EVIL = "<img src=x onerror=alert(1)>"


@pytest.fixture
def image():
    g = torch.Generator().manual_seed(5)
    return torch.randn(3, 32, 32, generator=g)


def expected_top(model, image, k=5):
    with torch.no_grad():
        p = torch.softmax(model(image[None]), dim=1)[0]
    return torch.topk(p, k)


def test_top5_is_topk_of_softmax(model, image):
    names = [f"class {i}" for i in range(10)]
    top = expected_top(model, image)
    names[int(top.indices[0])] = EVIL
    w = Predictions(model, image, classes=names)
    p = decode(w.top["probability"])
    idx = decode(w.top["index"])
    assert p.dtype == np.float32 and idx.dtype == np.int32 and p.shape == idx.shape == (5,)
    np.testing.assert_allclose(p, top.values.numpy(), rtol=1e-6)
    np.testing.assert_array_equal(idx, top.indices.numpy())
    assert w.labels == [names[i] for i in top.indices.tolist()]
    assert w.labels[0] == EVIL  # verbatim: the front end renders it as text
    assert w.predictions()[0] == (EVIL, pytest.approx(float(top.values[0])))
    assert w.probabilities.shape == (10,)
    assert w.caption == "top 5 of 10 classes"


def test_k_and_default_names(model, image):
    w = Predictions(model, image, k=3)
    top = expected_top(model, image, 3)
    assert w.labels == [f"class {i}" for i in top.indices.tolist()]
    assert len(Predictions(model, image, k=50).labels) == 10  # at most the classes
    with pytest.raises(ValueError, match="k: expected a positive int"):
        Predictions(model, image, k=0)


def test_set_image_updates_in_one_message(model, image, frontend):
    w = Predictions(model, image)
    fe = frontend(w)
    other = torch.flip(image, [1]) * 3
    w.image = other
    assert torch.equal(w.image[0], other)
    top = expected_top(model, other)
    np.testing.assert_array_equal(decode(w.top["index"]), top.indices.numpy())
    updates = [m for m, _ in fe.sent if m["method"] == "update"]
    assert len(updates) == 1 and {"top", "labels"} <= set(updates[0]["state"])


def test_state_is_binary(model, image):
    w = Predictions(model, image)
    state, paths, buffers = _remove_buffers(w.get_state())
    assert ["top", "probability", "view"] in paths and ["top", "index", "view"] in paths
    text = json.dumps({k: v for k, v in state.items() if k not in ("_esm", "_css")})
    assert len(text) < 1200
    assert "zf-predictions" in str(w._esm)


def test_bad_input(model, image):
    with pytest.raises(ValueError, match="classes: the model has 10 outputs, got 3"):
        Predictions(model, image, classes=["a", "b", "c"])
    with pytest.raises(ValueError, match="takes 3 channels"):
        Predictions(model, image[:2])
    with pytest.raises(ValueError, match=r"one image"):
        Predictions(model, torch.stack([image, image]))
    with pytest.raises(TypeError, match="floating-point"):
        Predictions(model, image.to(torch.int32))
    with pytest.raises(ValueError, match="logits"):
        Predictions(nn.Sequential(nn.Conv2d(3, 2, 3)), image)
    w = Predictions(model, image)
    with pytest.raises(ValueError, match="takes 3 channels"):
        w.set_image(image[:1])
