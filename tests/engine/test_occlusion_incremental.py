"""Incremental occlusion (only the square's forward cone recomputed) against the naive sweep."""

from __future__ import annotations

import gc
import logging
import sys
import threading
import weakref

import pytest
import torch
from torch import nn

from tests.models import (
    FunctionalNet,
    assert_unchanged,
    snapshot,
    tiny_2x2,
    tiny_zf,
    torchvision_model,
)
from zfwidgets.engine import incremental
from zfwidgets.engine.occlusion import occlusion

occ_mod = sys.modules["zfwidgets.engine.occlusion"]  # the package exports a function by that name


def naive(model, x, **kwargs):
    """The sweep with every occluded image through the whole model."""
    saved = occ_mod.incremental_plan
    occ_mod.incremental_plan = lambda *a, **k: None
    try:
        return occlusion(model, x, **kwargs)
    finally:
        occ_mod.incremental_plan = saved


class Spy:
    """Records the plans the sweep builds (None: the naive sweep)."""

    def __init__(self, monkeypatch):
        self.plans = []
        real = incremental.plan

        def spy(*args, **kwargs):
            p = real(*args, **kwargs)
            self.plans.append(p)
            return p

        monkeypatch.setattr(occ_mod, "incremental_plan", spy)


def assert_same(res, ref):
    torch.testing.assert_close(res.activation, ref.activation, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(res.probability, ref.probability, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(res.top_probability, ref.top_probability, rtol=1e-5, atol=1e-6)
    assert torch.equal(res.top_class, ref.top_class)
    assert torch.equal(res.channel, ref.channel) and torch.equal(res.target, ref.target)


def check(model, x, monkeypatch, *, incremental_path=True, **kwargs):
    spy = Spy(monkeypatch)
    before = snapshot(model)
    x0 = x.clone()
    res = occlusion(model, x, **kwargs)
    assert torch.equal(x, x0)
    assert_unchanged(model, before)
    (p,) = spy.plans
    if incremental_path:
        assert p is not None
        assert "window" in p.modes.values()  # some layer really ran on rectangles
    else:
        assert p is None
    ref = naive(model, x, **kwargs)
    # the three maps vary: the comparison is not between flat maps
    assert ref.probability.std() > 0 and ref.activation.std() > 0
    assert_same(res, ref)
    return res, p


@pytest.mark.parametrize("inplace", [True, False])
def test_tiny_zf_lrn_overlapping_pools(monkeypatch, inplace):
    model = tiny_zf(inplace=inplace)
    torch.manual_seed(3)
    x = torch.randn(2, 3, 32, 32) * 2
    check(model, x, monkeypatch, window=8, stride=5)  # flush last position
    check(model, x, monkeypatch, window=(5, 9), stride=(3, 4), batch_size=7)
    check(model, x, monkeypatch, window=8, stride=4, layer="4", channel=[1, 5], fill=0.0)


def test_tiny_2x2_dilation_and_strided_conv(monkeypatch):
    model = tiny_2x2()
    torch.manual_seed(4)
    x = torch.randn(1, 3, 32, 32)
    check(model, x, monkeypatch, window=6, stride=3)


def test_alexnet(monkeypatch):
    model = torchvision_model("alexnet")
    torch.manual_seed(5)
    x = torch.randn(1, 3, 127, 127)
    _, p = check(model, x, monkeypatch, window=24, stride=20, batch_size=9)
    assert p.modes["features_0"] == "window"  # the first convolution on rectangles
    assert p.modes["classifier_6"] == "full"


def test_vgg_with_batchnorm(monkeypatch):
    model = torchvision_model("vgg11_bn")
    torch.manual_seed(6)
    x = torch.randn(1, 3, 64, 64)
    _, p = check(model, x, monkeypatch, window=16, stride=16)
    assert p.modes["features_1"] == "window"  # BatchNorm2d


def test_resnet_adds(monkeypatch):
    model = torchvision_model("resnet18")
    torch.manual_seed(7)
    x = torch.randn(1, 3, 64, 64)
    _, p = check(model, x, monkeypatch, window=16, stride=16)
    assert p.modes["add"] == "window"  # the first residual add on rectangles


def test_functional_relu_in_a_custom_forward_falls_back(monkeypatch, caplog):
    model = FunctionalNet()
    torch.manual_seed(8)
    x = torch.randn(1, 3, 24, 24)
    with caplog.at_level(logging.DEBUG, logger="zfwidgets.engine.occlusion"):
        check(model, x, monkeypatch, incremental_path=False, window=8, stride=4)
    assert "full forwards" in caplog.text and "FunctionalNet" in caplog.text


def test_unknown_operation_computed_in_full_from_there(monkeypatch, caplog):
    # ZeroPad2d and an upsampling the geometry does not follow: full maps from there on.
    torch.manual_seed(9)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1),
        nn.ReLU(),
        nn.ZeroPad2d((1, 0, 2, 0)),
        nn.Conv2d(4, 4, 3),
        nn.Upsample(scale_factor=2),
        nn.Conv2d(4, 6, 3, stride=2, padding=1),
        nn.Flatten(),
        nn.Linear(6 * 32 * 31, 5),
    ).eval()
    x = torch.randn(1, 3, 32, 32)
    with caplog.at_level(logging.DEBUG, logger="zfwidgets.engine.occlusion"):
        _, p = check(model, x, monkeypatch, window=6, stride=6, layer="5")
    assert p.modes["_0"] == "window" and p.modes["_2"] == "full"
    assert "full maps assembled for _2" in caplog.text


