"""LayerGrid and FilterGrid in stock Voila, in headless Chromium, end to end.

One notebook, one kernel, one page for the module (every GET of a Voila URL starts a kernel):
AlexNet (random weights) on a photo, its LayerGrid with a Python observer of ``channel``, a
FilterGrid over two checkpoints, and a LayerGrid of a model whose layer name is HTML.
Screenshots go to tests/artifacts/.
"""

from __future__ import annotations

import time

import pytest
from harness import TILE_CENTRE, open_app
from playwright.sync_api import expect

pytestmark = pytest.mark.browser

EVIL = "<img src=x onerror=zfXSS=1>"

NOTEBOOK = [
    """\
import copy

import ipywidgets as W
import numpy as np
import torch
import torchvision
from matplotlib.cbook import get_sample_data
from PIL import Image
from torch import nn

from zfwidgets.widgets import FilterGrid, LayerGrid

torch.manual_seed(0)
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
photo = Image.open(get_sample_data("grace_hopper.jpg", asfileobj=False)).convert("RGB")
photo = photo.resize((224, 224))
x = torch.from_numpy(np.asarray(photo).copy()).permute(2, 0, 1).float() / 255
x = torchvision.transforms.functional.normalize(x, MEAN, STD)
model = torchvision.models.alexnet(weights=None).eval()
""",
    """\
grid = LayerGrid(model, x, "features.1", mean=MEAN, std=STD)
grid.add_class("zf-test-main")
seen = W.Label("python saw: nothing yet")
seen.add_class("zf-test-seen")
grid.observe(lambda change: setattr(seen, "value", f"python saw channel {change.new}"), "channel")
display(grid, seen)
""",
    """\
# a second checkpoint with smooth, oriented colour filters, as training gives: Gabor gratings
k = torch.arange(11) - 5.0
yy, xx = torch.meshgrid(k, k, indexing="ij")
theta = torch.arange(64) * torch.pi / 16
freq = 0.4 + 0.3 * (torch.arange(64) % 4)
u = xx * torch.cos(theta)[:, None, None] + yy * torch.sin(theta)[:, None, None]
gabor = torch.cos(freq[:, None, None] * u) * torch.exp(-(xx**2 + yy**2) / 18)
later = copy.deepcopy(model)
with torch.no_grad():
    w = gabor[:, None] * (torch.rand(64, 3) - 0.5)[:, :, None, None] * 0.05
    for i in (3, 17):                      # RMS 0.15, above 0.1: dominating
        w[i] *= 0.15 / w[i].pow(2).mean().sqrt()
    later.features[0].weight.copy_(w)
    later.features[0].bias[40] = -100.0    # never positive: dead
filters = FilterGrid(
    model,
    checkpoints=[model.state_dict(), later.state_dict()],
    labels=["epoch 0 (init)", "epoch 5"],
    images=x[None],
)
filters.add_class("zf-test-filters")
display(filters)
""",
    f"""\
EVIL = {EVIL!r}
tiny = nn.Sequential()
tiny.add_module(EVIL, nn.Conv2d(3, 4, 3))
tiny.add_module("relu", nn.ReLU())
evil = LayerGrid(tiny.eval(), torch.randn(3, 16, 16), EVIL)
evil.add_class("zf-test-evil")
display(evil)
""",
]

MAIN = ".zf-test-main canvas.zf-atlas"
FILTERS = ".zf-test-filters canvas.zf-atlas"
EVIL_ROOT = ".zf-test-evil"


@pytest.fixture
def app(voila_server, browser_context):
    """A fresh page per test (Voila runs the notebook in a new kernel): no test sees the state
    another left, so the tests pass in any order."""
    with open_app(
        browser_context,
        voila_server,
        "return document.querySelectorAll('canvas.zf-atlas[data-draws]').length >= 3",
        timeout_s=120,
    ) as application:
        yield application


def test_layer_grid_draws_pixels(app, artifacts):
    px = app.pixels(MAIN)
    # features.1 of AlexNet: 64 ReLU maps of 55 x 55, each a colour-mapped tile
    assert px["count"] == 64
    assert px["opaque"] == 64 * 55 * 55, px
    assert px["colours"] > 50, px
    thumb = app.page.evaluate(
        """() => { const c = document.querySelector('.zf-test-main canvas.zf-thumb');
                   const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                   let s = 0; for (let i = 0; i < d.length; i += 4) s += d[i] + d[i+1] + d[i+2];
                   return { w: c.width, h: c.height, mean: s / (3 * c.width * c.height) }; }"""
    )
    assert thumb["w"] == 224 and thumb["h"] == 224 and 20 < thumb["mean"] < 235
    expect(app.at(".zf-test-main .zf-caption")).to_contain_text("features.1 · 64 maps of 55×55")
    app.shot(artifacts, "layer_grid.png", ".zf-test-main")
    assert not app.errors, app.errors


def test_hover_shows_channel_and_max(app):
    c = app.page.evaluate(TILE_CENTRE, [MAIN, 5])
    app.page.mouse.move(c["x"], c["y"])
    text = app.wait(
        "const t = document.querySelector('.zf-test-main .zf-tooltip');"
        "return t && !t.hidden && t.textContent",
        timeout_s=5,
    )
    assert text.startswith("channel 5 · max "), text
    float(text.rsplit(" ", 1)[1])  # the max is a number


