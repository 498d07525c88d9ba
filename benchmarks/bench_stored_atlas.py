"""In the browser: from a click on a feature map to the top-9 drawn, on a stored atlas.

A stored atlas of a small, wide network (conv 3->64, max-pool, conv 64->2,048: random weights)
over a few small random images is written and rendered once (``atlas.save`` +
``atlas.render``): ``0`` (64 units) and ``3`` (2,048 units, as many as ResNet-50's ``layer4``).
Rendering ResNet-50's ``layer4`` itself takes over an hour on a shared 2-core CPU (about 0.5 s
per unit and hit), which is the batch job's work, not the browser's: the click path below reads
one stored file per unit whatever the network. The Explorer opens the atlas in stock Voila
(``Explorer(model, atlas="atlas/", dataset=...)``) and headless Debian Chromium clicks feature
maps in the layer grid. Each click is timed in the page, from the click event to the TopNine
canvas having drawn that unit (its ``data-channel`` and ``data-draws``), so the figure includes
the websocket round trip, the kernel's work for the click (the unit view and attribution views
of the image, then the TopNine frame from the stored tiles), the transfer and the canvas draw.

    python benchmarks/bench_stored_atlas.py [--quick] [--atlas DIR]

``--atlas DIR`` keeps (or reuses) the rendered atlas in DIR.
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

from harness import CHROMIUM, launch, serve  # noqa: E402

LAYERS = ["0", "3"]
SIZE, N, K = 32, 12, 9


def data():
    import torch

    g = torch.Generator().manual_seed(0)
    return torch.randn(N, 3, SIZE, SIZE, generator=g)


def model():
    import torch
    from torch import nn

    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 64, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(64, 2048, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(2048, 10),
    ).eval()


def build(path: Path) -> dict[str, float]:
    """Mine and render the atlas into ``path`` (skipped when it is already there)."""
    import zfwidgets as zf

    if (path / "manifest.json").is_file():
        a = zf.Atlas.load(path)
        if all(a.has_images(n) for n in LAYERS):
            return {}
    m, x = model(), data()
    t0 = time.perf_counter()
    atlas = zf.mine(m, x, layers=LAYERS, k=K, progress=False)
    t1 = time.perf_counter()
    atlas.save(path)
    atlas.render(progress=True, batch_size=64)
    t2 = time.perf_counter()
    return {"mine_s": t1 - t0, "render_s": t2 - t1}


def cells(path: Path) -> list[str]:
    return [
        f"""\
import sys; sys.path.insert(0, {str(HERE)!r})
from bench_stored_atlas import model, data, LAYERS
from zfwidgets import Explorer
x = data()
ex = Explorer(model(), x, dataset=x, atlas={str(path)!r}, layers=LAYERS, occlusion=False,
              classes=[f"class {{i}}" for i in range(10)])
ex.add_class("zf-bench")
ex""",
    ]


SWITCH = """async ([value, ms]) => {
  const root = document.querySelector('.zf-bench');
  const select = root.querySelector('.zf-layer-grid select.zf-layer-select');
  const canvas = root.querySelector('.zf-layer-grid canvas.zf-atlas');
  const t0 = performance.now();
  select.value = value;
  select.dispatchEvent(new Event('change'));
  while (canvas.dataset.layer !== value) {
    if (performance.now() - t0 > ms) throw new Error('timed out');
    await new Promise((r) => requestAnimationFrame(r));
  }
  const top = () => root.querySelector('.zf-top-nine canvas.zf-atlas');
  while (!top() || top().dataset.layer !== value) {
    if (performance.now() - t0 > ms) throw new Error('timed out (top-9)');
    await new Promise((r) => requestAnimationFrame(r));
  }
  return performance.now() - t0;
}"""

CLICK = """async ([i, ms]) => {
  const root = document.querySelector('.zf-bench');
  const canvas = root.querySelector('.zf-layer-grid canvas.zf-atlas');
  const top = root.querySelector('.zf-top-nine canvas.zf-atlas');
  const r = canvas.getBoundingClientRect();
  const s = r.width / canvas.width;
  const cols = Number(canvas.dataset.columns), th = Number(canvas.dataset.tileH);
  const tw = Number(canvas.dataset.tileW), pad = Number(canvas.dataset.pad);
  const x = r.left + (pad + (i % cols) * (tw + pad) + tw / 2) * s;
  const y = r.top + (pad + Math.floor(i / cols) * (th + pad) + th / 2) * s;
  const before = Number(top.dataset.draws);
  const t0 = performance.now();
  canvas.dispatchEvent(new MouseEvent('click', { clientX: x, clientY: y, bubbles: true }));
  while (top.dataset.channel !== String(i) || Number(top.dataset.draws) === before) {
    if (performance.now() - t0 > ms) throw new Error('timed out');
    await new Promise((r) => requestAnimationFrame(r));
  }
  return performance.now() - t0;
}"""


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    p.add_argument("--atlas", help="folder to keep (or reuse) the rendered atlas in")
    p.add_argument("--device", default="cpu", help="ignored: the kernel runs on the CPU")
    args = p.parse_args()
    if not CHROMIUM.exists():
        print(f"skipped: {CHROMIUM} is missing (apt-get install chromium)")
        return
    from playwright.sync_api import sync_playwright

    n = 5 if args.quick else 20
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(args.atlas) if args.atlas else Path(tmp) / "atlas"
        made = build(path)
        size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        server = serve(Path(tmp), "bench.ipynb", cells(path.resolve()))
        clicks: dict[str, list[float]] = {}
        try:
            with sync_playwright() as pw:
                ctx = launch(pw, Path(tmp) / "profile", width=1280, height=1400)
                page = ctx.new_page()
                t0 = time.monotonic()
                page.goto(server.url, wait_until="domcontentloaded", timeout=180_000)
                page.wait_for_selector(
                    ".zf-bench .zf-top-nine canvas.zf-atlas[data-draws]", timeout=180_000
                )
                load = time.monotonic() - t0
                for layer in LAYERS:
                    page.evaluate(SWITCH, [layer, 120_000])
                    channels = 64 if layer == LAYERS[0] else 2048
                    # units spread over the layer; a warm-up click first
                    page.evaluate(CLICK, [channels - 1, 60_000])
                    step = max(1, channels // n)
                    clicks[layer] = [
                        page.evaluate(CLICK, [(j * step + 1) % channels, 60_000]) for j in range(n)
                    ]
                ctx.close()
        finally:
            server.stop()
    print(
        f"# Explorer on a stored atlas in stock Voila, headless Chromium: conv 64 -> conv "
        f"2,048 (random weights), {N} images of {SIZE}x{SIZE}, k={K}, {n} clicks per layer"
    )
    if made:
        print(f"  atlas: mined in {made['mine_s']:.1f} s, rendered in {made['render_s']:.1f} s")
    print(f"  atlas on disk {size / 1e6:.1f} MB; page load to first top-9 drawn {load:.1f} s")
    for layer, ts in clicks.items():
        units = 64 if layer == LAYERS[0] else 2048
        print(
            f"  click on a feature map -> top-9 drawn, layer {layer} ({units:>4} units): "
            f"median {statistics.median(ts):6.1f} ms  (min {min(ts):.1f}, max {max(ts):.1f})"
        )


if __name__ == "__main__":
    main()
