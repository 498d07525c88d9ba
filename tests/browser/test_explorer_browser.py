"""The Explorer in stock Voila, in headless Chromium, end to end (issue 3, "Tests").

Two notebooks, served one after the other, a fresh page per test (every GET of a Voila URL
starts a kernel that runs the notebook, so no test sees the state another left):

- ``default``: ``Explorer()``: the bundled trained ZFNet-style model, its Fashion-MNIST test
  images and its precomputed top-9 atlas;
- ``alexnet``: ``Explorer(torchvision.models.alexnet(weights=None).eval(), classes=...)`` on
  the bundled photos (``images=None``), with 1000 class names of which the one the model
  predicts for the first photo looks like HTML.

For each: the LayerGrid draws pixels; a click on a feature map redraws the TopNine and the
unit's projections; the layer menu redraws the grid and the TopNine follows; the occlusion
heatmap appears; picking another image in the strip redraws the grid; class names show as
text; uploads (a PNG, and a text file named .png) grow the strip or show a message, and the
widget keeps working; no unexpected console errors. Screenshots go to
tests/artifacts/explorer-*.png, and one of ``default`` to docs/screenshot-explorer.png.
"""

from __future__ import annotations

import contextlib
import io
import json
import time
from dataclasses import dataclass

import pytest
from harness import REPO, TILE_CENTRE, App, expect_some_text, open_app, starts
from playwright.sync_api import expect

from zfwidgets.data import CLASSES

pytestmark = pytest.mark.browser

EVIL = "<img src=x onerror=window.zfXSS=1>"
FASHION = CLASSES  # the bundled model's class names
DOCS_SCREENSHOT = REPO / "docs" / "screenshot-explorer.png"

# Test-only classes on the Explorer's parts, so the selectors below need no DOM order.
TAG = """\
for part, name in [(ex.strip, "strip"), (ex.unit, "unit"), (ex.upload, "upload"),
                   (ex.message, "message"), (ex.status, "status")]:
    part.add_class(f"zf-test-{name}")
display(ex)
"""

NOTEBOOKS = {
    "default": [
        "from zfwidgets import Explorer\n\nex = Explorer()\n",
        TAG,
    ],
    "alexnet": [
        f"""\
import torch
import torchvision

from zfwidgets import Explorer
from zfwidgets.data import load_photos
from zfwidgets.widgets.explorer import _default_transform

EVIL = {EVIL!r}
torch.manual_seed(0)
model = torchvision.models.alexnet(weights=None).eval()
# the class the model predicts for the strip's first image (the first bundled photo) gets
# the HTML-looking name, so it shows in the predictions and the occlusion caption
first = next(iter(load_photos().values()))
with torch.no_grad():
    predicted = int(model(_default_transform(3)(first)[None]).argmax())
classes = [f"class {{i}}" for i in range(1000)]
classes[predicted] = EVIL
# (no feature visualisations: optimising a 224 px input of an untrained AlexNet on every click
# would only load the CPU; the default case shows them)
ex = Explorer(model, classes=classes, feature_vis=False)
""",
        TAG,
    ],
}


@dataclass(frozen=True)
class Case:
    name: str
    strip: int  # images in the strip
    layer: str  # the LayerGrid's first layer
    maps: int  # its feature maps
    other: str  # the layer picked from the menu
    other_maps: int
    hits: int  # TopNine hits per map


CASES = {
    "default": Case("default", 32, "features.12", 32, "features.8", 64, 9),
    "alexnet": Case("alexnet", 6, "features.10", 256, "features.3", 192, 6),
}

ROOT = ".zf-explorer"
GRID = f"{ROOT} .zf-layer-grid canvas.zf-atlas"
THUMB = f"{ROOT} .zf-layer-grid canvas.zf-thumb"
STRIP = ".zf-test-strip canvas.zf-atlas"
UNIT = ".zf-test-unit canvas.zf-atlas"
TOP = f"{ROOT} .zf-top-nine"
TOP_CANVAS = f"{TOP} canvas.zf-atlas"
HEAT = f"{ROOT} canvas.zf-occ-heat"
PREDS = f"{ROOT} .zf-predictions"

