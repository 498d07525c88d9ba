"""TrainingMonitor without a kernel: recording, throttling, snapshots, saving, safety."""

from __future__ import annotations

import sys
import types
import warnings

import pytest
import torch
import torch.nn.functional as F

from zfwidgets.monitor import Curve, TrainingMonitor, smooth


def _train(model, monitor, steps: int, seed: int = 0, lr: float = 0.01) -> None:
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        x = torch.randn(8, 3, 32, 32, generator=g)
        y = torch.randint(0, 10, (8,), generator=g)
        out = model(x)
        loss = F.cross_entropy(out, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        monitor.step(loss=loss, acc=(out.argmax(1) == y).float().mean())


@pytest.fixture
def probe():
    return torch.randn(24, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def test_records_curves_and_snapshots(model, probe):
    mon = TrainingMonitor(model, probe, every=5, snapshot_every=10, budget=1.0, units={"4": [0, 1]})
    _train(model, mon, 25)
    mon.epoch_end(val_loss=1.5, val_acc=torch.tensor(0.25))
    assert mon.step_count == 25 and mon.epoch == 1
    steps, losses = mon.curves["loss"].points()
    assert steps == list(range(1, 26)) and len(losses) == 25
    assert mon.epoch_curves["val_acc"].points() == ([25], [0.25])
    # step 10, step 20 (every 10 steps), epoch 1
    assert [s.label for s in mon.snapshots] == ["step 10", "step 20", "epoch 1"]
    s = mon.snapshots[-1]
    assert s.atlas.dtype == torch.uint8 and s.atlas.shape[-1] == 4
    assert s.grid["count"] == 8 and s.rms.shape == (8,) and s.dominating.dtype == torch.bool
    assert set(s.stats) == {"1", "5", "8"}  # every ReLU
    assert s.stats["1"]["dead"].shape == (8,)
    assert set(s.top9) == {"4/0", "4/1"} and s.top9["4/0"].dtype == torch.uint8
    assert mon.errors == []


def test_step_keeps_tensors_until_refresh(model):
    mon = TrainingMonitor(model, every=1000)
    loss = torch.tensor(2.0, requires_grad=True) * 1
    mon.step(loss=loss)
    assert mon.curves == {}  # buffered, not converted
    pending = mon._pending["loss"][0]
    assert isinstance(pending, torch.Tensor) and not pending.requires_grad
    mon.refresh()
    assert mon.curves["loss"].points() == ([1], [2.0])


def test_refresh_throttled_by_time(model, monkeypatch):
    clock = [100.0]
    monkeypatch.setattr("zfwidgets.monitor.time.monotonic", lambda: clock[0])
    mon = TrainingMonitor(model, every=1.0, snapshot_every=None)
    for _ in range(50):
        mon.step(loss=1.0)
    assert mon.refreshes == 0
    clock[0] += 1.01
    mon.step(loss=1.0)
    assert mon.refreshes == 1 and len(mon.curves["loss"]) == 51
    for _ in range(10):
        clock[0] += 0.05
        mon.step(loss=1.0)
    assert mon.refreshes == 1


def test_snapshot_budget_throttles(model, probe, monkeypatch):
    clock = [0.0]
    monkeypatch.setattr("zfwidgets.monitor.time.monotonic", lambda: clock[0])
    mon = TrainingMonitor(model, probe, every=1.0, snapshot_every=1.0, budget=0.01)
    mon.step(loss=1.0)
    clock[0] = 1.5
    mon.step(loss=1.0)
    assert len(mon.snapshots) == 1
    mon._snap_wait = 10.0  # as if the snapshot took 0.1 s
    mon._last_snap_t = 1.5
    clock[0] = 5.0
    mon.step(loss=1.0)
    assert len(mon.snapshots) == 1  # 1 s period passed, the budget's 10 s has not
    clock[0] = 12.0
    mon.step(loss=1.0)
    assert len(mon.snapshots) == 2


@pytest.mark.parametrize("every", [0, -1.0, "often", True])
def test_bad_every(model, every):
    with pytest.raises(ValueError, match="every"):
        TrainingMonitor(model, every=every)


def test_every_strings(model):
    assert TrainingMonitor(model, every="100 steps")._every_n == 100
    assert TrainingMonitor(model, every="2s")._every_s == 2.0


def test_memory_flat_over_10000_steps(model):
    mon = TrainingMonitor(model, every=50, snapshot_every=None, max_points=500)
    for i in range(10_000):
        mon.step(loss=torch.tensor(float(i)))
    mon.refresh()
    c = mon.curves["loss"]
    assert len(c) <= 500 and c.stride >= 32
    assert len(mon._pending_steps) == 0
    steps, values = c.points()
    assert steps[-1] == 10_000 and values == sorted(values)  # bins stay in order


def test_pending_buffer_bounded(model):
    mon = TrainingMonitor(model, every=10**9)  # never due by steps
    for _ in range(2000):
        mon.step(loss=torch.tensor(1.0))
    assert len(mon._pending_steps) < mon._max_pending


def test_snapshots_bounded(model, probe):
    mon = TrainingMonitor(model, probe, every=1, snapshot_every=1, max_snapshots=6, budget=1.0)
    _train(model, mon, 20)
    assert len(mon.snapshots) <= 6
    assert mon.snapshots[0].label == "step 1" and mon.snapshots[-1].label == "step 20"


def test_curve_halving():
    c = Curve(max_points=8)
    for i in range(1, 101):
        c.append(i, float(i))
    assert len(c) <= 8
    steps, values = c.points()
    assert steps[-1] == 100 and abs(sum(values) / len(values) - 50) < 20


def test_smooth():
    assert smooth([1.0, 1.0, 1.0]) == pytest.approx([1.0, 1.0, 1.0])
    assert smooth([0.0, 10.0], 0.0) == [0.0, 10.0]


def test_save_load_round_trip(model, probe, tmp_path):
    mon = TrainingMonitor(
        model, probe, every=5, snapshot_every=10, budget=1.0, units={"4": [2]}, name="a"
    )
    _train(model, mon, 20)
    mon.epoch_end(val_loss=1.25)
    path = tmp_path / "run.safetensors"
    mon.save(path)
    assert b"pickle" not in path.read_bytes()[:200]
    back = TrainingMonitor.load(path)
    assert back.model is None and back.name == "a"
    assert back.step_count == 20 and back.epoch == 1
    assert back.curves["loss"].points() == mon.curves["loss"].points()
    assert back.epoch_curves["val_loss"].points() == ([20], [1.25])
    assert len(back.snapshots) == len(mon.snapshots)
    for a, b in zip(mon.snapshots, back.snapshots):
        assert a.label == b.label and a.grid == b.grid and a.warnings == b.warnings
        assert torch.equal(a.atlas, b.atlas) and torch.equal(a.rms, b.rms)
        assert torch.equal(a.dominating, b.dominating) and torch.equal(a.weight, b.weight)
        assert torch.equal(a.stats["1"]["dead"], b.stats["1"]["dead"])
        assert torch.equal(a.top9["4/2"], b.top9["4/2"])
    # a loaded run takes no snapshots and never raises
    back.step(loss=1.0)
    back.epoch_end()
    assert back.errors == []


def test_load_rejects_other_files(tmp_path):
    from safetensors.torch import save_file

    p = tmp_path / "x.safetensors"
    save_file({"a": torch.zeros(1)}, str(p))
    with pytest.raises(ValueError, match="not a zfwidgets run"):
        TrainingMonitor.load(p)
    with pytest.raises(FileNotFoundError):
        TrainingMonitor.load(tmp_path / "missing")


def test_failing_probe_does_not_stop_training(model):
    bad_probe = torch.randn(16, 5, 32, 32)  # wrong channel count: refused when made...
    with pytest.raises(ValueError, match="probe: .*3 channels, got 5"):
        TrainingMonitor(model, bad_probe)
    mon = TrainingMonitor(model, torch.randn(16, 3, 32, 32), every=1, snapshot_every=1, budget=1.0)
    mon._probe = bad_probe  # ... so break it afterwards: the probe pass raises
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _train(model, mon, 12)
        mon.epoch_end(val_loss=1.0)
    ours = [w for w in caught if "TrainingMonitor" in str(w.message)]
    assert len(ours) == 1 and issubclass(ours[0].category, RuntimeWarning)
    assert "snapshot failed" in str(ours[0].message)
    assert mon.step_count == 12 and len(mon.curves["loss"]) == 12
    assert len(mon.errors) == 1 and mon.snapshots == []
    assert "snapshot" in mon._disabled  # given up after repeated failures
    assert all(not m._forward_hooks for m in model.modules())


def test_bad_step_values_never_raise(model):
    mon = TrainingMonitor(model, every=1)
    with pytest.warns(RuntimeWarning, match="TrainingMonitor"):
        mon.step(loss="not a number")
    mon.step(loss=1.0)  # goes on
    assert mon.step_count == 2


def test_model_comes_back_as_it_was(model, probe):
    model.train()
    model[3].eval()  # a mixed flag must be restored per module
    flags = [m.training for m in model.modules()]
    x = torch.randn(4, 3, 32, 32)
    F.cross_entropy(model(x), torch.zeros(4, dtype=torch.long)).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    weights = {n: p.detach().clone() for n, p in model.named_parameters()}
    mon = TrainingMonitor(model, probe, every=1, snapshot_every=1, budget=1.0, units={"4": [0]})
    mon.step(loss=torch.tensor(1.0))
    mon.epoch_end()
    assert len(mon.snapshots) == 2 and mon.errors == []
    assert [m.training for m in model.modules()] == flags
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    for n, p in model.named_parameters():
        assert torch.equal(p.grad, grads[n]) and torch.equal(p.detach(), weights[n])
        assert p.requires_grad
    assert all(m.inplace for m in model.modules() if hasattr(m, "inplace"))


def test_dominating_and_dead_warnings(model, probe):
    with torch.no_grad():
        model[0].weight[3] *= 50  # RMS far above 0.1
        model[0].bias[5] = -1e4  # never fires
    mon = TrainingMonitor(model, probe, every=1, snapshot_every=None)
    mon.epoch_end()
    s = mon.snapshots[-1]
    assert bool(s.dominating[3]) and bool(s.stats["1"]["dead"][5])
    text = " ".join(mon.warnings)
    assert "dominate" in text and "3" in text and "dead" in text


def test_unknown_layer_raises(model):
    with pytest.raises(ValueError):
        TrainingMonitor(model, layers=["nope"])
    with pytest.raises(ValueError, match="probe"):
        TrainingMonitor(model, units={"4": [0]})


def test_probe_from_dataset(model):
    data = [(torch.randn(3, 32, 32), i % 10) for i in range(12)]
    mon = TrainingMonitor(model, data, every=1, snapshot_every=None)
    assert mon._probe.shape == (12, 3, 32, 32)


def test_lightning_callback_without_lightning_installed(model, probe, monkeypatch):
    """The callback imports Lightning lazily; with a stand-in Callback class it drives the
    monitor from Lightning's hooks."""
    import zfwidgets.monitor.lightning as zl

    pkg = types.ModuleType("lightning")
    sub = types.ModuleType("lightning.pytorch")
    sub.Callback = type("Callback", (), {})
    pkg.pytorch = sub
    monkeypatch.setitem(sys.modules, "lightning", pkg)
    monkeypatch.setitem(sys.modules, "lightning.pytorch", sub)
    cb = zl.MonitorCallback(probe=probe, every=1, snapshot_every=None)
    trainer = types.SimpleNamespace(
        callback_metrics={"val_loss": torch.tensor(0.5), "train_loss": 1}
    )
    cb.on_fit_start(trainer, model)
    for i in range(3):
        cb.on_train_batch_end(trainer, model, {"loss": torch.tensor(float(i))}, None, i)
    cb.on_train_epoch_end(trainer, model)
    m = cb.monitor
    assert m.step_count == 3 and m.epoch_curves["val_loss"].points() == ([3], [0.5])
    assert "train_loss" not in m.epoch_curves and len(m.snapshots) == 1


def test_lightning_missing_message(monkeypatch):
    import zfwidgets.monitor.lightning as zl

    monkeypatch.setitem(sys.modules, "lightning", None)
    monkeypatch.setitem(sys.modules, "pytorch_lightning", None)
    with pytest.raises(ImportError, match="pip install lightning"):
        zl.MonitorCallback()


def test_engine_import_does_not_import_widgets():
    import subprocess

    code = (
        "import sys, zfwidgets.monitor, zfwidgets.monitor.lightning; "
        "assert 'ipywidgets' not in sys.modules and 'lightning' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
