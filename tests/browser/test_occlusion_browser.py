"""OcclusionMap and Predictions in stock Voila, in headless Chromium, end to end.

One notebook, one kernel, one page for the module: AlexNet (random weights, the last layer
scaled so the probabilities vary) on a 128 x 128 photo whose predicted class is named like
HTML, its OcclusionMap (default window and stride: 18 px, 4 px, 29 x 29 positions) with a
Python observer of ``view``, its Predictions, and a button that replaces the image (so the
sweep runs in the kernel's background thread while the page stays live). Screenshots go to
tests/artifacts/.
"""

from __future__ import annotations

import time

import pytest
from harness import expect_some_text, open_app, starts
from playwright.sync_api import expect

pytestmark = pytest.mark.browser

EVIL = "<img src=x onerror=zfXSS=1>"

NOTEBOOK = [
    f"""\
import ipywidgets as W
import numpy as np
import torch
import torchvision
from matplotlib.cbook import get_sample_data
from PIL import Image

from zfwidgets.widgets.occlusion_map import OcclusionMap
from zfwidgets.widgets.predictions import Predictions

torch.manual_seed(0)
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
photo = Image.open(get_sample_data("grace_hopper.jpg", asfileobj=False)).convert("RGB")
photo = photo.resize((128, 128))
x = torch.from_numpy(np.asarray(photo).copy()).permute(2, 0, 1).float() / 255
x = torchvision.transforms.functional.normalize(x, MEAN, STD)
model = torchvision.models.alexnet(weights=None).eval()
with torch.no_grad():  # random weights give near-uniform probabilities: spread the logits
    model.classifier[6].weight.mul_(4 / model(x[None]).std())
    predicted = int(model(x[None]).argmax())
names = [f"class {{i}}" for i in range(1000)]
names[predicted] = {EVIL!r}
""",
    """\
occ = OcclusionMap(model, x, classes=names, mean=MEAN, std=STD)
occ.add_class("zf-test-occ")
seen = W.Label("python saw: nothing yet")
seen.add_class("zf-test-seen")
occ.observe(lambda change: setattr(seen, "value", f"python saw view {change.new}"), "view")
preds = Predictions(model, x, classes=names)
preds.add_class("zf-test-preds")
flip = W.Button(description="flip the image")
flip.add_class("zf-test-flip")


def on_flip(_):
    occ.image = x.flip(2)
    preds.image = x.flip(2)


flip.on_click(on_flip)
display(occ, seen, preds, flip)
""",
]

OCC = ".zf-test-occ"
HEAT = ".zf-test-occ canvas.zf-occ-heat"
IDLE = (
    "const c = document.querySelector(arg);"
    "return c && c.dataset.draws && !c.hidden"
    " && !c.closest('.zf-widget').classList.contains('zf-pending') && c.dataset.draws"
)


@pytest.fixture
def app(voila_server, browser_context):
    """A fresh page per test (Voila runs the notebook in a new kernel): the first sweep drawn
    in the probability view, whatever ran before."""
    with open_app(browser_context, voila_server, IDLE, HEAT, timeout_s=120) as application:
        yield application


def test_heatmap_draws_over_the_image(app, artifacts):
    px = app.pixels(HEAT)
    assert (px["width"], px["height"]) == (128, 128)
    assert px["opaque"] == 128 * 128 and px["colours"] > 20, px
    image = app.pixels(f"{OCC} canvas.zf-occ-image")
    assert image["opaque"] == 128 * 128 and image["colours"] > 1000, image
    expect(app.page.locator(HEAT)).to_have_attribute("data-view", "probability")
    caption = app.at(f"{OCC} .zf-caption")
    expect(caption).to_contain_text("square 18×18, stride 4 · 29×29 positions")
    expect(caption).to_contain_text(EVIL)  # the target (the predicted class) by name, as text
    expect(app.at(f"{OCC} .zf-occ-scale-title")).to_have_text(starts(f"probability of {EVIL}"))
    lo, hi = app.wait(
        "const [lo, hi] = arg.map((s) => document.querySelector(s).textContent);"
        "return Number(lo) < Number(hi) && [lo, hi]",
        [f"{OCC} .zf-occ-lo", f"{OCC} .zf-occ-hi"],
    )
    assert float(lo) < float(hi), (lo, hi)
    app.page.mouse.move(1, 1)
    app.shot(artifacts, "occlusion_probability.png", OCC)
    print(f"page + kernel + first sweep {app.load_s:.1f} s")
    assert not app.errors, app.errors


