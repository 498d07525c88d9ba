"""The widgets of :class:`zfwidgets.monitor.TrainingMonitor`: a live view (plotly curves, the
latest first-layer filters, top-9 tiles, warnings), the evolution over snapshots (docs/method.md
Sec. 3.2, Fig. 4) and a side-by-side comparison of runs.

Composed from existing widgets (plotly's anywidget ``FigureWidget``, :class:`FilterGrid`,
:class:`EvolutionSlider`, ipywidgets): no front-end code of its own. The monitor calls the
view after each of its (time-throttled) refreshes, from the thread that trains; the view reads
the run through the monitor's public ``state()`` (it never imports the monitor class) and
copies it into traits on the kernel's thread (``widgets/_jobs.py``, ``Runner.post``). The
filter grids get the snapshots' recorded weights, not a model.
"""

from __future__ import annotations

import html
import math
import warnings
import weakref
from collections.abc import Sequence
from typing import Any

import ipywidgets as W
import torch

from ..base.codec import pack
from ..engine.filters import filter_flags
from ..monitor.curves import smooth
from ..monitor.snapshots import Snapshot
from ..monitor.state import RunState
from ._jobs import Runner
from ._snapshot import Pictured
from .evolution import EvolutionSlider
from .filter_grid import FilterGrid
from .gallery import Gallery

__all__ = [
    "MonitorView",
    "compare",
    "evolution",
    "show_snapshot",
    "snapshot_frame",
    "snapshot_grid",
]

_COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2"]
_DASHES = ["solid", "dash", "dot", "dashdot"]


# -- filters -----------------------------------------------------------------------------------
def snapshot_frame(s: Snapshot) -> dict[str, Any]:
    """A :class:`FilterGrid` frame (tiles, flags, RMS) from a snapshot."""
    dead = _first_layer_dead(s)
    flags = filter_flags(s.dominating, dead)
    cout = int(s.rms.shape[0])
    shape = list(s.weight.shape) if s.weight is not None else [cout, 1, *s.grid["tile"]]
    return {
        "layer": f"{s.layer} · {s.label}",
        "shape": shape,
        "grid": dict(s.grid),
        "radius": float(s.radius),
        "dead_known": dead is not None,
        **pack({"atlas": s.atlas, "flags": flags, "rms": s.rms.float()}),
    }


def _first_layer_dead(s: Snapshot) -> torch.Tensor | None:
    """Dead flags of the first layer: the first statistics layer with one channel per filter."""
    n = int(s.rms.shape[0])
    for st in s.stats.values():
        if st["dead"].shape == (n,):
            return st["dead"]
    return None


def _checkpoint(s: Snapshot) -> dict[str, torch.Tensor]:
    """A snapshot's first-layer weights as a (partial) state dict, for the evolution slider;
    empty for a run saved without weights."""
    if s.weight is None:
        return {}
    return {f"{s.layer}.weight" if s.layer else "weight": s.weight}


def snapshot_grid(snapshots: Sequence[Snapshot], *, slider: bool, max_width: int) -> FilterGrid:
    """A :class:`FilterGrid` of snapshots' recorded filters: their weights, dominating flags
    and the first layer's dead channels (no model involved). With ``slider``, one frame per
    snapshot (the ``checkpoint`` slider); otherwise the latest only, which
    :func:`show_snapshot` replaces in place. A run recorded with ``keep_weights=False`` shows
    the tiles its snapshots stored."""
    snaps = list(snapshots) if slider else [snapshots[-1]]
    last = snaps[-1]
    labels = [s.label for s in snaps]
    if all(s.weight is not None for s in snaps):
        return FilterGrid(
            weights=[s.weight for s in snaps] if slider else last.weight,
            dead=[_first_layer_dead(s) for s in snaps] if slider else _first_layer_dead(last),
            dominating=[s.dominating for s in snaps] if slider else last.dominating,
            labels=labels,
            layer=last.layer,
            radius=last.radius,
            max_width=max_width,
        )
    frames = [snapshot_frame(s) for s in snaps]
    return FilterGrid._of_frames(frames, labels, layer=last.layer, max_width=max_width)