# The LayerGrid canvas arg[0] shows layer arg[1], every map drawn, nothing pending.
GRID_READY = (
    "const c = document.querySelector(arg[0]);"
    "return !!c && c.dataset.layer === arg[1] && !!c.dataset.draws"
    " && !c.closest('.zf-widget').classList.contains('zf-pending')"
)
# The TopNine shows (layer, channel) = (arg[1], arg[2]), done.
TOP_READY = (
    "const c = document.querySelector(arg[0]);"
    "const root = c && c.closest('.zf-top-nine');"
    "return !!root && root.dataset.status === 'ready' && c.dataset.layer === arg[1]"
    " && c.dataset.channel === arg[2] && !root.classList.contains('zf-pending')"
)
# The occlusion heatmap is drawn, visible, and no sweep is under way.
OCC_IDLE = (
    "const c = document.querySelector(arg);"
    "return !!c && !!c.dataset.draws && !c.hidden"
    " && !c.closest('.zf-widget').classList.contains('zf-pending')"
)
# The strip's selection box is around tile arg[2] (TILE_CENTRE's geometry).
STRIP_MARKS = (
    "const b = document.querySelector(arg[0]).getBoundingClientRect();"
    f"const c = ({TILE_CENTRE})([arg[1], arg[2]]);"
    "return b.width > 0 && b.left < c.x && c.x < b.right"
)
# A hash of a canvas's pixels.
HASH = """(sel) => {
  const c = document.querySelector(sel);
  const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
  let hash = 2166136261;
  for (let i = 0; i < d.length; i++) hash = Math.imul(hash ^ d[i], 16777619) >>> 0;
  return hash;
}"""


@pytest.fixture
def app(voila_server, browser_context):
    """A fresh page per test (Voila runs the notebook in a new kernel): the Explorer as it
    opens, image 0, the first layer, no map selected, whatever ran before; so the tests pass
    in any order. One server per notebook of ``NOTEBOOKS``, so every test runs for each."""
    case = CASES[voila_server.key]
    with open_app(
        browser_context,
        voila_server,
        GRID_READY + " && document.querySelector(arg[2])?.dataset.status === 'ready'",
        [GRID, case.layer, TOP],
        timeout_s=150,
    ) as application:
        application.case = case
        yield application


def still(app: App) -> None:
    """Move the pointer off every widget (no hover boxes or tooltips in screenshots)."""
    app.page.mouse.move(2, 2)


def click_tile(app: App, sel: str, i: int) -> None:
    app.page.locator(sel).scroll_into_view_if_needed()
    c = app.page.evaluate(TILE_CENTRE, [sel, i])
    app.page.mouse.click(c["x"], c["y"])


def select_map(app: App, layer: str, channel: int) -> None:
    """Click feature map ``channel`` of the grid (showing ``layer``); wait until the unit view
    projects it and the TopNine shows it."""
    click_tile(app, GRID, channel)
    app.wait(
        "const c = document.querySelector(arg[0]);"
        "return Number(c.dataset.count) >= 3"
        " && document.querySelector(arg[1]).textContent.includes(arg[2])",
        [UNIT, ".zf-test-unit .zf-caption", f"{layer} · channel {channel}"],
        timeout_s=30,
    )
    app.wait(TOP_READY, [TOP_CANVAS, layer, str(channel)], timeout_s=60)


@contextlib.contextmanager
def tall(app: App):
    """Make the viewport as tall as the Explorer (Voila scrolls inside its own container, so a
    full-page screenshot is otherwise cut at the viewport); the width, hence the layout, stays."""
    size = app.page.viewport_size
    app.page.set_viewport_size({"width": size["width"], "height": 6000})
    try:
        bottom = app.page.evaluate(
            "(sel) => Math.ceil(document.querySelector(sel).getBoundingClientRect().bottom + 24)",
            ROOT,
        )
        app.page.set_viewport_size({"width": size["width"], "height": max(bottom, 200)})
        yield
    finally:
        app.page.set_viewport_size(size)


