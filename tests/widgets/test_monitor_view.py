"""The TrainingMonitor widgets without a kernel: live view, evolution slider, comparison."""

from __future__ import annotations

import asyncio
import threading
import warnings

import pytest
import torch
import torch.nn.functional as F
from models import tiny_zf

from zfwidgets.base.codec import decode
from zfwidgets.engine.filters import DEAD, DOMINATING
from zfwidgets.monitor import TrainingMonitor, compare
from zfwidgets.widgets.monitor_view import MonitorView, snapshot_frame


def _train(model, monitor, steps: int, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    for _ in range(steps):
        x = torch.randn(8, 3, 32, 32, generator=g)
        y = torch.randint(0, 10, (8,), generator=g)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        monitor.step(loss=loss)


@pytest.fixture
def run():
    model = tiny_zf().train()
    probe = torch.randn(16, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    mon = TrainingMonitor(
        model, probe, every=4, snapshot_every=8, budget=1.0, units={"4": [0]}, name="a"
    )
    return model, mon


def test_live_view_follows_training(run, frontend):
    model, mon = run
    view = mon.widget
    assert isinstance(view, MonitorView) and mon.widget is view
    assert view.filters is None  # no snapshot yet
    fe = frontend(view.status)
    _train(model, mon, 8)
    assert "step <span class='zf-monitor-step'>8</span>" in view.status.value
    assert fe.updates()  # the status was sent while training ran
    names = [t.name for t in view.figure.data]
    assert names == ["loss (raw)", "loss"]
    assert list(view.figure.data[0].x) == list(range(1, 9))
    assert view.filters is not None and "step 8" in view.filters.caption
    assert view.filters.frame["shape"] == list(model[0].weight.shape)  # the recorded filters
    first = bytes(view.filters.frame["atlas"]["view"])
    _train(model, mon, 8, seed=1)
    mon.epoch_end(val_loss=2.0)
    assert "epoch 1" in view.filters.caption
    assert bytes(view.filters.frame["atlas"]["view"]) != first  # the filters changed
    assert [t.name for t in view.figure.data][-1] == "val_loss"
    assert len(view.top9.children) == 1


def test_display_bundle(run):
    _, mon = run
    bundle = mon._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle


def test_frame_flags(run):
    model, mon = run
    with torch.no_grad():
        model[0].weight[2] *= 100
        model[0].bias[6] = -1e4
    mon.epoch_end()
    frame = snapshot_frame(mon.snapshots[-1])
    flags = decode(frame["flags"])
    assert flags[2] & DOMINATING and flags[6] & DEAD and frame["dead_known"]
    assert decode(frame["atlas"]).dtype.name == "uint8"


def test_errors_shown_in_widget(frontend):
    model = tiny_zf()
    mon = TrainingMonitor(model, torch.randn(4, 3, 32, 32), every=1, snapshot_every=1)
    mon._probe = torch.randn(4, 7, 32, 32)  # refused when made, so broken afterwards
    view = mon.widget
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _train(model, mon, 3)
    assert "snapshot failed" in view.alerts.value and "zf-monitor-error" in view.alerts.value


def test_broken_view_does_not_break_training(run):
    model, mon = run
    mon.add_listener(lambda m, s: 1 / 0)
    with pytest.warns(RuntimeWarning, match="widget update failed"):
        _train(model, mon, 5)
    assert mon.step_count == 5


def test_evolution_slider_over_snapshots(run):
    model, mon = run
    _train(model, mon, 16)
    mon.epoch_end()
    box = mon.evolution()
    labels = [s.label for s in mon.snapshots]
    assert box.slider.labels == labels and box.grid.checkpoint_labels == labels
    assert box.slider.index == len(labels) - 1
    box.slider.index = 0
    assert box.grid.checkpoint == 0 and labels[0] in box.grid.caption
    assert bytes(box.grid.frame["atlas"]["view"]) == bytes(
        snapshot_frame(mon.snapshots[0])["atlas"]["view"]
    )
    assert len(box.top9.children) == 1


def test_evolution_needs_snapshots():
    mon = TrainingMonitor(tiny_zf(), every=1, snapshot_every=None)
    with pytest.raises(ValueError, match="no snapshots"):
        mon.evolution()


def test_compare_runs_and_loaded_run(run, tmp_path):
    model, mon = run
    _train(model, mon, 8)
    mon.epoch_end(val_loss=1.0)
    path = tmp_path / "a.safetensors"
    mon.save(path)
    other = TrainingMonitor.load(path)
    other.name = "b"
    box = compare(mon, other)
    names = [t.name for t in box.figure.data]
    assert names == ["a: loss", "a: val_loss", "b: loss", "b: val_loss"]
    dashes = {t.name: t.line.dash for t in box.figure.data}
    assert dashes["a: loss"] != dashes["b: loss"]
    assert other.widget.filters is not None  # a loaded run displays its last snapshot
    with pytest.raises(ValueError, match="at least two"):
        compare(mon)


def test_diverged_run_sends_gaps_and_warns():
    model = tiny_zf()
    mon = TrainingMonitor(model, every=1, snapshot_every=None)
    view = mon.widget
    mon.step(loss=1.0)
    mon.step(loss=float("nan"))
    with torch.no_grad():
        model[0].weight[1] = float("nan")
    mon.epoch_end(val_loss=float("inf"))
    ys = {t.name: list(t.y) for t in view.figure.data}
    assert ys["loss (raw)"] == [1.0, None] and ys["val_loss"] == [None]
    assert any("non-finite" in w for w in mon.warnings)


def test_the_filters_come_from_the_snapshots_weights_or_tiles(run):
    """No model behind the grids: the recorded weights, or the stored tiles of a run kept
    without weights (keep_weights=False), show the same tiles the snapshot holds."""
    model, mon = run
    _train(model, mon, 8)
    lean = TrainingMonitor(model, every=4, snapshot_every=8, keep_weights=False, name="b")
    _train(model, lean, 16, seed=1)
    for m in (mon, lean):
        view = m.widget
        s = m.snapshots[-1]
        assert view.filters._model is None
        assert bytes(view.filters.frame["atlas"]["view"]) == bytes(
            snapshot_frame(s)["atlas"]["view"]
        )
        assert s.label in view.filters.caption
    assert lean.snapshots[-1].weight is None
    box = lean.evolution()
    box.slider.index = 0
    assert lean.snapshots[0].label in box.grid.caption
    assert bytes(box.grid.frame["atlas"]["view"]) == bytes(
        snapshot_frame(lean.snapshots[0])["atlas"]["view"]
    )
    assert len(compare(mon, lean).children[1].children) == 2


def _trait_threads(monkeypatch) -> list[tuple[str, str, int]]:
    """(widget class, trait, thread id) of every widget trait change from now on."""
    import ipywidgets as W

    changes: list[tuple[str, str, int]] = []
    notify = W.Widget.notify_change

    def spy(self, change):
        changes.append((type(self).__name__, change["name"], threading.get_ident()))
        return notify(self, change)

    monkeypatch.setattr(W.Widget, "notify_change", spy)
    return changes


def test_training_in_a_thread_sets_traits_only_on_the_loop_thread(run, monkeypatch):
    """As in a kernel: the view is made where the loop runs, training steps the monitor from
    a thread; every trait change of the view and its children happens on the loop's thread."""
    model, mon = run
    changes = _trait_threads(monkeypatch)

    async def scenario():
        view = mon.widget  # displayed in a cell: made on the kernel's thread
        trainer = threading.Thread(target=_train, args=(model, mon, 16))
        trainer.start()
        while trainer.is_alive():
            await asyncio.sleep(0.01)
        mon.epoch_end(val_loss=1.0)  # from the loop's thread too: applied at once
        for _ in range(3000):
            if "'zf-monitor-step'>16<" in view.status.value and not view.filters._runner.busy:
                break
            await asyncio.sleep(0.01)
        return view, threading.get_ident()

    view, loop_ident = asyncio.run(scenario())
    assert "'zf-monitor-step'>16<" in view.status.value
    assert (
        "epoch 1" in view.filters.caption and [t.name for t in view.figure.data][-1] == "val_loss"
    )
    off_loop = [c for c in changes if c[2] != loop_ident]
    assert off_loop == []
    changed = {(cls, name) for cls, name, _ in changes}
    assert {("HTML", "value"), ("FilterGrid", "frame")} <= changed


def test_training_in_a_thread_without_a_loop_updates_inline(run, monkeypatch):
    """Plain Python (no loop anywhere): the update is applied inline, in the thread that
    steps the monitor, so the view is current as soon as the step returns."""
    model, mon = run
    view = mon.widget
    changes = _trait_threads(monkeypatch)
    seen = []

    def train():
        _train(model, mon, 8)
        seen.append(view.status.value)

    trainer = threading.Thread(target=train)
    trainer.start()
    trainer.join()
    assert "'zf-monitor-step'>8<" in seen[0] and view.filters is not None
    assert {ident for _, _, ident in changes} == {trainer.ident}
