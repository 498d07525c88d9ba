"""The documentation: docstring examples, the user guide's examples, and the site itself.

- every docstring example in the package runs (doctest; examples that cannot run here carry
  ``# doctest: +SKIP`` and say why in the text before them);
- every ``python`` block of the user guide runs, page by page in a fresh namespace (blocks
  titled "not run: <reason>" are shown, not run);
- every public name maps to a reference page that the site's navigation lists;
- ``mkdocs build --strict`` succeeds (a warning fails it) and its checks pass: every public
  name has its entry, internal links and anchors resolve, nothing is loaded from another host,
  and every gallery script ran and wrote its figure.
"""

from __future__ import annotations

import doctest
import importlib
import inspect
import os
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pytest

import zfwidgets

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts" / "docs"))

import public_names  # noqa: E402


def _modules() -> list[str]:
    names = ["zfwidgets"]
    for info in pkgutil.walk_packages(zfwidgets.__path__, "zfwidgets."):
        if info.name.rsplit(".", 1)[-1] != "__main__":
            names.append(info.name)
    return sorted(names)


def _with_examples() -> list[str]:
    """Modules whose source holds a docstring example (found without importing them all)."""
    out = []
    for name in _modules():
        spec = importlib.util.find_spec(name)
        origin = spec.origin if spec else None
        if origin and origin.endswith(".py") and ">>>" in Path(origin).read_text("utf-8"):
            out.append(name)
    return out


@pytest.mark.parametrize("module", _with_examples())
def test_docstring_examples_run(module):
    mod = importlib.import_module(module)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    tests = [t for t in finder.find(mod, module) if t.examples]
    assert tests, f"{module}: '>>>' in the source but no docstring example found"
    for t in tests:
        runner.run(t, out=lambda s: print(s, end=""))
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{module}: {result.failed} of {result.attempted} examples failed"


def test_some_docstring_examples_exist():
    # a guard for the parametrization above: an empty list would pass without running anything
    assert len(_with_examples()) >= 10


# -- the user guide --------------------------------------------------------------------------------

GUIDE = sorted((ROOT / "site-src" / "guide").glob("*.md")) + [
    ROOT / "site-src" / "index.md",
    ROOT / "site-src" / "install.md",
]
_BLOCK = re.compile(r"^```python([^\n]*)\n(.*?)^```", re.M | re.S)


def _blocks(page: Path) -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2)) for m in _BLOCK.finditer(page.read_text(encoding="utf-8"))]


@pytest.mark.parametrize("page", GUIDE, ids=lambda p: p.name)
def test_guide_examples_run(page, tmp_path, monkeypatch):
    blocks = _blocks(page)
    runnable = [code for info, code in blocks if "not run" not in info]
    for info, _ in blocks:
        if "not run" in info:
            assert re.search(r'title="not run: \S', info), f"{page.name}: say why: {info!r}"
    if page.name != "install.md":
        assert runnable, f"{page.name}: no runnable python example"
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": f"guide_{page.stem}"}
    for code in runnable:
        exec(compile(code, f"{page.name}", "exec"), namespace)


# -- the reference ---------------------------------------------------------------------------------


def test_every_public_name_has_a_reference_page_in_the_nav():
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    groups = public_names.grouped()
    listed = {name for entries in groups.values() for name, _ in entries}
    assert listed == set(zfwidgets.__all__) | set(
        importlib.import_module("zfwidgets.widgets").__all__
    )
    for group in public_names.GROUPS:
        assert f"reference/{group}.md" in nav, f"reference/{group}.md is not in mkdocs.yml's nav"
    # every name resolves to an object, and the widgets are the same object from both modules
    for name, identifier in public_names.names():
        assert public_names.kind(name) != "?", name
        assert public_names.group_of(name, identifier) in public_names.GROUPS
        module, _, attr = identifier.rpartition(".")
        doc = inspect.getdoc(getattr(importlib.import_module(module), attr))
        assert doc and len(doc) > 20, f"{identifier}: a public name needs a docstring"


def test_the_site_check_finds_problems(tmp_path):
    """hooks.check_site is what fails the build: it must see a missing entry, a broken link,
    a missing anchor and an external script."""
    import hooks

    (tmp_path / "reference").mkdir()
    (tmp_path / "index.html").write_text(
        '<a href="missing.html">x</a><a href="index.html#nowhere">y</a>'
        '<script src="https://cdn.example.org/x.js"></script><a href="https://arxiv.org">ok</a>'
    )
    problems = "\n".join(hooks.check_site(tmp_path))
    assert "broken link missing.html" in problems
    assert "no anchor #nowhere" in problems
    assert "loads https://cdn.example.org/x.js" in problems
    assert "arxiv" not in problems
    assert "public name 'deconv': no entry #zfwidgets.deconv" in problems


# -- the site ----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_docs_build_strict(tmp_path):
    try:
        import mkdocs  # noqa: F401
        import mkdocstrings  # noqa: F401
    except ImportError:
        pytest.fail("the docs toolchain is missing: pip install -e '.[docs]' (make docs does)")
    site = tmp_path / "site"
    env = dict(os.environ, PYTHONPATH=str(ROOT), DISABLE_MKDOCS_2_WARNING="true")
    env.setdefault("OMP_NUM_THREADS", "1")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "-f",
            str(ROOT / "mkdocs.yml"),
            "-d",
            str(site),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    assert "docs check:" in proc.stderr + proc.stdout  # the hook ran

    import hooks

    assert hooks.check_site(site) == []
    engine = (site / "reference" / "engine.html").read_text(encoding="utf-8")
    assert 'id="zfwidgets.deconv"' in engine
    # every gallery script ran and its figure is on its page
    from PIL import Image

    scripts = sorted(
        p for p in (ROOT / "site-src" / "gallery").glob("*.py") if not p.name.startswith("_")
    )
    assert len(scripts) >= 8
    for script in scripts:
        page = (site / "gallery" / f"{script.stem}.html").read_text(encoding="utf-8")
        pngs = sorted((site / "gallery" / script.stem).glob("*.png"))
        assert pngs, script.name
        for png in pngs:
            assert f"{script.stem}/{png.name}" in page
            with Image.open(png) as im:
                assert im.size[0] > 200 and im.size[1] > 100
    # the command line page is generated from the parser
    cli = (site / "reference" / "cli.html").read_text(encoding="utf-8")
    for flag in ("--model", "--weights", "--chunk-size", "--classes"):
        assert flag in cli
    # the repository's own pages are included, not copied
    method = (site / "method.html").read_text(encoding="utf-8")
    assert "The method, as zfwidgets implements it" in method