def page_shot(app: App, artifacts, name: str) -> None:
    with tall(app):
        app.shot(artifacts, name)


def test_loads_and_draws_every_part(app, artifacts):
    case = app.case
    px = app.pixels(GRID)
    assert px["count"] == case.maps, px
    assert px["opaque"] > 0.5 * px["width"] * px["height"] and px["colours"] > 20, px
    expect(app.at(f"{ROOT} .zf-layer-grid .zf-caption")).to_have_text(
        starts(f"{case.layer} · {case.maps} maps of ")
    )
    options = app.page.locator(f"{ROOT} .zf-layer-grid select.zf-layer-select option")
    expect_some_text(options, case.other)
    strip = app.pixels(STRIP)
    assert strip["count"] == case.strip and strip["colours"] > 10, strip
    expect(app.page.locator(".zf-test-strip .zf-select-box")).to_be_visible()  # image 0
    unit = app.pixels(UNIT)
    assert unit["count"] == 1, unit  # just the image until a map is clicked
    top = app.pixels(TOP_CANVAS)
    assert top["opaque"] > 0 and top["colours"] > 10, top
    expect(app.page.locator(f"{TOP} .zf-hit-label")).to_have_count(case.hits)
    expect(app.page.locator(f"{PREDS} .zf-pred-name")).to_have_count(5)
    still(app)
    page_shot(app, artifacts, f"explorer-{case.name}-loaded.png")
    print(f"[{case.name}] page + kernel + Explorer + first draws {app.load_s:.1f} s")
    assert not app.errors, app.errors


def test_click_on_a_map_updates_top_nine_and_unit(app, artifacts):
    case = app.case
    top_before = app.pixels(TOP_CANVAS)
    unit_before = app.pixels(UNIT)
    channel = 5
    t0 = time.monotonic()
    click_tile(app, GRID, channel)
    app.wait(
        "const c = document.querySelector(arg[0]);"
        "return Number(c.dataset.count) >= 3 && Number(c.dataset.draws) > arg[1]",
        [UNIT, unit_before["draws"]],
        timeout_s=30,
    )
    unit_s = time.monotonic() - t0
    app.wait(TOP_READY, [TOP_CANVAS, case.layer, str(channel)], timeout_s=60)
    top_s = time.monotonic() - t0
    top = app.pixels(TOP_CANVAS)
    assert top["draws"] > top_before["draws"] and top["hash"] != top_before["hash"], top
    expect(app.at(f"{TOP} .zf-caption")).to_have_text(
        starts(f"{case.layer} · feature map {channel} / {case.maps}")
    )
    unit = app.pixels(UNIT)
    assert unit["colours"] > 10, unit
    expect(app.at(".zf-test-unit .zf-caption")).to_contain_text(f"{case.layer} · channel {channel}")
    expect(app.at(f"{ROOT} .zf-layer-grid .zf-caption")).to_contain_text(f"channel {channel}")
    expect(app.page.locator(f"{ROOT} .zf-layer-grid .zf-select-box")).to_be_visible()
    still(app)
    app.wait(OCC_IDLE, HEAT, timeout_s=120)
    page_shot(app, artifacts, f"explorer-{case.name}-channel{channel}.png")
    if case.name == "default":
        save_docs_screenshot(app)
    print(
        f"[{case.name}] map click: projections drawn {unit_s * 1000:.0f} ms, "
        f"TopNine redrawn {top_s * 1000:.0f} ms"
    )
    assert not app.errors, app.errors


def save_docs_screenshot(app: App) -> None:
    """The README's screenshot: the whole Explorer, cropped to what it draws (plus a margin),
    scaled down only if the PNG would exceed 300 KB."""
    from PIL import Image, ImageChops, ImageOps

    with tall(app):
        png = app.page.locator(ROOT).first.screenshot()
    img = Image.open(io.BytesIO(png)).convert("RGB")
    ink = ImageChops.difference(img, Image.new("RGB", img.size, "white")).getbbox()
    if ink:  # what the Explorer draws, in a 12 px white margin
        img = ImageOps.expand(img.crop(ink), border=12, fill="white")
    DOCS_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    for width in (img.width, 900, 760, 640):
        width = min(width, img.width)
        small = img.resize((width, round(img.height * width / img.width)), Image.LANCZOS)
        small.save(DOCS_SCREENSHOT, optimize=True)
        if DOCS_SCREENSHOT.stat().st_size < 300_000:
            break
    assert DOCS_SCREENSHOT.stat().st_size < 300_000, DOCS_SCREENSHOT.stat().st_size


