"""TrainingMonitor: records a training run for the notebook (curves, first-layer filters,
activation statistics, dead and dominating filters, top-9 of chosen units) at a bounded cost.

docs/method.md Sec. 3.2, Fig. 4 (features evolving during training) and Fig. 6 (dominating and dead
layer-1 filters, the RMS renormalisation rule of Sec. 1), recorded while the model trains.

Plain Python: no ipywidgets import here. Displaying a monitor builds its widget
(:mod:`zfwidgets.widgets.monitor_view`) on first use; in a plain script it only records and
:meth:`TrainingMonitor.save` writes safetensors + JSON (no pickle).

Cost model
----------
- ``step(loss=...)`` keeps the loss (and metrics) as detached tensors in a small buffer: no
  host sync. They are converted in one transfer at the next refresh.
- Refreshes are throttled by time (``every`` seconds, or every ``every`` steps for an int),
  snapshots (a probe pass, filter tiles) by ``snapshot_every`` seconds and by a time budget:
  after a snapshot that took ``c`` seconds the next one waits at least ``c / budget``.
- Curves are bounded (``max_points`` per series: pairs of points are averaged when a series
  grows past it), snapshots too (``max_snapshots``: every other one is dropped, keeping the
  first and the latest), so memory stays flat over any number of steps.

Safety
------
Every public method catches any exception raised inside the monitor, warns once per kind
(``RuntimeWarning``), records it in ``monitor.errors`` (the widget shows it) and returns: the
training loop goes on. The probe runs under ``torch.no_grad`` with the model in eval mode
(every module's flag restored after), through :class:`~zfwidgets.capture.Capture` (hooks
removed in ``finally``), so hooks, training flags and ``.grad`` come back as they were.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

__all__ = ["Curve", "Snapshot", "TrainingMonitor", "compare"]

_FORMAT = "zfwidgets.monitor/1"


# -- curves ------------------------------------------------------------------------------------
class Curve:
    """A bounded series of ``(step, value)`` points.

    Points are binned: each stored point is the mean of ``stride`` consecutive inputs (its
    step is the last one's). When more than ``max_points`` are stored, neighbouring pairs are
    averaged and ``stride`` doubles, so memory never exceeds ``max_points`` points.
    """

    __slots__ = ("_acc", "_count", "_last_step", "max_points", "steps", "stride", "values")

    def __init__(self, max_points: int = 2000):
        self.max_points = max(4, int(max_points))
        self.steps: list[int] = []
        self.values: list[float] = []
        self.stride = 1
        self._acc = 0.0
        self._count = 0
        self._last_step = 0

    def append(self, step: int, value: float) -> None:
        self._acc += value
        self._count += 1
        self._last_step = step
        if self._count >= self.stride:
            self.steps.append(step)
            self.values.append(self._acc / self._count)
            self._acc, self._count = 0.0, 0
            if len(self.values) > self.max_points:
                self._halve()

    def _halve(self) -> None:
        n = len(self.values) // 2 * 2
        vals = [(self.values[i] + self.values[i + 1]) / 2 for i in range(0, n, 2)]
        steps = [self.steps[i + 1] for i in range(0, n, 2)]
        if n < len(self.values):  # an odd point out: keep it as a partial bin
            self._acc += self.values[-1] * self.stride
            self._count += self.stride
        self.values, self.steps = vals, steps
        self.stride *= 2

    def points(self) -> tuple[list[int], list[float]]:
        """The stored points plus the partial bin being filled (so the latest step shows)."""
        if self._count:
            return self.steps + [self._last_step], self.values + [self._acc / self._count]
        return list(self.steps), list(self.values)

    def __len__(self) -> int:
        return len(self.values)

    def to_json(self) -> dict:
        steps, values = self.points()
        return {"steps": steps, "values": values, "stride": self.stride}

    @classmethod
    def from_json(cls, d: Mapping, max_points: int = 2000) -> Curve:
        """A curve from :meth:`to_json`; longer than ``max_points``, thinned as recording
        would have (pairs averaged, ``stride`` doubled)."""
        c = cls(max_points)
        c.steps = [int(s) for s in d["steps"]]
        c.values = [float(v) for v in d["values"]]
        c.stride = int(d.get("stride", 1))
        while len(c.values) > c.max_points:
            c._halve()
        return c


def smooth(values: Sequence[float], weight: float = 0.6) -> list[float]:
    """TensorBoard-style exponential moving average with debiasing (``weight`` in [0, 1))."""
    out: list[float] = []
    last, n = 0.0, 0
    for v in values:
        if not math.isfinite(v):
            out.append(v)
            continue
        n += 1
        last = last * weight + (1 - weight) * v
        out.append(last / (1 - weight**n) if weight > 0 else v)
    return out


# -- snapshots ---------------------------------------------------------------------------------
@dataclass
class Snapshot:
    """What one snapshot shows (small: uint8 tiles and statistics, all on the CPU).

    Attributes
    ----------
    step, epoch : int
    label : str
        ``"step 120"`` or ``"epoch 3"``.
    layer : str
        The first convolution's dotted name.
    weight : Tensor (Cout, Cin, kh, kw) float32 or None
        Its weights (tiny for a first layer; ``keep_weights=False`` drops them).
    atlas : Tensor (H, W, 4) uint8
        The filters as tiles (:func:`zfwidgets.images.filter_atlas`).
    grid : dict
        The atlas layout (:meth:`GridLayout.to_json`).
    rms : Tensor (Cout,) float32
        Each filter's RMS (docs/method.md Sec. 1).
    dominating : Tensor (Cout,) bool
        RMS above the radius (the renormalisation rule would rescale them; Fig. 6 (a)).
    stats : dict[layer, dict[str, Tensor (C,)]]
        Per channel over the probe set: ``max``, ``mean``, ``active`` (fraction of images
        in which the channel fires), ``dead`` (bool: never fires).
    top9 : dict["layer/channel", Tensor (H, W, 4) uint8]
        The top-9 probe patches beside their deconvnet projections (Fig. 2 / Fig. 4).
    warnings : list of str
    """

    step: int
    epoch: int
    label: str
    layer: str
    weight: torch.Tensor | None
    atlas: torch.Tensor
    grid: dict
    rms: torch.Tensor
    dominating: torch.Tensor
    radius: float
    stats: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    top9: dict[str, torch.Tensor] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def dead(self, layer: str | None = None) -> torch.Tensor | None:
        """The dead channels of ``layer`` (default: the first layer's activations)."""
        if layer is None:
            layer = next(iter(self.stats), None)
        s = self.stats.get(layer) if layer is not None else None
        return None if s is None else s["dead"]


# -- the monitor -------------------------------------------------------------------------------
def _parse_every(every: object) -> tuple[float | None, int | None]:
    """``every`` -> (seconds, steps). float: seconds; int: steps; "2s" / "100 steps"."""
    if isinstance(every, bool):
        raise ValueError(f"every: expected seconds (float) or steps (int), got {every!r}")
    if isinstance(every, int):
        if every < 1:
            raise ValueError(f"every: expected at least 1 step, got {every}")
        return None, every
    if isinstance(every, float):
        if not math.isfinite(every) or every < 0:
            raise ValueError(f"every: expected a non-negative number of seconds, got {every}")
        return every, None
    if isinstance(every, str):
        s = every.strip().lower().replace(" ", "")
        for suffix in ("steps", "step"):
            if s.endswith(suffix) and s[: -len(suffix)].isdigit():
                return _parse_every(int(s[: -len(suffix)]))
        if s.endswith("s"):
            try:
                return _parse_every(float(s[:-1]))
            except ValueError:
                pass
    raise ValueError(
        f"every: expected seconds (float, '2s') or steps (int, '100 steps'), got {every!r}"
    )


def _probe_tensor(probe: object, limit: int) -> torch.Tensor | None:
    """The probe as one (N, C, H, W) tensor on the CPU (or where it is)."""
    if probe is None:
        return None
    if isinstance(probe, torch.Tensor):
        x = probe
    elif isinstance(probe, (tuple, list)) and probe and isinstance(probe[0], torch.Tensor):
        if len(probe) == 2 and probe[0].dim() == 4 and probe[1].dim() == 1:
            x = probe[0]  # (images, labels)
        else:
            x = torch.stack([p for p in probe])
    elif hasattr(probe, "__len__") and hasattr(probe, "__getitem__"):  # a Dataset
        items = []
        for i in range(min(len(probe), limit)):
            item = probe[i]
            if isinstance(item, (tuple, list)):
                item = item[0]
            if not isinstance(item, torch.Tensor):
                raise TypeError(
                    f"probe[{i}]: expected a tensor (or (tensor, label)), got {type(item).__name__}"
                )
            items.append(item)
        x = torch.stack(items)
    else:
        raise TypeError(
            "probe: expected a Tensor (N, C, H, W), a list of tensors or a Dataset, "
            f"got {type(probe).__name__}"
        )
    if x.dim() == 3:
        x = x.unsqueeze(1)
    if x.dim() != 4:
        raise ValueError(f"probe: expected images (N, C, H, W), got shape {tuple(x.shape)}")
    x = x[:limit].detach()
    if not x.is_floating_point():
        raise TypeError(f"probe: expected floating-point images, got {x.dtype}")
    from ._checks import check_finite_batch

    return check_finite_batch(x, name="probe")  # NaN/inf named by image, once


def _default_stat_layers(model: nn.Module) -> list[str]:
    """Every ReLU module (post-rectification activations), else every Conv2d."""
    relus = [n for n, m in model.named_modules() if n and isinstance(m, nn.ReLU)]
    if relus:
        return relus
    return [n for n, m in model.named_modules() if n and isinstance(m, nn.Conv2d)]


class TrainingMonitor:
    """Watches a model train: curves, first-layer filters, activation statistics on a probe
    set with dead and dominating-filter warnings, top-9 of chosen units, at a bounded cost.

    docs/method.md Sec. 3.2, Fig. 4 (evolution over training) and Fig. 6 (filter diagnosis, with the
    RMS renormalisation rule of Sec. 1).

    Parameters
    ----------
    model : nn.Module
        The model being trained. Never moved or modified; the probe runs in eval mode under
        ``torch.no_grad`` and every module's training flag is restored.
    probe : Tensor (N, C, H, W), list of tensors or Dataset, optional
        A few fixed inputs (normalised as the model expects; at most ``max_probe``) for the
        activation statistics and the top-9. Without it, snapshots hold the filters only.
    layers : names or modules, optional
        Layers whose per-channel statistics are recorded (default: every ``nn.ReLU``).
    every : float, int or str
        Refresh period: seconds (float, ``"2s"``) or steps (int, ``"100 steps"``). Default
        1.0 s. A refresh converts the buffered losses (one host transfer) and redraws.
    snapshot_every : float, int or str
        Snapshot period (same forms; default 5.0 s). Snapshots are also taken at
        :meth:`epoch_end`. ``None``: only at epoch ends.
    budget : float
        Largest fraction of wall time spent in snapshots when ``snapshot_every`` is in
        seconds (default 0.01): after a snapshot that took ``c`` s the next one waits at
        least ``c / budget`` s. A step period (int) is taken as asked.
    units : mapping of layer -> list of channels, optional
        Units whose top-9 over the probe (``zf.mine``, patches + deconvnet projections) is
        stored with each snapshot, as uint8 tiles.
    conv : str or nn.Module, optional
        The convolution whose filters are shown (default: the first ``nn.Conv2d``).
    radius : float
        The RMS renormalisation radius (0.1 in the paper).
    max_points, max_snapshots : int
        Memory bounds (per curve / in total).
    smoothing : float
        EMA weight of the drawn smoothed curves.
    name : str
        The run's name (legend of :func:`compare`).

    Examples
    --------
    >>> monitor = TrainingMonitor(model, probe=x_val[:64])
    >>> monitor                                   # in a notebook: the live widget
    >>> for epoch in range(3):
    ...     for x, y in loader:
    ...         loss = F.cross_entropy(model(x), y); opt.zero_grad(); loss.backward(); opt.step()
    ...         monitor.step(loss=loss)
    ...     monitor.epoch_end(val_loss=val_loss, val_acc=val_acc)
    >>> monitor.save("run.safetensors")
    """

    def __init__(
        self,
        model: nn.Module | None,
        probe: Any = None,
        *,
        layers: Iterable[str | nn.Module] | str | nn.Module | None = None,
        every: float | int | str = 1.0,
        snapshot_every: float | int | str | None = 5.0,
        budget: float = 0.01,
        units: Mapping[str, Sequence[int]] | None = None,
        conv: str | nn.Module | None = None,
        radius: float = 0.1,
        max_points: int = 2000,
        max_snapshots: int = 64,
        max_probe: int = 256,
        probe_batch: int = 256,
        smoothing: float = 0.6,
        keep_weights: bool = True,
        name: str = "run",
    ):
        self.name = str(name)
        self.model = model
        self._every_s, self._every_n = _parse_every(every)
        self._snap_s, self._snap_n = (
            (None, None) if snapshot_every is None else _parse_every(snapshot_every)
        )
        if not (isinstance(budget, (int, float)) and 0 < budget <= 1):
            raise ValueError(f"budget: expected a fraction in (0, 1], got {budget!r}")
        self.budget = float(budget)
        self.radius = float(radius)
        self.max_points = int(max_points)
        self.max_snapshots = max(2, int(max_snapshots))
        self.probe_batch = max(1, int(probe_batch))
        self.smoothing = float(smoothing)
        self.keep_weights = bool(keep_weights)
        self.units = {str(k): [int(c) for c in v] for k, v in (units or {}).items()}
        self.curves: dict[str, Curve] = {}
        self.epoch_curves: dict[str, Curve] = {}
        self.snapshots: list[Snapshot] = []
        self.warnings: list[str] = []  # of the latest snapshot
        self.errors: list[str] = []
        self.step_count = 0
        self.epoch = 0
        self.refreshes = 0
        self._pending: dict[str, list[Any]] = {}
        self._pending_steps: list[int] = []
        self._max_pending = 512
        self._warned: set[str] = set()
        self._failures: dict[str, int] = {}
        self._disabled: set[str] = set()
        self._listeners: list[Callable[[TrainingMonitor, bool], None]] = []
        self._lock = threading.RLock()
        now = time.monotonic()
        self._t0 = now
        self._last_refresh_t = now
        self._last_refresh_step = 0
        self._last_snap_t = now
        self._last_snap_step = 0
        self._snap_wait = 0.0
        self._widget = None
        self._conv_name: str | None = None
        self._stat_layers: list[str] = []
        self._probe: torch.Tensor | None = None
        self._probe_on: dict[torch.device, torch.Tensor] = {}
        if model is not None:
            from ._checks import check_model, resolve_layer, resolve_layers
            from .filters import _conv

            check_model(model)
            self._conv_name = _conv(model, conv)[0]
            if layers is None:
                self._stat_layers = _default_stat_layers(model)
            else:
                self._stat_layers = [n for n, _ in resolve_layers(model, layers)]
            for layer in self.units:
                resolve_layer(model, layer)
            self._probe = _probe_tensor(probe, max(1, int(max_probe)))
            if self._probe is not None:  # channels, dtype and size against the model, now
                from ._checks import check_images, model_device

                one = self._probe[:1].to(model_device(model))
                self._probe = self._probe.to(check_images(model, one, name="probe").dtype)
            if self.units and (self._probe is None or len(self._probe) < 9):
                raise ValueError("units: the top-9 needs a probe of at least 9 images")

    # -- failure handling ------------------------------------------------------------------
    def _fail(self, where: str, exc: BaseException) -> None:
        msg = f"TrainingMonitor: {where} failed ({type(exc).__name__}: {exc}); training goes on"
        with self._lock:
            n = self._failures[where] = self._failures.get(where, 0) + 1
            if where not in self._warned:
                self._warned.add(where)
                self.errors.append(msg)
                del self.errors[:-20]
                warnings.warn(msg, RuntimeWarning, stacklevel=3)
            if n >= 3 and where == "snapshot":
                self._disabled.add(where)
        self._notify(False)

    # -- recording -------------------------------------------------------------------------
    def step(self, loss: Any = None, **metrics: Any) -> None:
        """Record one training step: ``loss`` and any metrics (tensors or numbers).

        Tensors are kept detached on their device until the next refresh (no host sync).
        Never raises.
        """
        try:
            with self._lock:
                self.step_count += 1
                if loss is not None:
                    metrics = {"loss": loss, **metrics}
                for k, v in metrics.items():
                    if isinstance(v, torch.Tensor):
                        v = v.detach()
                        if v.numel() != 1:
                            v = v.float().mean()
                    lst = self._pending.get(k)
                    if lst is None:
                        lst = self._pending[k] = [None] * len(self._pending_steps)
                    lst.append(v)
                for lst in self._pending.values():
                    if len(lst) <= len(self._pending_steps):
                        lst.append(None)
                self._pending_steps.append(self.step_count)
                due = self._due_refresh()
            if due:
                self.refresh()
        except Exception as e:  # never break training
            self._fail("step", e)

    def epoch_end(self, **metrics: Any) -> None:
        """Record an epoch's metrics (e.g. ``val_loss=``, ``val_acc=``), flush the curves and
        take a snapshot. Never raises."""
        try:
            with self._lock:
                self.epoch += 1
                for k, v in metrics.items():
                    value = (
                        float(v.detach().float().mean())
                        if isinstance(v, torch.Tensor)
                        else float(v)
                    )
                    curve = self.epoch_curves.get(k)
                    if curve is None:
                        curve = self.epoch_curves[k] = Curve(self.max_points)
                    curve.append(self.step_count, value)
            self.refresh(snapshot=True, label=f"epoch {self.epoch}")
        except Exception as e:
            self._fail("epoch_end", e)

    def _due_refresh(self) -> bool:
        if len(self._pending_steps) >= self._max_pending:
            return True
        if self._every_n is not None:
            return self.step_count - self._last_refresh_step >= self._every_n
        return time.monotonic() - self._last_refresh_t >= (self._every_s or 0.0)

    def _due_snapshot(self) -> bool:
        if self.model is None or "snapshot" in self._disabled:
            return False
        if self._snap_n is not None:  # an explicit step period: no time budget
            return self.step_count - self._last_snap_step >= self._snap_n
        if self._snap_s is None:
            return False
        now = time.monotonic()
        return now - self._last_snap_t >= max(self._snap_s, self._snap_wait)

    def _flush(self) -> None:
        """Buffered step values -> curves, with one host transfer per device."""
        steps = self._pending_steps
        if not steps:
            return
        pending, self._pending, self._pending_steps = self._pending, {}, []
        tensors = [
            (k, i, v)
            for k, lst in pending.items()
            for i, v in enumerate(lst)
            if isinstance(v, torch.Tensor)
        ]
        host: dict[tuple[str, int], float] = {}
        if tensors:
            by_dev: dict[torch.device, list[tuple[str, int, torch.Tensor]]] = {}
            for k, i, v in tensors:
                by_dev.setdefault(v.device, []).append((k, i, v))
            for items in by_dev.values():
                vals = torch.stack([v.reshape(()).float() for _, _, v in items]).cpu().tolist()
                for (k, i, _), x in zip(items, vals):
                    host[(k, i)] = x
        for k, lst in pending.items():
            curve = self.curves.get(k)
            if curve is None:
                curve = self.curves[k] = Curve(self.max_points)
            for i, v in enumerate(lst):
                if v is None:
                    continue
                x = host[(k, i)] if isinstance(v, torch.Tensor) else float(v)
                curve.append(steps[i], x)

    def refresh(self, *, snapshot: bool | None = None, label: str | None = None) -> None:
        """Convert the buffered values to curves, take a snapshot when one is due (or when
        ``snapshot=True``) and update the widget. Called by :meth:`step`; never raises."""
        try:
            with self._lock:
                self._flush()
                self.refreshes += 1
                self._last_refresh_t = time.monotonic()
                self._last_refresh_step = self.step_count
        except Exception as e:
            self._fail("refresh", e)
            return
        took = False
        want = self._due_snapshot() if snapshot is None else (snapshot and self.model is not None)
        if want and "snapshot" not in self._disabled:
            try:
                self.snapshot(label=label)
                took = True
            except Exception as e:
                self._last_snap_t = time.monotonic()
                self._last_snap_step = self.step_count
                self._fail("snapshot", e)
        self._notify(took)

    # -- snapshots -------------------------------------------------------------------------
    def snapshot(self, *, label: str | None = None) -> Snapshot:
        """Take a snapshot now (raises on failure; :meth:`refresh` catches)."""
        from .capture import Capture, eval_mode
        from .filters import _conv, _over, _rms, filters
        from .images import filter_atlas

        if self.model is None:
            raise RuntimeError("this monitor was loaded from a file: it has no model")
        t0 = time.monotonic()
        model = self.model
        _, conv = _conv(model, self._conv_name)
        with torch.no_grad():
            w = conv.weight.detach()
            rms = _rms(w)
            dominating = _over(rms, self.radius, w.dtype)
            atlas, layout = filter_atlas(filters(conv, normalize="filter"))
            stats = self._probe_stats(model, Capture, eval_mode)
            top9 = self._top9(model) if self.units else {}
        cpu = {
            "atlas": atlas.cpu(),
            "rms": rms.float().cpu(),
            "dominating": dominating.cpu(),
            "weight": w.float().cpu().clone() if self.keep_weights else None,
        }
        stats = {n: {k: v.cpu() for k, v in s.items()} for n, s in stats.items()}
        snap = Snapshot(
            step=self.step_count,
            epoch=self.epoch,
            label=label or f"step {self.step_count}",
            layer=self._conv_name or "",
            weight=cpu["weight"],
            atlas=cpu["atlas"],
            grid=layout.to_json(),
            rms=cpu["rms"],
            dominating=cpu["dominating"],
            radius=self.radius,
            stats=stats,
            top9={k: v.cpu() for k, v in top9.items()},
        )
        snap.warnings = _diagnose(snap)
        snap.seconds = time.monotonic() - t0
        with self._lock:
            self.snapshots.append(snap)
            if len(self.snapshots) > self.max_snapshots:
                # thin out: drop every other one, keep the first and the latest
                keep = self.snapshots[:-1:2] + [self.snapshots[-1]]
                self.snapshots = keep
            self.warnings = snap.warnings
            self._last_snap_t = time.monotonic()
            self._last_snap_step = self.step_count
            self._snap_wait = snap.seconds / self.budget
            self._failures.pop("snapshot", None)
        return snap

    def _probe_on_device(self, model: nn.Module) -> torch.Tensor | None:
        if self._probe is None:
            return None
        from ._checks import model_device

        dev = model_device(model)
        x = self._probe_on.get(dev)
        if x is None:
            x = self._probe_on[dev] = self._probe.to(dev)
        return x

    def _probe_stats(self, model, Capture, eval_mode) -> dict[str, dict[str, torch.Tensor]]:
        x = self._probe_on_device(model)
        if x is None or not self._stat_layers:
            return {}
        acc: dict[str, dict[str, torch.Tensor]] = {}
        count = 0

        def reduce(name: str, out: torch.Tensor) -> None:
            a = out.detach()
            flat = a.reshape(a.shape[0], a.shape[1], -1).float() if a.dim() >= 2 else None
            if flat is None:
                return None
            per_image = flat.amax(2)  # (B, C)
            s = {
                "max": per_image.amax(0),
                "sum": flat.mean(2).sum(0),
                "active": (per_image > 0).float().sum(0),
            }
            prev = acc.get(name)
            if prev is None or prev["max"].shape != s["max"].shape:
                acc[name] = s
            else:
                prev["max"] = torch.maximum(prev["max"], s["max"])
                prev["sum"] += s["sum"]
                prev["active"] += s["active"]
            return None

        with eval_mode(model), torch.no_grad():
            for start in range(0, len(x), self.probe_batch):
                batch = x[start : start + self.probe_batch]
                with Capture(model, self._stat_layers, switches=False, reduce=reduce):
                    model(batch)
                count += len(batch)
        return {
            n: {
                "max": s["max"],
                "mean": s["sum"] / count,
                "active": s["active"] / count,
                "dead": s["max"] <= 0,
            }
            for n, s in acc.items()
        }

    def _top9(self, model: nn.Module) -> dict[str, torch.Tensor]:
        from .images import display_image, tile, to_rgba
        from .mining import mine

        x = self._probe_on_device(model)
        layers = list(self.units)
        atlas = mine(model, x, layers=layers, k=9, batch_size=self.probe_batch, progress=False)
        out: dict[str, torch.Tensor] = {}
        for layer, channels in self.units.items():
            for c in channels:
                patches = display_image(atlas.patches(layer, c))
                recs = atlas.reconstructions(layer, c)
                recs = display_image(recs.reshape(recs.shape[0], *recs.shape[-3:]))
                if patches.shape[1] not in (1, 3):
                    patches = patches.mean(1, keepdim=True)
                    recs = recs.mean(1, keepdim=True)
                left, _ = tile(to_rgba(recs), columns=3)
                right, _ = tile(to_rgba(patches), columns=3)
                gap = left.new_zeros((left.shape[0], 4, 4))
                out[f"{layer}/{c}"] = torch.cat([left, gap, right], 1)
        return out

    # -- listeners (the widget) ------------------------------------------------------------
    def add_listener(self, fn: Callable[[TrainingMonitor, bool], None]) -> None:
        """Call ``fn(monitor, snapshot_taken)`` after each refresh (the widget uses it)."""
        self._listeners.append(fn)

    def _notify(self, snapshot: bool) -> None:
        for fn in list(self._listeners):
            try:
                fn(self, snapshot)
            except Exception as e:  # a broken view must not break training either
                if "widget" not in self._warned:
                    self._warned.add("widget")
                    msg = f"TrainingMonitor: widget update failed ({type(e).__name__}: {e}); training goes on"
                    self.errors.append(msg)
                    warnings.warn(msg, RuntimeWarning, stacklevel=3)

    # -- display ---------------------------------------------------------------------------
    @property
    def widget(self):
        """The live widget (:class:`zfwidgets.widgets.monitor_view.MonitorView`), built once."""
        if self._widget is None:
            from .widgets.monitor_view import MonitorView

            self._widget = MonitorView(self)
        return self._widget

    def _repr_mimebundle_(self, **kwargs: Any):
        return self.widget._repr_mimebundle_(**kwargs)

    def evolution(self):
        """After training: an EvolutionSlider over the snapshots linked to their filters
        (docs/method.md Sec. 3.2, Fig. 4)."""
        from .widgets.monitor_view import evolution

        return evolution(self)

    def summary(self) -> dict[str, Any]:
        """The latest values, for a plain script."""
        with self._lock:
            self._flush()
            last = {k: c.points()[1][-1] for k, c in self.curves.items() if c.points()[1]}
            last.update(
                {k: c.points()[1][-1] for k, c in self.epoch_curves.items() if c.points()[1]}
            )
            return {
                "step": self.step_count,
                "epoch": self.epoch,
                "snapshots": len(self.snapshots),
                "latest": last,
                "warnings": list(self.warnings),
                "errors": list(self.errors),
            }

    def __repr__(self) -> str:
        return (
            f"TrainingMonitor({self.name!r}, step={self.step_count}, epoch={self.epoch}, "
            f"snapshots={len(self.snapshots)})"
        )

    # -- files -----------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Write the run to one ``.safetensors`` file: tiles, statistics and weights as
        tensors, curves and the rest as JSON metadata (no pickle)."""
        from safetensors.torch import save_file

        with self._lock:
            self._flush()
            tensors: dict[str, torch.Tensor] = {}
            snaps = []
            for i, s in enumerate(self.snapshots):
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
                "name": self.name,
                "step": self.step_count,
                "epoch": self.epoch,
                "radius": self.radius,
                "smoothing": self.smoothing,
                "curves": {k: c.to_json() for k, c in self.curves.items()},
                "epoch_curves": {k: c.to_json() for k, c in self.epoch_curves.items()},
                "snapshots": snaps,
                "errors": self.errors,
            }
        if not tensors:  # safetensors needs at least an empty file body; keep one marker
            tensors["_empty"] = torch.zeros(0, dtype=torch.uint8)
        save_file(tensors, os.fspath(path), metadata={"zfwidgets": json.dumps(meta)})

    @classmethod
    def load(cls, path: str | os.PathLike) -> TrainingMonitor:
        """Read a run written by :meth:`save` (a monitor without a model: it displays, compares
        and saves, but takes no snapshots).

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
        m.epoch_curves = {
            k: Curve.from_json(d, m.max_points) for k, d in spec["epoch_curves"].items()
        }
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


def _diagnose(s: Snapshot) -> list[str]:
    """Dead and dominating-filter warnings (docs/method.md Sec. 1 RMS rule, Sec. 3 Fig. 6, Sec. 4)."""
    out = []
    bad = (~torch.isfinite(s.rms)).nonzero().flatten().tolist()
    if bad:
        out.append(
            f"{s.layer}: {len(bad)} filters have non-finite weights ({_ids(bad)}): training "
            "diverged; lower the learning rate"
        )
    dom = s.dominating.nonzero().flatten().tolist()
    if dom:
        out.append(
            f"{s.layer}: {len(dom)} of {len(s.rms)} filters dominate (RMS > {s.radius:g}: "
            f"{_ids(dom)}); renormalise them (zf.renormalize_filters_) or lower the learning rate"
        )
    for layer, st in s.stats.items():
        dead = st["dead"].nonzero().flatten().tolist()
        if dead:
            out.append(
                f"{layer}: {len(dead)} of {len(st['dead'])} channels dead on the probe set "
                f"({_ids(dead)}: never positive); persistent dead units often mean too high a "
                "learning rate"
            )
    return out


def _ids(ids: list[int], show: int = 8) -> str:
    s = ", ".join(map(str, ids[:show]))
    return s + (f", ... ({len(ids) - show} more)" if len(ids) > show else "")


def compare(*runs: TrainingMonitor, labels: Sequence[str] | None = None):
    """Two (or more) runs side by side: overlaid curves and their latest filters."""
    from .widgets.monitor_view import compare as _compare

    return _compare(*runs, labels=labels)
