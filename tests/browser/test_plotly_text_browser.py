"""User-given strings in plotly figures are text, never markup: the TrainingMonitor view (run
and metric names), ``compare`` (run labels) and InvarianceCurves (class names, layer names),
in stock Voila and headless Chromium."""

from __future__ import annotations

import pytest
from harness import expect_some_text, open_app
from playwright.sync_api import expect

pytestmark = pytest.mark.browser

EVIL = '<a href="https://example.com/x">click</a><img src=x onerror="window.__zf_pwned=1">'

HEAD = f"""\
import torch
from torch import nn
import zfwidgets as zf
from zfwidgets.widgets.invariance_curves import InvarianceCurves

torch.set_num_threads(1)
EVIL = {EVIL!r}
"""

# One page per figure: each one alone on its page (one Voila kernel each).
FIGURES = {
    "monitor": """\
m = zf.TrainingMonitor(None, name=EVIL)
for i in range(6):
    m.step(**{"loss": 1.0 / (i + 1), EVIL: 0.1 * i})
m.refresh()
m.widget.add_class("zf-test-monitor")
display(m.widget)
""",
    "compare": """\
m = zf.TrainingMonitor(None, name=EVIL)
for i in range(6):
    m.step(**{"loss": 1.0 / (i + 1), EVIL: 0.1 * i})
other = zf.TrainingMonitor(None, name="b")
for i in range(6):
    other.step(loss=2.0 / (i + 1))
m.refresh()
other.refresh()
cmp = zf.compare(m, other, labels=[EVIL, "b"])
cmp.add_class("zf-test-compare")
display(cmp)
""",
    "invariance": """\
torch.manual_seed(0)
model = nn.Sequential()
for name, module in [("conv", nn.Conv2d(3, 4, 3)), ("<i>L</i>", nn.ReLU()),
                     ("pool", nn.AdaptiveAvgPool2d(1)), ("flat", nn.Flatten()),
                     ("fc", nn.Linear(4, 3))]:
    model.add_module(name, module)  # a layer whose name looks like markup
model.eval()
inv = InvarianceCurves(model, torch.randn(2, 3, 16, 16), transform="rotate", amounts=[0, 90],
                       layers=["conv", "<i>L</i>"], classes=[EVIL] * 3)
inv.add_class("zf-test-inv")
display(inv)
""",
}

NOTEBOOKS = {name: [HEAD, cells] for name, cells in FIGURES.items()}

FIGS = {
    "monitor": ".zf-test-monitor .zf-monitor-curves",
    "compare": ".zf-test-compare",
    "invariance": ".zf-test-inv .zf-invariance-curves",
}


def test_user_strings_in_plotly_figures_stay_text(voila_server, browser_context, artifacts):
    name = voila_server.key
    sel = FIGS[name]
    ready = "return document.querySelector(arg + ' .legendtext')"
    with open_app(browser_context, voila_server, ready, sel, timeout_s=120) as app:
        texts = app.page.locator(f"{sel} .legendtext, {sel} .annotation-text")
        shown = "<i>L</i>: distance" if name == "invariance" else "click</a>"
        expect_some_text(texts, shown, exact=False)
        # markup from a user string never became elements
        expect(app.page.locator(f"{sel} svg.main-svg a, {sel} img")).to_have_count(0)
        assert not app.page.evaluate("window.__zf_pwned === 1")
        app.shot(artifacts, f"plotly-text-{name}.png", sel)
        assert not app.errors, app.errors
