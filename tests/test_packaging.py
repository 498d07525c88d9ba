"""The package metadata in pyproject.toml: bounds that fit users' environments, the console
script, and the program name it shows (scripts/check_wheel.py checks the built wheel)."""

from __future__ import annotations

import importlib
import runpy
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

import zfwidgets
from zfwidgets import cli

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


@pytest.fixture(scope="module")
def project() -> dict:
    return tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]


def upper_bounds(spec: SpecifierSet) -> list[str]:
    """The clauses of ``spec`` that cap the version (``<``, ``<=``, ``==``, ``===``, ``~=``)."""
    return [str(s) for s in spec if s.operator in ("<", "<=", "==", "===", "~=")]


def test_upper_bounds_are_found():
    assert upper_bounds(SpecifierSet(">=2.2,<=2.14.1")) == ["<=2.14.1"]
    assert upper_bounds(SpecifierSet("~=2.2")) == ["~=2.2"]
    assert upper_bounds(SpecifierSet("==2.14.1")) == ["==2.14.1"]
    assert upper_bounds(SpecifierSet(">=2.2,!=2.3.0")) == []


def test_torch_and_torchvision_have_lower_bounds_only(project):
    reqs = {Requirement(r).name: Requirement(r) for r in project["dependencies"]}
    for name in ("torch", "torchvision"):
        assert name in reqs, f"{name} is not a dependency"
        spec = reqs[name].specifier
        assert upper_bounds(spec) == [], f"{name}: upper bound {spec} (users' newer {name} clash)"
        assert any(s.operator == ">=" for s in spec), f"{name}: no lower bound in {spec}"
        assert spec.contains("99.0"), f"{name}: {spec} refuses a future release"


@pytest.mark.parametrize("group", ["dependencies", "embed"])
def test_every_runtime_dependency_has_a_lower_bound_and_no_cap(project, group):
    lines = (
        project["dependencies"]
        if group == "dependencies"
        else project["optional-dependencies"][group]
    )
    assert lines
    for line in lines:
        req = Requirement(line)
        assert upper_bounds(req.specifier) == [], f"{line!r}: capped"
        lows = [Version(s.version) for s in req.specifier if s.operator in (">=", ">")]
        assert lows, f"{line!r}: no lower bound"


def test_console_script_points_at_a_callable(project):
    entry = project["scripts"]["zfwidgets"]
    module_name, _, attr = entry.partition(":")
    assert module_name and attr, entry
    target = getattr(importlib.import_module(module_name), attr)
    assert callable(target)
    assert target is cli.main


def test_console_script_shows_its_name(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: zfwidgets ")
    assert "``" not in out and "mine" in out and "site" in out


def test_python_dash_m_shows_its_name(capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["zfwidgets/__main__.py", "mine", "--help"])
    with pytest.raises(SystemExit) as exit_:
        runpy.run_module("zfwidgets", run_name="__main__")
    assert exit_.value.code == 0
    assert capsys.readouterr().out.startswith("usage: python -m zfwidgets mine ")


def test_metadata_version_and_classifiers(project):
    assert project["version"] == zfwidgets.__version__
    classifiers = project["classifiers"]
    for wanted in (
        "Intended Audience :: Science/Research",
        "Operating System :: OS Independent",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
        "Topic :: Scientific/Engineering :: Visualization",
    ):
        assert wanted in classifiers
    # The licence is the SPDX expression; PEP 639 deprecates "License ::" classifiers beside it.
    assert project["license"] == "BSD-3-Clause"
    assert not any(c.startswith("License ::") for c in classifiers)
    # No JupyterLab extension ships (anywidget loads the bundles): no Extensions classifier.
    assert not any("JupyterLab :: Extensions" in c for c in classifiers)
    # Every Python version named is one requires-python admits.
    requires = SpecifierSet(project["requires-python"])
    prefix = "Programming Language :: Python :: 3."
    named = [c.removeprefix("Programming Language :: Python :: ") for c in classifiers]
    minors = [v for c, v in zip(classifiers, named, strict=True) if c.startswith(prefix)]
    assert minors and all(requires.contains(f"{v}.0") for v in minors), minors
