"""OcclusionMap without a kernel: the maps sent are zf.occlusion's, views switch in the front
end, a new image recomputes (in the background when a loop runs, the newer request winning)."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import threading
import time

import numpy as np
import pytest
import torch
import traitlets
from ipywidgets.widgets.widget import _remove_buffers
from models import assert_unchanged, snapshot, tiny_zf
from torch import nn

import zfwidgets as zf
from zfwidgets.base.codec import decode
from zfwidgets.base.images import display_image, to_rgba
from zfwidgets.widgets.occlusion_map import OCCLUSION_VIEWS, OcclusionMap, _shadow

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
EVIL = "<img src=x onerror=alert(1)>"


def maps_of(w: OcclusionMap) -> dict[str, np.ndarray]:
    return {
        k: decode(w.frame[k])
        for k in ("activation", "probability", "top_class", "top_probability", "rows", "cols")
    }


def assert_maps_equal(w: OcclusionMap, res: zf.OcclusionResult) -> None:
    sent = maps_of(w)
    for name in ("activation", "probability", "top_probability"):
        assert sent[name].dtype == np.float32
        # to float precision: a wrapped model is swept naively, a bare one incrementally
        np.testing.assert_allclose(sent[name], getattr(res, name)[0].numpy(), rtol=1e-5, atol=1e-6)
    assert sent["top_class"].dtype == np.int32
    np.testing.assert_array_equal(sent["top_class"], res.top_class[0].numpy())
    np.testing.assert_array_equal(sent["rows"], res.rows.numpy())
    np.testing.assert_array_equal(sent["cols"], res.cols.numpy())
    assert w.frame["window"] == list(res.window) and w.frame["stride"] == list(res.stride)
    assert w.frame["layer"] == res.layer
    assert w.frame["channel"] == int(res.channel[0]) and w.frame["target"] == int(res.target[0])


def test_maps_sent_are_zf_occlusion(model, image):
    w = OcclusionMap(model, image, classes=[f"c{i}" for i in range(10)], mean=MEAN, std=STD)
    # defaults: window ~ 1/7 of 32 -> 5, stride ~ 5 / 4 -> 1
    assert w.frame["window"] == [5, 5] and w.frame["stride"] == [1, 1]
    res = zf.occlusion(model, image[None], window=5, stride=1, batch_size=64)
    assert_maps_equal(w, res)
    assert w.result is not None and w.result.layer == res.layer == "7"
    torch.testing.assert_close(w.result.probability, res.probability, rtol=1e-5, atol=1e-6)
    assert w.frame["baseline"]["probability"] == pytest.approx(float(res.baseline_probability[0]))
    assert w.frame["baseline"]["top_class"] == int(res.baseline_top_class[0])
    # the image is shown un-normalised, as uint8 RGBA
    img = decode(w.frame["image"])
    np.testing.assert_array_equal(img, to_rgba(display_image(image[None], MEAN, STD))[0].numpy())
    assert w.frame["size"] == [32, 32]
    assert not w.busy and w.progress == 1.0 and w.error == ""
    assert w.view == "probability"
    assert [v["name"] for v in w.views] == list(OCCLUSION_VIEWS)
    target = int(res.target[0])
    assert f"(b) c{target}: " in w.caption and "28×28 positions" in w.caption


def test_explicit_arguments_are_passed_through(model, image):
    w = OcclusionMap(
        model, image, window=(8, 6), stride=(3, 2), target=4, layer="4", channel=2, fill=0.5
    )
    res = zf.occlusion(
        model,
        image[None],
        window=(8, 6),
        stride=(3, 2),
        target=4,
        layer="4",
        channel=2,
        fill=0.5,
        batch_size=64,
    )
    assert_maps_equal(w, res)
    assert w.frame["target"] == 4 and w.frame["channel"] == 2 and w.target == 4


def test_default_window_and_stride_follow_the_image_size(model):
    x = torch.randn(3, 28, 42)
    w = OcclusionMap(model, x)
    assert w.frame["window"] == [4, 4] and w.frame["stride"] == [1, 1]  # 28 / 7, 4 / 4
    assert decode(w.frame["probability"]).shape == (25, 39)
    big = OcclusionMap(model, torch.randn(3, 70, 70), stride=7)
    assert big.frame["window"] == [10, 10] and big.frame["stride"] == [7, 7]


def test_state_is_small_json_plus_binary_buffers(model, image):
    w = OcclusionMap(model, image, window=8, stride=4)
    state, paths, buffers = _remove_buffers(w.get_state())
    for name in ("image", "activation", "probability", "top_class", "top_probability"):
        assert ["frame", name, "view"] in paths
    text = json.dumps({k: v for k, v in state.items() if k not in ("_esm", "_css")})
    assert len(text) < 2500  # no base64, no number lists
    assert "zf-occlusion" in str(w._esm)
    # the whole frame is one host buffer: one device-to-host copy
    frame_buffers = {id(b.obj) for p, b in zip(paths, buffers) if p[0] == "frame"}
    assert len(frame_buffers) == 1


def test_toggling_the_view_is_handled_in_the_front_end(model, image, frontend):
    w = OcclusionMap(model, image, window=8, stride=4)
    fe = frontend(w)
    before = bytes(w.frame["probability"]["view"])
    for view in ("activation", "top_class", "probability"):
        fe.set(view=view)
        assert w.view == view
    # the maps were all sent once; a toggle sends nothing back
    assert fe.updates() == []
    assert bytes(w.frame["probability"]["view"]) == before
    with pytest.raises(traitlets.TraitError, match="view: expected one of"):
        w.view = "saliency"
    with pytest.raises(ValueError, match="view: expected one of"):
        OcclusionMap(model, image, view="gradcam")
    fe.set(opacity=0.25)
    assert w.opacity == 0.25
    with pytest.raises(traitlets.TraitError, match="opacity"):
        w.opacity = 1.5


def test_replacing_the_image_recomputes(model, image, frontend):
    w = OcclusionMap(model, image, window=8, stride=4)
    fe = frontend(w)
    flipped = torch.flip(image, [2])
    w.image = flipped
    assert torch.equal(w.image[0], flipped)
    assert_maps_equal(w, zf.occlusion(model, flipped[None], window=8, stride=4, batch_size=64))
    assert not w.busy and w.progress == 1.0
    # the front end saw the busy state, then the new maps
    sent = [m["state"] for m, _ in fe.sent if m["method"] == "update"]
    assert sent[0]["busy"] is True and "probability" not in sent[0]["frame"]
    assert sent[-1]["busy"] is False and "probability" in sent[-1]["frame"]
    # set_image can change the target; later calls keep it
    w.set_image(image, target=3)
    assert w.frame["target"] == 3
    w.set_image(flipped)
    assert w.frame["target"] == 3
    w.set_image(flipped, target=None)
    res = zf.occlusion(model, flipped[None], window=8, stride=4, batch_size=64)
    assert w.frame["target"] == int(res.baseline_top_class[0])
    # a bad image is refused before anything changes
    shown = bytes(w.frame["probability"]["view"])
    with pytest.raises(ValueError, match="takes 3 channels"):
        w.image = image[:1]
    assert bytes(w.frame["probability"]["view"]) == shown and not w.busy


def test_class_names_are_sent_verbatim(model, image):
    names = [f"class {i}" for i in range(10)]
    names[3] = EVIL
    w = OcclusionMap(model, image, window=8, stride=4, classes=names, target=3)
    assert w.classes == names  # the front end sets them as textContent
    assert EVIL in w.caption


def test_bad_input_at_construction(model, image):
    with pytest.raises(ValueError, match=r"one image .* got shape \(2, 3, 32, 32\)"):
        OcclusionMap(model, torch.stack([image, image]))
    with pytest.raises(TypeError, match="floating-point"):
        OcclusionMap(model, (image * 100).to(torch.uint8))
    with pytest.raises(ValueError, match="takes 3 channels, got 1"):
        OcclusionMap(model, image[:1])
    with pytest.raises(TypeError, match="torch.Tensor"):
        OcclusionMap(model, image.numpy())
    with pytest.raises(ValueError, match=r"window: expected a square no larger than the image"):
        OcclusionMap(model, image, window=33)
    with pytest.raises(ValueError, match="window"):
        OcclusionMap(model, image, window=0)
    with pytest.raises(ValueError, match="classes: the model has 10 outputs, got 9"):
        OcclusionMap(model, image, classes=[str(i) for i in range(9)])
    with pytest.raises(TypeError, match="classes"):
        OcclusionMap(model, image, classes="cat")
    with pytest.raises(ValueError, match=r"no module named '8x'.*close matches: '8'"):
        OcclusionMap(model, image, layer="8x")
    with pytest.raises(ValueError, match=r"target: the model has 10 classes"):
        OcclusionMap(model, image, target=10)
    with pytest.raises(ValueError, match="target"):
        OcclusionMap(model, image, target=-1)
    with pytest.raises(ValueError, match=r"channel: '7' has 16 feature maps"):
        OcclusionMap(model, image, channel=16)
    with pytest.raises(ValueError, match="fill"):
        OcclusionMap(model, image, fill=[0.0, 0.0])
    with pytest.raises(ValueError, match="mean and std"):
        OcclusionMap(model, image, mean=MEAN)
    with pytest.raises(ValueError, match="batch_size"):
        OcclusionMap(model, image, batch_size=0)
    with pytest.raises(TypeError, match="torch.nn.Module"):
        OcclusionMap("alexnet", image)
    headless = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    with pytest.raises(ValueError, match="logits"):
        OcclusionMap(headless, image)


def test_show_map_adds_a_view(model, image, frontend):
    w = OcclusionMap(model, image, window=8, stride=4)
    fe = frontend(w)
    cam = torch.rand(1, 1, 7, 9)
    w.show_map("grad-cam", cam, label="Grad-CAM")
    assert w.view == "grad-cam"
    assert w.views[-1] == {
        "name": "grad-cam",
        "label": "Grad-CAM",
        "colormap": "inferno",
        "kind": "map",
    }
    sent = decode(w.overlays["grad-cam"])
    assert sent.dtype == np.float32 and sent.shape == (7, 9)
    np.testing.assert_array_equal(sent, cam[0, 0].numpy())
    assert {"overlays", "views", "view"} <= set(fe.updates())
    with pytest.raises(ValueError, match="occlusion views"):
        w.show_map("probability", cam)
    with pytest.raises(ValueError, match=r"\(h, w\) map"):
        w.show_map("bad", torch.rand(2, 3, 4))
    with pytest.raises(TypeError, match="floating-point"):
        w.show_map("bad", torch.ones(3, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="colormap"):
        w.show_map("bad", cam, colormap="rainbow")
    w.show_map("saliency", torch.rand(32, 32), show=False)
    assert w.view == "grad-cam" and len(w.views) == 5
    w.remove_map("grad-cam")
    assert w.view == "probability" and [v["name"] for v in w.views][-1] == "saliency"
    # a new image drops the maps made for the old one
    w.image = torch.flip(image, [1])
    assert w.overlays == {} and len(w.views) == 3


class SlowBumper(nn.Module):
    """Runs ``inner``; calls ``on_forward(number of the call)`` first (to simulate a newer
    request arriving mid-sweep) and sleeps a little (so a sweep takes a while)."""

    def __init__(self, inner: nn.Module, on_forward, delay: float = 0.0):
        super().__init__()
        self.inner = inner
        self.on_forward = on_forward
        self.delay = delay

    def forward(self, x):
        if x.device.type == "meta":  # a shape-only pass of the checks: no data runs
            return self.inner(x)
        self.on_forward()
        if self.delay:
            time.sleep(self.delay)
        return self.inner(x)


def test_a_superseded_sweep_stops_at_its_next_forward(model, image):
    calls = []
    holder: dict = {}

    def on_forward():
        calls.append(1)
        if holder.get("armed") and len(calls) == 4:
            holder["w"]._runner.supersede()  # what a newer set_image does

    wrapped = SlowBumper(model, on_forward)
    w = OcclusionMap(wrapped, image, window=8, stride=2, batch_size=4)
    holder.update(w=w, armed=True)
    calls.clear()
    first = bytes(w.frame["image"]["view"])
    w.set_image(torch.flip(image, [2]))
    job = w._job
    # checks' forward, baseline, chunk 1, chunk 2 (which bumps); chunk 3 never runs
    assert job.superseded and not job.delivered and job.frame is None
    assert len(calls) == 4 and job.forwards == 1 + 4 + 4  # of 1 + 13 * 13
    assert w.busy  # the newer request (here: none) owns the widget now
    assert bytes(w.frame["image"]["view"]) != first
    for m in model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks


def test_background_sweep_newer_image_supersedes(model, image):
    flipped = torch.flip(image, [2])
    events = []

    async def scenario():
        w = OcclusionMap(model, image, window=8, stride=2, batch_size=8)
        # a loop runs: the constructor returned at once with the image and the busy state
        assert w.busy and w.progress == 0.0 and w.result is None
        assert "probability" not in w.frame and decode(w.frame["image"]).shape == (32, 32, 4)
        first = w._job
        w.observe(lambda c: events.append("probability" in c.new), "frame")
        w.image = flipped  # supersedes the first sweep
        deadline = time.monotonic() + 30
        while w.busy and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        return w, first

    w, first = asyncio.run(scenario())
    assert not w.busy and w.progress == 1.0 and w.error == ""
    assert not first.delivered
    # the pending frame of the new image, then its maps: never the first image's maps
    assert events == [False, True]
    assert_maps_equal(w, zf.occlusion(model, flipped[None], window=8, stride=2, batch_size=8))
    assert not w._thread.is_alive() or w._thread.join(5) is None
    for m in model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks


def test_background_sweep_reports_progress_and_errors(model, image):
    wrapped = SlowBumper(model, lambda: None, delay=0.02)
    progress = []

    async def scenario():
        w = OcclusionMap(wrapped, image, window=8, stride=2, batch_size=4)
        w.observe(lambda c: progress.append(c.new), "progress")
        while w.busy:
            await asyncio.sleep(0.01)
        return w

    w = asyncio.run(scenario())
    assert progress[-1] == 1.0 and any(0 < p < 1 for p in progress), progress
    assert progress == sorted(progress)
    assert w.result is not None

    class Flaky(nn.Module):
        """Fails on batches of more than one image (the sweep), not on the first forward."""

        def __init__(self):
            super().__init__()
            self.inner = model

        def forward(self, x):
            if x.shape[0] > 1:
                raise RuntimeError("out of memory (simulated)")
            return self.inner(x)

    async def failing():
        w = OcclusionMap(Flaky(), image, window=8, stride=2, layer="inner.7")
        while w.busy:
            await asyncio.sleep(0.01)
        return w

    w = asyncio.run(failing())
    assert w.error == "RuntimeError: out of memory (simulated)" and not w.busy
    assert "probability" not in w.frame and w.result is None
    # without a loop the sweep runs in the constructor, which raises
    with pytest.raises(RuntimeError, match="simulated"):
        OcclusionMap(Flaky(), image, window=8, stride=2, layer="inner.7")


def test_wait_applies_the_result_without_the_loop(model, image):
    async def scenario():
        w = OcclusionMap(model, image, window=8, stride=4)
        assert w.busy
        assert w.wait(timeout=30)  # blocks the loop: wait applies the result itself
        assert not w.busy and w.result is not None
        return w

    w = asyncio.run(scenario())
    assert_maps_equal(w, zf.occlusion(model, image[None], window=8, stride=4, batch_size=64))


def test_sweep_does_not_disturb_forwards_in_the_notebook(image):
    """The background sweep registers hooks (and toggles in-place flags) on a copy of the module
    tree: a capture in the notebook meanwhile sees only its own forward."""
    model = tiny_zf()
    slow = SlowBumper(model, lambda: None, delay=0.01)
    expected = {}
    with zf.capture(slow, ["inner.7", "inner.1"]) as cap:
        slow(image[None])
    expected = {k: cap.activations[k].clone() for k in ("inner.7", "inner.1")}
    seen = []

    async def scenario():
        w = OcclusionMap(slow, image, window=8, stride=2, batch_size=2)
        while w.busy:
            with zf.capture(slow, ["inner.7", "inner.1"]) as c:
                out = slow(image[None])
            assert out.shape == (1, 10)
            for k, v in expected.items():
                seen.append(torch.equal(c.activations[k], v))
            await asyncio.sleep(0)
        return w

    w = asyncio.run(scenario())
    assert len(seen) > 4 and all(seen)
    assert w.result is not None and w.error == ""
    slow.delay = 0.0
    assert_maps_equal(w, zf.occlusion(slow, image[None], window=8, stride=2, batch_size=2))


def test_shadow_shares_weights_not_modules(model):
    shadow = _shadow(model)
    assert shadow is not model
    for (n1, p1), (n2, p2) in zip(model.named_parameters(), shadow.named_parameters()):
        assert n1 == n2 and p1 is p2
    assert all(a is not b for a, b in zip(model.modules(), shadow.modules()))
    lrn = [b for b in shadow.buffers()]
    assert all(any(b is mb for mb in model.buffers()) for b in lrn)


def test_model_untouched(model, image):
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = image.clone()
    w = OcclusionMap(model, x, window=8, stride=4)
    w.image = torch.flip(x, [1])
    assert model.training and all(m.training for m in model.modules())
    assert torch.equal(x, image)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    for m in model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks
    assert all(p.grad is None for p in model.parameters())


def test_the_sweep_in_the_job_runner_takes_the_incremental_path(model, image, monkeypatch, caplog):
    """torch.fx traces on the main thread only: the widget traces its module-tree copy where the
    sweep is asked for, and the worker recomputes only each square's forward cone."""
    occ_mod = sys.modules[
        "zfwidgets.engine.occlusion"
    ]  # the package exports a function by that name
    real, plans = occ_mod.incremental_plan, []

    def spy(*args, **kwargs):
        p = real(*args, **kwargs)
        plans.append((threading.current_thread() is threading.main_thread(), p is not None))
        return p

    monkeypatch.setattr(occ_mod, "incremental_plan", spy)
    before = snapshot(model)
    w = OcclusionMap(model, image, window=8, stride=4)  # no loop: the first sweep runs inline
    flipped = torch.flip(image, [2])
    with caplog.at_level(logging.DEBUG, logger="zfwidgets.engine.occlusion"):
        w.set_image(flipped)
        assert w.wait()
    assert plans == [(True, True), (False, True)]  # main thread, then the runner's worker
    assert w._thread is not threading.main_thread()
    assert "incremental occlusion: " in caplog.text and "full forwards" not in caplog.text
    monkeypatch.setattr(occ_mod, "incremental_plan", lambda *a, **k: None)
    naive = zf.occlusion(model, flipped[None], window=8, stride=4, batch_size=64)
    assert_maps_equal(w, naive)
    assert_unchanged(model, before)

    async def scenario():  # a loop runs: the constructor's sweep goes to the worker too
        monkeypatch.setattr(occ_mod, "incremental_plan", spy)
        v = OcclusionMap(model, flipped, window=8, stride=4)
        while v.busy:
            await asyncio.sleep(0.005)
        return v

    v = asyncio.run(scenario())
    assert plans[-1] == (False, True) and v.error == ""
    assert_maps_equal(v, naive)
    assert_unchanged(model, before)
