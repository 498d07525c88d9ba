"""zfwidgets.export.state: the saved widget state, checked and cut down for the page.

Real state comes from ipywidgets' own serialiser (``embed_data``: the same JSON nbclient and
JupyterLab save in a notebook); the damaged and hostile cases are edits of it.
"""

from __future__ import annotations

import base64
import copy
import inspect

import ipywidgets as W
import pytest
import torch

import zfwidgets.widgets as zw
from zfwidgets.export import state as st
from zfwidgets.export.state import BUNDLES, MIME, page_state
from zfwidgets.widgets.gallery import Gallery


def saved(*views) -> dict:
    """Notebook metadata holding the state of ``views`` as a notebook saves it."""
    from ipywidgets.embed import dependency_state, embed_data

    views = list(views)
    state = dependency_state(views, drop_defaults=False)
    data = embed_data(views=views, state=state, drop_defaults=False)
    return {"widgets": {MIME: data["manager_state"]}}


@pytest.fixture
def gallery():
    torch.manual_seed(0)
    g = Gallery(torch.rand(2, 3, 8, 8), ["<b>one</b>", "two"], title="</script><script>x=1")
    yield g
    g.close()


def test_every_widget_class_has_its_bundle():
    """BUNDLES names each ZFWidget subclass by anywidget's id and the bundle the live widget
    uses (a new widget class must be added, or its exported state shows a note)."""
    from zfwidgets.widgets._base import ZFWidget

    classes = {
        f"{c.__module__}.{c.__name__}": c._bundle
        for _, mod in inspect.getmembers(zw, inspect.ismodule)
        for _, c in inspect.getmembers(mod, inspect.isclass)
        if issubclass(c, ZFWidget) and c is not ZFWidget and c._bundle
    }
    assert len(classes) >= 8
    assert classes == BUNDLES


def test_a_zfwidget_keeps_its_traits_and_buffers_not_its_code(gallery):
    box = W.VBox([gallery, W.Label("hi")])
    out = page_state(saved(box))
    entry = out.models[gallery.model_id]
    assert entry["kind"] == "zf" and entry["bundle"] == "gallery.js"
    assert entry["label"] == "Gallery"
    assert not {"_esm", "_css", "_anywidget_id"} & entry["state"].keys()
    paths = [b["path"] for b in entry["buffers"]]
    assert ["frame", "atlas", "view"] in paths
    atlas = next(b for b in entry["buffers"] if b["path"] == ["frame", "atlas", "view"])
    h, w, c = entry["state"]["frame"]["atlas"]["shape"]
    assert len(base64.b64decode(atlas["data"])) == h * w * c
    assert out.bundles == ["gallery.js"]
    assert out.models[box.model_id]["kind"] == "core"
    assert out.models[box.model_id]["state"]["children"][0] == f"IPY_MODEL_{gallery.model_id}"
    assert out.notes == {} and out.summary == ""


@pytest.mark.parametrize(
    "metadata, summary",
    [
        ({}, "no widget state saved"),
        (None, "no widget state saved"),
        ({"widgets": "x"}, "no widget state saved"),
        ({"widgets": {MIME: []}}, "damaged"),
        ({"widgets": {MIME: {"state": [1, 2]}}}, "damaged"),
    ],
)
def test_no_or_damaged_state_is_a_summary_not_an_error(metadata, summary):
    out = page_state(metadata)
    assert out.models == {}
    assert summary in out.summary


def entry(name="LabelModel", module="@jupyter-widgets/controls", **extra):
    return {"model_name": name, "model_module": module, "state": {"value": "v"}, **extra}


def meta(models: dict) -> dict:
    return {"widgets": {MIME: {"version_major": 2, "state": models}}}


