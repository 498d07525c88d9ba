"""The static atlas site in headless Chromium: opened from file:// and from a plain web server,
a unit clicked, its pixels read back and compared with the atlas's tiles, no request outside
the folder, class names that look like HTML shown as text, deep links, keys and paging.

Writes docs/screenshot-site.png (the bundled model's site) for the README.
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import io
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from harness import REPO
from models import tiny_zf
from PIL import Image
from playwright.sync_api import expect
from torch import nn

import zfwidgets as zf
from zfwidgets.atlas.core import Atlas

pytestmark = pytest.mark.browser

HOSTILE = '<img src=x onerror="window.__zfxss=1">'
CLASSES = ["cat", HOSTILE, "dog"]
DOCS_SCREENSHOT = REPO / "docs" / "screenshot-site.png"
DRAWN = "([sel, n]) => document.querySelectorAll(sel + '[data-drawn]').length >= n"
# The units of the overview's cells, in page order.
UNITS = "() => [...document.querySelectorAll('.zf-site-cell')].map((c) => Number(c.dataset.unit))"


def wide_model() -> nn.Sequential:
    """130 feature maps in one layer: three overview pages of 64."""
    torch.manual_seed(3)
    return nn.Sequential(
        nn.Conv2d(3, 130, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(130 * 8 * 8, 3),
    ).eval()


@pytest.fixture(scope="module")
def sites(tmp_path_factory):
    """A tiny model's site (layers "0" and "4" rendered as PNG, "8" not), and a wide one."""
    root = tmp_path_factory.mktemp("sites")
    torch.manual_seed(0)
    data = torch.rand(23, 3, 32, 32)
    labels = [i % 3 for i in range(23)]
    atlas = zf.mine(tiny_zf(), data, layers=["0", "4", "8"], k=4, progress=False)
    atlas.save(root / "atlas")
    atlas.render(layers=["0", "4"], progress=False, format="png")
    # render=False: layer "8" stays values only (its tiles are not rendered for the site)
    atlas.export_site(root / "site", classes=CLASSES, labels=labels, render=False)
    wide = zf.mine(wide_model(), torch.rand(6, 3, 16, 16), layers=["0"], k=2, progress=False)
    wide.save(root / "wide-atlas")
    wide.render(progress=False, format="png")
    wide.export_site(root / "wide")
    return {
        "site": root / "site",
        "atlas": Atlas.load(root / "atlas"),
        "wide": root / "wide",
        "wide_atlas": Atlas.load(root / "wide-atlas"),
        "labels": labels,
    }


@pytest.fixture
def page(browser_context):
    page = browser_context.new_page()
    page.requests = []
    page.errors = []
    page.on("request", lambda r: page.requests.append(r.url))
    page.on("pageerror", lambda e: page.errors.append(str(e)))
    try:
        yield page
    finally:
        page.close()


def url_of(site: Path, hash_: str = "") -> str:
    return site.resolve().as_uri() + "/index.html" + hash_


def shot(locator) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(locator.screenshot())).convert("RGB"))


def drawn_as(page, locator, want: np.ndarray, tol: int = 2) -> bool:
    """Whether the page shows exactly ``want`` (within ``tol``) where ``locator`` is: the
    screenshot around it is searched over the sub-pixel offsets of its box."""
    box = locator.bounding_box()
    clip = {"x": int(box["x"]) - 2, "y": int(box["y"]) - 2}
    clip.update(width=want.shape[1] + 4, height=want.shape[0] + 4)
    img = np.asarray(Image.open(io.BytesIO(page.screenshot(clip=clip))).convert("RGB")).astype(int)
    h, w = want.shape[:2]
    for dy in range(5):
        for dx in range(5):
            part = img[dy : dy + h, dx : dx + w]
            if part.shape[:2] == (h, w) and np.abs(part - want).max() <= tol:
                return True
    return False


def wait_units(page, want: list[int]) -> None:
    """Wait until the overview shows the cells of ``want``, in that order. The site renders a
    new route after its data promise settles, so until then the previous grid (already drawn)
    is still in the page."""
    try:
        page.wait_for_function(
            f"(want) => JSON.stringify(({UNITS})()) === JSON.stringify(want)", arg=want
        )
    except Exception as exc:
        raise AssertionError(f"{exc}\nwanted {want}, shown {page.evaluate(UNITS)}") from None


def enlarge(tile: np.ndarray, side: int = 96) -> np.ndarray:
    """What the page draws: a tile enlarged by the whole factor that fits ``side``."""
    f = side // max(tile.shape[:2])
    if tile.ndim == 2:
        tile = np.repeat(tile[:, :, None], 3, 2)
    return np.repeat(np.repeat(tile, f, 0), f, 1)


