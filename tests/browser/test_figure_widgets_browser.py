"""The figure widgets in stock Voila, in headless Chromium: InvarianceCurves (Fig. 5: plotly
panels and the strip of transformed images), CorrespondenceTable (Table 1: an HTML-looking
part name shown as text) and EmbeddingView (plotly scatter and the preview Gallery) on the
default model.
Screenshots go to tests/artifacts/figures-*.png.
"""

from __future__ import annotations

import pytest
from harness import expect_some_text, open_app
from playwright.sync_api import expect

pytestmark = pytest.mark.browser

EVIL = '<img src=x onerror="window.__zf_pwned=1">top'

NOTEBOOK = [
    f"""\
import torch
import zfwidgets as zf
from zfwidgets.widgets.correspondence_table import CorrespondenceTable
from zfwidgets.widgets.embedding import EmbeddingView
from zfwidgets.widgets.invariance_curves import InvarianceCurves

torch.set_num_threads(1)
d = zf.load_default()
x, y = d.images.tensors()
EVIL = {EVIL!r}
""",
    """\
inv = InvarianceCurves(d.model, x[:4], transform="rotate", target=y[:4], classes=d.classes,
                       mean=d.mean, std=d.std)
inv.add_class("zf-test-inv")
display(inv)
""",
    """\
res = zf.correspondence(d.model, x[y == 7][:5], {EVIL: (0, 0, 14, 28), "bottom": (14, 0, 28, 28)},
                        n_random=3)
table = CorrespondenceTable(res)
table.add_class("zf-test-table")
display(table)
""",
    """\
emb = EmbeddingView(d.model, d.images, method="pca", classes=d.classes, mean=d.mean, std=d.std,
                    max_points=200)
emb.add_class("zf-test-emb")
emb.show(5)
display(emb)
""",
]

INV = ".zf-test-inv"
TABLE = ".zf-test-table"
EMB = ".zf-test-emb"
INV_LINE = f"{INV} .zf-invariance-curves .scatterlayer path.js-line"
INV_CANVAS = f"{INV} canvas.zf-atlas"
EMB_POINT = f"{EMB} .zf-embedding-plot .scatterlayer path.point"
EMB_CANVAS = f"{EMB} canvas.zf-atlas"
PART = f"{TABLE} td.zf-part"


def _ds(app, sel):
    return app.page.evaluate(
        "(sel) => [...document.querySelectorAll(sel)].map((e) => e.getAttribute('d') || '')",
        sel,
    )


def test_figure_widgets_render(voila_server, browser_context, artifacts):
    ready = (
        "return arg.every((s) => document.querySelector(s)) && "
        "[arg[0], arg[2]].every((s) => Number(document.querySelector(s).dataset.draws || 0) > 0)"
    )
    sels = [INV_CANVAS, INV_LINE, EMB_CANVAS, EMB_POINT, PART]
    with open_app(browser_context, voila_server, ready, sels, timeout_s=120) as app:
        print(f"page ready in {app.load_s:.1f} s")
        # invariance: 3 panels (2 layers + probability) x (4 images + mean) lines, non-empty d
        expect(app.page.locator(INV_LINE)).to_have_count(15)
        lines = _ds(app, INV_LINE)
        assert all(len(d) > 10 for d in lines), lines
        titles = app.page.locator(f"{INV} .zf-invariance-curves .annotation-text")
        expect_some_text(titles, "probability of the class")
        strip = app.pixels(INV_CANVAS)
        assert strip["count"] == 12 and strip["opaque"] > 0 and strip["colours"] > 10, strip
        app.shot(artifacts, "figures-invariance.png", INV)
        # correspondence: the HTML-looking name is text, no element was injected
        expect(app.at(PART)).to_have_text(EVIL)
        expect(app.page.locator(f"{TABLE} tbody tr")).to_have_count(2)
        expect(app.page.locator(f"{TABLE} img")).to_have_count(0)
        assert not app.page.evaluate("window.__zf_pwned === 1")
        app.shot(artifacts, "figures-correspondence.png", TABLE)
        # embedding: 200 scatter points with paths, a legend of class names, the preview image
        expect(app.page.locator(EMB_POINT)).to_have_count(200)
        points = _ds(app, EMB_POINT)
        assert all(points), points
        legend = app.page.locator(f"{EMB} .legendtext")
        expect_some_text(legend, "Ankle boot")
        expect_some_text(legend, "T-shirt/top")
        preview = app.pixels(EMB_CANVAS)
        assert preview["count"] == 1 and preview["opaque"] > 0 and preview["colours"] > 10
        app.shot(artifacts, "figures-embedding.png", EMB)
        app.shot(artifacts, "figures-page.png")
        assert not app.errors, app.errors
