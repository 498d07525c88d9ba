"""In the browser: from a layer switch (or a channel click) to pixels drawn, in stock Voila.

A LayerGrid of AlexNet (random weights) on a 224x224 photo is served by Voila on 127.0.0.1
and driven by headless Debian Chromium. Each switch is timed in the page from the `change`
event of the layer menu to the canvas having drawn the new frame (its `data-draws` counter),
so the figure includes the websocket round trip, the kernel's colour-mapping and tiling, the
binary transfer and the canvas draw. Bytes per update are the frame's binary payloads.

``--transport both`` opens two pages, one with binary buffers and one with the inline base64
transport of front ends that drop buffers (``zf.set_transport("base64")``, Colab), and
alternates their switches; bytes per switch are then also counted on the websocket (every
kernel -> browser frame from the menu change to the draw).

    python benchmarks/bench_browser.py [--quick] [--transport buffers|base64|both]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "browser"))

from harness import CHROMIUM, launch, serve, wire_script  # noqa: E402

CELLS = [
    """\
import os, urllib.parse
import zfwidgets as zf
query = urllib.parse.parse_qs(os.environ.get("QUERY_STRING", ""))
if "transport" in query:
    zf.set_transport(query["transport"][0])
import numpy as np, torch, torchvision
from matplotlib.cbook import get_sample_data
from PIL import Image
from zfwidgets.widgets import LayerGrid
torch.manual_seed(0)
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
photo = Image.open(get_sample_data("grace_hopper.jpg", asfileobj=False)).convert("RGB").resize((224, 224))
x = (torch.from_numpy(np.asarray(photo).copy()).permute(2, 0, 1).float() / 255 - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]
model = torchvision.models.alexnet(weights=None).eval()
convs = ["features.0", "features.3", "features.6", "features.8", "features.10"]
grid = LayerGrid(model, x, "features.0", mean=MEAN, std=STD, layers=convs)
grid.add_class("zf-bench")
grid""",
]

SWITCH = """async ([value, ms]) => {
  const root = document.querySelector('.zf-bench');
  const select = root.querySelector('select.zf-layer-select');
  const canvas = root.querySelector('canvas.zf-atlas');
  const before = Number(canvas.dataset.draws);
  const bytes0 = window.__zfWire ? window.__zfWire.bytesIn : 0;
  const t0 = performance.now();
  select.value = value;
  select.dispatchEvent(new Event('change'));
  const deadline = t0 + ms;
  while (Number(canvas.dataset.draws) === before || canvas.dataset.layer !== value) {
    if (performance.now() > deadline) throw new Error('timed out');
    await new Promise((r) => requestAnimationFrame(r));
  }
  const ms_ = performance.now() - t0;
  return [ms_, (window.__zfWire ? window.__zfWire.bytesIn : 0) - bytes0];
}"""

CLICK = """async ([i, ms]) => {
  const root = document.querySelector('.zf-bench');
  const canvas = root.querySelector('canvas.zf-atlas');
  const caption = root.querySelector('.zf-caption');
  const r = canvas.getBoundingClientRect();
  const s = r.width / canvas.width;
  const cols = Number(canvas.dataset.columns), th = Number(canvas.dataset.tileH);
  const tw = Number(canvas.dataset.tileW), pad = Number(canvas.dataset.pad);
  const x = r.left + (pad + (i % cols) * (tw + pad) + tw / 2) * s;
  const y = r.top + (pad + Math.floor(i / cols) * (th + pad) + th / 2) * s;
  const t0 = performance.now();
  canvas.dispatchEvent(new MouseEvent('click', { clientX: x, clientY: y, bubbles: true }));
  const want = `channel ${i} `;
  while (!caption.textContent.includes(want)) {
    if (performance.now() - t0 > ms) throw new Error('timed out');
    await new Promise((r) => requestAnimationFrame(r));
  }
  return performance.now() - t0;
}"""


def payload_sizes(layers: list[str]) -> dict[str, tuple[int, int]]:
    """Bytes of the payloads one layer switch sends (same widget, in this process): binary,
    and as the inline base64 text of front ends without buffers."""
    import torch
    import torchvision

    from zfwidgets.base.codec import to_base64
    from zfwidgets.widgets import LayerGrid

    torch.manual_seed(0)
    model = torchvision.models.alexnet(weights=None).eval()
    grid = LayerGrid(model, torch.randn(3, 224, 224), layers[0], layers=layers)
    out = {}
    for name in layers:
        grid.layer = name
        keys = ("atlas", "maxima")
        binary = sum(len(grid.frame[k]["view"]) for k in keys)
        inline = sum(len(to_base64(grid.frame[k])["b64"]) for k in keys)
        out[name] = (binary, inline)
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    p.add_argument("--device", default="cpu", help="ignored: the kernel runs on the CPU")
    p.add_argument(
        "--transport",
        choices=["buffers", "base64", "both"],
        default="buffers",
        help="how the kernel sends the frames (both: two pages, switches alternated)",
    )
    args = p.parse_args()
    if not CHROMIUM.exists():
        print(f"skipped: {CHROMIUM} is missing (apt-get install chromium)")
        return
    from playwright.sync_api import sync_playwright

    n = 5 if args.quick else 20
    layers = ["features.0", "features.3", "features.6", "features.8", "features.10"]
    transports = ["buffers", "base64"] if args.transport == "both" else [args.transport]
    with tempfile.TemporaryDirectory() as tmp:
        server = serve(Path(tmp), "bench.ipynb", CELLS)
        try:
            with sync_playwright() as pw:
                ctx = launch(pw, Path(tmp) / "profile", width=1280, height=1000)
                pages, load = {}, {}
                for t in transports:
                    page = pages[t] = ctx.new_page()
                    page.add_init_script(wire_script(strip=False))
                    t0 = time.monotonic()
                    page.goto(
                        f"{server.url}?transport={t}",
                        wait_until="domcontentloaded",
                        timeout=120_000,
                    )
                    page.wait_for_selector(".zf-bench canvas.zf-atlas[data-draws]", timeout=120_000)
                    load[t] = time.monotonic() - t0
                times = {t: {name: [] for name in layers} for t in transports}
                wire = {t: {name: [] for name in layers} for t in transports}
                order = [layers[(i + 1) % len(layers)] for i in range(n * len(layers))]
                for name in order:
                    for t in transports:  # alternated: both see the same machine load
                        # a background tab gets no animation frames: the page in front
                        pages[t].bring_to_front()
                        ms, nbytes = pages[t].evaluate(SWITCH, [name, 30_000])
                        times[t][name].append(ms)
                        wire[t][name].append(nbytes)
                clicks = {}
                for t in transports:
                    pages[t].bring_to_front()
                    pages[t].evaluate(SWITCH, ["features.10", 30_000])
                    clicks[t] = [pages[t].evaluate(CLICK, [i % 256, 30_000]) for i in range(n)]
                ctx.close()
        finally:
            server.stop()
    sizes = payload_sizes(layers)
    print(f"# LayerGrid in stock Voila, headless Chromium, AlexNet 224x224, {n} switches/layer")
    for t in transports:
        print(f"## transport {t!r}")
        print(f"  page load to first grid drawn                         {load[t]:8.1f} s")
        for name in layers:
            kb = sizes[name][0 if t == "buffers" else 1] / 1024
            print(
                f"  switch to {name:<12} median {statistics.median(times[t][name]):7.1f} ms"
                f"   payload {kb:8.1f} KiB   on the wire {statistics.median(wire[t][name]) / 1024:8.1f} KiB"
            )
        all_times = [x for v in times[t].values() for x in v]
        print(
            f"  layer switch, all layers: median {statistics.median(all_times):.1f} ms (goal <= 100)"
        )
        print(f"  channel click -> Python -> caption: median {statistics.median(clicks[t]):.1f} ms")
    if len(transports) == 2:
        print("## base64 / buffers, side by side (same pages' switches, alternated)")
        for name in layers:
            tb = statistics.median(times["buffers"][name])
            t6 = statistics.median(times["base64"][name])
            wb = statistics.median(wire["buffers"][name])
            w6 = statistics.median(wire["base64"][name])
            print(
                f"  {name:<12} time {tb:7.1f} -> {t6:7.1f} ms ({t6 / tb:4.2f}x)"
                f"   wire {wb / 1024:8.1f} -> {w6 / 1024:8.1f} KiB ({w6 / max(wb, 1):4.2f}x)"
            )


if __name__ == "__main__":
    main()
