"""Hostile TrainingMonitor files: every wrong field is a ValueError naming it, before any
tensor is read; the point and snapshot caps apply on load."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from safetensors.torch import save_file

from zfwidgets import TrainingMonitor


def _run(n_snapshots: int = 2, points: int = 10) -> tuple[dict, dict]:
    meta = {
        "format": "zfwidgets.monitor/1",
        "name": "run",
        "step": 20,
        "epoch": 1,
        "radius": 0.1,
        "smoothing": 0.6,
        "curves": {"loss": {"steps": list(range(points)), "values": [1.0] * points, "stride": 1}},
        "epoch_curves": {},
        "snapshots": [],
        "errors": [],
    }
    tensors = {}
    for i in range(n_snapshots):
        p = f"s{i}."
        grid = {
            "count": 4,
            "columns": 2,
            "rows": 2,
            "tile": [3, 3],
            "pad": 1,
            "width": 7,
            "height": 7,
        }
        meta["snapshots"].append(
            {
                "step": i,
                "epoch": 0,
                "label": f"step {i}",
                "layer": "0",
                "grid": grid,
                "radius": 0.1,
                "stats": ["1"],
                "top9": ["4/2"],
                "warnings": [],
                "seconds": 0.1,
            }
        )
        tensors[p + "atlas"] = torch.zeros(7, 7, 4, dtype=torch.uint8)
        tensors[p + "rms"] = torch.ones(4)
        tensors[p + "dominating"] = torch.zeros(4, dtype=torch.uint8)
        tensors[p + "weight"] = torch.zeros(4, 3, 3, 3)
        for k in ("max", "mean", "active"):
            tensors[f"{p}stat0.{k}"] = torch.zeros(4)
        tensors[f"{p}stat0.dead"] = torch.zeros(4, dtype=torch.uint8)
        tensors[f"{p}top0"] = torch.zeros(5, 9, 4, dtype=torch.uint8)
    return meta, tensors


def _write(tmp_path, meta, tensors, raw=None):
    path = tmp_path / "run.safetensors"
    body = raw if raw is not None else json.dumps(meta)
    save_file(
        tensors or {"_empty": torch.zeros(0, dtype=torch.uint8)},
        str(path),
        metadata={"zfwidgets": body},
    )
    return path


def test_a_valid_file_loads(tmp_path):
    meta, tensors = _run()
    m = TrainingMonitor.load(_write(tmp_path, meta, tensors))
    assert len(m.snapshots) == 2 and m.curves["loss"].points()[1] == [1.0] * 10


def _set(path_keys, value):
    def mutate(meta, tensors):
        d = meta
        for k in path_keys[:-1]:
            d = d[k]
        d[path_keys[-1]] = value

    return mutate


def _tensor(key, value):
    def mutate(meta, tensors):
        if value is None:
            del tensors[key]
        else:
            tensors[key] = value

    return mutate


HOSTILE = [
    (_set(["step"], -1), "step"),
    (_set(["step"], "3"), "step"),
    (_set(["epoch"], True), "epoch"),
    (_set(["step"], 1e30), "step"),
    (_set(["radius"], float("nan")), "radius"),
    (_set(["radius"], -0.1), "radius"),
    (_set(["smoothing"], 7), "smoothing"),
    (_set(["name"], ["a"]), "name"),
    (_set(["name"], "x" * 20_000), "name"),
    (_set(["errors"], "boom"), "errors"),
    (_set(["curves"], []), "curves"),
    (_set(["curves", "loss", "values"], [1.0] * 9), r"curves\['loss'\].*differ in length"),
    (_set(["curves", "loss", "values"], ["a"] * 10), r"curves\['loss'\]\.values\[0\]"),
    (_set(["curves", "loss", "steps"], [-1] * 10), r"curves\['loss'\]\.steps\[0\]"),
    (_set(["curves", "loss", "stride"], 0), "stride"),
    (_set(["curves", "loss"], 5), r"curves\['loss'\]"),
    (_set(["snapshots"], {}), "snapshots"),
    (_set(["snapshots", 0], []), r"snapshots\[0\]"),
    (_set(["snapshots", 0, "grid", "width"], 10**8), r"snapshots\[0\]\.grid\.width"),
    (_set(["snapshots", 0, "grid", "tile"], [3]), r"grid\.tile"),
    (_set(["snapshots", 0, "grid", "count"], 9), r"grid\.count"),
    (_set(["snapshots", 0, "step"], -5), r"snapshots\[0\]\.step"),
    (_set(["snapshots", 0, "label"], None), r"snapshots\[0\]\.label"),
    (_set(["snapshots", 0, "seconds"], float("inf")), "seconds"),
    (_set(["snapshots", 1, "stats"], ["1", "2"]), r"snapshots\[1\]\.stats\['2'\]"),
    (_set(["snapshots", 1, "top9"], "4/2"), "top9"),
    (_tensor("s0.atlas", torch.zeros(10**3, 7, 4, dtype=torch.uint8)), r"snapshots\[0\]\.atlas"),
    (_tensor("s0.atlas", torch.zeros(7, 7, 4)), r"snapshots\[0\]\.atlas"),
    (_tensor("s0.rms", torch.ones(5)), r"snapshots\[0\]\.rms"),
    (_tensor("s0.rms", None), "missing"),
    (_tensor("s1.weight", torch.zeros(3, 3, 3, 3)), r"snapshots\[1\]\.weight"),
    (_tensor("s1.stat0.max", torch.zeros(4, 2)), r"stats\['1'\]\.max"),
    (_tensor("s1.top0", torch.zeros(5, 9, 3, dtype=torch.uint8)), r"top9\['4/2'\]"),
]


@pytest.mark.parametrize(("mutate", "match"), HOSTILE)
def test_hostile_fields_are_named(tmp_path, mutate, match):
    meta, tensors = _run()
    meta = copy.deepcopy(meta)
    mutate(meta, tensors)
    path = _write(tmp_path, meta, tensors)
    with pytest.raises(ValueError, match=f"monitor: .*{match}"):
        TrainingMonitor.load(path)


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        ("{not json", "metadata: not valid JSON"),
        ("[1, 2]", "not a zfwidgets run"),
        ('"x"', "not a zfwidgets run"),
    ],
)
def test_broken_metadata(tmp_path, raw, match):
    meta, tensors = _run()
    with pytest.raises(ValueError, match=match):
        TrainingMonitor.load(_write(tmp_path, meta, tensors, raw=raw))


def test_caps_apply_on_load(tmp_path):
    meta, tensors = _run(n_snapshots=100, points=200_000)
    m = TrainingMonitor.load(_write(tmp_path, meta, tensors))
    steps, values = m.curves["loss"].points()
    assert len(steps) <= m.max_points + 1 and steps[0] >= 0
    assert len(m.snapshots) == m.max_snapshots
    assert m.snapshots[0].step == 0 and m.snapshots[-1].step == 99


def test_the_probe_is_checked_against_the_model_when_the_monitor_is_made():
    from models import tiny_zf

    model = tiny_zf()
    probe = torch.randn(12, 3, 32, 32)
    probe[7, 0, 1, 1] = float("nan")
    with pytest.raises(ValueError, match=r"probe: expected finite values.*image 7\b"):
        TrainingMonitor(model, probe)
    with pytest.raises(TypeError, match="probe: expected floating-point"):
        TrainingMonitor(model, torch.zeros(4, 3, 32, 32, dtype=torch.uint8))
    with pytest.raises(ValueError, match="probe: .*channels"):
        TrainingMonitor(model, torch.zeros(4, 1, 32, 32))
    mon = TrainingMonitor(model, torch.randn(4, 3, 32, 32, dtype=torch.float64))
    assert mon._probe.dtype == torch.float32