@pytest.mark.parametrize(
    "model, note",
    [
        (entry("FigureModel", "bqplot"), "another library"),
        (entry("AnyModel", "anywidget", state={"_anywidget_id": "mylib.Chart"}), "mylib.Chart"),
        (entry("AnyModel", "anywidget", state={"_anywidget_id": 3}), "not a zfwidgets"),
        (entry("ColorPickerModel"), "not drawn in an exported page"),  # core, not drawn
        ("a string", "saved state is a str"),
        ({"model_name": 1, "model_module": None}, "names no model"),
        (entry(state="x"), "no traits"),
        (entry(state={"value": float("nan")}), "not JSON"),
        (entry(buffers="x"), "buffers is a str"),
        (entry(buffers=[1]), "buffer 0 is a int"),
        (entry(buffers=[{"path": ["value"], "data": "@@@@"}]), "not base64"),
        (entry(buffers=[{"path": ["value"], "data": "abc"}]), "not base64"),
        (entry(buffers=[{"path": ["value"], "data": 5}]), "expected base64 text"),
        (entry(buffers=[{"path": ["value"], "data": "", "encoding": "hex"}]), "encoding"),
        (entry(buffers=[{"path": [], "data": "AAAA"}]), "path is not a list"),
        (entry(buffers=[{"path": ["no", "where"], "data": "AAAA"}]), "not in the state"),
        (entry(buffers=[{"path": ["value", 3], "data": "AAAA"}]), "not in the state"),
    ],
)
def test_what_cannot_be_drawn_is_a_one_line_note(model, note):
    out = page_state(meta({"m1": model, "ok": entry()}))
    assert note in out.notes["m1"]
    assert "\n" not in out.notes["m1"] and len(out.notes["m1"]) <= 160
    assert out.models["m1"] == {"note": out.notes["m1"]}
    assert out.models["ok"]["kind"] == "core"  # the others are still drawn


def test_sizes_are_checked_before_anything_is_decoded(monkeypatch):
    """An oversized buffer is refused from the length of its text: base64 is never decoded
    (the page decodes what passed), and the page's total is capped across widgets."""

    def refuse(*a, **k):
        raise AssertionError("decoded")

    monkeypatch.setattr(base64, "b64decode", refuse)
    monkeypatch.setattr(st, "MAX_BUFFER_BYTES", 30)
    monkeypatch.setattr(st, "MAX_TOTAL_BYTES", 40)
    buf = lambda n: [{"path": ["value"], "data": base64.b64encode(b"x" * n).decode()}]  # noqa: E731
    out = page_state(meta({"a": entry(buffers=buf(31)), "b": entry(buffers=buf(30))}))
    assert "holds 31 bytes, more than 30" in out.notes["a"]
    assert out.models["b"]["buffers"]  # 30 bytes fit
    out = page_state(meta({"b": entry(buffers=buf(30)), "c": entry(buffers=buf(20))}))
    assert "would pass 40 bytes" in out.notes["c"]


def test_oversized_traits_and_too_many_models(monkeypatch):
    monkeypatch.setattr(st, "MAX_STATE_BYTES", 100)
    out = page_state(meta({"big": entry(state={"value": "x" * 200})}))
    assert "too large" in out.notes["big"]
    monkeypatch.setattr(st, "MAX_MODELS", 3)
    out = page_state(meta({f"m{i}": entry() for i in range(5)}))
    assert len(out.models) == 3 and "first 3" in out.summary


def test_ids_that_are_not_plain_are_dropped():
    bad = {'x" onload="1': entry(), "a" * 200: entry(), "fine-id_1": entry()}
    assert list(page_state(meta(bad)).models) == ["fine-id_1"]


def test_input_is_not_modified(gallery):
    m = saved(gallery)
    before = copy.deepcopy(m)
    page_state(m)
    assert m == before


def test_a_plotly_figure_keeps_only_its_data_layout_and_config():
    import plotly.graph_objects as go

    fig = go.FigureWidget(data=[go.Scatter(x=[1, 2], y=[3, 4], name="<b>x</b>")])
    try:
        out = page_state(saved(fig))
        entry = out.models[fig.model_id]
        assert entry["kind"] == "plotly" and entry["bundle"] == st.PLOTLY_BUNDLE
        assert set(entry["state"]) <= {
            "_widget_data",
            "_widget_layout",
            "_config",
            "_dom_classes",
            "layout",
        }
        assert entry["state"]["_widget_data"][0]["name"] == "<b>x</b>"
        assert out.bundles == [st.PLOTLY_BUNDLE]
        # a buffer of a trait that is left out goes with it; one of a kept trait is checked
        m = saved(fig)
        raw = m["widgets"][MIME]["state"][fig.model_id]
        raw["state"]["_py2js_update"] = {"x": None}
        raw["buffers"] = [{"path": ["_py2js_update", "x"], "data": "AAAA", "encoding": "base64"}]
        assert "buffers" not in page_state(m).models[fig.model_id]
        raw["buffers"].append({"path": ["_config", "x"], "data": "!!", "encoding": "base64"})
        assert "not base64" in page_state(m).notes[fig.model_id]
    finally:
        fig.close()
