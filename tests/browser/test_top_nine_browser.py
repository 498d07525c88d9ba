"""TopNine and EvolutionSlider in stock Voila, in headless Chromium, end to end.

One notebook served for the module, a fresh page (and kernel) per test: AlexNet (random weights) over 24 random
crops of the bundled photos at 224 x 224, its TopNine (mined in the kernel's background
thread) linked to an EvolutionSlider over 3 checkpoints, with class names that look like
HTML and a Python observer of ``selected``. Screenshots go to tests/artifacts/.
"""

from __future__ import annotations

import re
import time

import pytest
from harness import App, open_app, starts
from playwright.sync_api import expect

pytestmark = pytest.mark.browser

EVIL = "<img src=x onerror=zfXSS=1>"
TOP = ".zf-test-top"
CANVAS = f"{TOP} canvas.zf-atlas"
SLIDER = ".zf-test-slider"

NOTEBOOK = [
    f"""\
import ipywidgets as W
import numpy as np
import torch
import torchvision

from zfwidgets.data import load_photos
from zfwidgets.widgets.evolution import EvolutionSlider
from zfwidgets.widgets.top_nine import TopNine

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
photos = list(load_photos().values())
rng = np.random.default_rng(0)
crops = []
for i in range(24):  # random square crops of the six photos, resized to 224 x 224
    im = photos[i % len(photos)]
    side = int(rng.integers(min(im.size) // 3, min(im.size) + 1))
    left = int(rng.integers(0, im.size[0] - side + 1))
    top = int(rng.integers(0, im.size[1] - side + 1))
    crop = im.crop((left, top, left + side, top + side)).resize((224, 224))
    crops.append(torch.from_numpy(np.asarray(crop).copy()).permute(2, 0, 1).float() / 255)
x = torchvision.transforms.functional.normalize(torch.stack(crops), MEAN, STD)
torch.manual_seed(0)
model = torchvision.models.alexnet(weights=None).eval()
checkpoints = []
for seed in (1, 2, 3):
    torch.manual_seed(seed)
    checkpoints.append(torchvision.models.alexnet(weights=None).state_dict())
EVIL = {EVIL!r}
classes = ["photo", EVIL, "<b>bold</b>"]
labels = [i % 3 for i in range(24)]
""",
    """\
top = TopNine(model, x, layer="features.6", channel=0, mean=MEAN, std=STD,
              classes=classes, labels=labels, batch_size=8)
top.add_class("zf-test-top")
slider = EvolutionSlider(checkpoints, labels=["epoch 1", "epoch 5", "epoch 20"]).link(top)
slider.add_class("zf-test-slider")
seen = W.Label("python saw: nothing yet")
seen.add_class("zf-test-seen")
top.observe(lambda change: setattr(seen, "value", f"python saw image {change.new}"), "selected")
display(slider, top, seen)
""",
]

# Pixel statistics of each block of the TopNine canvas (reconstructions | patches).
BLOCKS = """(sel) => {
  const c = document.querySelector(sel);
  if (!c || !c.width) return null;
  const bw = Number(c.dataset.blockWidth);
  const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
  const out = [0, 1].map(() => ({ opaque: 0, colours: new Set(), hash: 2166136261 }));
  for (let y = 0; y < c.height; y++) {
    for (let x = 0; x < c.width; x++) {
      const b = x < bw ? 0 : x >= c.width - bw ? 1 : -1;
      if (b < 0) continue;
      const i = 4 * (y * c.width + x);
      const s = out[b];
      if (d[i + 3]) { s.opaque++; s.colours.add((d[i] << 16) | (d[i + 1] << 8) | d[i + 2]); }
      s.hash = Math.imul(s.hash ^ d[i] ^ (d[i + 1] << 8) ^ (d[i + 2] << 16), 16777619) >>> 0;
    }
  }
  return { width: c.width, height: c.height, draws: Number(c.dataset.draws),
           channel: c.dataset.channel, checkpoint: c.dataset.checkpoint,
           blocks: out.map((s) => ({ opaque: s.opaque, colours: s.colours.size, hash: s.hash })) };
}"""

