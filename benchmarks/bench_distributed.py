"""Mining and rendering spread over torchrun ranks (gloo, CPU), side by side with one process,
in one run (issue: hardening at scale).

1. ``zf.mine`` with the default chunks over N synthetic images (1,280 and 50,000 by default):
   how many images each of 2 ranks reads, the wall time against one process, and whether the
   atlas is exactly the one-process atlas;
2. ``atlas.render`` of a mined atlas on 2 ranks vs 1: wall time and whether every stored file
   has the same bytes.

Each process uses one thread (``OMP_NUM_THREADS=1``), so 2 ranks use the 2 cores of the
reference machine.

    python benchmarks/bench_distributed.py [--quick] [--sizes 1280 50000]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

CHILD = textwrap.dedent(
    """
    import json, os, sys, time
    import torch
    from torch import nn
    from torch.utils.data import Dataset
    sys.path.insert(0, {repo!r})
    import zfwidgets as zf

    class Noise(Dataset):
        def __init__(self, n, size):
            self.n, self.size, self.reads = n, size, 0
        def __len__(self):
            return self.n
        def __getitem__(self, i):
            self.reads += 1
            g = torch.Generator().manual_seed(i)
            return torch.rand(3, self.size, self.size, generator=g)

    def small_cnn():
        torch.manual_seed(0)
        return nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(),
        ).eval()

    mode, n, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    rank = int(os.environ.get("RANK", "0"))
    if mode == "mine":
        data = Noise(n, 32)
        t = time.perf_counter()
        atlas = zf.mine(small_cnn(), data, layers=["0", "3", "6"], k=9, batch_size=64,
                        progress=False)
        dt = time.perf_counter() - t
        res = {{"seconds": dt, "reads": data.reads,
               "digest": __import__("hashlib").sha256(b"".join(
                   t.cpu().contiguous().numpy().tobytes() for l in atlas.layers
                   for t in (atlas.values[l], atlas.indices[l], atlas.positions[l]))).hexdigest()}}
        with open(f"{{out}}.{{rank}}.json", "w") as f:
            json.dump(res, f)
    else:  # render: mine once (every rank the same), rank 0 saves, all render
        import torch.distributed as dist
        import torchvision
        torch.manual_seed(0)
        model = torchvision.models.alexnet(weights=None).eval()
        data = Noise(n, 64)
        layers = ["features.0", "features.3", "features.6", "features.8", "features.10"]
        atlas = zf.mine(model, data, layers=layers, k=9, batch_size=64, progress=False)
        world = dist.get_world_size() if dist.is_initialized() else 1
        if rank == 0:
            atlas.save(out)
        if world > 1:
            dist.barrier()
            if rank != 0:
                atlas = zf.Atlas.load(out, model=model, data=data)
            dist.barrier()
        t = time.perf_counter()
        atlas.render(progress=False)
        dt = time.perf_counter() - t
        if rank == 0:
            with open(out + ".json", "w") as f:
                json.dump({{"seconds": dt}}, f)
    """
)


def row(label, value, note=""):
    print(f"  {label:<58} {value}{('   ' + note) if note else ''}", flush=True)


def run(script: Path, args: list[str], ranks: int) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable]
    if ranks > 1:
        cmd += ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={ranks}"]
    r = subprocess.run([*cmd, str(script), *args], capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise SystemExit(r.stderr[-3000:])


def tree_digest(root: Path) -> dict[str, str]:
    """Every stored file -> sha256 (tile folders named by layer order, not their suffix)."""
    m = json.loads((root / "manifest.json").read_text())
    dirs = {}
    for i, layer in enumerate(m["layers"]):
        if layer.get("images"):
            dirs[layer["images"]["dir"]] = f"tiles/layer-{i}"
            layer["images"]["dir"] = f"tiles/layer-{i}"
    out = {"manifest.json": hashlib.sha256(json.dumps(m, sort_keys=True).encode()).hexdigest()}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if rel.startswith("tensors-"):
            rel = "tensors.safetensors"
        if p.is_file() and rel != "manifest.json":
            for old, new in dirs.items():
                rel = rel.replace(old + "/", new + "/")
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def bench_mine(script: Path, tmp: Path, n: int) -> None:
    run(script, ["mine", str(n), str(tmp / f"one-{n}")], 1)
    run(script, ["mine", str(n), str(tmp / f"two-{n}")], 2)
    one = json.loads((tmp / f"one-{n}.0.json").read_text())
    two = [json.loads((tmp / f"two-{n}.{r}.json").read_text()) for r in (0, 1)]
    print(f"\n[mine] 3 conv layers of a small CNN, {n:,} images 32x32, default chunks, k=9")
    row("images read: 1 process", f"{one['reads']:,}")
    row("images read: rank 0 / rank 1 of 2", f"{two[0]['reads']:,} / {two[1]['reads']:,}")
    row("1 process", f"{one['seconds']:.2f} s")
    secs = max(t["seconds"] for t in two)
    row("2 ranks (slowest rank)", f"{secs:.2f} s", f"{one['seconds'] / secs:.2f}x")
    same = two[0]["digest"] == two[1]["digest"] == one["digest"]
    row("same atlas on every rank as one process (bit for bit)", str(same))


def bench_render(script: Path, tmp: Path, n: int) -> None:
    run(script, ["render", str(n), str(tmp / "render-one")], 1)
    run(script, ["render", str(n), str(tmp / "render-two")], 2)
    a = json.loads((tmp / "render-one.json").read_text())["seconds"]
    b = json.loads((tmp / "render-two.json").read_text())["seconds"]
    print(f"\n[render] AlexNet's 5 conv layers (1,152 units, 9 hits each), {n} images 64x64, webp")
    row("1 process", f"{a:.2f} s")
    row("2 ranks", f"{b:.2f} s", f"{a / b:.2f}x")
    same = tree_digest(tmp / "render-one") == tree_digest(tmp / "render-two")
    row("every stored file the same bytes", str(same))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true", help="1,280 images only, a smaller render")
    p.add_argument("--sizes", type=int, nargs="*", default=None)
    a = p.parse_args()
    sizes = a.sizes or ([1280] if a.quick else [1280, 50_000])
    tmp = Path(tempfile.mkdtemp())
    script = tmp / "child.py"
    script.write_text(CHILD.format(repo=str(REPO)))
    for n in sizes:
        bench_mine(script, tmp, n)
    bench_render(script, tmp, 64 if a.quick else 256)


if __name__ == "__main__":
    main()
