"""The atlas store: render time per unit and bytes per unit on disk (docs/method.md Sec. 3.1).

AlexNet (torchvision, random seeded weights), all five conv layers, top-k over N photos at
224x224 (random crops, scales and flips of the package's bundled photos, plus scikit-learn's
two sample photos when it is installed), normalised with ImageNet's mean/std:

1. ``zf.mine`` the hits, ``atlas.save(dir)``;
2. ``atlas.render([layer])`` per layer: every unit's k patches and k deconvnet
   reconstructions, one sprite file per unit; ms per unit and bytes per unit on disk;
3. the whole directory's size against the issue's budget (150 MB for k=9 at 224 px);
4. ``Atlas.load(dir)`` (lazy) and one unit's sprite read + decoded, as a viewer would.

Usage::

    .venv/bin/python benchmarks/bench_atlas_store.py                 # N=256, k=9, WebP q85
    .venv/bin/python benchmarks/bench_atlas_store.py --format png    # lossless, for comparison
    .venv/bin/python benchmarks/bench_atlas_store.py --quick         # a tiny run that checks it works
"""

from __future__ import annotations

import argparse
import importlib
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import zfwidgets as zf  # noqa: E402
from zfwidgets.atlas.core import Atlas  # noqa: E402

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
LAYERS = ["features.0", "features.3", "features.6", "features.8", "features.10"]


def photos() -> list:
    out = list(zf.load_photos().values())
    try:  # full-size photos when scikit-learn (a test dependency) is there
        from PIL import Image
        from sklearn.datasets import load_sample_images

        out += [Image.fromarray(a) for a in load_sample_images().images]
    except ImportError:
        pass
    return out


