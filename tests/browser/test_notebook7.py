"""Jupyter Notebook 7 smoke test: ``Explorer()`` renders in Notebook 7 as in JupyterLab.

Notebook 7 runs on 127.0.0.1 with no token or password and temporary config, workspace and
settings dirs, in its own process group (ended by PID at teardown, with its kernel). The page
opens ``notebooks/explorer.ipynb``, waits for the kernel to be idle, runs every cell through
``window.jupyterapp.commands.execute('notebook:run-all-cells')``, waits for the LayerGrid to
draw, clicks a feature map and waits for the unit view to show its projections: a round trip
through the kernel's job runner.
"""

from __future__ import annotations

import json

import pytest
from harness import TILE_CENTRE, JupyterLabServer, expect_some_text, notebook, open_app, starts
from playwright.sync_api import expect
from test_jupyterlab import CELLS, KERNEL_IDLE, OURS

pytestmark = pytest.mark.browser

NOTEBOOK = "explorer.ipynb"
ROOT = ".jp-OutputArea .zf-explorer"
GRID = f"{ROOT} .zf-layer-grid canvas.zf-atlas"
UNIT = f"{ROOT} .zf-gallery canvas.zf-atlas"
# Notebook 7.6's own page error with fresh settings dirs, on any notebook (a plain
# ``print(1)`` shows it too): not about widgets.
NOTEBOOK_NOISE = ("reading 'schema'",)


@pytest.fixture(scope="module")
def nb7(tmp_path_factory):
    directory = tmp_path_factory.mktemp("notebook7")
    root = directory / "notebooks"
    root.mkdir()
    (root / NOTEBOOK).write_text(json.dumps(notebook(CELLS), indent=1))
    server = JupyterLabServer(directory, root=root, app="notebook")
    try:
        yield server
    finally:
        server.stop()


def test_explorer_renders_in_notebook7(nb7, browser_context, artifacts):
    with open_app(
        browser_context, nb7, KERNEL_IDLE, NOTEBOOK, timeout_s=90, path=f"notebooks/{NOTEBOOK}"
    ) as app:
        app.page.evaluate(
            "() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); return true; }"
        )
        app.wait(
            "const c = document.querySelector(arg);return !!c && !!c.dataset.draws && c.width > 0",
            GRID,
            timeout_s=90,
        )
        px = app.pixels(GRID)
        assert px["count"] == 32, px  # the bundled model's last conv layer
        assert px["opaque"] > 0.5 * px["width"] * px["height"] and px["colours"] > 20, px
        expect(app.at(f"{ROOT} .zf-layer-grid .zf-caption")).to_have_text(
            starts("features.12 · 32 maps of ")
        )
        # a click on map 3: the kernel projects it (off its thread) and the unit view follows
        app.page.locator(GRID).scroll_into_view_if_needed()
        point = app.page.evaluate(TILE_CENTRE, [GRID, 3])
        app.page.mouse.click(point["x"], point["y"])
        app.wait(
            "const cs = [...document.querySelectorAll(arg)];"
            "return cs.some((c) => Number(c.dataset.count) >= 3)",
            UNIT,
            timeout_s=60,
        )
        captions = app.page.locator(f"{ROOT} .zf-gallery .zf-caption")
        expect_some_text(captions, "features.12 · channel 3", exact=False)
        app.page.mouse.move(2, 2)
        app.settle()
        app.shot(artifacts, "notebook7-explorer.png")
        ours = [
            e
            for e in app.errors
            if any(k in e.lower() for k in OURS) and not any(n in e for n in NOTEBOOK_NOISE)
        ]
        assert not ours, app.errors