def show_snapshot(grid: FilterGrid, s: Snapshot) -> None:
    """Show snapshot ``s`` in a grid made by :func:`snapshot_grid` without a slider."""
    if s.weight is not None:
        grid.set_weights(
            s.weight, dead=_first_layer_dead(s), dominating=s.dominating, label=s.label
        )
    else:
        grid._show_frame(snapshot_frame(s), s.label)


# -- top-9 -------------------------------------------------------------------------------------
class _TopNineTiles(W.HBox):
    """One tile per unit: its top-9 deconvnet projections beside the probe patches, each a
    :class:`Gallery` (sent through the one codec)."""

    def __init__(self) -> None:
        super().__init__(layout=W.Layout(flex_flow="row wrap"))
        self._tiles: dict[str, Gallery] = {}

    def show(self, s: Snapshot) -> None:
        children = []
        for unit, rgba in s.top9.items():
            image = rgba[..., :3].permute(2, 0, 1).unsqueeze(0).float() / 255
            layer, c = unit.split("/")
            title = f"{layer} · unit {c} · {s.label}"
            tile = self._tiles.get(unit)
            if tile is None:
                tile = self._tiles[unit] = Gallery(
                    image, [title], title=title, selectable=False, tile_size=None, max_width=204
                )
            else:
                tile.set_images(image, [title])
                tile.title = title
            children.append(tile)
        self.children = children


# -- curves ------------------------------------------------------------------------------------
_LAYOUT = dict(
    height=280,
    width=620,
    margin=dict(l=50, r=50, t=30, b=40),
    xaxis=dict(title="step"),
    yaxis=dict(title="loss"),
    yaxis2=dict(title="metric", overlaying="y", side="right", showgrid=False),
    legend=dict(orientation="h", y=1.12),
    template="plotly_white",
)


def _figure(specs: list[dict]):
    """A FigureWidget with its traces and layout given to the constructor: plotly >= 6's
    anywidget FigureWidget loses incremental messages (add_traces, relayout) sent before
    its view exists (plotly.py #4998), while the constructor's state always arrives."""
    import plotly.graph_objects as go

    fig = go.FigureWidget(data=[go.Scatter(**spec) for spec in specs], layout=_LAYOUT)
    fig.add_class("zf-monitor-curves")
    return fig


def _finite(values: list[float]) -> list[float | None]:
    """Non-finite values as gaps (None): NaN is not JSON, and a diverged run has them."""
    return [v if math.isfinite(v) else None for v in values]


def _traces(m: RunState, run: int = 0, prefix: str = "") -> list[dict]:
    """Trace specs (name -> x, y, style) of one run's curves. Names are HTML-escaped: plotly
    renders a subset of HTML (links among it) in trace names."""
    out = []
    color_i = 0
    dash = _DASHES[run % len(_DASHES)]
    for k, c in m.curves.items():
        x, y = c.points()
        color = _COLORS[(color_i + run * 2) % len(_COLORS)]
        color_i += 1
        axis = "y" if "loss" in k else "y2"
        if not prefix:  # raw values, faint (only for the live view)
            out.append(
                dict(
                    name=html.escape(f"{k} (raw)"),
                    x=x,
                    y=_finite(y),
                    yaxis=axis,
                    opacity=0.25,
                    showlegend=False,
                    line=dict(color=color, width=1),
                    mode="lines",
                )
            )
        out.append(
            dict(
                name=html.escape(f"{prefix}{k}"),
                x=x,
                y=_finite(smooth(y, m.smoothing)),
                yaxis=axis,
                line=dict(color=color, width=2, dash=dash),
                mode="lines",
            )
        )
    for k, c in m.epoch_curves.items():
        x, y = c.points()
        color = _COLORS[(color_i + run * 2) % len(_COLORS)]
        color_i += 1
        axis = "y" if "loss" in k else "y2"
        out.append(
            dict(
                name=html.escape(f"{prefix}{k}"),
                x=x,
                y=_finite(y),
                yaxis=axis,
                mode="lines+markers",
                line=dict(color=color, width=2, dash=dash),
                marker=dict(size=6),
            )
        )
    return out