def test_file_url_click_to_pixels_no_request_outside(page, sites, artifacts):
    site, atlas = sites["site"], sites["atlas"]
    page.goto(url_of(site, "#/4"))
    page.wait_for_function(DRAWN, arg=[".zf-site-cell canvas", 12])
    expect(page.locator(".zf-site-cell")).to_have_count(12)
    # each cell: the unit's strongest reconstruction, pixel for pixel
    for c in (0, 7):
        want = enlarge(atlas.unit_images("4", c).reconstructions[0], 72)
        assert drawn_as(page, page.locator(f'.zf-site-cell[data-unit="{c}"] canvas'), want)
    page.click('.zf-site-cell[data-unit="3"]')
    page.wait_for_function("() => location.hash === '#/4/3'")
    page.wait_for_function(DRAWN, arg=[".zf-site-unit canvas", 8])
    u = atlas.unit_images("4", 3)
    for j in range(4):
        for block, tiles in (("reconstructions", u.reconstructions), ("patches", u.patches)):
            canvas = page.locator(f".zf-site-{block} .zf-site-hit canvas").nth(j)
            want = enlarge(tiles[j])
            assert want.std() > 1, f"{block} {j} is flat"
            assert drawn_as(page, canvas, want), f"{block} {j} differs"
    # values and class names as text; the HTML-looking class name is never parsed
    values = atlas.values["4"][3].tolist()
    rows = page.locator(".zf-site-hits tr")
    expect(rows).to_have_count(5)  # built with the canvases waited on above
    for j in range(4):
        cells = rows.nth(j + 1).locator("td").all_text_contents()
        y = sites["labels"][int(atlas.indices["4"][3, j])]
        assert cells[0] == str(j + 1) and float(cells[1]) == pytest.approx(values[j], rel=1e-3)
        assert cells[2] == CLASSES[y]
    # which classes the unit serves: every hit's class counted, most frequent first
    want = atlas.class_counts("4", 3, labels=sites["labels"], classes=CLASSES)
    assert page.locator(".zf-site-classes-title").text_content() == "Top classes of its 4 hits:"
    assert top_classes(page) == [[name, n] for name, n in want]
    expect(page.locator("img")).to_have_count(0)
    assert page.evaluate("() => window.__zfxss") is None
    page.goto(url_of(site, "#/0"))  # layer 0 holds a hit of the hostile class too
    page.wait_for_function(DRAWN, arg=[".zf-site-cell canvas", 8])
    page.screenshot(path=str(artifacts / "site-file.png"))
    assert page.evaluate("() => window.__zfxss") is None
    outside = [u for u in page.requests if not u.startswith(site.resolve().as_uri() + "/")]
    assert outside == [] and not page.errors


@contextlib.contextmanager
def serve(site: Path):
    """A plain static web server of ``site`` on 127.0.0.1; its base URL."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


@contextlib.contextmanager
def only_inside(page, base: str):
    """Abort (and list) every request of ``page`` outside ``base``."""
    outside = []

    def gate(route):
        if route.request.url.startswith(base):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    page.route("**/*", gate)
    try:
        yield outside
    finally:
        page.unroute("**/*")


def top_classes(page) -> list[list]:
    """The unit page's top classes as shown: [[name, count], ...] read from the text."""
    items = page.locator(".zf-site-class")
    return [
        [
            items.nth(j).locator(".zf-site-class-name").text_content(),
            int(items.nth(j).locator(".zf-site-class-count").text_content()),
        ]
        for j in range(items.count())
    ]


def test_unit_page_counts_classes_over_all_hits(page, tmp_path, artifacts):
    """Mined with k = 12 and rendered with top=4: the unit page draws 4 hits and counts the
    classes of all 12 (stored with the atlas; the site exported with no data attached)."""

    class Labelled(torch.utils.data.Dataset):
        classes = ["cat", HOSTILE, "dog", "bird"]

        def __init__(self):
            torch.manual_seed(5)
            self.x = torch.rand(40, 3, 32, 32)
            self.targets = [(i * 7) % 4 for i in range(40)]

        def __len__(self):
            return 40

        def __getitem__(self, i):
            return self.x[i], self.targets[i]

    mined = zf.mine(tiny_zf(), Labelled(), layers=["4"], k=12, progress=False)
    mined.save(tmp_path / "atlas")
    mined.render(top=4, progress=False, format="png")
    atlas = Atlas.load(tmp_path / "atlas")
    atlas.export_site(tmp_path / "site")
    page.goto(url_of(tmp_path / "site", "#/4/2"))
    page.wait_for_function(DRAWN, arg=[".zf-site-unit canvas", 8])
    expect(page.locator(".zf-site-unit canvas")).to_have_count(8)  # 4 hits x 2 blocks
    expect(page.locator(".zf-site-hits tr")).to_have_count(13)  # every hit in the table
    want = atlas.class_counts("4", 2)
    assert sum(n for _, n in want) == 12 and len(want) > 1
    assert page.locator(".zf-site-classes-title").text_content() == "Top classes of its 12 hits:"
    assert top_classes(page) == [[name, n] for name, n in want]
    page.screenshot(path=str(artifacts / "site-top-classes.png"), full_page=True)
    assert page.evaluate("() => window.__zfxss") is None and not page.errors


