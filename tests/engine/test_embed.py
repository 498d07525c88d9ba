"""zf.embed: PCA against numpy's SVD, t-SNE, the penultimate layer, labels, bad input."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from models import assert_unchanged, snapshot, tiny_zf, torchvision_model
from torch.utils.data import TensorDataset

from zfwidgets.engine.embed import embed, penultimate_layer


def _numpy_pca(codes):
    c = codes.double().numpy()
    c = c - c.mean(0, keepdims=True)
    _, s, vt = np.linalg.svd(c, full_matrices=False)
    v = vt[:2].T
    idx = np.abs(v).argmax(0)
    v = v * np.sign(v[idx, [0, 1]])
    return c @ v, (s[:2] ** 2) / (s**2).sum()


def test_pca_matches_numpy_svd():
    model = tiny_zf()
    x = torch.randn(20, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    x0 = x.clone()
    before = snapshot(model)
    state = torch.random.get_rng_state()
    e = embed(model, x, method="pca")
    assert torch.equal(torch.random.get_rng_state(), state)
    assert_unchanged(model, before)
    assert torch.equal(x, x0)
    assert e.layer == "10" and e.codes.shape == (20, 64)
    assert e.labels is None and e.indices.tolist() == list(range(20))
    ref, explained = _numpy_pca(e.codes)
    np.testing.assert_allclose(e.coords.numpy(), ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(e.explained.numpy(), explained, rtol=1e-4)
    # the codes are the input of the last Linear
    with torch.no_grad():
        torch.testing.assert_close(model[11](e.codes), model(x))
    assert torch.equal(e.predicted, model(x).argmax(1))


def test_tsne_labels_subset_and_seed():
    model = tiny_zf()
    x = torch.randn(30, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    y = torch.arange(30) % 3
    ds = TensorDataset(x, y)
    a = embed(model, ds, method="tsne", max_points=12, seed=4)
    b = embed(model, ds, method="tsne", max_points=12, seed=4)
    assert a.coords.shape == (12, 2) and torch.isfinite(a.coords).all()
    assert torch.equal(a.coords, b.coords)
    assert a.indices.shape == (12,) and bool((a.indices.diff() > 0).all())
    assert torch.equal(a.labels, y[a.indices])
    c = embed(model, x, method="pca", labels=y.tolist(), max_points=None)
    assert torch.equal(c.labels, y)


def test_default_model_and_resnet_penultimate():
    from zfwidgets.data import load_default

    d = load_default()
    e = embed(d.model, d.images, method="pca", max_points=40)
    assert e.layer == "classifier.5" and e.codes.shape == (40, 128)
    assert torch.equal(e.labels, d.images.labels[e.indices])
    assert penultimate_layer(torchvision_model("resnet18")) == "avgpool"


def test_tsne_without_sklearn_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.manifold", None)
    with pytest.raises(ImportError, match=r"zfwidgets\[embed\]"):
        embed(tiny_zf(), torch.randn(4, 3, 32, 32), method="tsne")


@pytest.mark.parametrize(
    "kwargs,err,match",
    [
        ({"method": "umap"}, ValueError, "method"),
        ({"max_points": 1}, ValueError, "max_points"),
        ({"layer": "nope"}, ValueError, "no module named"),
        ({"labels": [1, 2]}, ValueError, "labels"),
        ({"batch_size": 0}, ValueError, "batch_size"),
        ({"perplexity": -1}, ValueError, "perplexity"),
    ],
)
def test_bad_input(kwargs, err, match):
    model = tiny_zf()
    before = snapshot(model)
    with pytest.raises(err, match=match):
        embed(model, torch.randn(4, 3, 32, 32), **{"method": "pca", **kwargs})
    assert_unchanged(model, before)


def test_bad_data():
    with pytest.raises(ValueError, match="channels"):
        embed(tiny_zf(), torch.randn(4, 1, 32, 32), method="pca")
    with pytest.raises(ValueError, match="at least 2"):
        embed(tiny_zf(), torch.randn(1, 3, 32, 32), method="pca")
