"""The anywidget base class every zfwidgets widget derives from.

Each widget class names its bundle (``_bundle = "layer_grid.js"``); the bundle is the esbuild
output in ``zfwidgets/static/`` (built by ``make`` / ``npm run build`` in a checkout, shipped
in the wheel). The path is resolved at the first instantiation, so importing
``zfwidgets.widgets`` works without a build and a missing build gets a clear error.
``ANYWIDGET_HMR=1`` (with ``watchfiles``) reloads the bundle live while ``npm run watch`` runs.
"""

from __future__ import annotations

import atexit
import threading
import time
import weakref
from pathlib import Path
from typing import Any, ClassVar

import anywidget

__all__ = ["STATIC", "ZFWidget", "bundle_path"]

#: Where esbuild writes the front-end bundles.
STATIC = Path(__file__).resolve().parent.parent / "static"

#: One stylesheet for every widget (classes prefixed ``zf-``).
_CSS = "style.css"


def bundle_path(name: str) -> Path:
    """The path of a built front-end file in ``zfwidgets/static/``.

    Raises
    ------
    FileNotFoundError
        When the file is missing, saying how to build it.
    """
    path = STATIC / name
    if not path.is_file():
        raise FileNotFoundError(
            f"zfwidgets: the front-end bundle {path} is missing. Build it from the repository "
            "root with `make build-js` (or `npm install && npm run build`); `make test` and "
            "`pip install .` build it too, and released wheels ship it."
        )
    return path


def _contents(path: Path) -> Any:
    """anywidget's live file contents (reloads under ANYWIDGET_HMR=1), else the text."""
    try:
        from anywidget._file_contents import FileContents
        from anywidget._util import _should_start_thread

        return FileContents(path, start_thread=_should_start_thread(path))
    except ImportError:  # pragma: no cover - a future anywidget without these helpers
        return path.read_text(encoding="utf-8")


class ZFWidget(anywidget.AnyWidget):
    """Base class: loads ``zfwidgets/static/<_bundle>`` as the widget's ES module."""

    #: File name of the bundle in ``zfwidgets/static/`` (set by each subclass).
    _bundle: ClassVar[str] = ""

    def __init__(self, **kwargs: Any) -> None:
        cls = type(self)
        if "_esm" not in cls.__dict__:
            if not cls._bundle:
                raise TypeError(f"{cls.__name__}: set _bundle to a file in zfwidgets/static/")
            esm = _contents(bundle_path(cls._bundle))
            cls._css = _contents(bundle_path(_CSS))
            cls._esm = esm
        super().__init__(**kwargs)


# -- background work -------------------------------------------------------------------------
_WORKERS: weakref.WeakSet[threading.Thread] = weakref.WeakSet()


def start_worker(target: Any, name: str) -> threading.Thread:
    """Start a daemon thread for a widget's model work and track it, so the interpreter waits
    for it at exit (a daemon thread killed inside a torch kernel aborts the process)."""
    thread = threading.Thread(target=target, name=name, daemon=True)
    _WORKERS.add(thread)
    thread.start()
    return thread


@atexit.register
def _join_workers(timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    for thread in list(_WORKERS):
        thread.join(max(0.0, deadline - time.monotonic()))