def test_click_selects_channel_in_python(app, artifacts):
    c = app.page.evaluate(TILE_CENTRE, [MAIN, 12])
    app.page.mouse.click(c["x"], c["y"])
    # the caption is recomputed by Python; the Label by a Python observer of `channel`
    caption = app.wait(
        "const t = document.querySelector('.zf-test-main .zf-caption').textContent;"
        "return t.includes('channel 12') && t",
        timeout_s=15,
    )
    assert caption.startswith("features.1 · channel 12 · max ")
    app.wait(
        "return document.querySelector('.zf-test-seen').textContent"
        ".includes('python saw channel 12')",
        timeout_s=15,
    )
    expect(app.page.locator(".zf-test-main .zf-select-box")).to_be_visible()
    app.page.mouse.move(5, 5)
    app.shot(artifacts, "layer_grid_channel12.png", ".zf-test-main")


def test_layer_change_redraws(app, artifacts):
    before = app.pixels(MAIN)
    app.page.select_option(".zf-test-main select.zf-layer-select", "features.3")
    t0 = time.monotonic()
    app.wait(
        "const c = document.querySelector(arg);"
        "return c.dataset.count === '192' && !c.closest('.zf-widget').classList.contains('zf-pending')",
        MAIN,
        timeout_s=20,
    )
    switch_s = time.monotonic() - t0
    after = app.pixels(MAIN)
    assert after["draws"] > before["draws"]
    assert after["hash"] != before["hash"]
    assert (after["width"], after["height"]) != (before["width"], before["height"])
    assert after["opaque"] == 192 * 27 * 27 and after["colours"] > 50, after
    expect(app.at(".zf-test-main .zf-caption")).to_contain_text("features.3 · 192 maps of 27×27")
    # the selection was cleared by Python (another layer's channels)
    expect(app.page.locator(".zf-test-main .zf-select-box")).to_be_hidden()
    app.shot(artifacts, "layer_grid_features3.png", ".zf-test-main")
    print(f"page + kernel + first draw {app.load_s:.1f} s; layer switch {switch_s * 1000:.0f} ms")
    assert not app.errors, app.errors


def test_filter_grid_marks_and_checkpoints(app, artifacts):
    root = ".zf-test-filters"
    px = app.pixels(FILTERS)
    assert px["count"] == 64 and px["opaque"] == 64 * 11 * 11 and px["colours"] > 100, px
    expect(app.page.locator(f"{root} .zf-mark")).to_have_count(0)
    expect(app.at(f"{root} .zf-legend")).to_contain_text("dominating, RMS > 0.1: 0")
    expect(app.at(f"{root} .zf-slider-label")).to_have_text("epoch 0 (init)")
    app.shot(artifacts, "filter_grid_init.png", root)
    # move the checkpoint slider: Python sends the other checkpoint's filters and marks
    app.page.locator(f"{root} input.zf-slider").fill("1")
    app.wait("return document.querySelector(arg).dataset.draws === '2'", FILTERS, timeout_s=15)
    after = app.pixels(FILTERS)
    assert after["hash"] != px["hash"] and after["opaque"] == px["opaque"]
    expect(app.page.locator(f"{root} .zf-mark.zf-mark-dominating")).to_have_count(2)
    expect(app.page.locator(f"{root} .zf-mark.zf-mark-dead")).to_have_count(1)
    expect(app.at(f"{root} .zf-legend")).to_contain_text("dominating, RMS > 0.1: 2")
    expect(app.at(f"{root} .zf-legend")).to_contain_text("dead on the images: 1")
    expect(app.at(f"{root} .zf-slider-label")).to_have_text("epoch 5")
    c = app.page.evaluate(TILE_CENTRE, [FILTERS, 17])
    app.page.mouse.move(c["x"], c["y"])
    tip = app.wait(
        "const t = document.querySelector('.zf-test-filters .zf-tooltip');"
        "return t && !t.hidden && t.textContent",
        timeout_s=5,
    )
    assert tip == "filter 17 · RMS 0.15 · dominating", tip
    app.page.mouse.click(c["x"], c["y"])
    app.wait(
        "return document.querySelector('.zf-test-filters .zf-caption').textContent"
        ".includes('filter 17 · RMS 0.15 · dominating')",
        timeout_s=15,
    )
    app.shot(artifacts, "filter_grid_epoch5.png", root)


def test_python_text_is_rendered_as_text(app, artifacts):
    options = app.page.locator(f"{EVIL_ROOT} select.zf-layer-select option")
    expect(options.first).to_have_text(EVIL)
    expect(app.at(f"{EVIL_ROOT} .zf-caption")).to_contain_text(EVIL)
    expect(app.page.locator(f"{EVIL_ROOT} img")).to_have_count(0)
    assert app.page.evaluate("() => typeof window.zfXSS") == "undefined"
    app.page.mouse.move(1, 1)
    app.shot(artifacts, "page.png")
    assert not app.errors, app.errors
