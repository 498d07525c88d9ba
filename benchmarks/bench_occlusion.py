"""Occlusion on ZFNet, AlexNet or ResNet-18, side by side: the floor, zf.occlusion and Captum's Occlusion.

docs/method.md Sec. 3.5, Fig. 7. One image, a grey square (the image's per-channel mean) slid over it:

(a) floor: a plain batched forward of exactly the same occluded images (built beforehand, not
    timed), in the chunk size zf.occlusion chose;
(b) zf.occlusion: the three maps (feature-map total, target probability, top class) from one
    sweep that recomputes only each square's forward cone (the incremental path), chunk size
    measured on the warm-up call;
(c) captum.attr.Occlusion for the target probability only, at perturbations_per_eval 1, 16
    and 64.

``--widget`` compares instead, in one run, the OcclusionMap widget's sweep (``set_image(x)`` then
``wait()``: the sweep runs in the widget's job-runner worker thread) with ``zf.occlusion`` called
from the main thread, same image, window, stride and target (interleaved repeats, medians). On a
machine shared with other jobs, set ``OMP_WAIT_POLICY=PASSIVE``: OpenMP threads spinning on
busy cores slowed the main thread's calls (not the worker's) by up to 2x there.

Usage::

    .venv/bin/python benchmarks/bench_occlusion.py            # 224x224, window 32, stride 16
    .venv/bin/python benchmarks/bench_occlusion.py --model alexnet --captum 16
    .venv/bin/python benchmarks/bench_occlusion.py --model resnet18 --stride 8
    .venv/bin/python benchmarks/bench_occlusion.py --device cuda   # on a GPU
    .venv/bin/python benchmarks/bench_occlusion.py --quick    # a tiny run that checks it works
    .venv/bin/python benchmarks/bench_occlusion.py --widget --repeats 5  # widget vs zf.occlusion
    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_occlusion.py --widget  # shared CPUs
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torchvision  # noqa: E402

from zfwidgets.engine.occlusion import occlusion  # noqa: E402
from zfwidgets.models import zfnet  # noqa: E402


def interleaved(
    methods: dict[str, Callable[[], object]], repeats: int, sync: Callable[[], None]
) -> tuple[dict[str, list[float]], dict[str, object]]:
    """Run the methods in turn (a, b, c, ... then again) ``repeats`` times, so that drift in the
    machine's speed favours none of them; each method's times and its last output."""
    times: dict[str, list[float]] = {key: [] for key in methods}
    outputs: dict[str, object] = {}
    for _ in range(repeats):
        for key, fn in methods.items():
            sync()
            start = time.perf_counter()
            outputs[key] = fn()
            sync()
            times[key].append(time.perf_counter() - start)
    return times, outputs


def occluded_images(x: torch.Tensor, rows: list[int], cols: list[int], window: int) -> torch.Tensor:
    """Every occluded copy of x[0], rows-major, filled with the per-channel mean: (P, C, H, W)."""
    fill = x[0].mean(dim=(1, 2)).reshape(-1, 1, 1)
    out = x.repeat(len(rows) * len(cols), 1, 1, 1)
    for i, r in enumerate(rows):
        for j, c in enumerate(cols):
            out[i * len(cols) + j, :, r : r + window, c : c + window] = fill
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="96x96 image, 9 positions")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats (median)")
    parser.add_argument("--size", type=int, default=None, help="image side (default 224)")
    parser.add_argument("--window", type=int, default=32, help="square side (default 32)")
    parser.add_argument("--stride", type=int, default=None, help="step (default 16)")
    parser.add_argument("--model", choices=["zfnet", "alexnet", "resnet18"], default="zfnet")
    parser.add_argument(
        "--device", default="cpu", help="torch device (cpu, cuda, cuda:1...); default cpu"
    )
    parser.add_argument(
        "--captum", default="1,16,64", help="Captum perturbations_per_eval values ('' for none)"
    )
    parser.add_argument(
        "--widget",
        action="store_true",
        help="OcclusionMap.set_image + wait() (worker thread) vs zf.occlusion (main thread) only",
    )
    args = parser.parse_args()
    size = args.size or (96 if args.quick else 224)
    window, stride = args.window, args.stride or (32 if args.quick else 16)
    repeats = args.repeats or 3
    captum_ppe = [int(v) for v in args.captum.split(",") if v.strip()]

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device: {args.device!r} asked for, but torch sees no CUDA device")
    torch.manual_seed(0)
    if args.model == "zfnet":
        model = zfnet()
    elif args.model == "alexnet":
        model = torchvision.models.alexnet(weights=None)
    else:
        model = torchvision.models.resnet18(weights=None)
    model = model.eval().to(device)
    x = torch.randn(1, 3, size, size, device=device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    if args.widget:
        widget_vs_call(model, x, args.model, window, stride, repeats, sync)
        return

    # Warm-up, and the choices the floor reuses (positions, chunk size, target).
    res = occlusion(model, x, window=window, stride=stride)
    rows, cols = res.rows.tolist(), res.cols.tolist()
    chunk, target = res.batch_size, int(res.target[0])
    images = occluded_images(x, rows, cols, window)

    def floor():
        with torch.no_grad():
            return torch.cat([model(images[i : i + chunk]) for i in range(0, len(images), chunk)])

    def ours():
        return occlusion(model, x, window=window, stride=stride)

    try:
        from captum.attr import Occlusion
    except ImportError:  # pragma: no cover - captum is a test dependency
        Occlusion = None
        captum_ppe = []
    if stride > window:  # Captum refuses strides larger than the window
        captum_ppe = []

    def captum(ppe: int):
        def run():
            occ = Occlusion(lambda inp: torch.softmax(model(inp), dim=1)[:, target])
            with torch.no_grad():
                return occ.attribute(
                    x,
                    sliding_window_shapes=(3, window, window),
                    strides=(3, stride, stride),
                    baselines=res.fill[:, :, None, None].expand_as(x).contiguous(),
                    perturbations_per_eval=ppe,
                )

        return run

    # Interleaved repeats (a, b, c1, c2, ... then again), so that drift in the machine's speed
    # does not favour whichever method runs first; the median of each.
    methods: dict[str, Callable[[], object]] = {"a": floor, "b": ours}
    methods.update({f"c{ppe}": captum(ppe) for ppe in captum_ppe})
    times, outputs = interleaved(methods, repeats, sync)
    t = {key: statistics.median(v) for key, v in times.items()}
    results = [
        ("(a) floor: batched forward of the occluded images", t["a"], ""),
        ("(b) zf.occlusion, 3 maps", t["b"], f"{t['b'] / t['a']:.2f}x (a)"),
    ]
    results += [
        (
            f"(c) captum Occlusion, perturbations_per_eval={ppe}",
            t[f"c{ppe}"],
            f"{t[f'c{ppe}'] / t['b']:.2f}x (b)",
        )
        for ppe in captum_ppe
    ]
    # Sanity: the floor's probabilities are ours, and Captum's map is ours spread over pixels.
    res = outputs["b"]
    p = torch.softmax(outputs["a"], dim=1)[:, target].reshape(len(rows), len(cols)).cpu()
    diff_floor = float((p - res.probability[0].cpu()).abs().max())
    diff_captum = None
    if captum_ppe and (size - window) % stride == 0:
        drop = (res.baseline_probability[0] - res.probability[0]).cpu()
        total, count = torch.zeros(size, size), torch.zeros(size, size)
        for i, r in enumerate(rows):
            for j, c in enumerate(cols):
                total[r : r + window, c : c + window] += drop[i, j]
                count[r : r + window, c : c + window] += 1
        attr = outputs[f"c{captum_ppe[0]}"].cpu()
        diff_captum = float((attr[0, 0] - total / count).abs().max())

    print(
        f"{args.model}, 1 image {size}x{size}, window {window}, stride {stride}: "
        f"{len(rows)}x{len(cols)} = {len(rows) * len(cols)} occluded images; "
        f"chunk {chunk}; {device}; torch {torch.__version__}, {torch.get_num_threads()} threads; "
        f"median of {repeats}"
    )
    width = max(len(name) for name, _, _ in results)
    print(f"{'method':<{width}}  {'seconds':>8}  ratio")
    for name, seconds, ratio in results:
        print(f"{name:<{width}}  {seconds:8.3f}  {ratio}")
    print(f"max |p_floor - p_ours| = {diff_floor:.2e}", end="")
    if diff_captum is not None:
        print(f"; max |captum - ours as a pixel map| = {diff_captum:.2e}")
    else:
        print()


def widget_vs_call(
    model: torch.nn.Module,
    x: torch.Tensor,
    name: str,
    window: int,
    stride: int,
    repeats: int,
    sync: Callable[[], None],
) -> None:
    """OcclusionMap(model, ...).set_image(x) + wait() against zf.occlusion(model, x, ...)."""
    from zfwidgets.widgets.occlusion_map import OcclusionMap

    res = occlusion(model, x, window=window, stride=stride)  # warm-up; picks the chunk size
    target = int(res.target[0])
    # No event loop runs here: the constructor sweeps inline; set_image sweeps in the runner's
    # worker thread and wait() returns once the maps are applied.
    widget = OcclusionMap(model, torch.flip(x, [3]), window=window, stride=stride, target=target)

    def call():
        return occlusion(model, x, window=window, stride=stride, target=target)

    def widget_sweep():
        widget.set_image(x)
        widget.wait()
        return widget.result

    methods: dict[str, Callable[[], object]] = {"call": call, "widget": widget_sweep}
    times, outputs = interleaved(methods, repeats, sync)
    widget.close()
    t = {key: statistics.median(v) for key, v in times.items()}
    ours, shown = outputs["call"], outputs["widget"]
    diff = float((ours.probability - shown.probability).abs().max())
    diff_act = float((ours.activation - shown.activation).abs().max())
    nr, nc = ours.probability.shape[1:]
    print(
        f"{name}, 1 image {x.shape[2]}x{x.shape[3]}, window {window}, stride {stride}: "
        f"{nr}x{nc} = {nr * nc} occluded images; target {target}; {x.device}; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; median of {repeats}"
    )
    rows = [
        (f"zf.occlusion from the main thread (chunk {ours.batch_size})", t["call"], ""),
        (
            f"OcclusionMap.set_image + wait(), worker thread (chunk {shown.batch_size})",
            t["widget"],
            f"{t['widget'] / t['call']:.2f}x zf.occlusion",
        ),
    ]
    width = max(len(label) for label, _, _ in rows)
    print(f"{'method':<{width}}  {'seconds':>8}  ratio")
    for label, seconds, ratio in rows:
        print(f"{label:<{width}}  {seconds:8.3f}  {ratio}")
    print(f"max |p_widget - p_call| = {diff:.2e}; max |act_widget - act_call| = {diff_act:.2e}")
    print(
        "each repeat (s): "
        + "; ".join(f"{key} " + " ".join(f"{v:.2f}" for v in vals) for key, vals in times.items())
    )


if __name__ == "__main__":
    main()