# Centre of hit `rank` of block `b` in page coordinates (js/lib/top9_layout.js geometry).
HIT_CENTRE = """([sel, b, rank]) => {
  const c = document.querySelector(sel);
  const r = c.getBoundingClientRect();
  const s = r.width / c.width;
  const bw = Number(c.dataset.blockWidth);
  const gap = c.width - 2 * bw;
  const cols = 3, pad = 1, tile = (bw - pad) / cols - pad;
  const x = b * (bw + gap) + pad + (rank % cols) * (tile + pad) + tile / 2;
  const y = pad + Math.floor(rank / cols) * (tile + pad) + tile / 2;
  return { x: r.left + x * s, y: r.top + y * s };
}"""

READY = (
    "const c = document.querySelector(arg[0]);"
    "const root = c && c.closest('.zf-top-nine');"
    "return !!root && root.dataset.status === 'ready' && c.dataset.checkpoint === arg[1]"
    " && c.dataset.channel === arg[2] && !root.classList.contains('zf-pending')"
)


@pytest.fixture
def app(voila_server, browser_context):
    """A fresh page per test (Voila runs the notebook in a new kernel): checkpoint 0, channel
    0, whatever ran before, so the tests pass in any order."""
    with open_app(
        browser_context, voila_server, READY, [CANVAS, "0", "0"], timeout_s=120
    ) as application:
        yield application


def blocks(app: App) -> dict:
    return app.page.evaluate(BLOCKS, CANVAS)


def test_draws_reconstructions_and_patches(app, artifacts):
    px = blocks(app)
    # features.6 of AlexNet at 224: receptive field 99 px, shrunk to 96-px tiles, 3 x 3 each
    assert px["width"] == 2 * (1 + 3 * 97) + 16 and px["height"] == 1 + 3 * 97, px
    for b in px["blocks"]:
        assert b["opaque"] == 9 * 96 * 96 and b["colours"] > 500, px
    expect(app.at(f"{TOP} .zf-caption")).to_have_text(
        starts("features.6 · feature map 0 / 384 · top 9 of 24 images · epoch 1")
    )
    expect(app.page.locator(f"{TOP} .zf-head")).to_have_text(
        ["deconvnet projections", "image patches"]
    )
    expect(app.page.locator(f"{TOP} .zf-hit-label")).to_have_count(9)
    expect(app.at(f"{SLIDER} .zf-slider-label")).to_have_text("epoch 1")
    app.page.mouse.move(1, 1)
    app.shot(artifacts, "top_nine.png", TOP)
    print(f"page + kernel + mining + first draw {app.load_s:.1f} s")
    assert not app.errors, app.errors


def test_class_names_show_as_text(app):
    expect(app.page.locator(f"{TOP} .zf-hit-label")).to_have_count(9)
    labels = app.page.locator(f"{TOP} .zf-hit-label").all_text_contents()
    assert any(text.endswith(f" · {EVIL}") for text in labels), labels
    assert any(text.endswith(" · <b>bold</b>") for text in labels), labels
    expect(app.page.locator(f"{TOP} img, {TOP} b")).to_have_count(0)
    assert app.page.evaluate("() => typeof window.zfXSS") == "undefined"


def test_top_classes_with_counts(app, artifacts):
    """The unit's top classes, with counts: the classes of its hits (as their labels name
    them), most frequent first, ties in class order; the HTML-looking names shown as text."""
    expect(app.page.locator(f"{TOP} .zf-hit-label")).to_have_count(9)
    names = [
        t.rsplit(" · ", 1)[1] for t in app.page.locator(f"{TOP} .zf-hit-label").all_text_contents()
    ]
    order = ["photo", EVIL, "<b>bold</b>"]
    want = sorted(
        ([n, names.count(n)] for n in set(names)), key=lambda p: (-p[1], order.index(p[0]))
    )
    expect(app.at(f"{TOP} .zf-classes-title")).to_have_text("Top classes of its 9 hits:")
    items = app.page.locator(f"{TOP} .zf-class")
    expect(items).to_have_count(len(want))
    shown = [
        [
            items.nth(j).locator(".zf-class-name").text_content(),
            int(items.nth(j).locator(".zf-class-count").text_content()),
        ]
        for j in range(len(want))
    ]
    assert shown == want and sum(n for _, n in shown) == 9
    expect(app.page.locator(f"{TOP} img, {TOP} b")).to_have_count(0)
    assert app.page.evaluate("() => typeof window.zfXSS") == "undefined"
    app.page.mouse.move(1, 1)
    app.shot(artifacts, "top_nine_classes.png", TOP)
    assert not app.errors, app.errors