def test_web_server_no_request_outside(page, sites):
    with serve(sites["site"]) as base, only_inside(page, base) as outside:
        page.goto(base + "#/4/2")
        page.wait_for_function(DRAWN, arg=[".zf-site-unit canvas", 8])
        page.click('.zf-site-layer-link[href="#/8"]')
        expect(page.locator(".zf-site-note")).to_contain_text("not rendered")
        expect(page.locator(".zf-site-cell")).to_have_count(16)  # values only, still browsable
        page.click('.zf-site-cell[data-unit="5"]')
        page.wait_for_function("() => location.hash === '#/8/5'")
        expect(page.locator(".zf-site-hits tr")).to_have_count(5)
        expect(page.locator(".zf-site-heading")).to_have_text("8 \u00b7 unit 5")
    assert outside == [] and not page.errors


def test_deep_link_and_keys(page, sites):
    site = sites["site"]
    page.goto(url_of(site, "#/4/3"))
    page.wait_for_function(DRAWN, arg=[".zf-site-unit canvas", 8])
    expect(page.locator(".zf-site-heading")).to_have_text("4 \u00b7 unit 3")
    page.keyboard.press("ArrowRight")
    page.wait_for_function("() => location.hash === '#/4/4'")
    page.wait_for_function(
        "() => document.querySelector('.zf-site-heading').textContent.endsWith('unit 4')"
    )
    page.keyboard.press("Escape")
    page.wait_for_function("() => document.activeElement?.dataset?.unit === '4'")
    page.wait_for_function("() => location.hash === '#/4'")
    page.keyboard.press("ArrowRight")
    page.wait_for_function("() => document.activeElement?.dataset?.unit === '5'")
    page.keyboard.press("Enter")
    page.wait_for_function("() => location.hash === '#/4/5'")
    page.keyboard.press("]")
    page.wait_for_function("() => location.hash === '#/8'")
    page.go_back()
    page.wait_for_function("() => location.hash === '#/4/5'")
    page.goto(url_of(site, "#/no-such-layer/3"))
    expect(page.locator(".zf-site-status")).to_contain_text("no layer named")
    expect(page.locator(".zf-site-table tr")).to_have_count(4)  # the list of layers instead
    assert not page.errors


