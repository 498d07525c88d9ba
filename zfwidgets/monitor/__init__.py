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
(every module's flag restored after), through :class:`~zfwidgets.engine.capture.Capture` (hooks
removed in ``finally``), so hooks, training flags and ``.grad`` come back as they were.

Layout: ``curves`` (bounded series, smoothing), ``snapshots`` (what a snapshot holds, its
warnings), ``state`` (:class:`RunState`: a run's record read at one instant), ``files`` (save /
load, with the validation of saved runs), ``training`` (the public class). Imports point one
way: ``training`` -> ``files`` -> ``state`` -> ``curves``, ``snapshots``. The widgets
(:mod:`zfwidgets.widgets.monitor_view`) read a run through :meth:`TrainingMonitor.state` and
import only the data modules, never ``training``; the monitor reaches its view lazily, when it
is displayed (the plain object owns the state, its widget is built on display).
"""

from __future__ import annotations

import time  # noqa: F401  (the clock the monitor throttles by; tests patch it from here)

from .curves import Curve, smooth
from .snapshots import Snapshot
from .state import RunState
from .training import TrainingMonitor, compare

__all__ = ["Curve", "RunState", "Snapshot", "TrainingMonitor", "compare", "smooth"]
