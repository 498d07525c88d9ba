"""TrainingMonitor overhead: the same training loop with and without the monitor.

The loop trains :func:`zfwidgets.models.zfnet_small` from scratch on the bundled
Fashion-MNIST images (SGD, batch 32). "with" adds ``TrainingMonitor(model, probe=64 images)``
at its default settings (refresh every 1 s, snapshots every 5 s within a 1% time budget) and
``monitor.step(loss=loss)`` each step plus ``epoch_end()`` at the end. Repeats are
interleaved (without, with, without, with, ...) and the medians compared.

Memory: ``monitor.step`` called 10,000 times (tensor losses, refresh every 50 steps); the
Python heap (tracemalloc) after 1,000 and after 10,000 steps, and the curve length.

    .venv/bin/python benchmarks/bench_monitor.py            # 200 steps x 5 repeats
    .venv/bin/python benchmarks/bench_monitor.py --quick    # 100 steps x 3 repeats
"""

from __future__ import annotations

import argparse
import statistics
import time
import tracemalloc

import torch
import torch.nn.functional as F

from zfwidgets.data import load_default
from zfwidgets.models import zfnet_small
from zfwidgets.monitor import TrainingMonitor


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _loop(
    images: torch.Tensor, labels: torch.Tensor, steps: int, monitored: bool
) -> tuple[float, float, float]:
    """(wall s, process CPU s, seconds spent inside monitor calls)."""
    torch.manual_seed(0)
    device = images.device
    model = zfnet_small().to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    monitor = TrainingMonitor(model, probe=images[:64]) if monitored else None
    g = torch.Generator().manual_seed(0)
    order = torch.randint(0, len(images), (steps, 32), generator=g).to(device)
    model.train()
    inside = 0.0
    _sync(device)
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(steps):
        idx = order[i]
        loss = F.cross_entropy(model(images[idx]), labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if monitor is not None:
            s = time.perf_counter()
            monitor.step(loss=loss)
            inside += time.perf_counter() - s
    if monitor is not None:
        s = time.perf_counter()
        monitor.epoch_end()
        inside += time.perf_counter() - s
    _sync(device)
    return time.perf_counter() - t0, time.process_time() - c0, inside


MARKS = (1_000, 5_000, 10_000, 20_000)


def _memory() -> tuple[dict[int, int], int, dict[int, int]]:
    """Python heap (bytes) and curve length after each of MARKS steps; peak heap."""
    model = zfnet_small()
    monitor = TrainingMonitor(model, every=50, snapshot_every=None)
    loss = torch.tensor(1.0)
    tracemalloc.start()
    heap, points = {}, {}
    for i in range(1, MARKS[-1] + 1):
        monitor.step(loss=loss * i)
        if i in MARKS:
            monitor.refresh()
            heap[i] = tracemalloc.get_traced_memory()[0]
            points[i] = len(monitor.curves["loss"])
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return heap, peak, points


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100 steps x 3 repeats")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    args = parser.parse_args()
    device = torch.device(args.device)
    steps = args.steps or (100 if args.quick else 200)
    repeats = args.repeats or (3 if args.quick else 5)
    d = load_default()
    images, labels = (t.to(device) for t in d.images.tensors())
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {where}")
    _loop(images, labels, 20, False)  # warm-up
    _loop(images, labels, 20, True)
    base, mon = [], []
    for _ in range(repeats):
        base.append(_loop(images, labels, steps, False))
        mon.append(_loop(images, labels, steps, True))
    print(f"{steps} steps x {repeats} interleaved repeats, batch 32, zfnet_small 28x28")
    for i, what in ((0, "wall"), (1, "CPU (process_time)")):
        b = statistics.median(r[i] for r in base)
        m = statistics.median(r[i] for r in mon)
        runs_b = ", ".join(f"{r[i]:.3f}" for r in base)
        runs_m = ", ".join(f"{r[i]:.3f}" for r in mon)
        print(f"  {what}: without {b:.3f} s ({runs_b}); with {m:.3f} s ({runs_m})")
        print(f"    overhead ratio (medians): {m / b:.4f}  (goal <= 1.02)")
    frac = statistics.median(r[2] / r[0] for r in mon)
    print(f"  time inside monitor calls / loop time (median): {frac:.4f} -> ratio {1 + frac:.4f}")
    heap, peak, points = _memory()
    print("memory, monitor.step x 20,000 (refresh every 50 steps):")
    for i in MARKS:
        print(f"  after {i:>6,} steps: heap {heap[i] / 1024:7.1f} KiB, curve {points[i]} points")
    print(f"  peak heap {peak / 1024:.1f} KiB (curves are bounded at max_points=2000 per series)")


if __name__ == "__main__":
    main()
