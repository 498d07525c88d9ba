"""The package's architecture, checked from its source (README "Layout").

- Arrows point down only: widgets, export -> monitor / data -> atlas -> engine / models -> base.
- No import circles, lazy imports inside functions included.
- A module imports only public names of another package's modules, and reaches into no
  private attribute of a module it imported (helpers private to a package stay in it).
- Only ``widgets/`` imports anywidget, ipywidgets or traitlets; only ``engine/capture.py``
  registers module hooks.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "zfwidgets"

#: The layer of each part of the package; an import may point to a lower layer or stay
#: inside its own package (module names are matched by their longest prefix here).
LAYERS = {
    "zfwidgets.version": 0,
    "zfwidgets.base": 0,
    "zfwidgets.engine": 1,
    "zfwidgets.models": 1,
    "zfwidgets.atlas": 2,
    "zfwidgets.data": 3,
    "zfwidgets.monitor": 3,
    "zfwidgets.widgets": 4,
    "zfwidgets.export": 4,  # reads saved widget state; never imports the widgets
    "zfwidgets.models.train_default": 5,  # the script that trains the bundled model
    "zfwidgets.data._build": 5,  # the script that builds the bundled data
    "zfwidgets.cli": 5,
    "zfwidgets.__main__": 5,
    "zfwidgets": 5,
}

#: Imports that point up on purpose: an object that displays itself builds its widget on
#: first display (the plain object owns the state, as in jupyter-scatter); nothing imports
#: back, so these make no circle.
UPWARD = {
    ("zfwidgets.monitor.training", "zfwidgets.widgets.monitor_view"),
}


def _modules() -> dict[str, Path]:
    out = {}
    for p in sorted(PACKAGE.rglob("*.py")):
        parts = list(p.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


MODULES = _modules()


def _layer(module: str) -> int:
    parts = module.split(".")
    for i in range(len(parts), 0, -1):
        key = ".".join(parts[:i])
        if key in LAYERS:
            return LAYERS[key]
    raise AssertionError(f"{module} has no layer in tests/test_layout.py LAYERS")


def _package(module: str) -> str:
    """The top-level part of the package a module belongs to (zfwidgets.engine, ...)."""
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else parts[0]


def _imports(module: str) -> list[tuple[str, list[str], int, ast.AST]]:
    """(imported module, names taken from it, line, node) for every zfwidgets import."""
    path = MODULES[module]
    is_pkg = path.name == "__init__.py"
    tree = ast.parse(path.read_text())
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_pkg else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target != "zfwidgets" and not target.startswith("zfwidgets."):
                continue
            names = []
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                if sub in MODULES:  # from . import store
                    out.append((sub, [], node.lineno, node))
                else:
                    names.append(alias.name)
            if names:
                out.append((target, names, node.lineno, node))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("zfwidgets"):
                    out.append((alias.name, [], node.lineno, node))
    return out


GRAPH = {m: {t for t, _, _, _ in _imports(m) if t != m} for m in MODULES}


def _cycles() -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in GRAPH.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    return found


def test_no_import_circles():
    assert _cycles() == []


def test_arrows_point_down():
    wrong = []
    for module, targets in GRAPH.items():
        for target in targets:
            if target.startswith(module + ".") or (module, target) in UPWARD:
                continue  # a package imports its own modules
            if _package(target) == _package(module):
                continue
            if _layer(target) > _layer(module):
                wrong.append(
                    f"{module} (layer {_layer(module)}) imports {target} ({_layer(target)})"
                )
    assert wrong == []


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def test_no_private_names_across_modules():
    """``from .store import _bad`` and ``store._bad`` are refused anywhere; a private module
    (``widgets/_jobs.py``) may be imported inside its own package only."""
    wrong = []
    for module in MODULES:
        tree = ast.parse(MODULES[module].read_text())
        aliases = {}
        for target, names, line, node in _imports(module):
            parent = target.rsplit(".", 1)[0]
            if _private(target.rsplit(".", 1)[-1]) and not module.startswith(parent):
                wrong.append(f"{module}:{line} imports the private module {target}")
            for name in names:
                if _private(name):
                    wrong.append(f"{module}:{line} imports {target}.{name}")
            if not names and isinstance(node, ast.ImportFrom):
                for alias in node.names:
                    if target.endswith("." + alias.name):
                        aliases[alias.asname or alias.name] = target
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in aliases
                and _private(node.attr)
            ):
                wrong.append(f"{module}:{node.lineno} reads {aliases[node.value.id]}.{node.attr}")
    assert wrong == []


@pytest.mark.parametrize("library", ["anywidget", "ipywidgets", "traitlets"])
def test_only_widgets_import_the_widget_libraries(library):
    wrong = []
    for module, path in MODULES.items():
        if module.startswith("zfwidgets.widgets"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom) and not node.level
                else []
            )
            if any(n == library or n.startswith(library + ".") for n in names):
                wrong.append(f"{module}:{node.lineno}")
    assert wrong == []


def test_only_capture_registers_module_hooks():
    hooks = (
        "register_forward_hook",
        "register_forward_pre_hook",
        "register_full_backward_hook",
        "register_full_backward_pre_hook",
        "register_backward_hook",
    )
    wrong = []
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Attribute)
                and node.attr in hooks
                and module != "zfwidgets.engine.capture"
            ):
                wrong.append(f"{module}:{node.lineno} {node.attr}")
    assert wrong == []


def test_every_module_has_a_layer():
    for module in MODULES:
        _layer(module)