def test_toggling_the_view_changes_pixels(app, artifacts):
    before = app.pixels(HEAT)
    app.page.click(f"{OCC} button.zf-occ-view[data-view=activation]")
    app.wait("return document.querySelector(arg).dataset.view === 'activation'", HEAT)
    activation = app.pixels(HEAT)
    assert activation["hash"] != before["hash"] and activation["opaque"] == 128 * 128
    expect(app.at(f"{OCC} .zf-occ-scale-title")).to_have_text(
        starts("total activation of features.10")
    )
    app.wait(
        "return document.querySelector('.zf-test-seen').textContent"
        ".includes('python saw view activation')",
        timeout_s=15,
    )
    app.shot(artifacts, "occlusion_activation.png", OCC)
    app.page.click(f"{OCC} button.zf-occ-view[data-view=top_class]")
    app.wait("return document.querySelector(arg).dataset.view === 'top_class'", HEAT)
    top = app.pixels(HEAT)
    assert top["hash"] not in (before["hash"], activation["hash"])
    expect_some_text(app.page.locator(f"{OCC} .zf-occ-legend .zf-occ-class"), EVIL)
    expect(app.page.locator(f"{OCC} img")).to_have_count(0)
    app.shot(artifacts, "occlusion_top_class.png", OCC)
    assert not app.errors, app.errors


def test_hover_shows_the_square_and_class_name_as_text(app, artifacts):
    app.page.click(f"{OCC} button.zf-occ-view[data-view=probability]")
    box = app.page.locator(f"{OCC} .zf-occ-stage").bounding_box()
    app.page.mouse.move(box["x"] + box["width"] * 0.45, box["y"] + box["height"] * 0.4)
    tip = app.wait(
        "const t = document.querySelector('.zf-test-occ .zf-tooltip');"
        "return t && !t.hidden && t.textContent",
        timeout_s=5,
    )
    expect(app.page.locator(f"{OCC} .zf-tooltip > div")).to_have_count(4)
    lines = app.page.locator(f"{OCC} .zf-tooltip > div").all_text_contents()
    assert lines[0].startswith("most probable: ") and lines[0].endswith("%"), lines
    assert lines[1].startswith(f"target {EVIL}: ") and lines[1].endswith("%"), lines
    assert lines[2].startswith("activation ") and "features.10 map" in lines[2]
    assert lines[3].startswith("square at x ")
    assert EVIL in tip
    expect(app.page.locator(f"{OCC} img")).to_have_count(0)
    assert app.page.evaluate("() => typeof window.zfXSS") == "undefined"
    expect(app.page.locator(f"{OCC} .zf-occ-square")).to_be_visible()
    square = app.page.locator(f"{OCC} .zf-occ-square").bounding_box()
    scale = box["width"] / 128
    assert square["width"] == pytest.approx(18 * scale, abs=1.5)  # the 18 px square
    app.shot(artifacts, "occlusion_hover.png", OCC)


def test_prediction_bars_show(app, artifacts):
    expect(app.page.locator(".zf-test-preds .zf-pred-name")).to_have_count(5)
    expect(app.page.locator(".zf-test-preds .zf-pred-name").first).to_have_text(EVIL)
    widths = app.page.evaluate(
        "() => [...document.querySelectorAll('.zf-test-preds .zf-pred-bar')]"
        ".map((b) => b.getBoundingClientRect().width)"
    )
    assert widths[0] > 1 and widths == sorted(widths, reverse=True), widths
    values = app.page.locator(".zf-test-preds .zf-pred-value").all_text_contents()
    assert all(v.endswith("%") for v in values), values
    expect(app.page.locator(".zf-test-preds img")).to_have_count(0)
    app.shot(artifacts, "predictions.png", ".zf-test-preds")


def test_replacing_the_image_recomputes_in_the_background(app, artifacts):
    app.page.mouse.move(1, 1)
    before = app.pixels(HEAT)
    draws = int(app.page.locator(HEAT).get_attribute("data-draws"))
    t0 = time.monotonic()
    app.page.click("button.zf-test-flip")
    # the kernel answers at once: busy with progress while the sweep runs in its thread
    app.wait(
        "return document.querySelector('.zf-test-occ .zf-busy').textContent"
        ".startsWith('computing')",
        timeout_s=15,
    )
    # the page stays live meanwhile: the view buttons answer, the new image shows
    app.page.click(f"{OCC} button.zf-occ-view[data-view=activation]")
    pressed = app.page.locator(f"{OCC} button.zf-occ-view[data-view=activation]")
    expect(pressed).to_have_attribute("aria-pressed", "true")
    app.shot(artifacts, "occlusion_busy.png", OCC)
    app.wait(IDLE, HEAT, timeout_s=90)
    sweep_s = time.monotonic() - t0
    expect(app.page.locator(HEAT)).to_have_attribute("data-view", "activation")
    app.page.click(f"{OCC} button.zf-occ-view[data-view=probability]")
    app.wait(
        "const c = document.querySelector(arg[0]);"
        "return c.dataset.view === 'probability' && Number(c.dataset.draws) > arg[1]",
        [HEAT, draws],
    )
    after = app.pixels(HEAT)
    assert after["hash"] != before["hash"] and after["opaque"] == 128 * 128
    expect(app.at(f"{OCC} .zf-busy")).to_have_text("")
    app.shot(artifacts, "occlusion_flipped.png", OCC)
    app.shot(artifacts, "occlusion_page.png")
    print(f"image replaced: new maps drawn after {sweep_s:.1f} s")
    assert not app.errors, app.errors