def _update_figure(fig, specs: list[dict]) -> bool:
    """Set x and y of every trace (whole arrays, so a message lost before the view existed
    is repaired by the next one). False when the traces differ (build a new figure)."""
    if [t.name for t in fig.data] != [spec["name"] for spec in specs]:
        return False
    with fig.batch_update():
        for tr, spec in zip(fig.data, specs):
            tr.x, tr.y = spec["x"], spec["y"]
    return True


# -- the live view -----------------------------------------------------------------------------
def _state(monitor: Any, what: str) -> RunState:
    """A monitor's record, read through its public ``state()`` (the view takes any object
    that has one, or a :class:`RunState`, and never imports the monitor class)."""
    if isinstance(monitor, RunState):
        return monitor
    read = getattr(monitor, "state", None)
    if not callable(read):
        raise TypeError(f"{what}: expected a TrainingMonitor, got {type(monitor).__name__}")
    return read()


def _status(m: RunState) -> str:
    parts = [
        f"<b>{html.escape(m.name)}</b>",
        f"step <span class='zf-monitor-step'>{m.step}</span>",
    ]
    if m.epoch:
        parts.append(f"epoch {m.epoch}")
    for k, c in list(m.curves.items())[:3]:
        _, y = c.points()
        if y:
            parts.append(f"{html.escape(k)} {y[-1]:.4g}")
    parts.append(f"{len(m.snapshots)} snapshots")
    return " · ".join(parts)


def _alerts(m: RunState) -> str:
    rows = [f"<div class='zf-monitor-error'>⚠ {html.escape(e)}</div>" for e in m.errors]
    rows += [f"<div class='zf-monitor-warning'>{html.escape(w)}</div>" for w in m.warnings]
    return "".join(rows) or "<div class='zf-monitor-ok'>no dead or dominating filters</div>"


class MonitorView(Pictured, W.VBox):
    """The live widget of a :class:`TrainingMonitor` (``monitor.widget``).

    Children: a status line (step, epoch, latest values), a plotly ``FigureWidget`` with the
    smoothed curves (train per step, validation per epoch), the latest snapshot's first-layer
    filters (a :class:`FilterGrid`: dominating filters marked, dead ones too when there is a
    probe), the top-9 tiles of the chosen units, and the warnings.

    The monitor calls :meth:`update` from whatever thread trains; the view applies it by the
    job runner's rule (``widgets/_jobs.py``, :meth:`Runner.post`): on the kernel's event loop
    (the one running where the view was made), or inline where no loop runs. A trait is never
    set from the training thread while a kernel runs.

    Parameters
    ----------
    monitor : TrainingMonitor
        Any object with ``state()`` (a :class:`~zfwidgets.monitor.state.RunState`) and
        ``add_listener(fn)``.
    """

    def __init__(self, monitor: Any, **kwargs: Any) -> None:
        self.monitor = monitor
        run = _state(monitor, "monitor")
        self.status = W.HTML(_status(run))
        self.status.add_class("zf-monitor-status")
        self.figure = _figure(_traces(run))
        self.filters: FilterGrid | None = None
        self._filter_box = W.VBox(
            [W.HTML("<small>filters: waiting for the first snapshot</small>")]
        )
        self.top9 = _TopNineTiles()
        self.alerts = W.HTML(_alerts(run))
        self.alerts.add_class("zf-monitor-alerts")
        self._shown: Snapshot | None = None
        self._queued = False
        self._failed = False
        self._runner = Runner(f"zfwidgets.MonitorView-{id(self):x}")
        self._figure_box = W.Box([self.figure])
        super().__init__(
            [self.status, self._figure_box, W.HBox([self._filter_box, self.top9]), self.alerts],
            **kwargs,
        )
        self.add_class("zf-monitor")
        self._redraw(run)
        ref = weakref.ref(self)

        def listener(m: Any, snapshot: bool) -> None:
            view = ref()
            if view is not None:
                view.update(m, snapshot)

        monitor.add_listener(listener)

    def update(self, m: Any = None, snapshot: bool = False) -> None:
        """Redraw from the monitor's record (the monitor calls it after each refresh, from the
        thread that trains).

        Applied on the kernel's thread by :meth:`Runner.post` (inline where no loop runs).
        Requests that arrive while one waits for the loop are merged into it: the redraw reads
        the record when it runs, so it shows the latest state. A new snapshot is recognised
        by itself (``snapshot`` is accepted for compatibility).
        """
        if self._queued:
            return
        self._queued = True
        self._runner.post(self._apply, self.monitor if m is None else m)

    def _apply(self, monitor: Any) -> None:
        self._queued = False  # before reading: a later request gets its own redraw
        try:
            self._redraw(_state(monitor, "monitor"))
        except Exception as e:  # shown in the widget (on the loop nobody else would see it)
            msg = f"the view could not update ({type(e).__name__}: {e})"
            self.alerts.value = f"<div class='zf-monitor-error'>⚠ {html.escape(msg)}</div>"
            if not self._failed:
                self._failed = True
                warnings.warn(
                    f"TrainingMonitor: {msg}; training goes on", RuntimeWarning, stacklevel=2
                )

    def _redraw(self, run: RunState) -> None:
        """Copy a record into the children (on the owner's thread)."""
        specs = _traces(run)
        if not _update_figure(self.figure, specs):  # a new series: a new figure
            old, self.figure = self.figure, _figure(specs)
            self._figure_box.children = [self.figure]
            old.close()
        self.status.value = _status(run)
        self.alerts.value = _alerts(run)
        latest = run.snapshots[-1] if run.snapshots else None
        if latest is not None and latest is not self._shown:
            self._shown = latest
            if self.filters is None:
                self.filters = snapshot_grid([latest], slider=False, max_width=320)
                self.filters.add_class("zf-monitor-filters")
                self._filter_box.children = [self.filters]
            else:
                show_snapshot(self.filters, latest)
            if latest.top9:
                self.top9.show(latest)

    def close(self) -> None:
        """Close the view; updates still waiting for the loop are dropped."""
        self._runner.close()
        super().close()


