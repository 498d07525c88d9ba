"""An exported notebook (``python -m zfwidgets html --execute``) opened from file:// in
headless Chromium, with every request outside the file refused (README "Sharing a notebook").

The notebook: ``Explorer()`` (the bundled model: Gallery, LayerGrid, TopNine, OcclusionMap,
Predictions inside ipywidgets boxes, labels, an accordion and an upload button), a printed
line, a markdown cell and a plotly ``FigureWidget`` (drawn by plotly.js, inlined). Checks: no request leaves the file; every widget is drawn by our
front-end code from the saved state (canvases with pixels, the TopNine's finished top-9);
hovering a feature map shows its value; the occlusion views switch by keyboard among the
maps in the state; what needs the kernel (the next feature map, an upload) says "needs a
running kernel" and changes nothing; no console errors. Its screenshot goes to
tests/artifacts/exported.png (docs/screenshot-exported.png is a copy of one).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
import pytest
from harness import PIXELS, TILE_CENTRE
from playwright.sync_api import expect

from zfwidgets.cli import main

pytestmark = pytest.mark.browser

GRID = ".zf-explorer .zf-layer-grid canvas.zf-atlas"
TOP = ".zf-explorer .zf-top-nine"
HEAT = ".zf-explorer canvas.zf-occ-heat"
DRAWN = "() => document.documentElement.dataset.zfExport === 'drawn'"
EVIL = "<img src=x onerror=window.zfXSS=1>"


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    """The notebook, executed and exported by the command line (before any browser opens)."""
    folder = tmp_path_factory.mktemp("export")
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
    nb.cells = [
        nbformat.v4.new_markdown_cell("# Exported <i>Explorer</i>"),
        nbformat.v4.new_code_cell("from zfwidgets import Explorer\nprint('hello <b>')\nExplorer()"),
        nbformat.v4.new_code_cell(
            "import plotly.graph_objects as go\n"
            f"go.FigureWidget(data=[go.Scatter(x=[1, 2, 3], y=[3, 1, 2], name={EVIL!r})],"
            " layout=dict(showlegend=True))"
        ),
    ]
    nbformat.write(nb, str(folder / "explorer.ipynb"))
    out = folder / "explorer.html"
    assert main(["html", str(folder / "explorer.ipynb"), str(out), "--execute"]) == 0
    return out


@pytest.fixture
def page(exported, browser_context):
    """The exported file in a new page; requests that are not file:// are refused and kept."""
    page = browser_context.new_page()
    page.outside = []
    page.errors = []
    page.on("console", lambda m: m.type == "error" and page.errors.append(m.text))
    page.on("pageerror", lambda e: page.errors.append(f"pageerror: {e}"))

    def gate(route):
        if route.request.url.startswith(("file://", "blob:", "data:")):
            route.continue_()
        else:
            page.outside.append(route.request.url)
            route.abort()

    page.route("**/*", gate)
    page.on("request", lambda r: r.url.startswith(("http", "ws")) and page.outside.append(r.url))
    page.goto(exported.as_uri())
    page.wait_for_function(DRAWN, timeout=60_000)
    yield page
    page.close()


def test_widgets_draw_from_the_file_alone(page, exported, artifacts):
    notes = page.locator(".zf-x-note:not(.zf-x-empty)").all_text_contents()
    assert notes == [], notes  # the saved state held every part
    # the accordion the Explorer fills when opened says so (the whole-layer overview)
    expect(page.locator(".zf-x-accordion .zf-x-empty")).to_have_count(1)
    for sel in (GRID, f"{TOP} canvas.zf-atlas", HEAT, ".zf-explorer canvas.zf-thumb"):
        px = page.evaluate(PIXELS, sel)
        assert px and px["opaque"] > 0 and px["colours"] > 8, (sel, px)
    expect(page.locator(TOP)).to_have_attribute("data-status", "ready")
    expect(page.locator(".zf-explorer .zf-predictions .zf-pred-name")).to_have_count(5)
    # nbconvert's own outputs are there as usual, as text
    expect(page.locator(".jp-OutputArea-output pre").first).to_have_text(re.compile("hello <b>"))
    expect(page.locator("h1")).to_contain_text("Exported")
    # plotly's FigureWidget, drawn by plotly.js from inside the file; its trace name as text
    expect(page.locator(".zf-x-plotly .main-svg").first).to_be_visible()
    expect(page.locator(".zf-x-plotly .legendtext")).to_have_text(EVIL)
    assert page.evaluate("() => typeof window.zfXSS") == "undefined"
    assert page.outside == [], page.outside
    assert page.errors == [], page.errors
    page.mouse.move(2, 2)
    page.screenshot(path=str(artifacts / "exported.png"), full_page=True)
    html = exported.read_text(encoding="utf-8")
    # no element of the page points outside (plotly.js's own text, inside the bundles' JSON,
    # mentions URLs; the browser gates above show none is requested)
    outside = re.sub(
        r'(<script[^>]*id="zf-export-bundles"[^>]*>).*?</script>', "", html, flags=re.S
    )
    assert not re.search(r"""(src|href)=["']?https?:""", outside)


