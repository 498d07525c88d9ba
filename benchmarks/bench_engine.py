"""Engine benchmarks, side by side in one run: capture, mining, reconstructions.

Each figure is paired with its floor (the plain forward pass, or forward + backward) and,
where one exists, the peer (Captum), and printed as ratios. Absolute times drift ~30% on
shared 2-core machines; the ratios are measured back to back, interleaved, median of repeats.

    python benchmarks/bench_engine.py            # full run (~5 minutes on 2 CPU cores)
    python benchmarks/bench_engine.py --quick    # smoke run
    python benchmarks/bench_engine.py --device cuda
    python benchmarks/bench_engine.py --only activations   # one section
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch
import torchvision
from torch import nn

import zfwidgets as zf
from zfwidgets.base.layers import eval_mode
from zfwidgets.engine.capture import Capture, default_layers

warnings.filterwarnings("ignore")


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device, repeats=3):
    """Median seconds of ``repeats`` calls after one warm-up."""
    fn()
    sync(device)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def paired(fns: dict, device, repeats=3):
    """Interleave the candidates so drift hits them alike; median seconds each."""
    for f in fns.values():
        f()
    sync(device)
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            t = time.perf_counter()
            f()
            sync(device)
            times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def row(label, value, unit="", note=""):
    print(f"  {label:<58} {value:>10.4g} {unit:<6} {note}")


def bench_capture(model, x, device, repeats):
    layers = default_layers(model)

    def plain():
        with torch.no_grad():
            model(x)

    def captured():
        with torch.no_grad(), zf.capture(model, layers):
            model(x)

    t = paired({"plain": plain, "capture": captured}, device, repeats)
    print(
        f"capture of every conv/ReLU/pool/linear ({len(layers)} layers) with switches, batch {len(x)}"
    )
    row("plain forward", t["plain"] * 1e3, "ms")
    row("forward inside zf.capture", t["capture"] * 1e3, "ms")
    row("ratio capture / plain (goal <= 1.05)", t["capture"] / t["plain"], "x")


def bench_mining(model, data, device, repeats):
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    bs = 32

    def plain():
        with torch.no_grad():
            for s in range(0, len(data), bs):
                model(data[s : s + bs])

    def mined():
        zf.mine(model, data, layers=convs, k=9, batch_size=bs, progress=False)

    t = paired({"plain": plain, "mine": mined}, device, repeats)
    n = len(data)
    print(f"mining top-9 of all {len(convs)} conv layers over {n} images (batch {bs})")
    row("plain inference throughput", n / t["plain"], "img/s")
    row("zf.mine throughput", n / t["mine"], "img/s")
    row("ratio mine / plain throughput (goal >= 0.9)", t["plain"] / t["mine"], "x")


def floor_time(model, x, layer, units, device, ours_strategy):
    """One forward per distinct image + a backward restricted to each unit's crop (no forward)."""
    imgs = torch.unique(units[:, 0])

    def fwd():
        with torch.no_grad():
            model(x[imgs])

    t_fwd = timed(fwd, device, repeats=1)
    rf = zf.receptive_field(model, layer, input_size=tuple(x.shape[2:]))
    from zfwidgets.engine.backprop import _crop_windows

    H, W = x.shape[2:]
    total_bwd = 0.0
    for s in range(0, len(units), 32):
        u = units[s : s + 32]
        cy, hy = _crop_windows(u[:, 2], rf.offset[0], rf.stride[0], rf.size[0], H)
        cx, wx = _crop_windows(u[:, 3], rf.offset[1], rf.stride[1], rf.size[1], W)
        crops = torch.stack(
            [
                x[int(n), :, int(a) : int(a) + hy, int(b) : int(b) + wx]
                for n, a, b in zip(u[:, 0], cy, cx)
            ]
        )
        crops.requires_grad_(True)
        with (
            eval_mode(model),
            Capture(
                model, [layer], switches=False, keep_graph=True, stop_at=(layer, rf.calls - 1)
            ) as cap,
        ):
            model(crops)
        out = cap.activations[layer]
        seed = torch.zeros_like(out)
        seed[
            torch.arange(len(u)),
            u[:, 1],
            u[:, 2] - cy // rf.stride[0],
            u[:, 3] - cx // rf.stride[1],
        ] = 1
        sync(device)
        t = time.perf_counter()
        torch.autograd.grad(out, crops, seed)
        sync(device)
        total_bwd += time.perf_counter() - t
    return t_fwd + total_bwd


