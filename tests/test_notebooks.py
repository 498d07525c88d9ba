"""The notebooks in notebooks/ run top to bottom, and are committed clean.

Each notebook is executed by nbclient in a fresh kernel of this interpreter (cwd notebooks/),
as a reader would run it; an error in any cell fails the test (``CellExecutionError`` names
the cell). Widgets are kept in the notebook's metadata (``store_widget_state``), so a
notebook whose widgets failed to build shows up too. About 10 s per notebook on two CPU cores.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS_DIR = REPO / "notebooks"
NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("*.ipynb"))
SLIDES = NOTEBOOKS_DIR / "05-slides.ipynb"


def _ids(path: Path) -> str:
    return path.stem


def test_the_notebooks_are_there():
    names = {p.name for p in NOTEBOOKS}
    for name in (
        "explorer.ipynb",
        "01-quickstart.ipynb",
        "02-top9-atlas.ipynb",
        "03-occlusion.ipynb",
        "05-slides.ipynb",
    ):
        assert name in names, f"notebooks/{name} is missing"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids)
def test_notebook_is_committed_clean(path: Path):
    """No outputs, no execution counts, no stored widget state: the notebook is source."""
    nb = json.loads(path.read_text())
    assert nb["nbformat"] == 4
    assert "widgets" not in nb["metadata"], "clear the stored widget state"
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [], f"cell {i} has outputs: clear them"
            assert cell["execution_count"] is None, f"cell {i} has an execution count"


def test_slides_are_marked_for_reveal():
    """Every markdown cell of the deck opens a slide or subslide; code cells are either
    setup (``skip``, no output shown) or belong to the slide above them."""
    cells = json.loads(SLIDES.read_text())["cells"]
    kinds = [c["metadata"].get("slideshow", {}).get("slide_type", "-") for c in cells]
    assert kinds[0] in ("skip", "slide")
    for cell, kind in zip(cells, kinds):
        if cell["cell_type"] == "markdown":
            assert kind in ("slide", "subslide"), "".join(cell["source"])[:60]
        else:
            assert kind in ("skip", "-"), "".join(cell["source"])[:60]
    assert kinds.count("slide") >= 7  # title, deconvnet, Fig. 2, 4, 6, 7, closing


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids)
def test_notebook_runs(path: Path):
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        timeout=180,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOKS_DIR)}},
        store_widget_state=True,
    )
    client.execute()  # raises CellExecutionError at the first cell that fails

    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    errors = [o for o in outputs if o.get("output_type") == "error"]
    assert not errors, errors
    stderr = "".join(
        o.get("text", "")
        for o in outputs
        if o.get("output_type") == "stream" and o.name == "stderr"
    )
    assert "Traceback" not in stderr, stderr[-3000:]
    # every notebook shows widgets: their models made it into the notebook's widget state
    state = nb.metadata.get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {})
    modules = {m["model_name"] for m in state.get("state", {}).values()}
    assert "AnyModel" in modules, f"no zfwidgets widget was displayed: {sorted(modules)}"
