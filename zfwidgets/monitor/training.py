"""TrainingMonitor: the public class that records a training run (see :mod:`zfwidgets.monitor`).

It imports no widget module at import time; displaying a monitor builds its view
(:mod:`zfwidgets.widgets.monitor_view`) on first use.
"""

from __future__ import annotations

import math
import os
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from .curves import Curve
from .snapshots import Snapshot, diagnose
from .state import RunState

__all__ = ["TrainingMonitor", "compare"]


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
    from ..base.checks import check_finite_batch

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
    >>> import os, tempfile
    >>> import torch, torch.nn.functional as F
    >>> import zfwidgets as zf
    >>> images, labels = zf.load_default().images.tensors()
    >>> _ = torch.manual_seed(0)
    >>> model = zf.models.zfnet_small()
    >>> opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    >>> monitor = TrainingMonitor(model, probe=images[:16], every=1)
    >>> for epoch in range(2):
    ...     for i in range(0, 64, 32):
    ...         x, y = images[i : i + 32], labels[i : i + 32]
    ...         loss = F.cross_entropy(model(x), y); opt.zero_grad(); loss.backward(); opt.step()
    ...         monitor.step(loss=loss)
    ...     monitor.epoch_end(val_acc=0.5)
    >>> monitor.save(os.path.join(tempfile.mkdtemp(), "run.safetensors"))

    In a notebook, ``monitor`` as the last expression of a cell shows the live widget.
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
            from ..base.checks import check_model
            from ..base.layers import resolve_layer, resolve_layers
            from ..engine.filters import conv_layer

            check_model(model)
            self._conv_name = conv_layer(model, conv)[0]
            if layers is None:
                self._stat_layers = _default_stat_layers(model)
            else:
                self._stat_layers = [n for n, _ in resolve_layers(model, layers)]
            for layer in self.units:
                resolve_layer(model, layer)
            self._probe = _probe_tensor(probe, max(1, int(max_probe)))
            if self._probe is not None:  # channels, dtype and size against the model, now
                from ..base.checks import model_device
                from ..engine.probe import check_images

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
        from ..base.images import filter_atlas
        from ..base.layers import eval_mode
        from ..engine.capture import Capture
        from ..engine.filters import conv_layer, over_radius, weight_images, weight_rms

        if self.model is None:
            raise RuntimeError("this monitor was loaded from a file: it has no model")
        t0 = time.monotonic()
        model = self.model
        _, conv = conv_layer(model, self._conv_name)
        with torch.no_grad():
            w = conv.weight.detach()
            rms = weight_rms(w)
            dominating = over_radius(rms, self.radius, w.dtype)
            atlas, layout = filter_atlas(weight_images(w, normalize="filter"))
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
        snap.warnings = diagnose(snap)
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
        from ..base.checks import model_device

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
        from ..atlas.mining import mine
        from ..base.images import display_image, pair_atlas

        x = self._probe_on_device(model)
        layers = list(self.units)
        atlas = mine(model, x, layers=layers, k=9, batch_size=self.probe_batch, progress=False)
        out: dict[str, torch.Tensor] = {}
        for layer, channels in self.units.items():
            for c in channels:
                patches = display_image(atlas.patches(layer, c))
                recs = atlas.reconstructions(layer, c)
                recs = display_image(recs.reshape(recs.shape[0], *recs.shape[-3:]))
                out[f"{layer}/{c}"] = pair_atlas(recs, patches, columns=3, gap=4).image
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
            from ..widgets.monitor_view import MonitorView

            self._widget = MonitorView(self)
        return self._widget

    def _repr_mimebundle_(self, **kwargs: Any):
        return self.widget._repr_mimebundle_(**kwargs)

    def evolution(self):
        """After training: an EvolutionSlider over the snapshots linked to their filters
        (docs/method.md Sec. 3.2, Fig. 4)."""
        from ..widgets.monitor_view import evolution

        return evolution(self)

    def state(self) -> RunState:
        """What the monitor has recorded, read at one instant: buffered steps converted to
        curves (one host transfer), the curves and the snapshot list copied.

        Safe to call from any thread while another one trains: the widget and
        :meth:`save` read the run through it.
        """
        with self._lock:
            self._flush()
            return RunState(
                name=self.name,
                step=self.step_count,
                epoch=self.epoch,
                radius=self.radius,
                smoothing=self.smoothing,
                curves={k: c.copy() for k, c in self.curves.items()},
                epoch_curves={k: c.copy() for k, c in self.epoch_curves.items()},
                snapshots=list(self.snapshots),
                warnings=list(self.warnings),
                errors=list(self.errors),
            )

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
        from . import files

        files.save(self, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> TrainingMonitor:
        """Read a run written by :meth:`save` (a monitor without a model: it displays, compares
        and saves, but takes no snapshots); every field is checked before use."""
        from . import files

        return files.load(cls, path)


def compare(*runs: TrainingMonitor, labels: Sequence[str] | None = None):
    """Two (or more) runs side by side: overlaid curves and their latest filters."""
    from ..widgets.monitor_view import compare as _compare

    return _compare(*runs, labels=labels)
