"""Front ends that drop binary buffers (Colab's widget manager: googlecolab/colab-cdn-widget-
manager #33, #8; colabtools #587), in stock Voila and headless Chromium.

One notebook: the default ``Explorer()``, a ``TopNine`` mined in the kernel after the page
shows (its frame arrives as an update, not in the first state), an ``OcclusionMap`` and a
``TrainingMonitor`` after 30 seeded training steps (filters + plotly curves). Three page
loads (each a fresh kernel):

- the reference: buffers delivered as usual;
- "auto" (the default transport) behind a page script that strips the binary buffers from
  every kernel -> browser message (:func:`harness.wire_script`): each widget finds its
  payloads without bytes, reports ``zf-no-buffers``, and the kernel re-sends them as base64;
- the explicit switch (``zf.set_transport("base64")``, from the page's query string) behind
  the same stripper: no message carries a binary buffer at all.

Every canvas of every widget (and the monitor's plotly curves) must end up identical to the
reference, pixel for pixel. Screenshots go to tests/artifacts/nobuffers-*.png.
"""

from __future__ import annotations

import json

import pytest
from harness import open_app, wire_script

pytestmark = pytest.mark.browser

NOTEBOOK = [
    """\
import os
import urllib.parse

import torch
import torch.nn.functional as F

import zfwidgets as zf
from zfwidgets.models import zfnet_small
from zfwidgets.monitor import TrainingMonitor
from zfwidgets.widgets import Explorer, OcclusionMap, TopNine

torch.set_num_threads(1)
query = urllib.parse.parse_qs(os.environ.get("QUERY_STRING", ""))
if "transport" in query:  # the explicit switch, as a user would write it
    zf.set_transport(query["transport"][0])
d = zf.load_default()
images, labels = d.images.tensors()
""",
    """\
ex = Explorer()
ex.add_class("zf-test-explorer")
display(ex)
""",
    """\
top = TopNine(d.model, images[:64], layer="features.8", channel=3, mean=d.mean, std=d.std,
              classes=d.classes, labels=labels[:64].tolist())
top.add_class("zf-test-top")
occ = OcclusionMap(d.model, images[5], classes=d.classes, mean=d.mean, std=d.std)
occ.add_class("zf-test-occ")
display(top, occ)
""",
    """\
torch.manual_seed(0)
model = zfnet_small()
with torch.no_grad():
    model.features[0].weight.normal_(0, 0.01)
monitor = TrainingMonitor(model, probe=images[:32], every=10, snapshot_every=10)
opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
g = torch.Generator().manual_seed(0)
model.train()
for step in range(30):
    idx = torch.randint(0, len(images), (16,), generator=g)
    out = model(images[idx])
    loss = F.cross_entropy(out, labels[idx])
    opt.zero_grad()
    loss.backward()
    opt.step()
    monitor.step(loss=loss, acc=(out.argmax(1) == labels[idx]).float().mean())
monitor.widget.add_class("zf-test-monitor")
display(monitor)
""",
]

ROOTS = [".zf-test-explorer", ".zf-test-top", ".zf-test-occ", ".zf-test-monitor"]

# Every widget has drawn, nothing is pending, the TopNine and the Explorer's TopNine are ready,
# the occlusion sweep is done, the monitor shows its filters and a plotly curve.
READY = """
const q = (s) => document.querySelector(s);
const idle = (root) => root && root.querySelectorAll('.zf-pending').length === 0
  && !root.classList.contains('zf-pending');
const drawn = (c) => c && Number(c.dataset.draws || 0) > 0;
const tops = [...document.querySelectorAll('.zf-top-nine')];
return arg.every((r) => idle(q(r)))
  && drawn(q('.zf-test-explorer .zf-layer-grid canvas.zf-atlas'))
  && drawn(q('.zf-test-explorer canvas.zf-occ-heat'))
  && drawn(q('.zf-test-occ canvas.zf-occ-heat'))
  && drawn(q('.zf-test-monitor .zf-monitor-filters canvas.zf-atlas'))
  && !!q('.zf-test-monitor .zf-monitor-curves path.js-line')
  && tops.length === 2 && tops.every((t) => t.dataset.status === 'ready'
    && drawn(t.querySelector('canvas.zf-atlas')))
"""

