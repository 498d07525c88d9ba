"""JupyterLab smoke test: ``Explorer()`` renders in JupyterLab 4 with no nbextension, no CDN.

``jupyter lab`` runs on 127.0.0.1 with no token or password, temporary config, workspace and
settings dirs, in its own process group (ended by PID at teardown, with its kernel). The page
opens the notebook, waits for its kernel to be idle, runs every cell through
``window.jupyterapp.commands.execute('notebook:run-all-cells')`` and waits for the LayerGrid's
canvas to hold non-blank pixels. Every wait is raced against a timer.
"""

from __future__ import annotations

import json
import time

import pytest
from harness import JupyterLabServer, notebook, open_app, starts
from playwright.sync_api import expect

pytestmark = pytest.mark.browser

NOTEBOOK = "explorer.ipynb"
CELLS = ["from zfwidgets import Explorer\n\nExplorer()\n"]

# The notebook is open, its kernel started and idle, its cells rendered.
KERNEL_IDLE = """
const app = window.jupyterapp;
const panel = app && app.shell && app.shell.currentWidget;
const ctx = panel && panel.sessionContext;
const kernel = ctx && ctx.session && ctx.session.kernel;
return !!kernel && ctx.isReady && kernel.status === 'idle'
  && panel.context.path.endsWith(arg) && panel.content.widgets.length > 0
"""

GRID = ".jp-OutputArea .zf-explorer .zf-layer-grid canvas.zf-atlas"

# Widget-related errors (JupyterLab's own console noise offline is not this test's subject).
OURS = ("zf", "anywidget", "widget", "pageerror")


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    directory = tmp_path_factory.mktemp("lab")
    root = directory / "notebooks"  # the server's log and state stay out of its file browser
    root.mkdir()
    (root / NOTEBOOK).write_text(json.dumps(notebook(CELLS), indent=1))
    server = JupyterLabServer(directory, root=root)
    try:
        yield server
    finally:
        server.stop()


def test_explorer_renders_in_jupyterlab(lab, browser_context, artifacts):
    t0 = time.monotonic()
    with open_app(
        browser_context, lab, KERNEL_IDLE, NOTEBOOK, timeout_s=60, path=f"lab/tree/{NOTEBOOK}"
    ) as app:
        ready_s = time.monotonic() - t0
        app.page.evaluate(
            "() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); return true; }"
        )
        app.wait(
            "const c = document.querySelector(arg);return !!c && !!c.dataset.draws && c.width > 0",
            GRID,
            timeout_s=60,
        )
        drawn_s = time.monotonic() - t0
        px = app.pixels(GRID)
        # Explorer(): the bundled model's last conv layer, 32 maps, every one drawn
        assert px["count"] == 32, px
        assert px["opaque"] > 0.5 * px["width"] * px["height"] and px["colours"] > 20, px
        expect(app.at(".jp-OutputArea .zf-explorer .zf-layer-grid .zf-caption")).to_have_text(
            starts("features.12 · 32 maps of ")
        )
        app.page.locator(GRID).scroll_into_view_if_needed()
        app.page.mouse.move(2, 2)
        app.shot(artifacts, "jupyterlab-explorer.png")
        print(f"JupyterLab: notebook open, kernel idle {ready_s:.1f} s; grid drawn {drawn_s:.1f} s")
        ours = [e for e in app.errors if any(k in e.lower() for k in OURS)]
        assert not ours, app.errors
