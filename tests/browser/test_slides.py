"""The teaching deck (notebooks/05-slides.ipynb) served as ``make slides`` serves it, stepped
through with the keyboard in headless Chromium.

The server is ``scripts/serve.py slides`` (the Makefile's command line): Voila's reveal
template with reveal.js's CSS from notebooks/node_modules (``make reveal``). One page, one
kernel. For every slide: it becomes the present one by a key press, shows its title and its
widget (a canvas with pixels that are not all one colour, or the widget's root element), and
a screenshot goes to tests/artifacts/slides-N.png. Every request of the page stays on
127.0.0.1 (no CDN: the deck works offline), and the page logs no error.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from harness import REPO, TILE_CENTRE, ServerProcess, _free_port, open_app
from playwright.sync_api import expect

pytestmark = [pytest.mark.browser, pytest.mark.slow]

REVEAL_CSS = REPO / "notebooks" / "node_modules" / "reveal.js" / "dist" / "reveal.css"

# One entry per slide, in order: (text in its title, selector inside the slide of what it must
# show: a canvas is checked for drawn pixels, anything else for being visible).
SLIDES = [
    ("Visualizing and Understanding Convolutional Networks", ".zf-gallery canvas.zf-atlas"),
    ("The deconvnet: from one activation back to pixels", "ol"),
    ("Click a feature map", ".zf-layer-grid canvas.zf-atlas"),
    ("Fig. 2", ".zf-top-nine canvas.zf-atlas"),
    ("Fig. 4", ".zf-top-nine canvas.zf-atlas"),
    ("Fig. 6", ".zf-filter-grid canvas.zf-atlas"),
    ("Fig. 7", ".zf-occlusion canvas.zf-occ-heat"),
    ("Fig. 5", ".zf-gallery canvas.zf-atlas"),
    ("Table 1", "table"),
    ("On your own model", "pre"),
]

# The present slide (a <section> without nested sections), its title and whether `arg` shows.
PRESENT = """(arg) => {
  const s = [...document.querySelectorAll('.reveal .slides section.present')]
    .find((e) => !e.querySelector('section'));
  if (!s) return null;
  const h = s.querySelector('h1, h2, h3');
  const el = s.querySelector(arg);
  const r = el ? el.getBoundingClientRect() : null;
  return { title: h ? h.textContent : '', index: [...document.querySelectorAll(
             '.reveal .slides section')].filter((e) => !e.querySelector('section')).indexOf(s),
           visible: !!r && r.width > 0 && r.height > 0 && getComputedStyle(el).visibility !== 'hidden' };
}"""

LOCAL = ("http://127.0.0.1:", "blob:", "data:", "about:")


@pytest.fixture(scope="module")
def deck(tmp_path_factory, browser_context):
    if not REVEAL_CSS.is_file():
        pytest.skip(f"{REVEAL_CSS} is missing: `make reveal` installs reveal.js (`make test` does)")
    port = _free_port()
    server = ServerProcess(
        tmp_path_factory.mktemp("slides"),
        [sys.executable, str(REPO / "scripts" / "serve.py"), "slides", f"--port={port}"],
        port,
        "voila/static/voila.js",
        log_name="slides.log",
    )
    requests: list[str] = []

    def on_request(request) -> None:
        requests.append(request.url)

    browser_context.on("request", on_request)
    try:
        # ready: reveal.js laid out the deck and every widget has drawn
        ready = (
            "return document.querySelector('.reveal.ready') && "
            "document.querySelectorAll('.zf-widget').length >= 9 && "
            "[...document.querySelectorAll('.zf-top-nine')].every("
            "  (e) => e.dataset.status === 'ready') && "
            "document.querySelector('.zf-occlusion canvas.zf-occ-heat[data-draws]')"
        )
        with open_app(browser_context, server, ready, timeout_s=180) as app:
            app.page.set_viewport_size({"width": 1280, "height": 800})  # the deck's own size
            app.requests = requests
            yield app
    finally:
        browser_context.remove_listener("request", on_request)
        server.stop()


def _focus(deck) -> None:
    """Keyboard focus on the deck: a click on an empty corner of the page."""
    deck.page.mouse.click(3, 400)


def _blank(px: dict | None) -> bool:
    return px is None or px["opaque"] == 0 or px["colours"] < 2


def test_deck_steps_through_every_slide(deck, artifacts):
    page = deck.page
    _focus(deck)
    page.keyboard.press("Home")  # wherever another test left the deck
    shots: list[Path] = []
    seen = []
    for i, (title, what) in enumerate(SLIDES):
        if i:
            # the right arrow skips subslides; space walks through all of them
            page.keyboard.press("Space")
        state = deck.wait(
            f"const s = ({PRESENT})(arg); return s && s.title.includes({title!r}) && s",
            what,
            timeout_s=15,
        )
        assert state["index"] == i, (i, state)
        if "canvas" in what:
            sel = f".reveal .slides section.present {what}"
            deck.wait(f"const c = document.querySelector({sel!r}); return c && c.width > 0")
            px = deck.pixels(sel)
            assert not _blank(px), (title, px)
        else:
            assert state["visible"], (title, what)
        deck.settle()  # the redraw painted before the screenshot
        path = artifacts / f"slides-{i + 1}.png"
        page.screenshot(path=str(path))
        shots.append(path)
        seen.append(state["title"])
    assert len(seen) == len(SLIDES)
    # a last key press leaves the last slide where it is
    page.keyboard.press("Space")
    deck.settle()
    assert page.evaluate(PRESENT, "pre")["title"] == seen[-1]
    assert all(p.stat().st_size > 10_000 for p in shots)
    assert not deck.errors, deck.errors


def _go_to(deck, title: str) -> str:
    """Walk with the keyboard from the first slide to the one titled ``title``, a key press
    at a time (reveal.js may re-enter a stack at the subslide seen last, so walk by title);
    the selector of the present slide."""
    _focus(deck)
    deck.page.keyboard.press("Home")
    deck.wait(f"const s = ({PRESENT})(arg); return s && s.index === 0", "canvas")
    for _ in SLIDES:
        state = deck.page.evaluate(PRESENT, "canvas")
        if title in state["title"]:
            return ".reveal .slides section.present"
        index = state["index"]
        deck.page.keyboard.press("Space")
        deck.wait(f"const s = ({PRESENT})(arg); return s && s.index > {index}", "canvas")
    raise AssertionError(f"no slide titled {title!r}")


def test_projection_follows_the_clicked_map(deck, artifacts):
    """The deconvnet subslide: a click on a feature map of the LayerGrid (in a scaled reveal
    slide) selects it in Python, which recomputes the projections beside it."""
    here = _go_to(deck, "Click a feature map")
    gallery = f"{here} .zf-gallery canvas.zf-atlas"
    before = deck.pixels(gallery)
    c = deck.page.evaluate(TILE_CENTRE, [f"{here} .zf-layer-grid canvas.zf-atlas", 0])
    deck.page.mouse.click(c["x"], c["y"])
    deck.wait(
        "return document.querySelector(arg).textContent.includes('map 0:')",
        f"{here} .zf-gallery .zf-caption",
        timeout_s=20,
    )
    deck.wait(f"return document.querySelector({gallery!r}).dataset.draws !== arg", before["draws"])
    after = deck.pixels(gallery)
    assert after["hash"] != before["hash"] and after["colours"] > 2, (before, after)
    deck.page.mouse.move(5, 5)
    deck.page.screenshot(path=str(artifacts / "slides-deconvnet-map0.png"))
    assert not deck.errors, deck.errors


def test_fig6_slider_marks_the_grown_filter(deck, artifacts):
    """Fig. 6: the FilterGrid's slider moves to the copy with one filter grown, which is
    marked as dominating; after renormalisation no filter is."""
    page = deck.page
    _go_to(deck, "Fig. 6")
    fig6 = ".reveal .slides section.present .zf-filter-grid"
    page.locator(f"{fig6} input.zf-slider").fill("0")  # wherever a previous run left it
    deck.wait(
        "return document.querySelector(arg).textContent.includes('trained with the rule')",
        f"{fig6} .zf-slider-label",
        timeout_s=15,
    )
    expect(page.locator(f"{fig6} .zf-mark.zf-mark-dominating")).to_have_count(0)
    page.locator(f"{fig6} input.zf-slider").fill("1")
    deck.wait(
        "return document.querySelectorAll(arg).length === 1",
        f"{fig6} .zf-mark.zf-mark-dominating",
        timeout_s=15,
    )
    expect(deck.at(f"{fig6} .zf-slider-label")).to_contain_text("grown to RMS 0.6")
    page.screenshot(path=str(artifacts / "slides-fig6-grown.png"))
    page.locator(f"{fig6} input.zf-slider").fill("2")
    deck.wait(
        "return document.querySelectorAll(arg).length === 0",
        f"{fig6} .zf-mark.zf-mark-dominating",
        timeout_s=15,
    )
    expect(deck.at(f"{fig6} .zf-slider-label")).to_contain_text("renormalize_filters_")
    assert not deck.errors, deck.errors


def test_nothing_is_requested_from_outside(deck):
    """Offline: every request stays on the Voila server (reveal.js CSS included)."""
    outside = [u for u in deck.requests if not u.startswith(LOCAL)]
    assert not outside, outside
    css = [u for u in deck.requests if u.endswith(".css")]
    assert any(u.endswith("/voila/files/node_modules/reveal.js/dist/reveal.css") for u in css), css
    assert any("/node_modules/reveal.js/dist/theme/" in u for u in css), css