def test_next_channel_redraws(app, artifacts):
    before = blocks(app)
    app.page.locator(f"{TOP} button.zf-next").click()
    t0 = time.monotonic()
    app.wait(READY, [CANVAS, "0", "1"], timeout_s=30)
    took = time.monotonic() - t0
    after = blocks(app)
    assert after["draws"] > before["draws"]
    for b0, b1 in zip(before["blocks"], after["blocks"]):
        assert b1["hash"] != b0["hash"] and b1["colours"] > 500
    expect(app.at(f"{TOP} .zf-caption")).to_contain_text("feature map 1 / 384")
    expect(app.page.locator(f"{TOP} input.zf-channel-input")).to_have_value("1")
    app.page.mouse.move(1, 1)
    app.shot(artifacts, "top_nine_channel1.png", TOP)
    print(f"channel switch (deconv of 9 hits + crops) {took * 1000:.0f} ms")


def test_hover_and_click_a_patch_selects_its_image(app, artifacts):
    c = app.page.evaluate(HIT_CENTRE, [CANVAS, 1, 4])
    app.page.mouse.move(c["x"], c["y"])
    tip = app.wait(
        "const t = document.querySelector('.zf-test-top .zf-tooltip');"
        "return t && !t.hidden && t.textContent",
        timeout_s=5,
    )
    assert tip.startswith("#5 · image "), tip
    image = int(tip.split(" · ")[1].removeprefix("image "))
    expect(app.page.locator(f"{TOP} .zf-twin-box")).to_be_visible()
    app.page.mouse.click(c["x"], c["y"])
    app.wait(
        "return document.querySelector('.zf-test-seen').textContent === arg",
        f"python saw image {image}",
        timeout_s=15,
    )
    boxes = app.page.locator(f"{TOP} .zf-select-box")
    expect(boxes.nth(0)).to_be_visible()
    expect(boxes.nth(1)).to_be_visible()
    app.shot(artifacts, "top_nine_selected.png", TOP)


def test_slider_swaps_checkpoint_and_redraws(app, artifacts):
    before = blocks(app)
    app.page.locator(f"{SLIDER} input.zf-slider").fill("2")
    t0 = time.monotonic()
    app.wait(READY, [CANVAS, "2", "0"], timeout_s=60)
    took = time.monotonic() - t0
    after = blocks(app)
    assert after["draws"] > before["draws"]
    for b0, b1 in zip(before["blocks"], after["blocks"]):
        assert b1["hash"] != b0["hash"] and b1["colours"] > 500
    expect(app.at(f"{SLIDER} .zf-slider-label")).to_have_text("epoch 20")
    expect(app.at(f"{TOP} .zf-checkpoint-label")).to_have_text("epoch 20")
    expect(app.at(f"{TOP} .zf-caption")).to_have_text(re.compile(r"· epoch 20$"))
    app.page.mouse.move(1, 1)
    app.shot(artifacts, "top_nine_epoch20.png", TOP)
    app.shot(artifacts, "top_nine_page.png")
    print(f"checkpoint switch (mining 24 images + deconv) {took:.1f} s")
    assert not app.errors, app.errors


def test_layer_menu_switches_to_small_receptive_fields(app, artifacts):
    app.page.select_option(f"{TOP} select.zf-layer-select", "features.0")
    app.wait(
        READY.replace("arg[2]", "arg[2] && c.dataset.layer === 'features.0'"),
        [CANVAS, "0", "0"],
        timeout_s=30,
    )
    px = blocks(app)
    # conv1's receptive field: 11 x 11 crops, blown up by an integer factor to fit
    assert px["width"] == 2 * (1 + 3 * 12) + 2 and px["height"] == 1 + 3 * 12, px
    # shown 8 times larger (the CSS size follows the draw)
    app.wait(
        "return document.querySelector(arg[0]).getBoundingClientRect().width === arg[1]",
        [CANVAS, px["width"] * 8],
    )
    for b in px["blocks"]:
        assert b["opaque"] == 9 * 11 * 11 and b["colours"] > 50, px
    expect(app.page.locator(f"{TOP} .zf-hit-label")).to_have_count(9)
    expect(app.at(f"{TOP} .zf-caption")).to_have_text(starts("features.0 · feature map 0 / 64"))
    app.page.mouse.move(1, 1)
    app.shot(artifacts, "top_nine_features0.png", TOP)
    assert not app.errors, app.errors
