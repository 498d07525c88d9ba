"""TrainingMonitor live in stock Voila, in headless Chromium: a short training runs in a
background thread of the kernel (Voila shows the page once every cell has run) and the
plotly curve, the step counter and the first-layer filter canvas update while it runs.
Screenshots go to tests/artifacts/monitor*.png.
"""

from __future__ import annotations

import re
import time

import pytest
from harness import expect_some_text, open_app
from playwright.sync_api import expect

pytestmark = pytest.mark.browser

NOTEBOOK = [
    """\
import threading
import time
import torch
import torch.nn.functional as F

import zfwidgets as zf
from zfwidgets.models import zfnet_small
from zfwidgets.monitor import TrainingMonitor
from zfwidgets.widgets._base import start_worker

torch.set_num_threads(1)
d = zf.load_default()
images, labels = d.images.tensors()
torch.manual_seed(0)
model = zfnet_small()
with torch.no_grad():
    model.features[0].weight.normal_(0, 0.01)  # the paper's initialisation
monitor = TrainingMonitor(model, probe=images[:64], every=0.3, snapshot_every=1.0, budget=0.5)
""",
    """\
monitor.widget.add_class("zf-test-monitor")
display(monitor)
""",
    """\
stop = threading.Event()

def train():
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    g = torch.Generator().manual_seed(0)
    model.train()
    t0 = time.monotonic()
    step = 0
    while not stop.is_set() and time.monotonic() - t0 < 60:
        idx = torch.randint(0, len(images), (32,), generator=g)
        out = model(images[idx])
        loss = F.cross_entropy(out, labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        monitor.step(loss=loss, acc=(out.argmax(1) == labels[idx]).float().mean())
        if step % 40 == 0:
            monitor.epoch_end(val_loss=loss.item() * 1.1)
        time.sleep(0.01)

worker = start_worker(train, "zf-test-train")
""",
]

ROOT = ".zf-test-monitor"
STEP = f"{ROOT} .zf-monitor-step"
FILTERS = f"{ROOT} .zf-monitor-filters canvas.zf-atlas"
LINE = f"{ROOT} .zf-monitor-curves path.js-line"

STATE = f"""() => {{
  const s = document.querySelector({STEP!r});
  const line = document.querySelector({LINE!r});
  const c = document.querySelector({FILTERS!r});
  return {{ step: s ? Number(s.textContent) : -1, d: line ? line.getAttribute("d") : null,
           draws: c ? Number(c.dataset.draws || 0) : -1 }};
}}"""


def test_curves_and_filters_update_while_training(voila_server, browser_context, artifacts):
    ready = (
        "const s = document.querySelector(arg[0]); const c = document.querySelector(arg[1]);"
        "const l = document.querySelector(arg[2]);"
        "return s && Number(s.textContent) > 0 && c && Number(c.dataset.draws || 0) > 0 && !!l"
    )
    with open_app(browser_context, voila_server, ready, [STEP, FILTERS, LINE], timeout_s=90) as app:
        t0 = time.monotonic()
        first = app.page.evaluate(STATE)
        app.shot(artifacts, "monitor_start.png", ROOT)
        app.wait(
            f"const s = ({STATE})();"
            "return s.step > arg.step + 20 && s.d !== arg.d && s.draws > arg.draws",
            first,
            timeout_s=40,
        )
        later = app.page.evaluate(STATE)
        print(f"page ready in {app.load_s:.1f} s; update seen after {time.monotonic() - t0:.1f} s")
        print(
            f"step {first['step']} -> {later['step']}, filter draws {first['draws']} -> {later['draws']}"
        )
        assert later["step"] > first["step"] and later["d"] != first["d"]
        # the plotly figure has the smoothed curves and the validation points
        legend = app.page.locator(f"{ROOT} .zf-monitor-curves .legendtext")
        expect_some_text(legend, "loss")
        expect_some_text(legend, "acc")
        expect(app.at(f"{ROOT} .zf-caption")).to_contain_text(re.compile(r"filters|features\.0"))
        app.shot(artifacts, "monitor_training.png", ROOT)
        assert not app.errors, app.errors