def test_hover_shows_a_feature_map_value(page):
    centre = page.evaluate(TILE_CENTRE, [GRID, 3])
    page.mouse.move(centre["x"], centre["y"])
    tip = page.wait_for_function(
        "(sel) => { const t = document.querySelector(sel); return t && !t.hidden && t.textContent }",
        arg=".zf-explorer .zf-layer-grid .zf-tooltip",
        timeout=10_000,
    ).json_value()
    assert re.search(r"\d", tip), tip
    assert page.errors == [], page.errors


def test_occlusion_views_switch_by_keyboard_without_a_kernel(page):
    button = page.locator(".zf-explorer button.zf-occ-view[data-view=activation]")
    before = page.evaluate(PIXELS, HEAT)["hash"]
    button.focus()
    page.keyboard.press("Enter")
    expect(button).to_have_attribute("aria-pressed", "true")
    page.wait_for_function(
        "([sel, h]) => { const c = document.querySelector(sel); const d = c.getContext('2d')"
        ".getImageData(0, 0, c.width, c.height).data; let x = 2166136261;"
        "for (let i = 0; i < d.length; i += 4) x = Math.imul(x ^ d[i] ^ (d[i + 1] << 8) ^"
        " (d[i + 2] << 16) ^ (d[i + 3] << 24), 16777619) >>> 0; return x !== h; }",
        arg=[HEAT, before],
        timeout=10_000,
    )
    expect(page.locator(".zf-explorer .zf-occlusion .zf-x-kernel")).to_be_hidden()


def test_what_needs_the_kernel_says_so(page):
    kernel = page.locator(".zf-x-widget:has(.zf-top-nine) > .zf-x-kernel")
    expect(kernel).to_have_count(1)
    expect(kernel).to_be_hidden()
    caption = page.locator(f"{TOP} .zf-caption").text_content()
    page.locator(f"{TOP} button.zf-next").click()
    expect(kernel).to_be_visible()
    expect(kernel).to_contain_text("needs a running kernel")
    expect(page.locator(f"{TOP} .zf-channel-input")).to_have_value("0")
    expect(page.locator(f"{TOP} .zf-caption")).to_have_text(caption)
    grid = page.locator(".zf-x-widget:has(.zf-layer-grid)")
    grid.locator("select.zf-layer-select, select").first.select_option("features.4")
    expect(grid.locator("> .zf-x-kernel")).to_be_visible()
    expect(grid.locator("select").first).to_have_value("features.12")
    expect(grid.locator(".zf-layer-grid")).not_to_have_class(re.compile("zf-pending"))
    upload = page.locator(".zf-explorer .zf-x-fileupload")
    upload.locator("button").click()
    expect(upload.locator(".zf-x-kernel")).to_contain_text("needs a running kernel")
    assert page.outside == [], page.outside
    assert page.errors == [], page.errors


def test_the_page_embeds_no_widget_code_from_the_notebook(exported):
    html = exported.read_text(encoding="utf-8")
    state = re.search(r'<script[^>]*id="zf-export-state"[^>]*>(.*?)</script>', html, re.S).group(1)
    models = json.loads(state)["models"]
    assert all("_esm" not in m.get("state", {}) for m in models.values())