def test_untraceable_model_falls_back(monkeypatch, caplog):
    class Branchy(nn.Module):  # data-dependent control flow: torch.fx cannot trace it
        def __init__(self):
            super().__init__()
            self.net = tiny_zf()

        def forward(self, x):
            return self.net(x) if x.sum() > -1e9 else -self.net(x)

    # A torch-only model whose forward cannot be traced: torch.nn.Module subclasses in a trusted
    # module are rare, so patch the trust check to reach the tracer.
    monkeypatch.setattr(incremental, "_untrusted", lambda model: None)
    torch.manual_seed(10)
    x = torch.randn(1, 3, 32, 32)
    with caplog.at_level(logging.DEBUG, logger="zfwidgets.engine.occlusion"):
        check(Branchy(), x, monkeypatch, incremental_path=False, window=8, stride=8)
    assert "cannot trace" in caplog.text


# -- threads: trace on the main thread, sweep anywhere ------------------------------------------


def in_thread(fn):
    """fn() run in a new thread: its result (or it raises its exception here)."""
    out = {}

    def run():
        try:
            out["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised on the calling thread
            out["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if "error" in out:
        raise out["error"]
    return out["value"]


def test_a_worker_sweeps_incrementally_once_the_main_thread_traced(monkeypatch, caplog):
    model = tiny_zf()
    torch.manual_seed(11)
    x = torch.randn(1, 3, 32, 32)
    ref = naive(model, x, window=8, stride=4)
    spy = Spy(monkeypatch)
    before = snapshot(model)
    # not traced beforehand: a worker may not trace, so it sweeps naively
    with caplog.at_level(logging.DEBUG, logger="zfwidgets.engine.occlusion"):
        res = in_thread(lambda: occlusion(model, x, window=8, stride=4))
    assert spy.plans == [None] and "not on the main thread" in caplog.text
    assert_same(res, ref)
    # traced here, on the main thread: the worker finds the graph
    assert occ_mod.prepare(model) is True
    assert_unchanged(model, before)
    assert not [k for k in vars(model) if k.startswith("_tensor_constant")]
    res = in_thread(lambda: occlusion(model, x, window=8, stride=4))
    assert spy.plans[-1] is not None and "window" in spy.plans[-1].modes.values()
    assert_same(res, ref)
    assert_unchanged(model, before)
    # the module structure changed since the trace: the worker does not use the old graph
    model[1] = nn.Tanh()
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="zfwidgets.engine.occlusion"):
        res = in_thread(lambda: occlusion(model, x, window=8, stride=4))
    assert spy.plans[-1] is None and "not on the main thread" in caplog.text
    assert_same(res, naive(model, x, window=8, stride=4))


def test_prepare_off_the_main_thread_traces_nothing():
    model = tiny_zf()
    assert in_thread(lambda: occ_mod.prepare(model)) is False
    assert occ_mod.prepare(model) is True
    assert in_thread(lambda: occ_mod.prepare(model)) is True  # remembered


def test_remembered_graphs_do_not_keep_the_model_alive():
    model = tiny_zf()
    assert occ_mod.prepare(model)
    ref = weakref.ref(model)
    del model
    gc.collect()
    assert ref() is None


def test_tracing_is_invisible_to_other_threads(monkeypatch):
    # While the main thread traces, another thread runs a model: with fx's patches of
    # nn.Module.__call__ / __getattr__ in place, its modules still run as plain modules.
    other = tiny_zf()
    torch.manual_seed(12)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = other(x)
    original_call = nn.Module.__call__
    seen = {}

    def use_other():
        seen["patched"] = nn.Module.__call__ is not original_call
        with torch.no_grad():
            seen["out"] = other(x)
        seen["weight"] = other[0].weight

    class Pausing(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = tiny_zf()

        def forward(self, inp):
            in_thread(use_other)  # mid-trace
            return self.net(inp)

    monkeypatch.setattr(incremental, "_untrusted", lambda model: None)
    traced = incremental.trace(Pausing())
    assert traced is not None
    assert seen["patched"]  # the test did run the other model under fx's patches
    assert isinstance(seen["out"], torch.Tensor) and torch.equal(seen["out"], expected)
    assert isinstance(seen["weight"], nn.Parameter)
    # the graph holds the traced model's calls only
    called = [n.target for n in traced.graph.nodes if n.op == "call_module"]
    assert called and all(t.startswith("net.") for t in called)
    assert nn.Module.__call__ is original_call


def test_chunk_memo_written_from_a_worker_thread(tiny_chunks):
    model, x = tiny_chunks
    assert occ_mod.prepare(model)  # both sweeps below incremental: one memo key
    res = in_thread(lambda: occlusion(model, x, window=4, stride=2))  # 15 x 15 positions
    (size,) = occ_mod._CHUNKS._sizes[model].values()  # one key: this input and window
    assert size in occ_mod.CHUNK_TRIALS and res.batch_size == size
    # remembered: the next sweep, here on the main thread, runs at that size from the start
    again = occlusion(model, x, window=4, stride=2)
    assert again.batch_size == size
    assert_same(again, res)


@pytest.fixture
def tiny_chunks():
    """A model and an image with enough positions (15 x 15) for the chunk-size trials."""
    model = tiny_zf()
    torch.manual_seed(13)
    return model, torch.randn(1, 3, 32, 32)


class Shifted(nn.Module):
    """A forward that makes a tensor: fx keeps it as a constant attribute of the traced root."""

    def __init__(self):
        super().__init__()
        self.net = tiny_zf()

    def forward(self, x):
        return self.net(x + torch.linspace(-1.0, 1.0, 3).reshape(1, 3, 1, 1))


@pytest.mark.parametrize("copyable", [True, False])
def test_tensor_constants_of_the_trace_stay_off_the_model(monkeypatch, copyable):
    monkeypatch.setattr(incremental, "_untrusted", lambda model: None)
    if not copyable:  # the trace runs on the model itself: what fx adds is taken off after
        monkeypatch.setattr(incremental, "module_tree_copy", lambda model: model)
    model = Shifted()
    names = set(vars(model))
    traced = incremental.trace(model)
    assert traced is not None and list(traced.constants) == ["_tensor_constant0"]
    assert set(vars(model)) == names
    torch.manual_seed(14)
    x = torch.randn(1, 3, 32, 32)
    check(model, x, monkeypatch, window=8, stride=4)