def test_layer_menu_redraws_grid_and_top_nine_follows(app, artifacts):
    case = app.case
    select_map(app, case.layer, 5)  # the TopNine keeps its channel across the switch
    before = app.pixels(GRID)
    t0 = time.monotonic()
    app.page.select_option(f"{ROOT} .zf-layer-grid select.zf-layer-select", case.other)
    app.wait(GRID_READY, [GRID, case.other], timeout_s=30)
    grid_s = time.monotonic() - t0
    after = app.pixels(GRID)
    assert after["count"] == case.other_maps, after
    assert after["draws"] > before["draws"] and after["hash"] != before["hash"]
    assert after["colours"] > 20, after
    expect(app.at(f"{ROOT} .zf-layer-grid .zf-caption")).to_have_text(
        starts(f"{case.other} · {case.other_maps} maps of ")
    )
    # the TopNine follows the layer (keeping channel 5, which the new layer has)
    app.wait(TOP_READY, [TOP_CANVAS, case.other, "5"], timeout_s=90)
    top_s = time.monotonic() - t0
    expect(app.at(f"{TOP} .zf-caption")).to_have_text(starts(f"{case.other} · feature map 5 / "))
    expect(app.page.locator(f"{TOP} select.zf-layer-select")).to_have_value(case.other)
    # the selection was cleared with the layer: the unit view is back to the image alone
    app.wait("return document.querySelector(arg).dataset.count === '1'", UNIT, timeout_s=15)
    # and a click on a map of the new layer projects it
    select_map(app, case.other, 2)
    still(app)
    page_shot(app, artifacts, f"explorer-{case.name}-{case.other}.png")
    print(
        f"[{case.name}] layer switch: grid redrawn {grid_s * 1000:.0f} ms, "
        f"TopNine followed {top_s * 1000:.0f} ms"
    )
    assert not app.errors, app.errors


def test_occlusion_heatmap_appears(app, artifacts):
    app.wait(OCC_IDLE, HEAT, timeout_s=120)
    px = app.pixels(HEAT)
    assert px["opaque"] == px["width"] * px["height"] > 0 and px["colours"] > 5, px
    image = app.pixels(f"{ROOT} canvas.zf-occ-image")
    assert image["opaque"] > 0 and image["colours"] > 10, image
    expect(app.at(f"{ROOT} .zf-occlusion .zf-caption")).to_contain_text("square")
    app.shot(artifacts, f"explorer-{app.case.name}-occlusion.png", f"{ROOT} .zf-occlusion")


def test_unit_view_gains_the_feature_visualisation(app, artifacts):
    """The bundled model: a map clicked shows its projections at once, then its feature
    visualisation (optimised in the kernel's background) as a fourth tile."""
    case = app.case
    if case.name != "default":
        pytest.skip("feature visualisations are switched off in this notebook")
    select_map(app, case.layer, 7)
    app.wait(
        "const c = document.querySelector(arg[0]);"
        "return c.dataset.count === '4'"
        " && document.querySelector(arg[1]).textContent.includes(arg[2])",
        [UNIT, ".zf-test-unit .zf-caption", f"{case.layer} · channel 7"],
        timeout_s=120,
    )
    unit = app.pixels(UNIT)
    assert unit["colours"] > 10, unit
    expect(app.at(".zf-test-unit .zf-caption")).not_to_contain_text("feature visualisation:")
    app.page.locator(".zf-test-unit").screenshot(path=str(artifacts / "explorer-unit-fv.png"))
    assert not app.errors, app.errors


