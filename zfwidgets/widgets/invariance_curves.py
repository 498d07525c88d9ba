"""InvarianceCurves: Fig. 5 of the paper live -- the transformed images as a strip above one
plotly panel per layer (normalised feature distance vs amount) and one for the probability of
the followed class.

Composed from existing widgets: a :class:`Gallery` (image tiles, captions as text) and plotly's
``FigureWidget`` (text drawn by plotly as SVG text, never as HTML).
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from typing import Any

import ipywidgets as W
import torch
from torch import nn

from ..base.images import display_image
from ..engine.invariance import Invariance, invariance
from ._snapshot import Pictured
from .gallery import Gallery

__all__ = ["InvarianceCurves", "invariance_figure"]

_UNITS = {
    "translate": "translation (pixels)",
    "scale": "scale factor",
    "rotate": "rotation (degrees)",
}
_COLORS = ["#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2", "#eeca3b", "#9d755d"]


def _finite(values: Sequence[float]) -> list[float | None]:
    """NaN / inf as gaps (None): not JSON."""
    return [float(v) if math.isfinite(float(v)) else None for v in values]


def _fmt(transform: str, a: float) -> str:
    if transform == "scale":
        return f"×{a:g}"
    if transform == "rotate":
        return f"{a:g}°"
    return f"{a:+g} px"


def invariance_traces(res: Invariance, classes: Sequence[str] | None = None) -> list[dict]:
    """Trace specs of the Fig. 5 panels: per layer (axis ``x{i}``/``y{i}``) one thin line per
    image and the mean in bold, then the same for the probability (last panel)."""
    amounts = [float(v) for v in res.amounts]
    n = res.probability.shape[0]
    specs: list[dict] = []
    panels = [(layer, res.distance[layer], res.mean_distance[layer]) for layer in res.layers]
    panels.append(("probability", res.probability, res.mean_probability))
    for p, (name, per_image, mean) in enumerate(panels):
        axis = "" if p == 0 else str(p + 1)
        for i in range(n):
            if name == "probability":
                t = int(res.target[i])
                label = classes[t] if classes is not None and t < len(classes) else f"class {t}"
                tname = html.escape(f"image {i} ({label})")
            else:
                tname = f"image {i}"
            specs.append(
                dict(
                    name=tname,
                    legendgroup=f"image {i}",
                    showlegend=p == 0,
                    x=amounts,
                    y=_finite(per_image[i].tolist()),
                    xaxis=f"x{axis}",
                    yaxis=f"y{axis}",
                    mode="lines",
                    line=dict(width=1, color=_COLORS[i % len(_COLORS)]),
                    opacity=0.6,
                    meta=name,
                )
            )
        specs.append(
            dict(
                name="mean",
                legendgroup="mean",
                showlegend=p == 0,
                x=amounts,
                y=_finite(mean.tolist()),
                xaxis=f"x{axis}",
                yaxis=f"y{axis}",
                mode="lines+markers",
                line=dict(width=3, color="black"),
                marker=dict(size=5),
                meta=name,
            )
        )
    return specs


def invariance_figure(res: Invariance, classes: Sequence[str] | None = None):
    """A plotly ``FigureWidget`` of the Fig. 5 panels, traces and layout given to the
    constructor (plotly >= 6's anywidget FigureWidget loses incremental messages sent before
    its view exists, plotly.py #4998)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    # plotly renders a subset of HTML in titles and names: user strings are escaped
    titles = [html.escape(f"{layer}: distance") for layer in res.layers]
    titles.append("probability of the class")
    grid = make_subplots(rows=1, cols=len(titles), subplot_titles=titles, horizontal_spacing=0.07)
    layout = grid.layout.to_plotly_json()
    xlabel = html.escape(_UNITS.get(res.transform, str(res.transform)))
    for p in range(len(titles)):
        axis = "" if p == 0 else str(p + 1)
        layout[f"xaxis{axis}"]["title"] = dict(text=xlabel, font=dict(size=11))
        layout[f"yaxis{axis}"]["rangemode"] = "tozero"
    last = "" if len(titles) == 1 else str(len(titles))
    layout[f"yaxis{last}"]["range"] = [0, 1.02]
    layout.update(
        height=300,
        width=max(620, 260 * len(titles)),
        margin=dict(l=45, r=20, t=40, b=45),
        legend=dict(orientation="h", y=-0.25),
        template="plotly_white",
    )
    fig = go.FigureWidget(
        data=[go.Scatter(**s) for s in invariance_traces(res, classes)], layout=layout
    )
    fig.add_class("zf-invariance-curves")
    return fig


class InvarianceCurves(Pictured, W.VBox):
    """Fig. 5: how far each layer's features and the class probability move under a
    transform.

    Parameters
    ----------
    model : nn.Module
    images : Tensor (N, C, H, W)
        Model inputs (normalised); see :func:`zfwidgets.engine.invariance`.
    transform : {"translate", "scale", "rotate"}
    amounts, layers, target
        As :func:`zfwidgets.engine.invariance`.
    mean, std : per-channel, optional
        Undo the normalisation for display (else min-max per image).
    classes : list of str, optional
        Class names for the legend.

    Attributes
    ----------
    result : Invariance
    strip : Gallery
        The transformed versions of the image picked in ``image`` (a dropdown when N > 1).
    figure : plotly FigureWidget
    """

    def __init__(
        self,
        model: nn.Module,
        images: torch.Tensor,
        *,
        transform: str = "translate",
        amounts: Sequence[float] | torch.Tensor | None = None,
        layers: Sequence[str | nn.Module] | None = None,
        target: int | Sequence[int] | torch.Tensor | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        classes: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> None:
        res = invariance(
            model, images, transform=transform, amounts=amounts, layers=layers, target=target
        )
        self._setup(res, mean=mean, std=std, classes=classes, **kwargs)

    @classmethod
    def from_result(
        cls,
        res: Invariance,
        *,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        classes: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> InvarianceCurves:
        """The widget for an existing :class:`Invariance` result (no model run)."""
        if not isinstance(res, Invariance):
            raise TypeError(f"res: expected an Invariance, got {type(res).__name__}")
        self = cls.__new__(cls)
        self._setup(res, mean=mean, std=std, classes=classes, **kwargs)
        return self

    def _setup(
        self,
        res: Invariance,
        *,
        mean: Sequence[float] | None,
        std: Sequence[float] | None,
        classes: Sequence[str] | None,
        **kwargs: Any,
    ) -> None:
        self.result = res
        self.classes = list(classes) if classes is not None else None
        self._mean, self._std = mean, std
        n = res.images.shape[0]
        self.selector = W.Dropdown(
            options=[(f"image {i}", i) for i in range(n)],
            value=0,
            description="strip of",
            layout=W.Layout(width="200px", display="" if n > 1 else "none"),
        )
        self.strip = Gallery(
            self._strip_images(0),
            self._strip_captions(0),
            title=self._strip_title(0),
            selectable=False,
            tile_size=72,
        )
        self.figure = invariance_figure(res, self.classes)
        self.selector.observe(lambda change: self.show_image(change["new"]), names="value")
        super().__init__(children=[self.selector, self.strip, self.figure], **kwargs)
        self.add_class("zf-invariance")

    # -- the strip -----------------------------------------------------------------------
    def _strip_images(self, i: int) -> torch.Tensor:
        x = self.result.images[i].detach().cpu().float()
        if x.shape[-1] < 48:  # small images (28x28): nearest-neighbour x2 to be readable
            x = torch.nn.functional.interpolate(x, scale_factor=2)
        return display_image(x, self._mean, self._std)

    def _strip_captions(self, i: int) -> list[str]:
        res = self.result
        return [
            f"{_fmt(res.transform, float(a))} · p = {float(p):.2f}"
            for a, p in zip(res.amounts, res.probability[i])
        ]

    def _strip_title(self, i: int) -> str:
        t = int(self.result.target[i])
        name = self.classes[t] if self.classes is not None and t < len(self.classes) else str(t)
        return f"image {i} ({name}) · {self.result.transform}"

    def show_image(self, i: int) -> None:
        """Show the transformed versions of image ``i`` in the strip."""
        n = self.result.images.shape[0]
        if not 0 <= i < n:
            raise ValueError(f"i: expected an int in [0, {n}), got {i}")
        if self.selector.value != i:
            self.selector.value = i  # calls back here
            return
        self.strip.set_images(self._strip_images(i), self._strip_captions(i))
        self.strip.title = self._strip_title(i)