def test_wide_layer_pages_and_sorts(page, sites):
    site, atlas = sites["wide"], sites["wide_atlas"]
    page.goto(url_of(site, "#/0"))
    page.wait_for_function(DRAWN, arg=[".zf-site-cell canvas", 64])
    expect(page.locator(".zf-site-pager")).to_contain_text("page 1 of 3")
    page.keyboard.press("PageDown")
    page.wait_for_function("() => location.hash === '#/0?page=2'")
    expect(page.locator(".zf-site-pager")).to_contain_text("page 2 of 3")
    wait_units(page, list(range(64, 128)))
    page.wait_for_function(DRAWN, arg=[".zf-site-cell canvas", 64])
    page.click("text=strength")
    page.wait_for_function("() => location.hash === '#/0?sort=strength'")
    from zfwidgets.atlas.site import _scaled

    top = _scaled(atlas.values["0"].reshape(-1).tolist())[0][::2]  # as the page has them, k=2
    want = sorted(range(130), key=lambda c: (-top[c], c))
    wait_units(page, want[:64])
    page.wait_for_function(DRAWN, arg=[".zf-site-cell canvas", 64])
    page.click("text=top-k patches")
    # the new grid is in the page once its "show" choice is the current one
    expect(page.locator(".zf-site-choice", has_text="top-k patches")).to_have_attribute(
        "aria-current", "true"
    )
    wait_units(page, want[:64])
    page.wait_for_function(DRAWN, arg=[".zf-site-cell canvas", 64])
    c = want[0]
    u = atlas.unit_images("0", c)
    block = u.sprite[:, u.layout.width // 2 :]  # the patches, right half of the sprite
    assert drawn_as(page, page.locator(f'.zf-site-cell[data-unit="{c}"] canvas'), enlarge(block))
    assert not page.errors


def test_bundled_model_site_in_one_call(page, tmp_path, artifacts):
    """``zf.load_default_atlas().export_site(...)``, nothing before it: the site stores and
    renders the bundled atlas, a plain web server shows every layer's hits and tiles (the
    README's screenshot)."""
    from zfwidgets.data import load_default, load_default_atlas

    d = load_default()
    site = tmp_path / "site"
    report = load_default_atlas(d).export_site(
        site, progress=False, title="Bundled model: top-9 atlas"
    )
    stored = Atlas.load(site / "atlas")  # what the site shows: its own atlas's tiles
    assert report.rendered == stored.layers and not report.missing
    page.set_viewport_size({"width": 1000, "height": 720})
    with serve(site) as base, only_inside(page, base) as outside:
        for name in stored.layers:  # every layer's overview draws all its units
            C = stored.values[name].shape[0]
            page.goto(base + f"#/{name}")
            page.wait_for_function(DRAWN, arg=[".zf-site-cell canvas", min(C, 64)])
        page.goto(base + "#/features.10/5")
        page.wait_for_function(DRAWN, arg=[".zf-site-unit canvas", 18])
        rows = page.locator(".zf-site-hits tr")
        expect(rows).to_have_count(10)
        # the hits: activations and class names, as the atlas holds them
        values = stored.values["features.10"][5].tolist()
        for j in range(9):
            cells = rows.nth(j + 1).locator("td").all_text_contents()
            y = d.images.labels[int(stored.indices["features.10"][5, j])]
            assert float(cells[1]) == pytest.approx(values[j], rel=1e-3)
            assert cells[2] == d.classes[y]
        # the tiles: the stored sprite's pixels (WebP decoded by Chromium and by Pillow)
        u = stored.unit_images("features.10", 5)
        for block, tiles in (("reconstructions", u.reconstructions), ("patches", u.patches)):
            for j in (0, 8):
                canvas = page.locator(f".zf-site-{block} .zf-site-hit canvas").nth(j)
                want = enlarge(tiles[j])
                assert want.std() > 1, f"{block} {j} is flat"
                assert drawn_as(page, canvas, want, tol=4), f"{block} {j} differs"
        page.screenshot(path=str(artifacts / "site-bundled.png"))
        DOCS_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(
            path=str(DOCS_SCREENSHOT), clip={"x": 0, "y": 0, "width": 1000, "height": 540}
        )
    assert DOCS_SCREENSHOT.stat().st_size < 300_000
    assert outside == [] and not page.errors


def test_feature_visualisations_first_on_the_unit_page_and_as_an_overview(
    page, tmp_path, artifacts
):
    """``render(feature_vis=...)``: the unit page shows the unit's feature visualisation
    first (its stored pixels), and the overview has a mode that shows every unit's."""
    torch.manual_seed(0)
    data = torch.rand(12, 3, 32, 32)
    atlas = zf.mine(tiny_zf(), data, layers=["0", "4"], k=3, progress=False)
    report = atlas.export_site(
        tmp_path / "site", progress=False, feature_vis={"steps": 4}, title="fv"
    )
    stored = Atlas.load(tmp_path / "site" / "atlas")
    assert stored.has_feature_vis("4") and not report.missing
    page.goto(url_of(tmp_path / "site", "#/4/3"))
    blocks = page.locator(".zf-site-unit figure")
    expect(blocks.first.locator("figcaption")).to_have_text("feature visualisation")
    page.wait_for_function(DRAWN, arg=[".zf-site-features canvas", 1])
    fv = stored.feature_vis_image("4", 3)
    assert fv.std() > 1
    canvas = page.locator(".zf-site-features canvas")
    assert drawn_as(page, canvas, enlarge(fv, 192), tol=0)
    page.screenshot(path=str(artifacts / "site-feature-vis-unit.png"), full_page=True)
    # the overview's mode: every unit's feature visualisation
    page.goto(url_of(tmp_path / "site", "#/4?show=features"))
    C = stored.values["4"].shape[0]
    page.wait_for_function(DRAWN, arg=[".zf-site-cell canvas", C])
    expect(page.locator(".zf-site-choice[aria-current]").nth(1)).to_have_text(
        "feature visualisations"
    )
    cell = page.locator('.zf-site-cell[data-unit="3"] canvas')
    assert drawn_as(page, cell, enlarge(fv, 96), tol=0)
    page.screenshot(path=str(artifacts / "site-feature-vis-overview.png"), full_page=True)
    assert not page.errors
