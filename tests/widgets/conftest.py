"""Kernel-free widget tests: a widget talks to a dummy comm; `frontend` plays the browser."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from ipywidgets.widgets.widget import _remove_buffers

import zfwidgets as zf


class FrontEnd:
    """Records what a widget sends to the browser and sends updates as the browser would."""

    def __init__(self, widget: Any):
        self.widget = widget
        self.sent: list[tuple[dict, list]] = []
        widget._send = lambda msg, buffers=None: self.sent.append((msg, list(buffers or [])))

    def set(self, **state: Any) -> None:
        """An `update` message, exactly as the widget manager sends one after `save_changes`
        (run through the widget's own message handler)."""
        clean, paths, buffers = _remove_buffers(state)
        msg = {
            "content": {"data": {"method": "update", "state": clean, "buffer_paths": paths}},
            "buffers": buffers,
        }
        self.widget._handle_msg(msg)

    def updates(self) -> list[str]:
        """Names of the traits the kernel changed and sent so far (not the `echo_update`
        confirmations of what the front end itself set)."""
        return [k for msg, _ in self.sent if msg["method"] == "update" for k in msg["state"]]


@pytest.fixture
def frontend():
    return FrontEnd


# The bundled default model and four of its images (the figure widgets' tests).
@pytest.fixture(scope="module")
def default():
    torch.set_num_threads(1)
    return zf.load_default()


@pytest.fixture(scope="module")
def batch(default):
    x, y = default.images.tensors()
    return x[:4], y[:4]
