"""``make demo``'s start-up path: ``scripts/serve.py demo`` serves notebooks/explorer.ipynb
with Voila, and the Explorer renders on the bundled model in headless Chromium.

The server is started with the command line the Makefile runs (checked with ``make -n demo``),
on a free port instead of 8866. The page counts as rendered when the Explorer's LayerGrid,
image strip and top 9 have drawn pixels that are not all one colour. The time from starting
the server to that point is printed (``pytest -s``); a screenshot goes to
tests/artifacts/demo.png. The Explorer's own behaviour is tested in test_explorer_browser.py.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time

import pytest
from harness import REPO, ServerProcess, _free_port, open_app
from playwright.sync_api import expect

pytestmark = [pytest.mark.browser, pytest.mark.slow]

EXPLORER = ".zf-explorer"
GRID = f"{EXPLORER} .zf-layer-grid canvas.zf-atlas"
STRIP = f"{EXPLORER} .zf-gallery canvas.zf-atlas"
TOP = f"{EXPLORER} .zf-top-nine canvas.zf-atlas"


def test_makefile_demo_runs_serve_py():
    """``make demo`` serves through scripts/serve.py, the script this test runs."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    out = subprocess.run(
        ["make", "-n", "demo", "PORT=9999"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    assert "scripts/serve.py demo --port=9999" in out, out
    out = subprocess.run(
        ["make", "-n", "slides"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    assert "scripts/serve.py slides" in out, out


def test_serve_py_prints_the_command_line():
    out = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "serve.py"), "demo", "--print"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "-m voila explorer.ipynb --port=8866" in out and "--Voila.ip=127.0.0.1" in out, out


def test_demo_serves_the_explorer(tmp_path, browser_context, artifacts):
    t0 = time.monotonic()
    port = _free_port()
    server = ServerProcess(
        tmp_path,
        [sys.executable, str(REPO / "scripts" / "serve.py"), "demo", f"--port={port}"],
        port,
        "voila/static/voila.js",
        log_name="demo.log",
    )
    try:
        up_s = time.monotonic() - t0
        assert "zfwidgets: the Explorer at http://127.0.0.1:" in _wait_for_banner(server)
        drawn = (
            "return [arg.grid, arg.strip, arg.top].every((s) => {"
            "  const c = document.querySelector(s); return c && c.width > 0 && c.dataset.draws; })"
        )
        sel = {"grid": GRID, "strip": STRIP, "top": TOP}
        with open_app(browser_context, server, drawn, sel, timeout_s=180) as app:
            rendered_s = time.monotonic() - t0
            for name, s in sel.items():
                px = app.pixels(s)
                assert px and px["opaque"] > 0 and px["colours"] > 2, (name, px)
            expect(app.at(f"{EXPLORER} .zf-layer-grid .zf-caption")).to_contain_text(" maps of ")
            app.page.mouse.move(1, 1)
            app.shot(artifacts, "demo.png")
            print(
                f"\nmake demo start-up: Voila answered {up_s:.1f} s after launch; the Explorer "
                f"drew {rendered_s:.1f} s after launch ({app.load_s:.1f} s after the page request)"
            )
            assert not app.errors, app.errors
    finally:
        server.stop()


def _wait_for_banner(server: ServerProcess, timeout: float = 10.0) -> str:
    """serve.py prints its URL line once Voila answers; the log holds it soon after."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = server.log()
        if "zfwidgets: the Explorer at" in log:
            return log
        time.sleep(0.1)
    return server.log()