def images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    """(n, 3, size, size) in [0, 1]: random square crops (40-100% of the short side), resized,
    randomly flipped."""
    from PIL import Image

    rng = random.Random(seed)
    pics = photos()
    out = torch.empty(n, 3, size, size)
    for i in range(n):
        im = pics[i % len(pics)]
        w, h = im.size
        side = int(min(w, h) * rng.uniform(0.4, 1.0))
        x, y = rng.randint(0, w - side), rng.randint(0, h - side)
        crop = im.crop((x, y, x + side, y + side)).resize((size, size), Image.BILINEAR)
        if rng.random() < 0.5:
            crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
        t = torch.frombuffer(bytearray(crop.tobytes()), dtype=torch.uint8)
        out[i] = t.reshape(size, size, 3).permute(2, 0, 1).float() / 255
    return out


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="16 images at 96 px, k=4")
    parser.add_argument("--n", type=int, default=None, help="images (default 256)")
    parser.add_argument("--size", type=int, default=None, help="image side (default 224)")
    parser.add_argument("--k", type=int, default=None, help="hits per unit (default 9)")
    parser.add_argument("--format", default="webp", choices=["webp", "png"])
    parser.add_argument("--quality", type=int, default=85, help="WebP quality (default 85)")
    parser.add_argument("--batch-size", type=int, default=64, help="crops per pass (default 64)")
    parser.add_argument("--device", default=None, help="default: cpu")
    parser.add_argument("--out", default=None, help="atlas directory (default: a temporary one)")
    parser.add_argument(
        "--layers", default=",".join(LAYERS), help="comma-separated (default: all five conv)"
    )
    args = parser.parse_args()
    n = args.n or (16 if args.quick else 256)
    size = args.size or (96 if args.quick else 224)
    k = args.k or (4 if args.quick else 9)
    device = torch.device(args.device or "cpu")
    layers = [n for n in args.layers.split(",") if n]

    # time spent inside the engine (backprop), to separate it from cropping, encoding, writing
    backprop_module = importlib.import_module("zfwidgets.engine.backprop")
    engine = {"cpu": 0.0}
    real_backprop = backprop_module.backprop

    def timed_backprop(*a, **kw):
        start = time.process_time()
        try:
            return real_backprop(*a, **kw)
        finally:
            engine["cpu"] += time.process_time() - start

    backprop_module.backprop = timed_backprop

    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.alexnet(weights=None).eval().to(device)
    x = (images(n, size) - torch.tensor(MEAN).reshape(3, 1, 1)) / torch.tensor(STD).reshape(3, 1, 1)

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out) if args.out else Path(tmp) / "atlas"
        start = time.perf_counter()
        atlas = zf.mine(model, x, layers=layers, k=k, batch_size=64, progress=False)
        t_mine = time.perf_counter() - start
        atlas.save(out)
        rows = []
        for layer in layers:
            C = int(atlas.values[layer].shape[0])
            engine["cpu"] = 0.0
            start, cpu = time.perf_counter(), time.process_time()
            atlas.render(
                [layer],
                batch_size=args.batch_size,
                format=args.format,
                quality=args.quality,
                mean=MEAN,
                std=STD,
                progress=False,
            )
            seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
            tiles = atlas.image_file(layer, 0).parent
            rows.append((layer, C, atlas.crop_size(layer), seconds, cpu, du(tiles), engine["cpu"]))
        total_bytes = du(out)

        # a viewer: open lazily, then show units of the widest layer
        start = time.perf_counter()
        loaded = Atlas.load(out)
        t_open = time.perf_counter() - start
        wide = max(layers, key=lambda n: int(atlas.values[n].shape[0]))
        rng = random.Random(1)
        reads, decodes = [], []
        for c in rng.sample(range(int(atlas.values[wide].shape[0])), 30):
            start = time.perf_counter()
            u = loaded.unit_images(wide, c)
            reads.append(time.perf_counter() - start)
            start = time.perf_counter()
            u.patches, u.reconstructions  # noqa: B018 - decode both blocks
            decodes.append(time.perf_counter() - start)

    units = sum(r[1] for r in rows)
    disk = sum(r[5] for r in rows)
    print(
        f"AlexNet (random weights), {n} photos {size}x{size}, k={k}, {args.format}"
        f"{f' q{args.quality}' if args.format == 'webp' else ''}, batch {args.batch_size}, "
        f"{device}; torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    print(f"mine ({len(layers)} layers): {t_mine:.1f} s")
    head = f"{'layer':<12} {'units':>5} {'crop':>9} {'ms/unit':>8} {'cpu ms':>7} {'engine':>7}"
    print(f"{head} {'KiB/unit':>9} {'MB':>7}")
    for layer, C, crop, seconds, cpu, size_b, eng in rows:
        print(
            f"{layer:<12} {C:>5} {crop[0]:>4}x{crop[1]:<4} {1000 * seconds / C:8.1f} "
            f"{1000 * cpu / C:7.1f} {eng / max(cpu, 1e-9):7.0%} {size_b / C / 1024:9.1f} "
            f"{size_b / 1e6:7.1f}"
        )
    t_render = sum(r[3] for r in rows)
    t_cpu = sum(r[4] for r in rows)
    t_engine = sum(r[6] for r in rows)
    print(
        f"{'all':<12} {units:>5} {'':>9} {1000 * t_render / units:8.1f} "
        f"{1000 * t_cpu / units:7.1f} {t_engine / max(t_cpu, 1e-9):7.0%} "
        f"{disk / units / 1024:9.1f} {disk / 1e6:7.1f}"
    )
    print(
        "ms/unit: wall clock; cpu ms: process CPU time (all threads) per unit; engine: the share "
        "of it inside zfwidgets.engine.backprop (the rest: data, crops, normalisation, encoding, files)"
    )
    print(
        f"directory on disk: {total_bytes / 1e6:.1f} MB (budget 150 MB at k=9, 224 px); "
        f"render {t_render:.1f} s wall, {t_cpu:.1f} s CPU (all threads)"
    )
    print(
        f"Atlas.load (lazy): {1000 * t_open:.1f} ms; one unit of {wide} "
        f"({int(atlas.values[wide].shape[0])} channels): read {1000 * statistics.median(reads):.2f} ms, "
        f"decode {1000 * statistics.median(decodes):.2f} ms (medians of 30)"
    )


if __name__ == "__main__":
    main()
