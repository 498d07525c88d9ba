"""Feature visualisation on the bundled model: quality against the atlas, and cost per unit.

Olah et al., "Feature Visualization" (Distill 2017); docs/method.md, "Feature visualisation".

Quality: for every channel of every convolution of the bundled model (zfwidgets/models/default.py,
28x28 grey Fashion-MNIST), ``zf.feature_vis`` optimises an input; the spatial maximum of the
channel's activation on ``.inputs[i]`` is compared with the channel's top-1 value over the
bundled images (``zf.load_default_atlas()``, the atlas's own measure). Reported per layer: the
fraction of channels whose optimised input reaches the top-1, and the median and smallest ratio
``max / top-1``. The goal: at least 90% of the channels of every layer.

Cost: per layer, seconds per unit of the batched call (all channels of the layer together,
the default ``batch_size``), against

(a) the floor: ``steps`` plain forward (stopping after the layer, as feature_vis does) +
    backward passes of the same batch of images, no parameterisation, no transformations;
(b) one unit at a time (``batch_size=1``), as the peer lucent renders one unit per
    optimisation (emulated here; lucent itself is not installed), on ``--one`` channels.

Usage::

    .venv/bin/python benchmarks/bench_featurevis.py                 # every layer, 512 steps (the default)
    .venv/bin/python benchmarks/bench_featurevis.py --objective mean
    .venv/bin/python benchmarks/bench_featurevis.py --quick         # a tiny run that checks it works
    .venv/bin/python benchmarks/bench_featurevis.py --device cuda
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import zfwidgets as zf  # noqa: E402

LAYERS = ["features.0", "features.4", "features.8", "features.10", "features.12"]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def floor(model, layer, n, steps, size, device) -> float:
    """``steps`` forward (stopped after ``layer``) + backward passes of ``n`` images."""
    x = torch.rand(n, 1, size, size, device=device).requires_grad_(True)
    kept = {}

    def keep(_, out):
        kept["out"] = out

    from zfwidgets.engine.capture import Capture

    sync(device)
    t = time.perf_counter()
    for _ in range(steps):
        with Capture(model, [layer], switches=False, reduce=keep, stop_at=(layer, 0)):
            model(x)
        (g,) = torch.autograd.grad(kept["out"].sum(), [x])
    sync(device)
    return time.perf_counter() - t


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=512)
    p.add_argument("--objective", default="max", choices=["max", "mean"])
    p.add_argument("--transforms", default="standard")
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--one", type=int, default=4, help="channels rendered one at a time")
    p.add_argument("--layers", default=",".join(LAYERS))
    p.add_argument("--device", default="cpu")
    p.add_argument("--quick", action="store_true", help="8 steps, 2 layers")
    p.add_argument("--save", default=None, help="save the images of each layer as PNG here")
    args = p.parse_args()
    device = torch.device(args.device)
    steps = 8 if args.quick else args.steps
    layers = args.layers.split(",")[: 2 if args.quick else None]

    d = zf.load_default()
    atlas = zf.load_default_atlas(d)
    model = d.model.to(device)
    kw = {"objective": args.objective, "transforms": args.transforms, "steps": steps}
    if args.lr is not None:
        kw["lr"] = args.lr
    kw.update(size=28, mean=d.mean, std=d.std, progress=False)
    print(
        f"bundled model, 28x28, {steps} steps, objective={args.objective}, transforms="
        f"{args.transforms}, device {device}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )
    header = (
        f"{'layer':<12} {'K':>3} {'reach':>6} {'median':>7} {'min':>6} | {'s/unit':>7} "
        f"{'floor':>7} {'x floor':>7} | {'1-by-1':>7} {'x batched':>9}"
    )
    print(header)
    print("-" * len(header))
    reached_all = []
    for layer in layers:
        top1 = atlas.values[layer][:, 0].to(device)
        k = len(top1)
        chans = list(range(k))
        sync(device)
        t = time.perf_counter()
        r = zf.feature_vis(model, layer, chans, **kw)
        sync(device)
        batched = (time.perf_counter() - t) / k
        with zf.capture(model, [layer]) as cap, torch.no_grad():
            model(r.inputs)
        a = cap.activations[layer][torch.arange(k), torch.arange(k)]
        smax = a.flatten(1).max(1).values
        ratio = (smax / top1).cpu()
        reach = float((smax >= top1).float().mean())
        reached_all.append((layer, reach))
        fl = floor(model, layer, k, steps, 28, device) / k
        one = args.one if not args.quick else 1
        t = time.perf_counter()
        zf.feature_vis(model, layer, chans[:one], batch_size=1, **kw)
        sync(device)
        single = (time.perf_counter() - t) / one
        print(
            f"{layer:<12} {k:>3} {reach:>6.0%} {statistics.median(ratio.tolist()):>7.2f} "
            f"{float(ratio.min()):>6.2f} | {batched * 1e3:>6.1f}ms {fl * 1e3:>5.1f}ms "
            f"{batched / fl:>6.1f}x | {single * 1e3:>5.0f}ms {single / batched:>8.1f}x",
            flush=True,
        )
        if args.save:
            from PIL import Image

            grid = r.images[:, 0].clamp(0, 1)
            row = torch.cat(list(grid), 1)
            Path(args.save).mkdir(parents=True, exist_ok=True)
            Image.fromarray((row.numpy() * 255).round().astype("uint8")).resize(
                (row.shape[1] * 3, row.shape[0] * 3), Image.NEAREST
            ).save(Path(args.save) / f"{layer}.png")
    missed = [f"{n} ({v:.0%})" for n, v in reached_all if v < 0.9]
    print(
        "goal (>= 90% of the channels of every layer reach the top-1):",
        "met" if not missed else f"missed by {', '.join(missed)}",
    )


if __name__ == "__main__":
    main()
