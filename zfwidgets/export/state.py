"""The saved widget state of a notebook, checked and cut down to what the exported page draws.

A notebook executed with ``store_widget_state`` (nbclient, JupyterLab's "Save Widget State
Automatically") keeps every widget's synced traits in its metadata:
``metadata.widgets["application/vnd.jupyter.widget-state+json"] = {"version_major": 2,
"state": {model_id: {"model_name", "model_module", "state": {...}, "buffers": [{"path":
[...], "data": "<base64>", "encoding": "base64"}]}}}``. That text is untrusted: the notebook
may have been edited, damaged, or written to attack whoever opens the export.

:func:`page_state` returns, for every model, what the page needs and nothing else:

- a **zfwidgets** widget (anywidget, ``_anywidget_id`` naming one of our classes): its traits
  without ``_esm`` / ``_css`` (the page draws it with *our* bundle, never with code found in
  the notebook) and its buffers, each checked (base64 alphabet, size, a path that exists);
- a **core ipywidgets** model the page draws (boxes, labels, HTML, images, simple controls,
  layouts): its traits;
- **anything else** (another library's widget, a damaged entry): a one-line note, as text.

Sizes are checked before anything is decoded: a buffer's decoded size is computed from the
length of its base64 text, and the page's total is capped, so no payload makes the exporter
(or the page) allocate more than :data:`MAX_TOTAL_BYTES` for buffers.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "BUNDLES",
    "CORE_MODELS",
    "MAX_BUFFER_BYTES",
    "MAX_MODELS",
    "MAX_STATE_BYTES",
    "MAX_TOTAL_BYTES",
    "MIME",
    "PLOTLY_BUNDLE",
    "PLOTLY_IDS",
    "PageState",
    "page_state",
]

#: The notebook metadata key nbclient and JupyterLab save widget state under.
MIME = "application/vnd.jupyter.widget-state+json"

#: The widget classes whose saved state the page draws, by anywidget's ``_anywidget_id``
#: (``module.Class``), and the bundle in ``zfwidgets/static/`` that draws each (the one the
#: live widget uses: ``_bundle`` of the class; tests/export checks the two agree).
BUNDLES = {
    "zfwidgets.widgets.evolution.EvolutionSlider": "evolution.js",
    "zfwidgets.widgets.filter_grid.FilterGrid": "filter_grid.js",
    "zfwidgets.widgets.gallery.Gallery": "gallery.js",
    "zfwidgets.widgets.layer_grid.LayerGrid": "layer_grid.js",
    "zfwidgets.widgets.layer_overview.LayerOverview": "layer_overview.js",
    "zfwidgets.widgets.occlusion_map.OcclusionMap": "occlusion_map.js",
    "zfwidgets.widgets.predictions.Predictions": "predictions.js",
    "zfwidgets.widgets.top_nine.TopNine": "top_nine.js",
}

#: anywidget ids of plotly's ``FigureWidget`` (the training monitor's curves, the invariance
#: curves): drawn with plotly.js from the plotly package (:data:`PLOTLY_BUNDLE`), from the
#: figure's saved data, layout and config only.
PLOTLY_IDS = frozenset(
    {"plotly.graph_objs._figurewidget.FigureWidget", "plotly.basewidget.BaseFigureWidget"}
)
PLOTLY_BUNDLE = "plotly.min.js"
_PLOTLY_KEEP = ("_widget_data", "_widget_layout", "_config", "_dom_classes", "layout")

#: The core ipywidgets models the page draws from their state (read-only: a control that
#: would need the kernel says so when used).
CORE_MODELS = frozenset(
    {
        "VBoxModel",
        "HBoxModel",
        "BoxModel",
        "GridBoxModel",
        "AccordionModel",
        "TabModel",
        "StackModel",
        "HTMLModel",
        "HTMLMathModel",
        "LabelModel",
        "ImageModel",
        "DropdownModel",
        "SelectModel",
        "RadioButtonsModel",
        "ToggleButtonsModel",
        "SelectionSliderModel",
        "IntSliderModel",
        "FloatSliderModel",
        "FloatLogSliderModel",
        "IntRangeSliderModel",
        "FloatRangeSliderModel",
        "IntProgressModel",
        "FloatProgressModel",
        "IntTextModel",
        "FloatTextModel",
        "BoundedIntTextModel",
        "BoundedFloatTextModel",
        "TextModel",
        "TextareaModel",
        "ButtonModel",
        "ToggleButtonModel",
        "CheckboxModel",
        "FileUploadModel",
        "PlayModel",
        "LayoutModel",
    }
)
_CORE_MODULES = ("@jupyter-widgets/controls", "@jupyter-widgets/base")

#: At most this many models are kept (a real notebook has tens to hundreds).
MAX_MODELS = 20_000
#: One buffer, decoded, at most (a widget's largest frame is a few MB).
MAX_BUFFER_BYTES = 64 << 20
#: All buffers of the page together, decoded, at most.
MAX_TOTAL_BYTES = 256 << 20
#: One model's traits (JSON, without buffers) at most.
MAX_STATE_BYTES = 16 << 20
#: Buffer paths deeper than this are refused.
MAX_PATH_DEPTH = 32
#: Notes are cut to this many characters.
_NOTE_CHARS = 160

_BASE64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")
_MODEL_ID = re.compile(r"[A-Za-z0-9_\-]{1,128}")
#: Traits of an anywidget model the page never needs (the code and style of the live widget;
#: the page uses its own copy of our bundles).
_DROPPED = ("_esm", "_css", "_anywidget_id")


@dataclass
class PageState:
    """What the exported page gets: ``models`` (model id -> entry, JSON-ready) and the
    ``bundles`` its zfwidgets widgets need; ``notes`` says, per model id, why one is not
    drawn (the same text the page shows)."""

    models: dict[str, dict[str, Any]] = field(default_factory=dict)
    bundles: list[str] = field(default_factory=list)
    notes: dict[str, str] = field(default_factory=dict)
    #: one line on the state as a whole ("no widget state saved", ...), or ""
    summary: str = ""


def _short(value: Any, limit: int = 60) -> str:
    text = value if isinstance(value, str) else type(value).__name__
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _note(entry_name: str, why: str) -> str:
    return f"{entry_name}: {why}"[:_NOTE_CHARS]


def _decoded_size(data: str) -> int:
    """The byte count of base64 text, from its length (no decoding)."""
    pad = len(data) - len(data.rstrip("="))
    return len(data) // 4 * 3 - pad


def _first(path: Any) -> Any:
    return path[0] if isinstance(path, list) and path else None


def _resolve(state: Any, path: list[Any]) -> bool:
    """Whether ``path`` names a place in ``state`` (every step but the last exists)."""
    node = state
    for i, key in enumerate(path):
        last = i == len(path) - 1
        if isinstance(node, dict) and isinstance(key, str):
            if last:
                return True
            if key not in node:
                return False
            node = node[key]
        elif isinstance(node, list) and isinstance(key, int) and not isinstance(key, bool):
            if not 0 <= key < len(node):
                return False
            if last:
                return True
            node = node[key]
        else:
            return False
    return False


def _buffers(raw: Any, state: dict[str, Any], budget: list[int]) -> tuple[list[dict], str]:
    """The checked buffers of one model, or ([], why not)."""
    if raw is None:
        return [], ""
    if not isinstance(raw, list):
        return [], f"buffers is a {type(raw).__name__}, expected a list"
    out = []
    for i, b in enumerate(raw):
        if not isinstance(b, Mapping):
            return [], f"buffer {i} is a {type(b).__name__}, expected an object"
        path, data, encoding = b.get("path"), b.get("data"), b.get("encoding", "base64")
        if encoding != "base64":
            return [], f"buffer {i} has encoding {_short(encoding)!r}, expected 'base64'"
        if not isinstance(data, str):
            return [], f"buffer {i}: data is a {type(data).__name__}, expected base64 text"
        if not isinstance(path, list) or not 1 <= len(path) <= MAX_PATH_DEPTH:
            return [], f"buffer {i}: path is not a list of 1 to {MAX_PATH_DEPTH} keys"
        # sizes first, from the text's length: nothing is decoded here
        size = _decoded_size(data) if len(data) % 4 == 0 else -1
        if size < 0 or not _BASE64.fullmatch(data):
            return [], f"buffer {i} is not base64 text"
        if size > MAX_BUFFER_BYTES:
            return [], f"buffer {i} holds {size} bytes, more than {MAX_BUFFER_BYTES}"
        if size > budget[0]:
            return [], f"the page's buffers would pass {MAX_TOTAL_BYTES} bytes"
        if not _resolve(state, path):
            return [], f"buffer {i}: path {_short(json.dumps(path))} is not in the state"
        budget[0] -= size
        out.append({"path": path, "data": data})
    return out, ""


def page_state(metadata: Any) -> PageState:
    """Check a notebook's saved widget state and keep what the exported page draws.

    Parameters
    ----------
    metadata
        The notebook's metadata (``nb.metadata``); anything else, or metadata without widget
        state, gives an empty :class:`PageState` whose ``summary`` says so.

    Returns
    -------
    PageState
        Never raises for any JSON-like input: what cannot be drawn becomes a note.
    """
    out = PageState()
    widgets = metadata.get("widgets") if isinstance(metadata, Mapping) else None
    saved = widgets.get(MIME) if isinstance(widgets, Mapping) else None
    if saved is None:
        out.summary = "no widget state saved in this notebook"
        return out
    state = saved.get("state") if isinstance(saved, Mapping) else None
    if not isinstance(state, Mapping):
        out.summary = "the saved widget state is damaged (no 'state' object)"
        return out
    budget = [MAX_TOTAL_BYTES]
    bundles: set[str] = set()
    for n, (model_id, entry) in enumerate(state.items()):
        if n >= MAX_MODELS:
            out.summary = f"only the first {MAX_MODELS} widget models were read"
            break
        if not isinstance(model_id, str) or not _MODEL_ID.fullmatch(model_id):
            continue  # a view can only name a model by a plain id: this one is unreachable
        kept = _model(entry, budget)
        if "note" in kept:
            out.notes[model_id] = kept["note"]
        if "bundle" in kept:
            bundles.add(kept["bundle"])
        out.models[model_id] = kept
    out.bundles = sorted(bundles)
    return out


def _model(entry: Any, budget: list[int]) -> dict[str, Any]:
    if not isinstance(entry, Mapping):
        return {"note": _note("widget", f"its saved state is a {type(entry).__name__}")}
    name, module = entry.get("model_name"), entry.get("model_module")
    if not isinstance(name, str) or not isinstance(module, str):
        return {"note": _note("widget", "its saved state names no model")}
    label = _short(name.removesuffix("Model"), 40)
    traits = entry.get("state")
    if not isinstance(traits, Mapping):
        return {"note": _note(label, "its saved state is damaged (no traits)")}
    if module == "anywidget":
        ident = traits.get("_anywidget_id")
        bundle = BUNDLES.get(ident) if isinstance(ident, str) else None
        if ident in PLOTLY_IDS:
            bundle = PLOTLY_BUNDLE
            traits = {k: traits[k] for k in _PLOTLY_KEEP if k in traits}
        if bundle is None:
            who = _short(ident) if isinstance(ident, str) else "an anywidget widget"
            return {"note": _note(who, "not a zfwidgets widget; it needs its own front end")}
        label = ident.rsplit(".", 1)[-1]
        kind = "plotly" if bundle == PLOTLY_BUNDLE else "zf"
    elif module in _CORE_MODULES and (name in CORE_MODELS or name.endswith("StyleModel")):
        kind = "core"  # style models are kept (small), not drawn
    elif module in _CORE_MODULES:
        return {"note": _note(label, "not drawn in an exported page; it needs a running kernel")}
    else:
        return {
            "note": _note(
                f"{label} ({_short(module, 50)})",
                "a widget of another library; it needs a running kernel",
            )
        }
    kept = {k: v for k, v in traits.items() if isinstance(k, str) and k not in _DROPPED}
    try:
        size = len(json.dumps(kept, allow_nan=False))
    except (TypeError, ValueError, RecursionError):
        return {"note": _note(label, "its saved state is not JSON")}
    if size > MAX_STATE_BYTES:
        return {"note": _note(label, f"its saved state holds {size} bytes, too large to draw")}
    raw = entry.get("buffers")
    if kind == "plotly" and isinstance(raw, list):  # buffers of the traits left out go too
        raw = [b for b in raw if not isinstance(b, Mapping) or _first(b.get("path")) in kept]
    buffers, why = _buffers(raw, kept, budget)
    if why:
        return {"note": _note(label, why)}
    out: dict[str, Any] = {"kind": kind, "name": name, "label": label, "state": kept}
    if buffers:
        out["buffers"] = buffers
    if kind in ("zf", "plotly"):
        out["bundle"] = bundle
    return out
