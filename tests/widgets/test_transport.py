"""Front ends without binary buffers (Colab): every ZFWidget sends its payloads inline as
base64 under ``set_transport("base64")``, in Colab, or once its front end reports
``{"type": "zf-no-buffers"}``; composite widgets follow through their ZFWidget children."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
import torch
from ipywidgets.widgets.widget import _remove_buffers

import zfwidgets as zf
from zfwidgets.base.codec import decode
from zfwidgets.widgets._base import NO_BUFFERS, ZFWidget
from zfwidgets.widgets.gallery import Gallery


@pytest.fixture(autouse=True)
def auto(monkeypatch):
    """Each test starts in "auto", outside Colab, and leaves the switch as it found it."""
    monkeypatch.delenv("ZFWIDGETS_TRANSPORT", raising=False)
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    zf.set_transport(None)
    yield
    zf.set_transport(None)


def images(seed: int) -> torch.Tensor:
    return torch.rand(3, 3, 12, 12, generator=torch.Generator().manual_seed(seed))


def buffers_of(widget) -> list:
    return _remove_buffers(widget.get_state())[2]


def report(widget) -> None:
    """The custom message js/lib/transport.js sends, through the widget's message handler."""
    msg = {"content": {"data": {"method": "custom", "content": {"type": NO_BUFFERS}}}}
    widget._handle_msg({**msg, "buffers": []})


def test_explicit_switch_inlines_the_same_bytes(frontend):
    w = Gallery(images(0), ["a", "b", "c"])
    binary = decode(w.frame["atlas"])
    assert len(buffers_of(w)) == 1
    zf.set_transport("base64")
    state = w.get_state()
    assert buffers_of(w) == [] and "b64" in state["frame"]["atlas"]
    np.testing.assert_array_equal(decode(state["frame"]["atlas"]), binary)
    assert "view" in w.frame["atlas"]  # the trait itself keeps its memoryview
    fe = frontend(w)
    w.set_images(images(1), ["d", "e", "f"])
    (msg, bufs), *_ = [m for m in fe.sent if "frame" in m[0].get("state", {})]
    assert bufs == [] and msg["buffer_paths"] == []
    np.testing.assert_array_equal(decode(msg["state"]["frame"]["atlas"]), decode(w.frame["atlas"]))


def test_environment_variable_and_colab(monkeypatch):
    w = Gallery(images(0))
    monkeypatch.setenv("ZFWIDGETS_TRANSPORT", "base64")
    assert buffers_of(w) == []
    monkeypatch.delenv("ZFWIDGETS_TRANSPORT")
    assert len(buffers_of(w)) == 1
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    assert buffers_of(w) == []
    zf.set_transport("buffers")  # forced, even in Colab
    assert len(buffers_of(w)) == 1


def test_front_end_report_resends_the_payload_traits_inline(frontend):
    w = Gallery(images(0), ["a", "b", "c"])
    fe = frontend(w)
    report(w)
    assert len(fe.sent) == 1
    msg, bufs = fe.sent[0]
    assert msg["method"] == "update" and set(msg["state"]) == {"frame"} and bufs == []
    np.testing.assert_array_equal(decode(msg["state"]["frame"]["atlas"]), decode(w.frame["atlas"]))
    # later updates of this widget stay inline; a second report sends nothing more
    w.set_images(images(1))
    assert all(b == [] for _, b in fe.sent)
    n = len(fe.sent)
    report(w)
    assert len(fe.sent) == n
    # other widgets are not affected
    assert len(buffers_of(Gallery(images(2)))) == 1
    # other custom messages are not taken for a report
    w2 = Gallery(images(3))
    fe2 = frontend(w2)
    w2._handle_msg(
        {"content": {"data": {"method": "custom", "content": {"type": "x"}}}, "buffers": []}
    )
    w2._handle_msg(
        {"content": {"data": {"method": "custom", "content": "zf-no-buffers"}}, "buffers": []}
    )
    assert fe2.sent == [] and len(buffers_of(w2)) == 1


def test_report_ignored_when_buffers_are_forced(frontend):
    zf.set_transport("buffers")
    w = Gallery(images(0))
    fe = frontend(w)
    report(w)
    assert fe.sent == [] and len(buffers_of(w)) == 1


def descendants(widget):
    yield widget
    for child in getattr(widget, "children", ()):
        yield from descendants(child)


def test_composite_explorer_sends_no_buffers_under_the_switch():
    e = zf.Explorer()
    e.top9.wait()
    parts = [w for w in descendants(e) if isinstance(w, ZFWidget)]
    with_payloads = [w for w in parts if buffers_of(w)]
    assert len(with_payloads) >= 5  # strip, grid (+ thumbnail), unit, top9, predictions, ...
    zf.set_transport("base64")
    assert all(buffers_of(w) == [] for w in descendants(e))
    e.close()
