"""zf.correspondence (Table 1) on a toy whose features are pixel sums of fixed regions."""

from __future__ import annotations

import pytest
import torch
from models import assert_unchanged, snapshot, tiny_zf
from torch import nn

from zfwidgets.engine.correspondence import consistency, correspondence


def region_net() -> nn.Sequential:
    """Feature k = sum of the pixels of quadrant k of an 8x8 image (one channel)."""
    conv = nn.Conv2d(1, 4, 8, bias=False)
    with torch.no_grad():
        conv.weight.zero_()
        for k, (r, c) in enumerate([(0, 0), (0, 4), (4, 0), (4, 4)]):
            conv.weight[k, 0, r : r + 4, c : c + 4] = 1
    return nn.Sequential(conv, nn.Flatten(), nn.Linear(4, 2)).eval()


def positive_images(n=3):
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(0)) + 0.5


def test_known_answer_on_region_sums():
    model = region_net()
    x = positive_images()
    x0 = x.clone()
    before = snapshot(model)
    parts = {
        "same": [(0, 0, 2, 2), (1, 1, 3, 3), (2, 2, 4, 4)],  # quadrant 0 in every image
        "moved": [(0, 0, 2, 2), (0, 0, 2, 2), (5, 5, 7, 7)],  # quadrant 0, 0, 3
    }
    res = correspondence(model, x, parts, layers=["0"], n_random=5, seed=1)
    assert_unchanged(model, before)
    assert torch.equal(x, x0)
    # sign vectors: [1,0,0,0] x3 -> 0; [1,0,0,0], [1,0,0,0], [0,0,0,1] -> pairs (0,2), (1,2)
    # differ in 2 of 4 signs, counted in both orders: 4 * 0.5
    assert res.score["same"]["0"] == 0.0
    assert res.score["moved"]["0"] == pytest.approx(2.0)
    # the baseline recomputed by hand from the boxes drawn
    for part in parts:
        rb = res.random_boxes[part]
        assert rb.shape == (5, 3, 4)
        assert bool(
            (rb[..., 2] - rb[..., 0] == res.boxes[part][:, 2] - res.boxes[part][:, 0]).all()
        )
        draws = []
        for d in range(5):
            signs = []
            for i in range(3):
                t, l, b, r = rb[d, i].tolist()
                assert 0 <= t < b <= 8 and 0 <= l < r <= 8
                s = [
                    1.0 if max(t, r0) < min(b, r0 + 4) and max(l, c0) < min(r, c0 + 4) else 0.0
                    for r0, c0 in [(0, 0), (0, 4), (4, 0), (4, 4)]
                ]
                signs.append(s)
            total = sum(
                sum(a != b for a, b in zip(signs[i], signs[j])) / 4
                for i in range(3)
                for j in range(3)
                if i != j
            )
            draws.append(total)
        assert res.random[part]["0"] == pytest.approx(sum(draws) / 5)
    assert res.table()[0]["part"] == "same" and "0 random" in res.table()[0]
    assert "same" in repr(res)


def test_seed_reproducible_and_global_rng_untouched():
    model = region_net()
    x = positive_images()
    state = torch.random.get_rng_state()
    a = correspondence(model, x, [(0, 0, 2, 2)] * 3, layers=["0"], seed=3)
    b = correspondence(model, x, torch.tensor([0, 0, 2, 2]), layers=["0"], seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(a.random_boxes["part"], b.random_boxes["part"])
    assert a.random == b.random


def test_consistency_counts_ordered_pairs():
    eps = torch.tensor([[1.0, -1.0], [1.0, 1.0]])
    assert consistency(eps) == pytest.approx(2 * 0.5)


def test_default_layers_on_a_cnn():
    model = tiny_zf()
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    res = correspondence(model, x, {"eye": [(4, 4, 10, 10)] * 3}, n_random=2)
    assert res.layers == ["0", "7"]
    assert set(res.score["eye"]) == {"0", "7"}


@pytest.mark.parametrize(
    "parts,kwargs,err,match",
    [
        ([(0, 0, 9, 2)] * 3, {}, ValueError, "inside the 8x8"),
        ([(-1, 0, 2, 2)] * 3, {}, ValueError, "inside"),
        ([(2, 2, 2, 4)] * 3, {}, ValueError, "non-empty"),
        ([(0, 0, 2, 2)] * 2, {}, ValueError, "3 boxes"),
        ([(0.0, 0.5, 2, 2)] * 3, {}, TypeError, "integer"),
        ({}, {}, ValueError, "at least one part"),
        ([(0, 0, 2, 2)] * 3, {"n_random": 0}, ValueError, "n_random"),
        ([(0, 0, 2, 2)] * 3, {"layers": ["zz"]}, ValueError, "no module named"),
    ],
)
def test_bad_input_raises_before_work(parts, kwargs, err, match):
    model = region_net()
    before = snapshot(model)
    with pytest.raises(err, match=match):
        correspondence(model, positive_images(), parts, **kwargs)
    assert_unchanged(model, before)


def test_needs_two_images():
    with pytest.raises(ValueError, match="at least 2"):
        correspondence(region_net(), positive_images(1), [(0, 0, 2, 2)])
