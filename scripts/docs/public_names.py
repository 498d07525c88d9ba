"""The public names of zfwidgets and where the documentation site documents them.

Read from the package itself (``zfwidgets.__all__`` and ``zfwidgets.widgets.__all__``), so a
name added later gets its reference entry without touching the site. Used by the page
generator (gen_pages.py), the build hook that fails on a missing entry (hooks.py) and the
test (tests/test_docs.py).
"""

from __future__ import annotations

import importlib
import inspect

#: group -> (page title, one-line introduction); the page is reference/<group>.md.
GROUPS: dict[str, tuple[str, str]] = {
    "engine": (
        "Engine",
        "The paper's computations on any PyTorch model (`zfwidgets.engine`), and their results.",
    ),
    "atlas": ("Atlases", "Top-k mining and the `Atlas` (`zfwidgets.atlas`)."),
    "widgets": (
        "Widgets",
        "The anywidget classes (`zfwidgets.widgets`; also importable from `zfwidgets`).",
    ),
    "monitor": ("Training monitor", "Recording a training run (`zfwidgets.monitor`)."),
    "data": (
        "Bundled data and models",
        "The bundled default model, images and atlas (`zfwidgets.data`) and the ZFNet models "
        "(`zfwidgets.models`).",
    ),
    "other": ("Other names", "Public names that none of the other pages covers."),
}

_PREFIXES = [
    ("zfwidgets.widgets", "widgets"),
    ("zfwidgets.engine", "engine"),
    ("zfwidgets.atlas", "atlas"),
    ("zfwidgets.monitor", "monitor"),
    ("zfwidgets.data", "data"),
    ("zfwidgets.models", "data"),
]


def names() -> list[tuple[str, str]]:
    """Every public name once, as ``(name, identifier)``: the identifier is the dotted path
    mkdocstrings documents it under (``zfwidgets.deconv``; widgets, which ``zfwidgets`` imports
    lazily, under ``zfwidgets.widgets.X``). Also the reference page's anchor."""
    zf = importlib.import_module("zfwidgets")
    widgets = importlib.import_module("zfwidgets.widgets")
    out: list[tuple[str, str]] = []
    seen: set[str] = set()
    for name in widgets.__all__:
        out.append((name, f"zfwidgets.widgets.{name}"))
        seen.add(name)
    for name in zf.__all__:
        if name not in seen:
            out.append((name, f"zfwidgets.{name}"))
            seen.add(name)
    return out


def all_public() -> set[str]:
    """The names the reference must cover: the union of both ``__all__`` lists."""
    zf = importlib.import_module("zfwidgets")
    widgets = importlib.import_module("zfwidgets.widgets")
    return set(zf.__all__) | set(widgets.__all__)


def group_of(name: str, identifier: str) -> str:
    obj = _object(name, identifier)
    module = obj.__name__ if inspect.ismodule(obj) else getattr(obj, "__module__", "") or ""
    for prefix, group in _PREFIXES:
        if module == prefix or module.startswith(prefix + "."):
            return group
    return "other"


def _object(name: str, identifier: str):
    module, _, attr = identifier.rpartition(".")
    return getattr(importlib.import_module(module), attr)


def kind(name: str) -> str:
    for identifier in (f"zfwidgets.widgets.{name}", f"zfwidgets.{name}"):
        try:
            obj = _object(name, identifier)
        except AttributeError:
            continue
        if inspect.ismodule(obj):
            return "module"
        if inspect.isclass(obj):
            if issubclass(obj, Warning):
                return "warning"
            if issubclass(obj, BaseException):
                return "exception"
            return "class"
        if callable(obj):
            return "function"
        return "data"
    return "?"


def grouped() -> dict[str, list[tuple[str, str]]]:
    """``group -> [(name, identifier), ...]`` in GROUPS order, names sorted, empty groups kept
    (every page in the nav exists; "other" holds what no prefix matches)."""
    out: dict[str, list[tuple[str, str]]] = {g: [] for g in GROUPS}
    for name, identifier in names():
        out[group_of(name, identifier)].append((name, identifier))
    for entries in out.values():
        entries.sort(key=lambda e: (e[0][0].islower(), e[0].lower()))
    return out
