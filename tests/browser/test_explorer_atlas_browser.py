"""The Explorer on a stored atlas in stock Voila and headless Chromium: opened from its folder
without mining, the whole-layer overview drawn from the stored tiles, a click on an overview
cell opens that unit in the TopNine; a folder from another model is said in the page and the
Explorer mines instead."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from harness import REPO, open_app
from models import tiny_zf
from playwright.sync_api import expect

import zfwidgets as zf

pytestmark = pytest.mark.browser

OVERVIEW = ".zf-explorer .zf-layer-overview canvas.zf-atlas"
TOP = ".zf-explorer .zf-top-nine canvas.zf-atlas"
TOP_READY = (
    "const c = document.querySelector(arg[0]);"
    "return !!c && c.dataset.layer === arg[1] && c.dataset.channel === arg[2]"
    " && !!c.dataset.draws"
)


NOTEBOOK = [
    "import sys, torch\n"
    f"sys.path.insert(0, {str(REPO / 'tests')!r})\n"
    "from models import tiny_zf, tiny_2x2\n"
    "from zfwidgets import Explorer\n"
    "data = torch.load('data.pt')\n"
    "ex = Explorer(tiny_zf(), data[:4], dataset=data, atlas='atlas', occlusion=False)\n"
    "ex.add_class('zf-test-good')\n"
    "other = Explorer(tiny_2x2(), data[:4], dataset=data, atlas='atlas', occlusion=False)\n"
    "other.add_class('zf-test-other')\n"
    "display(ex, other)\n"
]


def voila_files(directory: Path) -> None:
    """The notebook's data (data.pt) and the tiny model's stored atlas (atlas/), rendered."""
    torch.manual_seed(0)
    data = torch.rand(23, 3, 32, 32)
    torch.save(data, directory / "data.pt")
    atlas = zf.mine(tiny_zf(), data, layers=["4", "7"], k=4, progress=False)
    atlas.save(directory / "atlas")
    atlas.render(layers=["4", "7"], progress=False)


def test_overview_click_opens_the_unit_in_the_top_nine(browser_context, voila_server):
    good = ".zf-test-good"
    ready = (
        f"const c = document.querySelector('{good} .zf-layer-overview canvas.zf-atlas');"
        "return !!c && !!c.dataset.draws"
    )
    with open_app(browser_context, voila_server, ready, timeout_s=180) as app:
        units = app.page.eval_on_selector(
            f"{good} .zf-layer-overview canvas.zf-atlas", "c => c.dataset.units"
        )
        assert units.split(",") == [str(c) for c in range(16)]  # layer "7", 16 units
        px = app.pixels(f"{good} .zf-layer-overview canvas.zf-atlas")
        assert px["opaque"] > 0 and px["colours"] > 10, px
        # click the cell of unit 9 (row-major in the grid the canvas describes)
        app.page.evaluate(
            """(sel) => {
              const c = document.querySelector(sel);
              const r = c.getBoundingClientRect(), s = r.width / c.width;
              const cols = Number(c.dataset.columns), th = Number(c.dataset.tileH);
              const tw = Number(c.dataset.tileW), pad = Number(c.dataset.pad), i = 9;
              const x = r.left + (pad + (i % cols) * (tw + pad) + tw / 2) * s;
              const y = r.top + (pad + Math.floor(i / cols) * (th + pad) + th / 2) * s;
              c.dispatchEvent(new MouseEvent('click', {clientX: x, clientY: y, bubbles: true}));
            }""",
            f"{good} .zf-layer-overview canvas.zf-atlas",
        )
        app.wait(TOP_READY, [f"{good} .zf-top-nine canvas.zf-atlas", "7", "9"], timeout_s=60)
        expect(app.at(f"{good} .zf-layer-grid .zf-caption")).to_contain_text("channel 9")
        expect(app.at(f"{good} .zf-atlas-note")).to_contain_text("Not in the atlas: 0")
        # the other model's Explorer says why it did not use the folder, and mined instead
        other = app.at(".zf-test-other .zf-atlas-note")
        expect(other).to_contain_text("not from this model")
        expect(other).to_contain_text("mining the top-9 instead")
        app.wait(
            "const c = document.querySelector(arg); return !!c && !!c.dataset.draws",
            ".zf-test-other .zf-top-nine canvas.zf-atlas",
            timeout_s=120,
        )
        expect(app.page.locator(".zf-test-other .zf-layer-overview")).to_have_count(0)
        assert not app.errors, app.errors
