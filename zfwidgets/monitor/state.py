"""What a training run has recorded, read at one instant: the data a view draws and a file
holds (:meth:`TrainingMonitor.state <zfwidgets.monitor.TrainingMonitor.state>`).

A plain data type over :mod:`.curves` and :mod:`.snapshots`, so that the files
(:mod:`.files`) and the widgets (:mod:`zfwidgets.widgets.monitor_view`) read a run without
importing the monitor class, and never reach into its lock or buffers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .curves import Curve
from .snapshots import Snapshot

__all__ = ["RunState"]


@dataclass(frozen=True)
class RunState:
    """A consistent copy of a run's record (taken under the monitor's lock, buffered steps
    converted first), safe to read on any thread while training goes on.

    Attributes
    ----------
    name : str
        The run's name.
    step, epoch : int
        Steps and epochs recorded so far.
    radius : float
        The RMS renormalisation radius (docs/method.md Sec. 1).
    smoothing : float
        EMA weight of the drawn smoothed curves.
    curves, epoch_curves : dict[str, Curve]
        Copies of the per-step and per-epoch series.
    snapshots : list of Snapshot
        The snapshots (a new list; a snapshot is never changed once taken).
    warnings : list of str
        The latest snapshot's warnings.
    errors : list of str
        What failed inside the monitor (training went on).
    """

    name: str
    step: int
    epoch: int
    radius: float
    smoothing: float
    curves: dict[str, Curve] = field(default_factory=dict)
    epoch_curves: dict[str, Curve] = field(default_factory=dict)
    snapshots: list[Snapshot] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