# -- after training ----------------------------------------------------------------------------
def evolution(monitor: Any) -> W.VBox:
    """An :class:`EvolutionSlider` over the snapshots, linked to their filters (and their top-9
    tiles): docs/method.md Sec. 3.2, Fig. 4."""
    snaps = _state(monitor, "monitor").snapshots
    if not snaps:
        raise ValueError("evolution: the monitor has no snapshots yet")
    grid = snapshot_grid(snaps, slider=True, max_width=360)
    slider = EvolutionSlider(
        [_checkpoint(s) for s in snaps],
        labels=[s.label for s in snaps],
        index=len(snaps) - 1,
        description="snapshot",
    )
    slider.link(grid)
    top9 = _TopNineTiles()
    if snaps[-1].top9:
        top9.show(snaps[-1])
        slider.observe(
            lambda ch: top9.show(snaps[ch["new"]]) if snaps[ch["new"]].top9 else None, "index"
        )
    box = W.VBox([slider, W.HBox([grid, top9])])
    box.add_class("zf-monitor-evolution")
    box.slider, box.grid, box.top9 = slider, grid, top9
    return box


def compare(*monitors: Any, labels: Sequence[str] | None = None) -> W.VBox:
    """Runs side by side: their smoothed curves overlaid (one dash style per run) and the
    latest first-layer filters of each."""
    if len(monitors) < 2:
        raise ValueError(f"compare: expected at least two runs, got {len(monitors)}")
    runs = [_state(r, f"runs[{i}]") for i, r in enumerate(monitors)]
    names = list(labels) if labels is not None else [r.name for r in runs]
    if len(names) != len(runs):
        raise ValueError(f"labels: expected {len(runs)} labels, got {len(names)}")
    if len(set(names)) < len(names):
        names = [f"{n} ({i})" for i, n in enumerate(names)]
    specs = []
    for i, (r, n) in enumerate(zip(runs, names)):
        specs += _traces(r, run=i, prefix=f"{n}: ")
    fig = _figure(specs)
    panels = []
    for r, n in zip(runs, names):
        if r.snapshots:
            g = snapshot_grid(r.snapshots, slider=False, max_width=300)
            panels.append(W.VBox([W.HTML(f"<b>{html.escape(n)}</b>"), g]))
        else:
            panels.append(W.HTML(f"<b>{html.escape(n)}</b>: no snapshots"))
    box = W.VBox([fig, W.HBox(panels)])
    box.add_class("zf-monitor-compare")
    box.figure = fig
    return box