# What each widget shows: every canvas (size + FNV-1a hash of its pixels) and the monitor's
# plotly curve paths.
PICTURE = """(roots) => {
  const hash = (c) => {
    if (!c.width || !c.height) return [c.width, c.height, 0];
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    let h = 2166136261;
    for (let i = 0; i < d.length; i++) h = Math.imul(h ^ d[i], 16777619) >>> 0;
    return [c.width, c.height, h];
  };
  const out = {};
  for (const r of roots) {
    const root = document.querySelector(r);
    out[r] = root ? [...root.querySelectorAll('canvas')].map(hash) : null;
  }
  out.curves = [...document.querySelectorAll('.zf-test-monitor path.js-line')]
    .map((p) => p.getAttribute('d'));
  return out;
}"""

SAME = f"return JSON.stringify(({PICTURE})(arg[0])) === arg[1]"


def load(context, server, *, strip: bool, path: str = "", artifacts=None, name: str = ""):
    """Open the notebook behind the websocket watcher; the picture once every widget is done,
    what the wire carried, and the page's errors."""
    with open_app(
        context, server, READY, ROOTS, timeout_s=240, path=path, init_script=wire_script(strip)
    ) as app:
        picture = app.page.evaluate(PICTURE, ROOTS)
        wire = app.page.evaluate("() => ({ ...window.__zfWire })")
        if artifacts is not None:
            app.shot(artifacts, f"nobuffers-{name}.png")
        return app, picture, wire


@pytest.fixture(scope="module")
def reference(voila_server, browser_context, artifacts):
    app, picture, wire = load(
        browser_context, voila_server, strip=False, artifacts=artifacts, name="reference"
    )
    assert not app.errors, app.errors
    # the reference really used binary buffers, and every widget drew something
    assert wire["buffered"] > 0 and wire["stripped"] == 0 and wire["reports"] == 0, wire
    assert all(picture[r] for r in ROOTS), picture
    assert len(picture[".zf-test-explorer"]) >= 5 and picture["curves"], picture
    print(f"reference: {wire}")
    return picture


GRID = ".zf-test-explorer .zf-layer-grid"


def expect_same(context, server, reference, *, path: str, name: str, artifacts):
    """Load behind the stripper; wait until the picture equals the reference; then switch the
    Explorer's layer grid to another layer: the new frame (an update, not the first state)
    draws too."""
    with open_app(
        context, server, READY, ROOTS, timeout_s=240, path=path, init_script=wire_script(True)
    ) as app:
        want = json.dumps(reference, separators=(",", ":"))  # as JSON.stringify writes it
        try:
            app.wait(SAME, [ROOTS, want], timeout_s=120)
        except AssertionError:
            got = app.page.evaluate(PICTURE, ROOTS)
            diff = {k: (got[k], reference[k]) for k in reference if got.get(k) != reference[k]}
            raise AssertionError(f"pictures differ from the reference: {diff}") from None
        wire = app.page.evaluate("() => ({ ...window.__zfWire })")
        app.shot(artifacts, f"nobuffers-{name}.png")
        app.page.select_option(f"{GRID} select.zf-layer-select", "features.8")
        app.wait(
            "const c = document.querySelector(arg);"
            "return c.dataset.layer === 'features.8' && Number(c.dataset.draws) > 1"
            " && !c.closest('.zf-widget').classList.contains('zf-pending')",
            f"{GRID} canvas.zf-atlas",
            timeout_s=60,
        )
        px = app.pixels(f"{GRID} canvas.zf-atlas")
        assert px["count"] > 0 and px["opaque"] > 0 and px["colours"] > 10, px
        after = app.page.evaluate("() => ({ ...window.__zfWire })")
        assert after["buffered"] == wire["buffered"], (wire, after)  # the update came inline
        assert not app.errors, app.errors
        print(f"{name}: {wire}")
        return wire


def test_auto_recovers_when_the_front_end_drops_buffers(
    voila_server, browser_context, reference, artifacts
):
    wire = expect_same(
        browser_context, voila_server, reference, path="", name="stripped-auto", artifacts=artifacts
    )
    # buffers were sent and dropped, the widgets reported it, and yet every pixel is there
    assert wire["stripped"] > 0 and wire["reports"] > 0, wire


def test_explicit_switch_sends_no_buffers(voila_server, browser_context, reference, artifacts):
    wire = expect_same(
        browser_context,
        voila_server,
        reference,
        path="?transport=base64",
        name="stripped-base64",
        artifacts=artifacts,
    )
    # nothing to strip: not one kernel -> browser message carried a binary buffer
    assert wire["buffered"] == 0 and wire["stripped"] == 0 and wire["reports"] == 0, wire
