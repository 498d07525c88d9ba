"""Mining at scale, side by side with its floor, in one run (issue: atlases at ImageNet scale).

1. throughput: ``zf.mine`` of every conv layer vs the plain forward that stops at the deepest
   one (the work mining cannot avoid), same data, same batches, interleaved;
2. memory: peak RSS of a mining process at N and 10 N images (streamed from a dataset);
3. resume: a run cancelled at ~60 %, then resumed from its checkpoint, vs an uninterrupted run;
4. torch.distributed: 2 gloo processes (torchrun) vs 1 process, same job, results compared;
5. on a GPU (``--device cuda``): AlexNet and ResNet-50 at 224 over a folder of JPEGs written
   here, mining vs plain inference with the same DataLoader, projected time for 1.28 M images.

    python benchmarks/bench_mining.py [--quick] [--device cuda]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import torch
import torchvision
from torch.utils.data import DataLoader, Dataset

import zfwidgets as zf
from zfwidgets.base.layers import eval_mode
from zfwidgets.base.progress import Cancelled

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def row(label, value, note=""):
    print(f"  {label:<62} {value}{('   ' + note) if note else ''}", flush=True)


class Noise(Dataset):
    """Seeded random images made on the fly: memory does not grow with the length."""

    def __init__(self, n, size):
        self.n, self.size = n, size

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        return torch.randn(3, self.size, self.size, generator=g)


def alexnet(device):
    torch.manual_seed(0)
    return torchvision.models.alexnet(weights=None).to(device).eval()


CONVS = ["features.0", "features.3", "features.6", "features.8", "features.10"]


def bench_throughput(device, quick):
    n, size, bs = (256, 112, 64) if quick else (2048, 112, 64)
    model = alexnet(device)
    x = torch.randn(n, 3, size, size)
    trunk = model.features[:11]

    def floor():
        with torch.no_grad():
            for s in range(0, n, bs):
                trunk(x[s : s + bs].to(device))
        sync(device)

    def full():
        with torch.no_grad():
            for s in range(0, n, bs):
                model(x[s : s + bs].to(device))
        sync(device)

    def mined():
        zf.mine(model, x, layers=CONVS, k=9, batch_size=bs, progress=False)
        sync(device)

    fns = {"floor": floor, "full": full, "mine": mined}
    for f in fns.values():
        f()
    times = {k: [] for k in fns}
    for _ in range(2 if quick else 5):
        for k, f in fns.items():
            t = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"\n[throughput] AlexNet, {n} images {size}px, batch {bs}, all 5 conv layers, {device}")
    row("plain forward stopping at features.10 (floor)", f"{n / med['floor']:.0f} img/s")
    row("plain forward of the whole network", f"{n / med['full']:.0f} img/s")
    row("zf.mine, all 5 conv layers", f"{n / med['mine']:.0f} img/s")
    row("mine / floor throughput", f"{med['floor'] / med['mine']:.3f}x", "goal >= 0.95x")


MEMORY_CHILD = textwrap.dedent(
    """
    import resource, sys, torch, torchvision
    sys.path.insert(0, {here!r})
    from bench_mining import Noise
    import zfwidgets as zf
    torch.manual_seed(0)
    model = torchvision.models.alexnet(weights=None).eval()
    n = int(sys.argv[1])
    zf.mine(model, Noise(n, 64), layers={convs!r}, k=9, batch_size=64, progress=False)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    """
)


def bench_memory(quick):
    sizes = (500, 5000) if quick else (2000, 20000)
    print("\n[memory] peak RSS of a process mining AlexNet's 5 conv layers at 64px (CPU)")
    script = MEMORY_CHILD.format(here=str(HERE), convs=CONVS)
    peaks = {}
    for n in sizes:
        out = subprocess.run(
            [sys.executable, "-c", script, str(n)], capture_output=True, text=True, check=True
        )
        peaks[n] = int(out.stdout.strip().splitlines()[-1]) / 1024
        row(f"{n} images", f"{peaks[n]:.0f} MiB")
    a, b = sizes
    row(f"{b} / {a} images", f"{peaks[b] / peaks[a]:.3f}x", "goal: flat (~1.0x)")


def bench_resume(quick):
    n, size, bs, chunk = (512, 64, 32, 64) if quick else (4096, 64, 64, 512)
    model = alexnet(torch.device("cpu"))
    data = Noise(n, size)
    kw = {"layers": CONVS, "k": 9, "batch_size": bs, "chunk_size": chunk}
    t = time.perf_counter()
    zf.mine(model, data, progress=False, **kw)
    whole = time.perf_counter() - t
    stop_at = int(n * 0.6) + bs  # mid-chunk: the chunk in flight is redone
    with tempfile.TemporaryDirectory() as ck:

        def cancel(done, total):
            if done >= stop_at:
                raise Cancelled()

        t = time.perf_counter()
        with contextlib.suppress(Cancelled):
            zf.mine(model, data, checkpoint=ck, progress=cancel, **kw)
        first = time.perf_counter() - t
        t = time.perf_counter()
        zf.mine(model, data, checkpoint=ck, progress=False, **kw)
        second = time.perf_counter() - t
    redone = (stop_at - (stop_at // chunk) * chunk) / n * whole
    print(f"\n[resume] AlexNet 5 conv layers, {n} images {size}px, chunks of {chunk}, CPU")
    row("uninterrupted run", f"{whole:.2f} s")
    row(f"cancelled after {stop_at} images + resumed", f"{first:.2f} s + {second:.2f} s")
    row(
        "time lost beyond the redone part of the chunk in flight",
        f"{first + second - whole - redone:+.2f} s",
    )


DIST_CHILD = textwrap.dedent(
    """
    import os, sys, time, json, torch, torchvision
    sys.path.insert(0, {here!r})
    from bench_mining import Noise
    import zfwidgets as zf
    torch.manual_seed(0)
    model = torchvision.models.alexnet(weights=None).eval()
    t = time.perf_counter()
    atlas = zf.mine(model, Noise({n}, 64), layers={convs!r}, k=9, batch_size=64, chunk_size=256,
                    progress=False)
    dt = time.perf_counter() - t
    if int(os.environ.get("RANK", "0")) == 0:
        print(json.dumps({{"seconds": dt, "indices": [atlas.indices[l].tolist() for l in atlas.layers],
                           "values": [atlas.values[l].tolist() for l in atlas.layers]}}))
    """
)


def bench_distributed(quick):
    n = 512 if quick else 2048
    script = Path(tempfile.mkdtemp()) / "dist_child.py"
    script.write_text(DIST_CHILD.format(here=str(HERE), n=n, convs=CONVS))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    one = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=env, check=True
    )
    two = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node=2",
            str(script),
        ],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    a = json.loads(one.stdout.strip().splitlines()[-1])
    b = json.loads(two.stdout.strip().splitlines()[-1])
    print(
        f"\n[torch.distributed] AlexNet 5 conv layers, {n} images 64px, 1 thread per process, gloo"
    )
    row("1 process", f"{a['seconds']:.2f} s")
    row(
        "2 processes (torchrun --nproc-per-node=2)",
        f"{b['seconds']:.2f} s",
        f"{a['seconds'] / b['seconds']:.2f}x",
    )
    row(
        "same atlas (indices and values, exactly)",
        str(a["indices"] == b["indices"] and a["values"] == b["values"]),
    )


def write_jpegs(root: Path, n: int, size: int = 256):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(n):
        d = root / f"class{i % 10}"
        d.mkdir(parents=True, exist_ok=True)
        base = rng.integers(0, 256, (size // 8, size // 8, 3), dtype=np.uint8)
        img = Image.fromarray(base).resize((size + i % 40, size), Image.BILINEAR)
        img.save(d / f"{i:06d}.jpg", quality=90)


def plain_inference(model, loader, device):
    with torch.no_grad(), eval_mode(model):
        for x, _ in loader:
            model(x.to(device, non_blocking=True))
    sync(device)


def bench_gpu_folder(device, quick):
    from zfwidgets.atlas.folder import ImageFolder

    n = 512 if quick else 8192
    workers = min(8, os.cpu_count() or 1)
    with tempfile.TemporaryDirectory() as tmp:
        write_jpegs(Path(tmp), n)
        ds = ImageFolder(tmp, size=224)
        for name, make, bs in (
            ("alexnet", lambda: torchvision.models.alexnet(weights=None), 256),
            ("resnet50", lambda: torchvision.models.resnet50(weights=None), 128),
        ):
            torch.manual_seed(0)
            model = make().to(device).eval()
            layers = [n_ for n_, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)]
            loader = DataLoader(ds, batch_size=bs, num_workers=workers, pin_memory=True)

            plain_inference(model, loader, device)  # warm-up
            t = time.perf_counter()
            plain_inference(model, loader, device)
            tp = time.perf_counter() - t
            t = time.perf_counter()
            zf.mine(model, loader, layers=layers, k=9, progress=False)
            sync(device)
            tm = time.perf_counter() - t
            print(
                f"\n[GPU folder] {name}, {n} JPEGs at 224, {len(layers)} conv layers, batch {bs}, {workers} workers"
            )
            row("plain inference, same DataLoader", f"{n / tp:.0f} img/s")
            row("zf.mine of every conv layer", f"{n / tm:.0f} img/s", f"{tp / tm:.2f}x")
            row("projected time for 1.28 M images", f"{1.28e6 / (n / tm) / 60:.1f} min")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = p.parse_args()
    device = torch.device(a.device)
    torch.manual_seed(0)
    bench_throughput(device, a.quick)
    bench_memory(a.quick)
    bench_resume(a.quick)
    bench_distributed(a.quick)
    if device.type == "cuda":
        bench_gpu_folder(device, a.quick)


if __name__ == "__main__":
    main()