def test_class_names_show_as_text(app, artifacts):
    case = app.case
    app.wait(OCC_IDLE, HEAT, timeout_s=120)  # the occlusion caption names the target once swept
    expect(app.page.locator(f"{PREDS} .zf-pred-name")).to_have_count(5)
    names = app.page.locator(f"{PREDS} .zf-pred-name").all_text_contents()
    if case.name == "default":
        assert set(names) <= set(FASHION), names
    else:
        # the predicted class (of the first image, still shown) is the HTML-looking name
        expect(app.page.locator(f"{PREDS} .zf-pred-name").first).to_have_text(EVIL)
        expect(app.at(f"{ROOT} .zf-occlusion .zf-caption")).to_contain_text(EVIL)
        app.page.click(f"{ROOT} button.zf-occ-view[data-view=top_class]")
        app.wait("return document.querySelector(arg).dataset.view === 'top_class'", HEAT)
        expect_some_text(app.page.locator(f"{ROOT} .zf-occ-legend .zf-occ-class"), EVIL)
        app.page.locator(f"{ROOT} .zf-occ-stage").scroll_into_view_if_needed()
        box = app.page.locator(f"{ROOT} .zf-occ-stage").bounding_box()
        app.page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        tip = app.wait(
            "const t = document.querySelector(arg);return t && !t.hidden && t.textContent",
            f"{ROOT} .zf-occlusion .zf-tooltip",
            timeout_s=5,
        )
        assert EVIL in tip, tip
        app.shot(artifacts, f"explorer-{case.name}-evil.png", f"{ROOT} .zf-occlusion")
        still(app)
        app.page.click(f"{ROOT} button.zf-occ-view[data-view=probability]")
    expect(app.page.locator(f"{ROOT} img")).to_have_count(0)
    assert app.page.evaluate("() => typeof window.zfXSS") == "undefined"
    assert not app.errors, app.errors


def wait_explored(app: App, unit_draws: int, timeout_s: float = 60.0) -> None:
    """Wait for ``Explorer.select_image`` to finish: its last step redraws the unit view,
    then it clears the status line (the messages arrive in order)."""
    app.wait(
        "const c = document.querySelector(arg[0]);"
        "const s = document.querySelector(arg[1]).textContent.replace(/\\u200b/g, '').trim();"
        "return Number(c.dataset.draws) > arg[2] && s === ''",
        [UNIT, ".zf-test-status", unit_draws],
        timeout_s=timeout_s,
    )


def test_picking_an_image_in_the_strip_redraws(app, artifacts):
    case = app.case
    # a map selected first, so the unit view has a projection to redo for the new image
    select_map(app, case.layer, 2)
    grid = app.pixels(GRID)
    unit = app.pixels(UNIT)
    thumb = app.page.evaluate(HASH, THUMB)
    preds = app.page.locator(f"{PREDS} .zf-pred-value").all_text_contents()
    t0 = time.monotonic()
    click_tile(app, STRIP, 2)
    app.wait(
        "return Number(document.querySelector(arg[0]).dataset.draws) > arg[1]",
        [GRID, grid["draws"]],
        timeout_s=60,
    )
    grid_s = time.monotonic() - t0
    wait_explored(app, unit["draws"])
    all_s = time.monotonic() - t0
    after = app.pixels(GRID)
    assert after["hash"] != grid["hash"] and after["count"] == case.maps, after
    app.wait(f"return ({HASH})(arg[0]) !== arg[1]", [THUMB, thumb])  # the thumbnail too
    # the unit view (channel 2 still selected) projects it in image 2
    unit_after = app.pixels(UNIT)
    assert unit_after["count"] >= 3 and unit_after["hash"] != unit["hash"], unit_after
    app.wait(GRID_READY, [GRID, case.layer], timeout_s=30)
    app.wait(OCC_IDLE, HEAT, timeout_s=120)
    if case.name == "alexnet":  # random weights: the probabilities differ per image
        app.wait(
            "return JSON.stringify([...document.querySelectorAll(arg[0])]"
            ".map((n) => n.textContent)) !== arg[1]",
            [f"{PREDS} .zf-pred-value", json.dumps(preds)],
            timeout_s=15,
        )
    # the strip marks image 2
    app.wait(STRIP_MARKS, [".zf-test-strip .zf-select-box", STRIP, 2])
    still(app)
    page_shot(app, artifacts, f"explorer-{case.name}-image2.png")
    print(
        f"[{case.name}] strip pick: grid redrawn {grid_s * 1000:.0f} ms, "
        f"every view {all_s * 1000:.0f} ms"
    )
    assert not app.errors, app.errors


