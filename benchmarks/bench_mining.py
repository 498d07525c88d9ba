"""Mining at scale, side by side with its floor, in one run (issue: atlases at ImageNet scale).

1. throughput: ``zf.mine`` of every conv layer vs the plain forward that stops at the deepest
   one (the work mining cannot avoid), same data, same batches, interleaved in rotating order;
2. memory: peak RSS of a mining process at N and 10 N images (streamed from a dataset);
3. resume: a run cancelled at ~60 %, then resumed from its checkpoint, vs an uninterrupted run;
4. torch.distributed: 2 gloo processes (torchrun) vs 1 process, same job, results compared;
5. on a GPU (``--device cuda``): AlexNet and ResNet-50 at 224 over a folder of JPEGs written
   here, mining vs plain inference with the same DataLoader, projected time for 1.28 M images.

    python benchmarks/bench_mining.py [--quick] [--device cuda]
    python benchmarks/bench_mining.py --only throughput --images 2048 --size 96 --batch 32 \
        --threads 1 --repeats 7 --baseline /tmp/old   # 1. only, against another checkout
    python benchmarks/bench_mining.py --only throughput --processes 5   # 1. in 5 processes

Not in the full run: ``--only breakdown`` (the mining loop built up step by step against the
floor) and ``--only rows`` (the spatial maxima per map size, alone and inside a forward).
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


def load_baseline(root):
    """The zfwidgets package of another checkout (``root``: its repository root), imported as
    ``zfwidgets_baseline`` beside this one, to time both in one process (its imports inside
    the package are relative)."""
    import importlib.util

    pkg = Path(root).resolve() / "zfwidgets"
    spec = importlib.util.spec_from_file_location(
        "zfwidgets_baseline", pkg / "__init__.py", submodule_search_locations=[str(pkg)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["zfwidgets_baseline"] = module
    spec.loader.exec_module(module)
    return module


def minor_faults() -> int:
    """Page faults served without I/O so far in this process (fresh pages of the heap); 0
    where the platform does not count them."""
    try:
        import resource
    except ImportError:  # not on Windows
        return 0
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def rotations(names, repeats):
    """The order of each round: the first name (the floor) first, the others rotated by one
    place per round, so that none always runs right after the same one (on this machine the
    run after the whole network's forward was ~1.5% faster than the next one)."""
    first, others = names[0], list(names[1:])
    for r in range(repeats):
        j = r % len(others) if others else 0
        yield [first] + others[j:] + others[:j]


def timed_rounds(fns: dict, repeats: int) -> tuple[dict, dict, dict]:
    """Each function once (warm-up), then ``repeats`` rounds in :func:`rotations` order: per
    name, the wall times, CPU times and page faults of its timed runs."""
    for f in fns.values():
        f()
    wall, cpu, faults = ({k: [] for k in fns} for _ in range(3))
    for order in rotations(list(fns), repeats):
        for k in order:
            t, c, pf = time.perf_counter(), time.process_time(), minor_faults()
            fns[k]()
            wall[k].append(time.perf_counter() - t)
            cpu[k].append(time.process_time() - c)
            faults[k].append(minor_faults() - pf)
    return wall, cpu, faults


def paired(floor: list[float], runs: list[float]) -> float:
    """The median over rounds of floor / run, each run against its round's floor run (the
    rounds start with the floor): steadier under load than the ratio of the medians."""
    return statistics.median(f / m for f, m in zip(floor, runs))


def bench_throughput(device, quick, n=None, size=None, bs=None, repeats=None, baseline=None):
    n = n or (256 if quick else 2048)
    size, bs = size or 112, bs or 64
    repeats = repeats or (2 if quick else 5)
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

    def mined(lib=zf):
        return lambda: (
            lib.mine(model, x, layers=CONVS, k=9, batch_size=bs, progress=False),
            sync(device),
        )

    fns = {"floor": floor, "full": full, "mine": mined()}
    if baseline is not None:
        old = load_baseline(baseline)
        fns["baseline"] = mined(old)
        a, b = fns["mine"]()[0], fns["baseline"]()[0]
        same = all(
            torch.equal(getattr(a, f)[l], getattr(b, f)[l])
            for f in ("values", "indices", "positions")
            for l in CONVS
        )
    wall, cpu, faults = timed_rounds(fns, repeats)
    med = {k: statistics.median(v) for k, v in wall.items()}
    print(
        f"\n[throughput] AlexNet, {n} images {size}px, batch {bs}, all 5 conv layers, {device}, "
        f"{torch.get_num_threads()} threads, median of {repeats}; zfwidgets from "
        f"{Path(zf.__file__).parent.parent}"
    )
    row("plain forward stopping at features.10 (floor)", f"{n / med['floor']:.0f} img/s")
    row("plain forward of the whole network", f"{n / med['full']:.0f} img/s")
    row("zf.mine, all 5 conv layers", f"{n / med['mine']:.0f} img/s")
    names = ["mine"] + (["baseline"] if baseline is not None else [])
    if baseline is not None:
        row(f"zf.mine of {baseline} (baseline)", f"{n / med['baseline']:.0f} img/s")
    for name in names:
        pair, pair_cpu = paired(wall["floor"], wall[name]), paired(cpu["floor"], cpu[name])
        row(
            f"{name} / floor throughput (wall; paired per round; CPU time)",
            f"{med['floor'] / med[name]:.3f}x; {pair:.3f}x; {pair_cpu:.3f}x",
            "goal >= 0.95x",
        )
    if baseline is not None:
        row("the same atlas as the baseline (values, indices, positions)", str(same))
    # glibc hands the forward's large blocks back to the system after a batch, or keeps them,
    # depending on what else lies on the heap: a run that takes fresh pages every batch is
    # ~10% slower here, floor included; these counts tell which state each run was in
    row(
        "page faults per run, median (" + ", ".join(fns) + ")",
        ", ".join(f"{statistics.median(faults[k]):.0f}" for k in fns),
    )
    return {
        "names": names,
        "paired": {name: paired(wall["floor"], wall[name]) for name in names},
        "floor": n / med["floor"],
        "faults": {k: statistics.median(v) for k, v in faults.items()},
        "same": same if baseline is not None else None,
    }


def bench_throughput_processes(processes: int, argv: list[str]):
    """``--only throughput`` in ``processes`` fresh processes, one after the other: on this
    kind of virtual machine the paired ratio of the same code moves from 0.90 to 0.96 from one
    process to the next (with the page faults of the floor's forward), far more than between
    the rounds of one process, so a single process's figure is one draw. Prints each process's paired ratios
    and their median."""
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(processes):
            out = Path(tmp) / f"{i}.json"
            cmd = [sys.executable, str(Path(__file__).resolve()), *argv]
            cmd += ["--processes", "1", "--json", str(out)]  # the last --processes wins
            subprocess.run(cmd, check=True)
            runs.append(json.loads(out.read_text()))
    names = runs[0]["names"]
    print(f"\n[throughput over {processes} processes] paired mine / floor per process")
    row("floor per process (img/s)", ", ".join(f"{r['floor']:.0f}" for r in runs))
    row(
        "page faults per run per process (floor / mine)",
        ", ".join(f"{r['faults']['floor']:.0f} / {r['faults']['mine']:.0f}" for r in runs),
    )
    for name in names:
        ratios = [r["paired"][name] for r in runs]
        row(
            f"{name} / floor, paired (per process; median of the processes)",
            f"{', '.join(f'{v:.3f}' for v in ratios)}; {statistics.median(ratios):.3f}x",
            "goal >= 0.95x",
        )
    if "baseline" in names:
        row("the same atlas as the baseline in every process", str(all(r["same"] for r in runs)))


def bench_breakdown(n=None, size=None, bs=None, repeats=None):
    """The mining loop built up step by step, each timed against the floor run just before it
    in the same round (rotating order): one ``Capture`` per run with ``stop_at``, as ``mine``
    has; then the passes no exact method can skip (every output's spatial maximum, read in its
    hook, and the input's finite check); then all the per-batch work of ``TopK`` (the choice,
    the copies, the bound, the merges); then ``zf.mine`` itself (+ its fixed costs)."""
    from zfwidgets.atlas import mining
    from zfwidgets.engine.capture import Capture

    n, size, bs, repeats = n or 512, size or 96, bs or 32, repeats or 5
    model = alexnet(torch.device("cpu"))
    x = torch.randn(n, 3, size, size)
    stop, channels, _ = mining._trace(model, CONVS, x[:1])

    def loop(reduce, after=None, check=False):
        def run():
            state = {"idx": None, "out": {}}
            cap = Capture(model, CONVS, switches=False, reduce=reduce(state), stop_at=stop)
            with torch.no_grad():
                for s in range(0, n, bs):
                    xb = x[s : s + bs]
                    state["idx"] = torch.arange(s, min(n, s + bs))
                    if check:
                        mining._finite_rows(xb)
                    with cap:
                        model(xb)
                    if after is not None:
                        after(state)

        return run

    tops = {}

    def offer(state):
        return lambda name, out: state["out"].__setitem__(name, tops[name].offer(out, state["idx"]))

    def accept(state):
        mining.accept_all([tops[c] for c in CONVS], [state["out"][c] for c in CONVS])

    def full():
        tops.update({c: mining.TopK(channels[c], 9, torch.device("cpu")) for c in CONVS})
        loop(offer, accept, check=True)()
        for t in tops.values():
            t.state()

    def floor():
        with torch.no_grad():
            for s in range(0, n, bs):
                model.features[:11](x[s : s + bs])

    fns = {
        "floor": floor,
        "+ hooks doing nothing (one Capture, stop_at)": loop(lambda st: lambda name, out: None),
        "+ the passes: amax in the hooks, finite check": loop(
            lambda st: lambda name, out: mining._spatial_amax(out), check=True
        ),
        "+ choice, copies, bound, merges (TopK)": full,
        "zf.mine (+ its fixed costs)": lambda: zf.mine(
            model, x, layers=CONVS, k=9, batch_size=bs, progress=False
        ),
    }
    wall, cpu, _ = timed_rounds(fns, repeats)
    batches = -(-n // bs)
    print(
        f"\n[breakdown] AlexNet, {n} images {size}px, batch {bs}, CPU, "
        f"{torch.get_num_threads()} threads: wall ms per batch, median of {repeats}; floor / "
        "this paired per round (wall; CPU time)"
    )
    for k in fns:
        row(
            k,
            f"{statistics.median(wall[k]) * 1e3 / batches:.1f} ms",
            f"floor / this {paired(wall['floor'], wall[k]):.3f}x; "
            f"{paired(cpu['floor'], cpu[k]):.3f}x",
        )


def bench_rows(repeats=None):
    """The spatial maxima alone, per map size: torch's ``amax`` over (B, C, H, W) against
    ``_spatial_amax`` (halving, rows padded to 32, overlapping 32s, blocks of 32 plus the last
    32), on ~3M elements (as AlexNet's first layer at 112 px, batch 64), ns per element; for
    long rows, which ``_spatial_amax`` leaves to ``amax`` (inside a forward the blocks lost),
    the blocks alone too. Then the same inside a forward: see :func:`bench_rows_in_forward`."""
    from zfwidgets.atlas import mining

    repeats = repeats or 30
    print(
        f"\n[rows] spatial maxima of ~3M float32 elements, {torch.get_num_threads()} threads: "
        "ns per element, median of 5 timings of "
        f"{repeats} calls"
    )
    sizes = [(4, 4), (5, 5), (6, 6), (7, 7), (9, 9), (11, 11), (12, 12), (13, 13)]
    for h, w in sizes + [(23, 23), (27, 27), (28, 28), (56, 56)]:
        n = h * w
        x = torch.randn(max(1, 3_000_000 // (64 * n)), 64, h, w)
        scratch: dict = {}
        times = {}
        ways = [
            ("amax", lambda x=x: x.amax((2, 3))),
            ("zf", lambda x=x, scratch=scratch: mining._spatial_amax(x, scratch)),
        ]
        if n >= 256 and n % 32 >= 16:  # left to amax in a forward: the blocks alone, here
            ways.append(("blocks", lambda x=x, n=n: mining._blocks_max(x.view(-1, n))))
        for name, f in ways:
            f()
            runs = []
            for _ in range(5):
                t = time.perf_counter()
                for _ in range(repeats):
                    f()
                runs.append((time.perf_counter() - t) / repeats)
            times[name] = statistics.median(runs) * 1e9 / x.numel()
        blocks = ""
        if "blocks" in times:
            blocks = f"; blocks of 32 and the last 32 alone {times['amax'] / times['blocks']:.2f}x"
        row(
            f"{h}x{w} ({n} elements)",
            f"amax {times['amax']:.3f} ns, _spatial_amax {times['zf']:.3f} ns",
            f"{times['amax'] / times['zf']:.2f}x{blocks}",
        )


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


def bench_rows_in_forward(n=None, size=None, bs=None, repeats=None):
    """The spatial maxima inside AlexNet's forward, as ``zf.mine`` reads them: a ``Capture``
    reducing each conv layer's output times ``amax`` (the output read right after the layer
    wrote it), ``_spatial_amax`` and, over the whole output in one row, ``max`` (the cost of
    reading it once, the least any per-map reduction could take); ms per run of ``n`` images,
    summed per layer, over ``repeats`` runs in rotating order."""
    from zfwidgets.atlas import mining
    from zfwidgets.engine.capture import Capture

    n, size, bs, repeats = n or 2048, size or 112, bs or 64, repeats or 6
    model = alexnet(torch.device("cpu"))
    x = torch.randn(n, 3, size, size)
    trunk = model.features[:11]
    scratch: dict = {}
    ways = {
        "amax": lambda o: o.amax((2, 3)),
        "_spatial_amax": lambda o: mining._spatial_amax(o, scratch.setdefault(o.shape[1], {})),
        "max of the whole output": lambda o: o.max(),
    }
    spent: dict = {}

    def run(name):
        f = ways[name]

        def reduce(layer, out):
            t = time.perf_counter()
            f(out)
            key = (name, "x".join(str(d) for d in out.shape[1:]))
            spent[key] = spent.get(key, 0.0) + time.perf_counter() - t

        cap = Capture(trunk, [str(i) for i in (0, 3, 6, 8, 10)], switches=False, reduce=reduce)
        with torch.no_grad():
            for s in range(0, n, bs):
                with cap:
                    trunk(x[s : s + bs])

    names = list(ways)
    for name in names:  # warm-up
        run(name)
    spent.clear()
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            run(name)
    print(
        f"\n[rows in a forward] spatial maxima in hooks on AlexNet's 5 conv layers, {n} images "
        f"{size}px, batch {bs}, {torch.get_num_threads()} threads: ms per run, mean of {repeats}"
    )
    for name in names:
        per = {m: v / repeats * 1e3 for (w, m), v in spent.items() if w == name}
        detail = ", ".join(f"{m} {v:.1f}" for m, v in per.items())
        row(name, f"{sum(per.values()):.1f} ms", detail)


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
    bench_queue(quick)


def bench_queue(quick):
    """What the running top-k of one layer holds between merges over a long run, where the
    model's own memory would hide it: ``TopK.add`` of seeded (64, 384, 2, 2) outputs (a layer
    of 384 channels), the largest queue seen, at N and 5 N images, and the time spent in
    ``add`` alone (the queue's size is counted outside it, entry by entry as they come)."""
    from zfwidgets.atlas import mining

    def size(entry):
        return sum(v.numel() * v.element_size() for v in entry if isinstance(v, torch.Tensor))

    sizes = (20_000, 100_000) if quick else (200_000, 1_000_000)
    print("\n[memory] the queue of one layer's running top-k (384 channels, batches of 64)")
    peaks = {}
    for n in sizes:
        top = mining.TopK(384, 9, torch.device("cpu"))
        g = torch.Generator().manual_seed(1)
        peak = batches = held = counted = 0
        spent = 0.0
        for s in range(0, n, 64):
            out = torch.randn(64, 384, 2, 2, generator=g)
            t = time.perf_counter()
            top.add(out, torch.arange(s, s + 64))
            spent += time.perf_counter() - t
            if len(top._queue) < counted:  # merged
                held = counted = 0
            held += sum(size(e) for e in top._queue[counted:])
            counted = len(top._queue)
            if held > peak:
                peak, batches = held, counted
        peaks[n] = peak
        row(f"{n} images", f"{peak / 2**20:.2f} MiB in {batches} batches", f"{spent:.1f} s in add")
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
    p.add_argument(
        "--only",
        choices=["throughput", "breakdown", "rows", "memory", "resume", "distributed", "gpu"],
    )
    p.add_argument("--images", type=int, help="throughput: images (default 2048, quick 256)")
    p.add_argument("--size", type=int, help="throughput: image size (default 112)")
    p.add_argument("--batch", type=int, help="throughput: batch size (default 64)")
    p.add_argument("--repeats", type=int, help="throughput: timed rounds (default 5, quick 2)")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    p.add_argument("--baseline", help="throughput: also time the zfwidgets of this checkout")
    p.add_argument(
        "--processes",
        type=int,
        default=1,
        help="throughput: run it in this many fresh processes and give the median of their ratios",
    )
    p.add_argument("--json", help=argparse.SUPPRESS)  # a child of --processes: its results
    a = p.parse_args()
    if a.processes > 1:
        if a.only != "throughput":
            p.error("--processes needs --only throughput")
        bench_throughput_processes(a.processes, sys.argv[1:])
        return
    device = torch.device(a.device)
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    if a.only in (None, "throughput"):
        result = bench_throughput(device, a.quick, a.images, a.size, a.batch, a.repeats, a.baseline)
        if a.json:
            Path(a.json).write_text(json.dumps(result))
    if a.only == "breakdown":  # not part of the full run
        bench_breakdown(a.images, a.size, a.batch, a.repeats)
    if a.only == "rows":  # not part of the full run
        bench_rows(a.repeats)
        bench_rows_in_forward(a.images, a.size, a.batch)
    if a.only in (None, "memory"):
        bench_memory(a.quick)
    if a.only in (None, "resume"):
        bench_resume(a.quick)
    if a.only in (None, "distributed"):
        bench_distributed(a.quick)
    if device.type == "cuda" and a.only in (None, "gpu"):
        bench_gpu_folder(device, a.quick)


if __name__ == "__main__":
    main()
