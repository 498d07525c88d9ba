"""Mining reads a layer's maxima from the max pool that follows it (``_PoolPlan``,
``TopK.offer_pooled``) only where that gives the same atlas: the pool reads the layer's output
itself, changed only by in-place ReLUs, and covers every position; every channel's bound is at
least 0; and each forward shows the same path again (else it runs again without the plan).
Each atlas here is compared bit for bit with the literal reference of
``test_mining_reference.py``, and with the path counted, so that a plan never used fails."""

import collections
import importlib.util
from pathlib import Path

import pytest
import torch
from torch import nn

import zfwidgets as zf
from zfwidgets.atlas import mining
from zfwidgets.engine.capture import Capture

_spec = importlib.util.spec_from_file_location(
    "mining_reference", Path(__file__).with_name("test_mining_reference.py")
)
_ref = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_ref)
reference_mine, assert_same_atlas = _ref.reference_mine, _ref.assert_same_atlas


@pytest.fixture
def counted(monkeypatch):
    """Counts of pooled offers per layer size, and the plans learnt."""
    seen = collections.Counter()
    plans = []
    offer = mining.TopK.offer_pooled
    learnt = mining._PoolPlan.learnt

    def offer_pooled(self, pooled, maps, start):
        seen[maps.shape[1]] += 1
        return offer(self, pooled, maps, start)

    def record(self):
        learnt(self)
        plans.append(dict(self.layers))

    monkeypatch.setattr(mining.TopK, "offer_pooled", offer_pooled)
    monkeypatch.setattr(mining._PoolPlan, "learnt", record)
    return seen, plans


class Odd(nn.Module):
    """An in-place operation outside any module, in some forwards only (data-dependent)."""

    flag = False  # set by PoolNet's forward from its input

    def forward(self, x):
        if self.flag:
            x.add_(0.0)  # the same values, one more version: the pool's input is not as learnt
        return x


class PoolNet(nn.Module):
    """Every case of the plan, at 15x15: a 3/2 pool that covers (planned), a 2/2 pool that
    leaves the last row (not), a pool with gaps (stride above kernel: not), a ceil-mode pool
    (planned), a channel whose bias keeps it negative (the bound stays below 0: the layer is
    read as usual), and a data-dependent in-place operation before a pool."""

    def __init__(self, odd: bool = False):
        super().__init__()
        torch.manual_seed(3)
        self.a = nn.Conv2d(3, 6, 3, padding=1)
        self.relu_a = nn.ReLU(inplace=True)
        self.pool_a = nn.MaxPool2d(3, 2)  # 15 -> 7, windows up to 14: covers
        self.b = nn.Conv2d(6, 5, 3, padding=1)
        self.relu_b = nn.ReLU(inplace=True)
        self.odd = Odd() if odd else nn.Identity()
        self.pool_b = nn.MaxPool2d(2, 2, ceil_mode=True)  # 7 -> 4: covers
        self.c = nn.Conv2d(5, 4, 1)
        self.pool_c = nn.MaxPool2d(1, 2)  # gaps
        self.d = nn.Conv2d(4, 4, 1)
        self.relu_d = nn.ReLU(inplace=True)
        self.pool_d = nn.MaxPool2d(2, 2)  # 4 -> 2 ... covers; see e below
        self.e = nn.Conv2d(3, 4, 3)  # 15 -> 13, then 2/2 -> 6: row 12 left out
        self.pool_e = nn.MaxPool2d(2, 2)
        with torch.no_grad():
            self.b.bias[2] = -100.0  # a channel always negative

    def forward(self, x):
        self.odd.flag = bool(x[:, 0, 0, 0].amax() > 0.5)  # data-dependent: the marked images
        y = self.pool_a(self.relu_a(self.a(x)))
        y = self.pool_b(self.odd(self.relu_b(self.b(y))))
        y = self.pool_c(self.c(y))
        y = self.pool_d(self.relu_d(self.d(y)))
        z = self.pool_e(self.e(x))
        return y.flatten(1).sum(1, keepdim=True) + z.flatten(1).sum(1, keepdim=True)


LAYERS = ["a", "b", "c", "d", "e"]