def bench_reconstructions(model, device, quick, repeats):
    layer = "features.10"  # AlexNet conv5
    module = dict(model.named_modules())[layer]
    g = torch.Generator().manual_seed(0)
    n_img = 8 if quick else 64
    x = torch.randn(n_img, 3, 224, 224, generator=g).to(device)
    with torch.no_grad(), zf.capture(model, [layer]) as cap:
        model(x)
    act = cap.activations[layer]
    C, h, w = act.shape[1:]

    def units_for(n_units, per_image):
        rows = []
        for i in range(n_units):
            n = (i // per_image) % n_img if per_image else i % n_img
            c = int(torch.randint(C, (1,), generator=g))
            pos = int(act[n, c].flatten().argmax())
            rows.append((n, c, pos // w, pos % w))
        return torch.tensor(rows)

    cases = [
        ("many units share an image", units_for(n_img * 9 // 2, 9 // 2 + 1), 10.0),
        ("every unit from its own image (atlas)", units_for(n_img, 1), 5.0),
    ]
    sample = 4 if quick else 8
    from captum.attr import NeuronDeconvolution

    nd = NeuronDeconvolution(model, module)
    for label, units, goal in cases:
        K = len(units)
        picked = units[:sample].tolist()

        def ours(u=units):
            zf.deconv(model, x, layer=layer, units=u)

        def captum(p=picked):
            for n, c, yy, xx in p:
                nd.attribute(x[n : n + 1], neuron_selector=(c, yy, xx))

        t = paired({"ours": ours, "captum": captum}, device, repeats=1 if quick else 3)
        t_ours, t_captum = t["ours"] / K, t["captum"] / sample
        t_floor = floor_time(model, x, layer, units, device, "crop")
        print(
            f"AlexNet conv5 deconv at 224x224: {label}: {K} units over {len(torch.unique(units[:, 0]))} images"
        )
        row("zf.deconv per unit", t_ours * 1e3, "ms")
        row(f"Captum NeuronDeconvolution loop per unit ({sample} sampled)", t_captum * 1e3, "ms")
        row(f"speed-up vs Captum (goal >= {goal:g} on CPU)", t_captum / t_ours, "x")
        row("floor: fwd per image + cropped bwd per unit, per unit", t_floor / K * 1e3, "ms")
        row("ratio zf.deconv / floor (goal <= 2)", t_ours * K / t_floor, "x")

    # one unit for the current image (the Explorer's click)
    x1 = x[:1]

    def fwd_bwd():
        xi = x1.detach().clone().requires_grad_(True)
        with eval_mode(model):
            out = model(xi)
        torch.autograd.grad(out[0, 0], xi)

    def click():
        zf.deconv(model, x1, layer=layer, channel=7)

    t = paired({"floor": fwd_bwd, "ours": click}, device, repeats)
    print("one unit for the current image (the Explorer's click), AlexNet conv5, 1 image")
    row("plain forward + backward of the image", t["floor"] * 1e3, "ms")
    row("zf.deconv(channel=...)", t["ours"] * 1e3, "ms")
    row("ratio (goal <= 1.2)", t["ours"] / t["floor"], "x")


def bench_activations(device, quick, repeats):
    """The rules on modern activations (GELU, SiLU): one unit of one image, the Explorer's click.

    Floor: a plain forward + backward of the image. Captum's NeuronDeconvolution is timed for
    reference; it overrides nn.ReLU only, so on these networks it returns the plain gradient.
    """
    from captum.attr import NeuronDeconvolution

    size = 160 if quick else 224
    for name, layer in (("convnext_tiny", "features.5.4"), ("efficientnet_b0", "features.5")):
        torch.manual_seed(0)
        model = getattr(torchvision.models, name)(weights=None).eval().to(device)
        x1 = torch.randn(1, 3, size, size, device=device)
        module = model.get_submodule(layer)
        with torch.no_grad(), zf.capture(model, [layer]) as cap:
            model(x1)
        pos = int(cap.activations[layer][0, 7].flatten().argmax())
        w = cap.activations[layer].shape[3]
        nd = NeuronDeconvolution(model, module)

        def fwd_bwd(model=model, x1=x1):
            xi = x1.detach().clone().requires_grad_(True)
            with eval_mode(model):
                out = model(xi)
            torch.autograd.grad(out[0, 0], xi)

        fns = {"floor": fwd_bwd}
        for rule in ("saliency", "deconv", "guided"):
            fns[rule] = lambda rule=rule, model=model, x1=x1, layer=layer: zf.backprop(
                model, x1, layer=layer, channel=7, rule=rule
            )
        fns["captum"] = lambda nd=nd, x1=x1, unit=(7, pos // w, pos % w): nd.attribute(
            x1, neuron_selector=unit
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # EfficientNet's SE sigmoids: NoRuleWarning
            t = paired(fns, device, repeats)
        print(f"one unit of {name} {layer} at {size}x{size}, 1 image (rules on GELU / SiLU)")
        row("plain forward + backward of the image", t["floor"] * 1e3, "ms")
        for rule in ("saliency", "deconv", "guided"):
            row(f"zf.backprop(rule={rule!r})", t[rule] * 1e3, "ms")
            row(f"  ratio {rule} / floor", t[rule] / t["floor"], "x")
        row("Captum NeuronDeconvolution (plain gradient here)", t["captum"] * 1e3, "ms")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument(
        "--only",
        choices=["capture", "mining", "reconstructions", "activations"],
        help="run one section",
    )
    args = p.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    print(
        f"# zfwidgets engine benchmarks on {device} ({torch.get_num_threads()} threads), torch {torch.__version__}"
    )
    model = torchvision.models.alexnet(weights=None).eval().to(device)
    repeats = 2 if args.quick else 5
    batch = 4 if args.quick else 16
    x = torch.randn(batch, 3, 224, 224, device=device)
    if args.only in (None, "capture"):
        # ~0.1 s a call on 2 CPU cores, where 5 repeats drift by +-4%: many more, interleaved
        bench_capture(model, x, device, 8 if args.quick else 60)
    if args.only in (None, "mining"):
        data = torch.randn(16 if args.quick else 128, 3, 224, 224, device=device)
        bench_mining(model, data, device, 1 if args.quick else 3)
    if args.only in (None, "reconstructions"):
        bench_reconstructions(model, device, args.quick, repeats)
    if args.only in (None, "activations"):
        bench_activations(device, args.quick, repeats)


if __name__ == "__main__":
    main()
