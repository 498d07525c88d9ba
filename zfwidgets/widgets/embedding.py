"""EmbeddingView: t-SNE / PCA of the penultimate codes as a plotly scatter coloured by class;
hovering a point shows its image in a Gallery beside the plot, clicking selects it (and opens
it in an :class:`Explorer` when one is given).

The hover and click callbacks are plotly ``FigureWidget`` callbacks, run in the kernel: they
need the figure displayed in a live front end. ``selected`` is the kernel-side state (set it
from Python to highlight a point).
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

import ipywidgets as W
import torch
import traitlets as t
from torch import nn

from ..base.images import display_image
from ..base.source import ImageSource
from ..engine.embed import Embedding, embed
from ._snapshot import Pictured
from .gallery import Gallery

__all__ = ["EmbeddingView"]

_COLORS = [
    "#4c78a8", "#f58518", "#e45756", "#72b7b2", "#54a24b",
    "#eeca3b", "#b279a2", "#ff9da6", "#9d755d", "#bab0ac",
]  # fmt: skip


def _class_name(classes: Sequence[str] | None, c: int) -> str:
    if c < 0:
        return "unknown"
    return str(classes[c]) if classes is not None and c < len(classes) else f"class {c}"


def embedding_traces(emb: Embedding, classes: Sequence[str] | None = None) -> list[dict]:
    """Scatter specs: one trace per class (the labels, else the predictions), ``customdata``
    the point's position in ``emb.coords``; the last trace is the (empty) selection marker.
    Names and hover text are HTML-escaped (plotly renders a subset of HTML in text)."""
    colour_by = emb.labels if emb.labels is not None else emb.predicted
    coords = emb.coords.detach().cpu().float()
    specs = []
    for c in sorted({int(v) for v in colour_by.tolist()}):
        pos = [i for i, v in enumerate(colour_by.tolist()) if int(v) == c]
        name = html.escape(_class_name(classes, c))
        text = []
        for i in pos:
            pred = html.escape(_class_name(classes, int(emb.predicted[i])))
            label = f"{name} · " if emb.labels is not None else ""
            text.append(f"#{int(emb.indices[i])} · {label}predicted {pred}")
        specs.append(
            dict(
                name=name,
                x=coords[pos, 0].tolist(),
                y=coords[pos, 1].tolist(),
                customdata=pos,
                text=text,
                hovertemplate="%{text}<extra></extra>",
                mode="markers",
                marker=dict(size=6, color=_COLORS[c % len(_COLORS)], opacity=0.8),
            )
        )
    specs.append(
        dict(
            name="selected",
            x=[],
            y=[],
            mode="markers",
            hoverinfo="skip",
            showlegend=False,
            marker=dict(size=16, color="rgba(0,0,0,0)", line=dict(color="black", width=2)),
        )
    )
    return specs


def embedding_figure(emb: Embedding, classes: Sequence[str] | None = None):
    """The scatter as a ``FigureWidget``, traces given to the constructor (plotly.py #4998)."""
    import plotly.graph_objects as go

    method = "t-SNE" if emb.method == "tsne" else "PCA"
    layout = dict(
        height=420,
        width=560,
        margin=dict(l=40, r=10, t=36, b=36),
        title=dict(text=html.escape(f"{method} of {emb.layer}"), font=dict(size=13)),
        xaxis=dict(title="1", zeroline=False),
        yaxis=dict(title="2", zeroline=False),
        hovermode="closest",
        template="plotly_white",
        legend=dict(itemsizing="constant"),
    )
    fig = go.FigureWidget(
        data=[go.Scatter(**s) for s in embedding_traces(emb, classes)], layout=layout
    )
    fig.add_class("zf-embedding-plot")
    return fig


class EmbeddingView(Pictured, W.HBox):
    """The codes of a layer embedded in 2-d, coloured by class, with the hovered image beside.

    Parameters
    ----------
    model : nn.Module
    data : tensor (N, C, H, W), Dataset, DataLoader or list
        As :func:`zfwidgets.engine.embed`; ``(image, label)`` items give the colours (else the
        predictions).
    layer, method, max_points, labels, transform, seed, perplexity
        As :func:`zfwidgets.engine.embed` (``method`` defaults to ``"pca"`` here: instant).
    classes : list of str, optional
        Class names for the legend and hover text.
    mean, std : per-channel, optional
        Undo the normalisation for display (else min-max per image).
    explorer : Explorer, optional
        A click opens the image there (``explorer.select_image(explorer.add_image(x))``).

    Attributes
    ----------
    result : Embedding
    figure : plotly FigureWidget
    preview : Gallery
        The hovered (else selected) image.
    selected : int or None
        Position in ``result.coords`` of the selected point (click, or set from Python).
    """

    selected = t.Int(None, allow_none=True)

    def __init__(
        self,
        model: nn.Module,
        data: Any,
        *,
        layer: str | nn.Module | None = None,
        method: str = "pca",
        classes: Sequence[str] | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        explorer: Any = None,
        max_points: int | None = 1000,
        labels: Sequence[int] | torch.Tensor | None = None,
        transform: Any = None,
        seed: int = 0,
        perplexity: float = 30.0,
        **kwargs: Any,
    ) -> None:
        res = embed(
            model,
            data,
            layer=layer,
            method=method,
            max_points=max_points,
            labels=labels,
            transform=transform,
            seed=seed,
            perplexity=perplexity,
        )
        self._setup(res, data, transform, classes, mean, std, explorer, **kwargs)

    @classmethod
    def from_result(
        cls,
        res: Embedding,
        data: Any,
        *,
        classes: Sequence[str] | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        explorer: Any = None,
        transform: Any = None,
        **kwargs: Any,
    ) -> EmbeddingView:
        """The widget for an existing :class:`Embedding` of ``data`` (no model run)."""
        if not isinstance(res, Embedding):
            raise TypeError(f"res: expected an Embedding, got {type(res).__name__}")
        self = cls.__new__(cls)
        self._setup(res, data, transform, classes, mean, std, explorer, **kwargs)
        return self

    def _setup(self, res, data, transform, classes, mean, std, explorer, **kwargs) -> None:
        self.result = res
        self.source = ImageSource(data, transform=transform)
        if len(self.source) <= int(res.indices.max()):
            raise ValueError(
                f"data: the embedding indexes item {int(res.indices.max())}, "
                f"data has {len(self.source)}"
            )
        self.classes = list(classes) if classes is not None else None
        self.explorer = explorer
        self._mean, self._std = mean, std
        #: position -> index in the explorer's images (an image is added once)
        self._opened: dict[int, int] = {}
        self.figure = embedding_figure(res, self.classes)
        self.preview = Gallery(
            self._display(0), [self.caption(0)], title=self.caption(0), selectable=False,
            tile_size=None, max_width=160,
        )  # fmt: skip
        self.info = W.HTML(
            value="<i>hover a point to see its image; click to select it"
            + (" and open it in the Explorer" if explorer is not None else "")
            + "</i>",
            layout=W.Layout(width="160px"),
        )
        side = W.VBox([self.preview, self.info], layout=W.Layout(width="180px"))
        super().__init__(children=[self.figure, side], **kwargs)
        self.add_class("zf-embedding")
        for trace in self.figure.data[:-1]:
            trace.on_hover(self._on_hover)
            trace.on_click(self._on_click)

    # -- images ------------------------------------------------------------------------
    def image(self, pos: int) -> torch.Tensor:
        """The model input (C, H, W) of point ``pos``."""
        return self.source.get(int(self.result.indices[pos]))

    def _display(self, pos: int) -> torch.Tensor:
        x = self.image(pos).detach().cpu().unsqueeze(0)
        big = torch.nn.functional.interpolate(x.float(), scale_factor=max(1, 96 // x.shape[-1]))
        return display_image(big, self._mean, self._std)

    def caption(self, pos: int) -> str:
        """``#index · label · predicted`` of point ``pos`` (plain text)."""
        res = self.result
        parts = [f"#{int(res.indices[pos])}"]
        if res.labels is not None:
            parts.append(_class_name(self.classes, int(res.labels[pos])))
        parts.append(f"predicted {_class_name(self.classes, int(res.predicted[pos]))}")
        return " · ".join(parts)

    def show(self, pos: int) -> None:
        """Show point ``pos``'s image in the preview."""
        self._check(pos)
        self.preview.set_images(self._display(pos), [self.caption(pos)])
        self.preview.title = self.caption(pos)

    def _check(self, pos: int) -> None:
        m = self.result.coords.shape[0]
        if isinstance(pos, bool) or not isinstance(pos, int) or not 0 <= pos < m:
            raise ValueError(f"pos: expected an int in [0, {m}), got {pos!r}")

    # -- plotly callbacks (kernel side) ----------------------------------------------------
    @staticmethod
    def _pos(trace: Any, points: Any) -> int | None:
        inds = list(getattr(points, "point_inds", []) or [])
        if not inds or trace.customdata is None:
            return None
        return int(trace.customdata[inds[0]])

    def _on_hover(self, trace: Any, points: Any, state: Any = None) -> None:
        pos = self._pos(trace, points)
        if pos is not None:
            self.show(pos)

    def _on_click(self, trace: Any, points: Any, state: Any = None) -> None:
        pos = self._pos(trace, points)
        if pos is not None:
            self.selected = pos

    @t.validate("selected")
    def _validate_selected(self, proposal: dict) -> int | None:
        pos = proposal["value"]
        if pos is not None:
            try:
                self._check(pos)
            except ValueError as e:
                raise t.TraitError(str(e)) from None
        return pos

    @t.observe("selected")
    def _selected_changed(self, change: dict) -> None:
        pos = change["new"]
        marker = self.figure.data[-1]
        if pos is None:
            marker.x, marker.y = [], []
            return
        xy = self.result.coords[pos].tolist()
        marker.x, marker.y = [xy[0]], [xy[1]]
        self.show(pos)
        if self.explorer is not None:
            self.open_in_explorer(pos)

    def open_in_explorer(self, pos: int) -> int:
        """Add point ``pos``'s image to the Explorer (once) and explore it; its index there."""
        if self.explorer is None:
            raise ValueError("explorer: none was given to this EmbeddingView")
        self._check(pos)
        if pos not in self._opened:
            self._opened[pos] = self.explorer.add_image(self.image(pos), self.caption(pos))
        self.explorer.select_image(self._opened[pos])
        return self._opened[pos]