@pytest.mark.parametrize("batch_size", [4, 16])
def test_a_layer_read_from_its_pool_gives_the_reference_atlas(batch_size, counted):
    seen, plans = counted
    torch.manual_seed(4)
    data = torch.randn(60, 3, 15, 15)
    model = PoolNet().eval()
    atlas = zf.mine(model, data, layers=LAYERS, k=3, batch_size=batch_size, progress=False)
    assert_same_atlas(atlas, reference_mine(model, data, LAYERS, 3, batch_size))
    # planned: a (covering pool after its ReLU), b (ceil mode), d; not c (gaps), not e (a
    # row left out); b is never read from its pool: one channel's bound stays negative
    assert plans == [
        {
            "a": ("pool_a", ("relu_a",)),
            "b": ("pool_b", ("relu_b",)),
            "d": ("pool_d", ("relu_d",)),
        }
    ]
    assert seen[6] > 0 and seen[4] > 0 and seen[5] == 0


def test_a_forward_that_leaves_the_learnt_path_runs_again_without_the_plan(counted, monkeypatch):
    seen, plans = counted
    torch.manual_seed(5)
    data = torch.randn(48, 3, 15, 15)
    data[:, 0, 0, 0] = 0.0
    data[30, 0, 0, 0] = 3.0  # image 30's batch takes Odd's in-place path
    model = PoolNet(odd=True).eval()
    with torch.no_grad():
        model.b.bias[2] = 0.5  # b's bounds are all >= 0: it is read from its pool
    dropped = []
    drop = mining._PoolPlan.drop
    monkeypatch.setattr(
        mining._PoolPlan,
        "drop",
        lambda self, layers: (dropped.append(list(layers)), drop(self, layers)),
    )
    atlas = zf.mine(model, data, layers=LAYERS, k=3, batch_size=8, progress=False)
    assert_same_atlas(atlas, reference_mine(model, data, LAYERS, 3, 8))
    assert plans[0]["b"] == ("pool_b", ("relu_b",))
    assert seen[5] > 0  # b was read from its pool before image 30's batch
    assert dropped == [["b"]]  # that batch ran again without the plan; b left it
    b_reads = seen[5]
    atlas2 = zf.mine(model, data[:24], layers=["b", "c"], k=3, batch_size=8, progress=False)
    assert seen[5] > b_reads  # a new run learns again (the pool runs before the stop, at c)
    assert_same_atlas(atlas2, reference_mine(model, data[:24], ["b", "c"], 3, 8))


def test_shared_outputs_and_other_relus_are_not_planned(counted):
    _, plans = counted
    torch.manual_seed(6)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(inplace=True),  # mined too: the conv's output object is the ReLU's
        nn.MaxPool2d(2),
        nn.Conv2d(4, 4, 3, padding=1),
        nn.ReLU(),  # out of place: the pool reads another tensor
        nn.MaxPool2d(2),
        nn.Conv2d(4, 4, 3, padding=1),
        nn.ReLU6(inplace=True),  # changes the maxima above 6
        nn.MaxPool2d(2),
    ).eval()
    data = torch.randn(20, 3, 16, 16) * 50
    layers = ["0", "1", "3", "6"]
    atlas = zf.mine(model, data, layers=layers, k=2, batch_size=5, progress=False)
    assert_same_atlas(atlas, reference_mine(model, data, layers, 2, 5))
    assert plans == [{}]


def test_capture_reports_watched_calls_without_recording_them():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(inplace=True), nn.MaxPool2d(2)).eval()
    calls = []
    cap = Capture(
        model,
        ["0"],
        switches=False,
        watch=["1", "2"],
        on_watch=lambda name, inputs, output: calls.append((name, tuple(output.shape))),
    )
    with cap, torch.no_grad():
        model(torch.randn(2, 3, 8, 8))
    assert calls == [("1", (2, 4, 6, 6)), ("2", (2, 4, 3, 3))]
    assert list(cap.activations) == ["0"] and cap.calls == {"0": 1}
    for h in [*model[1]._forward_hooks, *model[2]._forward_hooks]:
        pytest.fail(f"a hook left behind: {h}")
    with pytest.raises(ValueError, match="on_watch"):
        Capture(model, ["0"], watch=["1"])
    with pytest.raises(ValueError, match="layers|watch|'nope'"):
        Capture(model, ["0"], watch=["nope"], on_watch=print)
