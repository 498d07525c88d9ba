"""A training run in one file: tiles, statistics and weights as safetensors tensors, curves and
the rest as JSON metadata (no pickle); a file is validated field by field before anything is
allocated."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import torch

from .curves import Curve
from .snapshots import Snapshot
from .state import RunState

__all__ = ["load", "save"]


class _Recorder(Protocol):
    """What :func:`save` needs of a monitor: a consistent copy of its record."""

    def state(self) -> RunState: ...


_M = TypeVar("_M")

_FORMAT = "zfwidgets.monitor/1"


def save(monitor: _Recorder | RunState, path: str | os.PathLike) -> None:
    """Write the run to one ``.safetensors`` file: tiles, statistics and weights as
    tensors, curves and the rest as JSON metadata (no pickle).

    ``monitor`` is a :class:`~zfwidgets.monitor.TrainingMonitor` (read through its public
    :meth:`~zfwidgets.monitor.TrainingMonitor.state`, so a run may be saved while it trains)
    or a :class:`~zfwidgets.monitor.state.RunState`.
    """
    from safetensors.torch import save_file

    run = monitor if isinstance(monitor, RunState) else monitor.state()
    tensors: dict[str, torch.Tensor] = {}
    snaps = []
    for i, s in enumerate(run.snapshots):
        p = f"s{i}."
        tensors[p + "atlas"] = s.atlas.contiguous()
        tensors[p + "rms"] = s.rms.contiguous()
        tensors[p + "dominating"] = s.dominating.to(torch.uint8).contiguous()
        if s.weight is not None:
            tensors[p + "weight"] = s.weight.contiguous()
        stat_layers = list(s.stats)
        for j, n in enumerate(stat_layers):
            for k, v in s.stats[n].items():
                v = v.to(torch.uint8) if v.dtype == torch.bool else v
                tensors[f"{p}stat{j}.{k}"] = v.contiguous()
        units = list(s.top9)
        for j, u in enumerate(units):
            tensors[f"{p}top{j}"] = s.top9[u].contiguous()
        snaps.append(
            {
                "step": s.step,
                "epoch": s.epoch,
                "label": s.label,
                "layer": s.layer,
                "grid": s.grid,
                "radius": s.radius,
                "stats": stat_layers,
                "top9": units,
                "warnings": s.warnings,
                "seconds": s.seconds,
            }
        )
    meta = {
        "format": _FORMAT,
        "name": run.name,
        "step": run.step,
        "epoch": run.epoch,
        "radius": run.radius,
        "smoothing": run.smoothing,
        "curves": {k: c.to_json() for k, c in run.curves.items()},
        "epoch_curves": {k: c.to_json() for k, c in run.epoch_curves.items()},
        "snapshots": snaps,
        "errors": run.errors,
    }
    if not tensors:  # safetensors needs at least an empty file body; keep one marker
        tensors["_empty"] = torch.zeros(0, dtype=torch.uint8)
    save_file(tensors, os.fspath(path), metadata={"zfwidgets": json.dumps(meta)})


def load(cls: Callable[..., _M], path: str | os.PathLike) -> _M:
    """Read a run written by :meth:`save` into ``cls(None, name=..., radius=...)`` (a
    :class:`~zfwidgets.monitor.TrainingMonitor` without a model: it displays, compares and
    saves, but takes no snapshots), through its public attributes.

    The file is untrusted input: the metadata is checked field by field (types, lengths,
    finite numbers, bounded sizes) and every tensor's shape and dtype against it from the
    safetensors header, before any tensor is read. The caps of a new monitor apply:
    curves longer than ``max_points`` are thinned as they would have been while
    recording, snapshots beyond ``max_snapshots`` too. A wrong file is a ``ValueError``
    that names the field.
    """
    from safetensors import safe_open

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"monitor: no file at {path!r}")
    try:
        with safe_open(path, framework="pt") as f:
            raw = (f.metadata() or {}).get("zfwidgets")
            headers = {
                k: (tuple(f.get_slice(k).get_shape()), f.get_slice(k).get_dtype())
                for k in f.keys()  # noqa: SIM118 (safe_open is not iterable)
            }
    except Exception as e:
        raise ValueError(f"monitor: {path!r} is not a readable safetensors file ({e})") from e
    if not raw:
        raise ValueError(f"monitor: {path!r} is not a zfwidgets run (format {_FORMAT!r})")
    if len(raw) > _MAX_META_BYTES:
        raise ValueError(
            f"monitor: {path!r}: metadata: {len(raw)} bytes, more than {_MAX_META_BYTES}"
        )
    try:
        meta = json.loads(raw)
    except (ValueError, RecursionError) as e:
        raise ValueError(f"monitor: {path!r}: metadata: not valid JSON ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != _FORMAT:
        raise ValueError(f"monitor: {path!r} is not a zfwidgets run (format {_FORMAT!r})")
    spec = _check_meta(meta, headers)  # ValueError naming the field
    m = cls(None, name=spec["name"], radius=spec["radius"])
    m.smoothing = spec["smoothing"]
    m.step_count = spec["step"]
    m.epoch = spec["epoch"]
    m.curves = {k: Curve.from_json(d, m.max_points) for k, d in spec["curves"].items()}
    m.epoch_curves = {k: Curve.from_json(d, m.max_points) for k, d in spec["epoch_curves"].items()}
    m.errors = spec["errors"]
    keep = _thin(list(range(len(spec["snapshots"]))), m.max_snapshots)
    try:
        with safe_open(path, framework="pt") as f:
            for i in keep:
                d = spec["snapshots"][i]
                p = f"s{i}."
                stats = {}
                for j, n in enumerate(d["stats"]):
                    st = {}
                    for k in _STAT_KEYS:
                        v = f.get_tensor(f"{p}stat{j}.{k}")
                        st[k] = v.bool() if k == "dead" else v
                    stats[n] = st
                m.snapshots.append(
                    Snapshot(
                        step=d["step"],
                        epoch=d["epoch"],
                        label=d["label"],
                        layer=d["layer"],
                        weight=f.get_tensor(p + "weight") if p + "weight" in headers else None,
                        atlas=f.get_tensor(p + "atlas"),
                        grid=d["grid"],
                        rms=f.get_tensor(p + "rms"),
                        dominating=f.get_tensor(p + "dominating").bool(),
                        radius=d["radius"],
                        stats=stats,
                        top9={u: f.get_tensor(f"{p}top{j}") for j, u in enumerate(d["top9"])},
                        warnings=d["warnings"],
                        seconds=d["seconds"],
                    )
                )
    except Exception as e:
        raise ValueError(f"monitor: {path!r}: tensors: could not be read ({e})") from e
    if m.snapshots:
        m.warnings = m.snapshots[-1].warnings
    return m


# -- validation of saved runs ------------------------------------------------------------------
_MAX_META_BYTES = 64 * 2**20
_MAX_CURVES = 256
_MAX_SNAPSHOTS_IN_FILE = 10_000
_MAX_TEXT = 10_000
_MAX_LIST = 10_000
_MAX_SIDE = 16_384
_STAT_KEYS = ("max", "mean", "active", "dead")
_FLOATS = ("F16", "BF16", "F32", "F64")


def _thin(items: list, cap: int) -> list:
    """At most ``cap`` items: the first, the latest and evenly spaced ones between."""
    if len(items) <= cap:
        return items
    picks = sorted({round(i * (len(items) - 1) / (cap - 1)) for i in range(cap)})
    return [items[i] for i in picks]


def _field_error(field: str, expected: str, got: object) -> ValueError:
    shown = repr(got)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return ValueError(f"monitor: {field}: expected {expected}, got {shown}")


def _int(v: object, field: str, low: int = 0, high: int = 2**62) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not low <= v <= high:
        raise _field_error(field, f"an int in [{low}, {high}]", v)
    return v


def _num(v: object, field: str, low: float = -math.inf, high: float = math.inf) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise _field_error(field, "a number", v)
    f = float(v)
    if not math.isfinite(f) or not low <= f <= high:
        raise _field_error(field, f"a finite number in [{low}, {high}]", v)
    return f


def _str(v: object, field: str) -> str:
    if not isinstance(v, str) or len(v) > _MAX_TEXT:
        raise _field_error(field, f"a string of at most {_MAX_TEXT} characters", v)
    return v


def _strs(v: object, field: str, cap: int = _MAX_LIST) -> list[str]:
    if not isinstance(v, list) or len(v) > cap:
        raise _field_error(field, f"a list of at most {cap} strings", v)
    return [_str(x, f"{field}[{i}]") for i, x in enumerate(v)]


def _curve(d: object, field: str) -> dict:
    if not isinstance(d, dict):
        raise _field_error(field, "an object with steps, values and stride", d)
    steps, values = d.get("steps"), d.get("values")
    if not isinstance(steps, list) or not isinstance(values, list):
        raise _field_error(field, "lists 'steps' and 'values'", d)
    if len(steps) != len(values):
        raise ValueError(
            f"monitor: {field}: 'steps' and 'values' differ in length ({len(steps)} and "
            f"{len(values)})"
        )
    for i, v in enumerate(steps):
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise _field_error(f"{field}.steps[{i}]", "an int >= 0", v)
    for i, v in enumerate(values):  # a diverged loss (NaN, inf) is data: the views skip it
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise _field_error(f"{field}.values[{i}]", "a number", v)
    stride = _int(d.get("stride", 1), f"{field}.stride", 1, 2**40)
    return {"steps": steps, "values": [float(v) for v in values], "stride": stride}


def _check_meta(meta: dict, headers: dict[str, tuple[tuple[int, ...], str]]) -> dict:
    """The metadata of a saved run, checked (see :meth:`TrainingMonitor.load`)."""
    out: dict[str, Any] = {
        "name": _str(meta.get("name", "run"), "name"),
        "step": _int(meta.get("step"), "step"),
        "epoch": _int(meta.get("epoch"), "epoch"),
        "radius": _num(meta.get("radius", 0.1), "radius", 0.0),
        "smoothing": _num(meta.get("smoothing", 0.6), "smoothing", 0.0, 1.0),
        "errors": _strs(meta.get("errors", []), "errors", 1000),
    }
    if out["radius"] <= 0:
        raise _field_error("radius", "a positive number", meta.get("radius"))
    for key in ("curves", "epoch_curves"):
        curves = meta.get(key, {})
        if not isinstance(curves, dict) or len(curves) > _MAX_CURVES:
            raise _field_error(key, f"an object of at most {_MAX_CURVES} curves", curves)
        out[key] = {_str(k, f"{key} name"): _curve(d, f"{key}[{k!r}]") for k, d in curves.items()}
    snaps = meta.get("snapshots", [])
    if not isinstance(snaps, list) or len(snaps) > _MAX_SNAPSHOTS_IN_FILE:
        raise _field_error("snapshots", f"a list of at most {_MAX_SNAPSHOTS_IN_FILE}", snaps)
    out["snapshots"] = [_check_snapshot(d, i, headers) for i, d in enumerate(snaps)]
    return out


def _tensor(headers: dict, key: str, field: str, shape: tuple, dtypes: tuple[str, ...]) -> None:
    """``key`` is in the file with ``shape`` (None: any size there) and one of ``dtypes``."""
    if key not in headers:
        raise ValueError(f"monitor: {field}: the tensor {key!r} is missing from the file")
    got, dtype = headers[key]
    ok = len(got) == len(shape) and all(s is None or s == g for s, g in zip(shape, got))
    if not ok or dtype not in dtypes:
        want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
        raise ValueError(
            f"monitor: {field}: expected the tensor {key!r} of shape {want} and dtype "
            f"{'/'.join(dtypes)}, got shape {got} and dtype {dtype}"
        )


def _check_snapshot(d: object, i: int, headers: dict) -> dict:
    f = f"snapshots[{i}]"
    if not isinstance(d, dict):
        raise _field_error(f, "an object", d)
    grid = d.get("grid")
    if not isinstance(grid, dict):
        raise _field_error(f"{f}.grid", "an object", grid)
    g = {
        k: _int(grid.get(k), f"{f}.grid.{k}", 0, _MAX_SIDE)
        for k in ("count", "columns", "rows", "pad", "width", "height")
    }
    tile = grid.get("tile")
    if not isinstance(tile, list) or len(tile) != 2:
        raise _field_error(f"{f}.grid.tile", "[height, width]", tile)
    g["tile"] = [_int(t, f"{f}.grid.tile", 1, _MAX_SIDE) for t in tile]
    if g["count"] > g["columns"] * g["rows"]:
        raise _field_error(f"{f}.grid.count", "at most columns x rows tiles", g["count"])
    out = {
        "step": _int(d.get("step"), f"{f}.step"),
        "epoch": _int(d.get("epoch"), f"{f}.epoch"),
        "label": _str(d.get("label"), f"{f}.label"),
        "layer": _str(d.get("layer"), f"{f}.layer"),
        "grid": {**grid, **g},
        "radius": _num(d.get("radius"), f"{f}.radius", 0.0),
        "stats": _strs(d.get("stats", []), f"{f}.stats", 1000),
        "top9": _strs(d.get("top9", []), f"{f}.top9", 1000),
        "warnings": _strs(d.get("warnings", []), f"{f}.warnings", 1000),
        "seconds": _num(d.get("seconds", 0.0), f"{f}.seconds", 0.0),
    }
    p = f"s{i}."
    _tensor(headers, p + "atlas", f"{f}.atlas", (g["height"], g["width"], 4), ("U8",))
    _tensor(headers, p + "rms", f"{f}.rms", (None,), _FLOATS)
    cout = headers[p + "rms"][0][0]
    if cout != g["count"]:
        raise ValueError(f"monitor: {f}.rms: {cout} filters, but the grid holds {g['count']} tiles")
    _tensor(headers, p + "dominating", f"{f}.dominating", (cout,), ("U8", "BOOL"))
    if p + "weight" in headers:
        _tensor(headers, p + "weight", f"{f}.weight", (cout, None, None, None), _FLOATS)
    for j, name in enumerate(out["stats"]):
        c = None
        for k in _STAT_KEYS:
            key = f"{p}stat{j}.{k}"
            dtypes = ("U8", "BOOL") if k == "dead" else _FLOATS
            _tensor(headers, key, f"{f}.stats[{name!r}].{k}", (c,), dtypes)
            c = headers[key][0][0]
    for j, unit in enumerate(out["top9"]):
        _tensor(headers, f"{p}top{j}", f"{f}.top9[{unit!r}]", (None, None, 4), ("U8",))
        h, w, _ = headers[f"{p}top{j}"][0]
        if h > _MAX_SIDE or w > _MAX_SIDE:
            raise ValueError(f"monitor: {f}.top9[{unit!r}]: {h}x{w} tiles exceed {_MAX_SIDE}")
    return out
