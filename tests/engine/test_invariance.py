"""zf.invariance (Fig. 5) against a direct loop, one image and one amount at a time."""

from __future__ import annotations

import pytest
import torch
from models import assert_unchanged, snapshot, tiny_2x2, tiny_zf
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from zfwidgets.engine.invariance import invariance


def _direct(model, x, transform, amounts, layer_index, fill):
    """Per image and amount: warp, run the Sequential up to the layer, measure."""
    n = x.shape[0]
    dist = torch.zeros(n, len(amounts))
    prob = torch.zeros(n, len(amounts))
    with torch.no_grad():
        for i in range(n):
            xi = x[i : i + 1]
            f = [float(v) for v in xi.mean((2, 3))[0]] if fill == "mean" else [float(fill)] * 3
            t = int(model(xi).argmax(1))
            ref = model[: layer_index + 1](xi).flatten()
            for j, a in enumerate(amounts):
                kw = {"angle": 0.0, "translate": [0.0, 0.0], "scale": 1.0}
                if transform == "translate":
                    kw["translate"] = [0.0, float(a)]
                elif transform == "scale":
                    kw["scale"] = float(a)
                else:
                    kw["angle"] = float(a)
                xt = TF.affine(
                    xi, shear=[0.0, 0.0], interpolation=InterpolationMode.BILINEAR, fill=f, **kw
                )
                cur = model[: layer_index + 1](xt).flatten()
                dist[i, j] = (cur - ref).norm() / ref.norm()
                prob[i, j] = model(xt).softmax(1)[0, t]
    return dist, prob


@pytest.mark.parametrize(
    "transform,amounts",
    [("translate", [-6, -2, 0, 3, 8]), ("scale", [0.5, 1.0, 1.3]), ("rotate", [0, 45, 90, 200])],
)
@pytest.mark.parametrize("fill", ["mean", 0.0])
def test_matches_a_direct_loop(transform, amounts, fill):
    model = tiny_zf()
    torch.manual_seed(3)
    x = torch.randn(3, 3, 32, 32)
    x0 = x.clone()
    before = snapshot(model)
    res = invariance(
        model, x, transform=transform, amounts=amounts, layers=["1", "8"], fill=fill, batch_size=4
    )
    assert_unchanged(model, before)
    assert torch.equal(x, x0)
    assert res.layers == ["1", "8"]
    assert res.images.shape == (3, len(amounts), 3, 32, 32)
    assert res.probability.shape == (3, len(amounts))
    for name, k in (("1", 1), ("8", 8)):
        d, p = _direct(model, x, transform, amounts, k, fill)
        torch.testing.assert_close(res.distance[name], d, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(res.probability, p, atol=1e-6, rtol=1e-4)
    assert res.mean_distance["8"].shape == (len(amounts),)
    assert res.mean_probability.shape == (len(amounts),)


def test_identity_amount_and_given_target():
    model = tiny_zf()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    res = invariance(model, x, transform="rotate", amounts=[0.0, 90.0], target=[4, 7])
    assert res.layers == ["0", "7"]  # first conv, last conv (one Linear only)
    assert res.target.tolist() == [4, 7]
    for d in res.distance.values():
        assert torch.allclose(d[:, 0], torch.zeros(2), atol=1e-6)
    torch.testing.assert_close(res.probability[:, 0], res.original_probability)
    with torch.no_grad():
        p = model(x).softmax(1)[[0, 1], [4, 7]]
    torch.testing.assert_close(res.original_probability, p)


def test_default_layers_take_the_penultimate_linear():
    from zfwidgets.data import load_default

    d = load_default()
    x = torch.stack([d.images[i][0] for i in range(4)])
    res = invariance(d.model, x, transform="translate")
    assert res.layers == ["features.0", "classifier.4"]
    assert res.amounts.tolist() == [-7.0, -5.0, -4.0, -2.0, 0.0, 2.0, 4.0, 5.0, 7.0]
    # the upper layer moves less, relatively, than layer 1 for small shifts (Fig. 5)
    assert torch.isfinite(res.mean_distance["classifier.4"]).all()


@pytest.mark.parametrize(
    "kwargs,err,match",
    [
        ({"transform": "scale", "amounts": [1.0, 0.0]}, ValueError, "> 0"),
        ({"transform": "scale", "amounts": [-1.0]}, ValueError, "> 0"),
        ({"transform": "translate", "amounts": [40]}, ValueError, "within the image"),
        ({"transform": "rotate", "amounts": [float("nan")]}, ValueError, "finite"),
        ({"transform": "rotate", "amounts": []}, ValueError, "at least one"),
        ({"transform": "rotate", "amounts": "ten"}, TypeError, "amounts"),
        ({"transform": "shear"}, ValueError, "transform"),
        ({"layers": ["nope"]}, ValueError, "no module named"),
        ({"target": [1]}, ValueError, "one per image"),
        ({"target": 12}, ValueError, r"\[0, 10\)"),
        ({"fill": "median"}, ValueError, "fill"),
        ({"batch_size": 0}, ValueError, "batch_size"),
    ],
)
def test_bad_input_raises_before_work(kwargs, err, match):
    model = tiny_2x2()
    before = snapshot(model)
    with pytest.raises(err, match=match):
        invariance(model, torch.randn(2, 3, 32, 32), **kwargs)
    assert_unchanged(model, before)


def test_bad_images():
    model = tiny_2x2()
    with pytest.raises(ValueError, match="4-d"):
        invariance(model, torch.randn(3, 32, 32))
    with pytest.raises(ValueError, match="channels"):
        invariance(model, torch.randn(1, 1, 32, 32))
