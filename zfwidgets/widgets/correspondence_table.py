"""CorrespondenceTable: Table 1 of the paper -- per part and layer, the consistency score of
occluding that part in every image against random occlusions of the same size."""

from __future__ import annotations

import html
import math
from typing import Any

import ipywidgets as W

from ..engine.correspondence import Correspondence
from ._snapshot import Pictured

__all__ = ["CorrespondenceTable", "correspondence_html"]

_CSS = "border-collapse:collapse;font:13px/1.4 system-ui,sans-serif;margin:4px 0;"
_CELL = "padding:3px 10px;border-bottom:1px solid #ddd;text-align:right;"
_HEAD = "padding:3px 10px;border-bottom:2px solid #888;text-align:center;"


def _num(v: float) -> str:
    return f"{v:.3f}" if math.isfinite(v) else "–"


def correspondence_html(result: Correspondence, caption: str | None = None) -> str:
    """The table as HTML (every part and layer name escaped). A part whose score is below the
    random baseline in a layer (a more consistent change: correspondence) is marked ``✓``
    and set in bold."""
    if not isinstance(result, Correspondence):
        raise TypeError(f"result: expected a Correspondence, got {type(result).__name__}")
    esc = html.escape
    head = "".join(
        f'<th style="{_HEAD}" colspan="2">{esc(str(layer))}</th>' for layer in result.layers
    )
    sub = "".join(
        f'<th style="{_HEAD}">score</th><th style="{_HEAD}">random ± std</th>'
        for _ in result.layers
    )
    rows = []
    for part in result.score:
        cells = [f'<td style="{_CELL}text-align:left" class="zf-part">{esc(str(part))}</td>']
        for layer in result.layers:
            s = float(result.score[part][layer])
            r = float(result.random[part][layer])
            sd = float(result.random_std[part][layer])
            below = math.isfinite(s) and math.isfinite(r) and s < r
            mark = ' <span class="zf-consistent" title="below the random baseline">✓</span>'
            cls = "zf-score zf-below" if below else "zf-score"
            weight = "font-weight:600;background:#e8f4e8;" if below else ""
            cells.append(
                f'<td style="{_CELL}{weight}" class="{cls}">{_num(s)}{mark if below else ""}</td>'
                f'<td style="{_CELL}color:#666" class="zf-random">{_num(r)} ± {_num(sd)}</td>'
            )
        rows.append(f"<tr>{''.join(cells)}</tr>")
    cap = (
        caption
        if caption is not None
        else (
            "Consistency Δ (lower = the same change in every image); ✓: below the random baseline"
        )
    )
    return (
        f'<table class="zf-correspondence" style="{_CSS}">'
        f'<caption style="caption-side:bottom;color:#666;font-size:12px;padding-top:4px">'
        f"{esc(cap)}</caption>"
        f'<thead><tr><th style="{_HEAD}" rowspan="2">part</th>{head}</tr><tr>{sub}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


class CorrespondenceTable(Pictured, W.HTML):
    """Table 1 of the paper for a :class:`zfwidgets.Correspondence` result.

    Parameters
    ----------
    result : Correspondence
        From :func:`zfwidgets.engine.correspondence`.
    caption : str, optional
        Text under the table (escaped).
    """

    def __init__(self, result: Correspondence, caption: str | None = None, **kwargs: Any):
        self.result = result
        super().__init__(value=correspondence_html(result, caption), **kwargs)
        self.add_class("zf-correspondence-table")