def upload(app: App, path) -> None:
    """Upload a file through the FileUpload button. ipywidgets 8 never attaches its
    ``<input type=file>`` to the page (the button calls ``input.click()``), so the input is
    reached through the file chooser it opens, whose ``set_files`` is ``setInputFiles`` on it."""
    with app.page.expect_file_chooser(timeout=15_000) as chooser:
        app.page.click(".zf-test-upload")
    chooser.value.set_files(str(path))


def _png(width: int = 80, height: int = 60) -> bytes:
    from PIL import Image

    img = Image.new("RGB", (width, height))
    img.putdata(
        [(255 * x // width, 255 * y // height, 128) for y in range(height) for x in range(width)]
    )
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


def test_upload_a_png_grows_the_strip(app, artifacts, tmp_path):
    case = app.case
    strip = app.pixels(STRIP)
    grid = app.pixels(GRID)
    path = tmp_path / "gradient.png"
    path.write_bytes(_png())
    t0 = time.monotonic()
    upload(app, path)
    app.wait(
        "return document.querySelector(arg[0]).textContent.includes(arg[1])",
        [".zf-test-message", "gradient.png: added"],
        timeout_s=60,
    )
    took = time.monotonic() - t0
    app.wait(
        "return document.querySelector(arg[0]).dataset.count === arg[1]",
        [STRIP, str(case.strip + 1)],
        timeout_s=15,
    )
    after = app.pixels(STRIP)
    # one more tile: the strip's canvas grows (a new column, or a new row once it wraps)
    grew = after["width"] * after["height"] > strip["width"] * strip["height"]
    assert after["draws"] > strip["draws"] and grew, after
    # the upload is selected and explored: the grid shows it
    app.wait(
        "return Number(document.querySelector(arg[0]).dataset.draws) > arg[1]",
        [GRID, grid["draws"]],
        timeout_s=30,
    )
    # the strip marks the upload
    app.wait(STRIP_MARKS, [".zf-test-strip .zf-select-box", STRIP, case.strip])
    app.wait(OCC_IDLE, HEAT, timeout_s=120)
    still(app)
    page_shot(app, artifacts, f"explorer-{case.name}-upload.png")
    print(f"[{case.name}] upload of an 80x60 PNG: strip and views updated {took * 1000:.0f} ms")
    assert not app.errors, app.errors


def test_upload_of_a_non_image_shows_a_message_and_keeps_working(app, artifacts, tmp_path):
    case = app.case
    strip = app.pixels(STRIP)
    path = tmp_path / "notes.png"
    path.write_text("these are notes, not pixels\n" * 20)
    upload(app, path)
    message = app.wait(
        "const t = document.querySelector(arg).textContent;return t.includes('notes.png') && t",
        ".zf-test-message",
        timeout_s=30,
    )
    assert "notes.png: not an image" in message, message  # the reader names what it accepts
    assert app.pixels(STRIP)["count"] == strip["count"] == case.strip
    # still working: pick image 1, then project a map of it
    grid = app.pixels(GRID)
    unit = app.pixels(UNIT)
    click_tile(app, STRIP, 1)
    app.wait(
        "return Number(document.querySelector(arg[0]).dataset.draws) > arg[1]",
        [GRID, grid["draws"]],
        timeout_s=60,
    )
    wait_explored(app, unit["draws"])
    select_map(app, case.layer, 7)
    app.wait(OCC_IDLE, HEAT, timeout_s=120)
    still(app)
    page_shot(app, artifacts, f"explorer-{case.name}-bad-upload.png")
    assert app.page.evaluate("() => typeof window.zfXSS") == "undefined"
    assert not app.errors, app.errors
