"""The anywidget base class every zfwidgets widget derives from.

Each widget class names its bundle (``_bundle = "layer_grid.js"``); the bundle is the esbuild
output in ``zfwidgets/static/`` (:mod:`zfwidgets.base.static`: built by ``make`` / ``npm run
build`` in a checkout, shipped in the wheel). It becomes the class's ``_esm`` path (and
``style.css`` its ``_css``) as anywidget documents them; importing ``zfwidgets.widgets`` works
without a build, and creating a widget then says how to build it.
``ANYWIDGET_HMR=1`` (with ``watchfiles``) reloads the bundle live while ``npm run watch`` runs.

Every state a widget sends passes through :meth:`ZFWidget.get_state`, which turns its payloads
into the inline base64 form when the transport asks for it (:func:`zfwidgets.base.codec.
inline_payloads`: ``set_transport("base64")``, Colab, or this widget's front end reporting with
the custom message ``{"type": "zf-no-buffers"}`` that it received no binary buffers, after
which the widget re-sends its payload traits inline).
"""

from __future__ import annotations

from typing import Any, ClassVar

import anywidget

from ..base.codec import get_transport, inline_payloads, is_payload, to_base64
from ..base.static import built, bundle_path
from ._jobs import start_worker
from ._snapshot import Pictured

__all__ = ["NO_BUFFERS", "ZFWidget", "bundle_path", "start_worker"]

#: One stylesheet for every widget (classes prefixed ``zf-``).
_CSS = "style.css"

#: The custom message a front end sends when a payload arrived without its bytes.
NO_BUFFERS = "zf-no-buffers"


def _holds_payload(value: object) -> bool:
    if is_payload(value):
        return True
    if isinstance(value, dict):
        return any(_holds_payload(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_holds_payload(v) for v in value)
    return False


class ZFWidget(Pictured, anywidget.AnyWidget):
    """Base class: ``zfwidgets/static/<_bundle>`` as the widget's ES module, ``style.css`` as
    its stylesheet.

    Its display bundle carries a PNG picture of the state shown besides the live view, for
    front ends without a kernel (``widgets/_snapshot.py``); :meth:`snapshot` returns it.

    Each subclass gets ``_esm`` and ``_css`` as :class:`pathlib.Path` class attributes, which
    anywidget reads (and reloads under ``ANYWIDGET_HMR=1``) itself. A bundle missing at import
    time (a checkout not built yet) is reported when the widget is first created.
    """

    #: File name of the bundle in ``zfwidgets/static/`` (set by each subclass).
    _bundle: ClassVar[str] = ""
    _built: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        cls._built = False
        if cls._bundle and "_esm" not in cls.__dict__:
            esm, css = built(cls._bundle), built(_CSS)
            if esm is not None and css is not None:
                cls._esm = esm  # anywidget turns the paths into its file contents
                cls._css = css
                cls._built = True
        super().__init_subclass__(**kwargs)

    def __init__(self, **kwargs: Any) -> None:
        cls = type(self)
        if not cls._built and "_esm" not in cls.__dict__:
            if not cls._bundle:
                raise TypeError(f"{cls.__name__}: set _bundle to a file in zfwidgets/static/")
            bundle_path(cls._bundle)  # raises, saying how to build it
            bundle_path(_CSS)
        #: the front end reported that it receives no binary buffers (see get_state)
        self._no_buffers = False
        super().__init__(**kwargs)
        self.on_msg(self._on_transport_msg)

    def get_state(self, key: Any = None, drop_defaults: bool = False) -> dict[str, Any]:
        """The state ipywidgets sends (the first time and with every update), with payloads
        inline as base64 when :func:`zfwidgets.base.codec.inline_payloads` says so."""
        state = super().get_state(key=key, drop_defaults=drop_defaults)
        if inline_payloads(getattr(self, "_no_buffers", False)):
            state = to_base64(state)
        return state

    def _on_transport_msg(self, _widget: Any, content: Any, _buffers: Any) -> None:
        """``{"type": "zf-no-buffers"}`` from the front end: switch to inline payloads and
        re-send every trait that holds one (once; ignored under ``set_transport("buffers")``)."""
        if not isinstance(content, dict) or content.get("type") != NO_BUFFERS:
            return
        if self._no_buffers or get_transport() == "buffers":
            return
        self._no_buffers = True
        keys = [k for k in self.keys if _holds_payload(getattr(self, k))]
        if keys:
            self.send_state(keys)

    def close(self) -> None:
        """Close the widget; background work of its job runner (``_runner``, see
        ``widgets/_jobs.py``) stops at its next check."""
        runner = getattr(self, "_runner", None)  # None when __init__ failed early
        if runner is not None:
            runner.close()
        super().close()
