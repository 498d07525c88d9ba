"""``python -m zfwidgets``: the batch jobs, for a GPU box or a cluster node.

    python -m zfwidgets mine --model torchvision.models:alexnet --weights alexnet.safetensors \\
        --data /data/imagenet/train --size 224 --layers features.0,features.3 --k 9 \\
        --out atlas/ --batch-size 256 --workers 8 --device cuda
    torchrun --nproc-per-node=8 -m zfwidgets mine ...        # the same job on 8 GPUs
    python -m zfwidgets site atlas/ site/ --data /data/imagenet/train   # a static site of it

Every argument is checked before the first image is read; a bad one exits with status 2 and
a message that says what was expected. Re-running the same command resumes a killed job
(the checkpoint lives beside the atlas in ``<out>.checkpoint`` unless ``--checkpoint`` says
otherwise; while it exists, running the finished command again mines nothing: delete it once
the atlas is written).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from pathlib import Path

from .base.images import IMAGENET_MEAN, IMAGENET_STD


def _csv(values: tuple[float, ...]) -> str:
    return ",".join(str(v) for v in values)


__all__ = ["main"]


class UsageError(Exception):
    """A bad argument: printed as ``zfwidgets <cmd>: error: ...``, exit status 2."""


def _import_model(spec: str):
    from torch import nn

    if ":" not in spec:
        raise UsageError(
            f"--model: expected MODULE:CALLABLE (e.g. torchvision.models:alexnet), got {spec!r}"
        )
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise UsageError(f"--model: expected MODULE:CALLABLE, got {spec!r}")
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as e:
        raise UsageError(
            f"--model: cannot import module {module_name!r} ({type(e).__name__}: {e})"
        ) from e
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise UsageError(f"--model: module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise UsageError(
            f"--model: {spec!r} is not callable (expected a function or class returning an nn.Module)"
        )
    try:
        model = obj()
    except Exception as e:
        raise UsageError(f"--model: calling {spec}() failed ({type(e).__name__}: {e})") from e
    if not isinstance(model, nn.Module):
        raise UsageError(
            f"--model: {spec}() returned a {type(model).__name__}, expected a torch.nn.Module"
        )
    return model


def _load_weights(model, path: str) -> None:
    import torch

    p = Path(path)
    if not p.is_file():
        raise UsageError(f"--weights: no file at {path!r}")
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(p))
        else:
            state = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as e:
        raise UsageError(
            f"--weights: {path!r} is neither a safetensors file nor a state_dict that "
            f"torch.load(weights_only=True) reads ({type(e).__name__}: {e})"
        ) from e
    if isinstance(state, dict):
        for key in ("state_dict", "model"):
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UsageError(f"--weights: expected a state_dict (names -> tensors) in {path!r}")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        raise UsageError(
            f"--weights: {path!r} does not fit the model: " + " ".join(first[:3])[:600]
        ) from e


def _device(spec: str):
    import torch

    try:
        device = torch.device(spec)
    except RuntimeError as e:
        raise UsageError(f"--device: expected cpu, cuda or cuda:N, got {spec!r}") from e
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"--device: {spec!r} asked for, but CUDA is not available here")
        if device.index is None:
            from .atlas.distributed import local_device

            device = local_device()
        if device.index >= torch.cuda.device_count():
            raise UsageError(
                f"--device: {device} does not exist ({torch.cuda.device_count()} GPUs)"
            )
    elif device.type != "cpu":
        raise UsageError(f"--device: expected cpu, cuda or cuda:N, got {spec!r}")
    return device


def _floats(text: str, name: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError as e:
        raise UsageError(f"{name}: expected 3 comma-separated numbers, got {text!r}") from e
    if len(values) != 3:
        raise UsageError(f"{name}: expected 3 comma-separated numbers, got {text!r}")
    return values


def _default_layers(model, size: int) -> list[str]:
    """Every Conv2d the forward calls, in call order (a shape-only pass on the meta device)."""
    from .engine.probe import called_convs

    order = called_convs(model.eval(), (1, 3, size, size))
    if not order:
        raise UsageError("--layers: the model has no nn.Conv2d; name the layers to mine")
    return order


def _mine_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "mine",
        help="the top-k atlas of a model over a folder of images (resumable, torchrun-aware)",
        description=(
            "Mine the k strongest activations of every feature map of the given layers over a "
            "folder of images, save the atlas to --out and render its patches and deconvnet "
            "reconstructions. Re-running the same command resumes a killed job."
        ),
    )
    p.add_argument("--model", required=True, help="MODULE:CALLABLE returning an nn.Module")
    p.add_argument(
        "--weights", help="a .safetensors file or a state_dict (torch.load, weights_only)"
    )
    p.add_argument("--data", required=True, help="a folder of images (class sub-folders or flat)")
    p.add_argument("--size", type=int, default=224, help="input side in pixels (default 224)")
    p.add_argument("--layers", help="comma-separated dotted module names (default: every conv)")
    p.add_argument("--k", type=int, default=9, help="hits per feature map (default 9)")
    p.add_argument("--out", required=True, help="folder the atlas is written to")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=4, help="DataLoader worker processes")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (cuda = cuda:LOCAL_RANK)")
    p.add_argument("--checkpoint", help="checkpoint folder (default <out>.checkpoint)")
    p.add_argument(
        "--chunk-size",
        type=int,
        default=None,
        help="images per checkpointed chunk (default: from the number of images, or the "
        "checkpoint's own)",
    )
    p.add_argument("--mean", default=_csv(IMAGENET_MEAN), help="normalisation mean (3 numbers)")
    p.add_argument("--std", default=_csv(IMAGENET_STD), help="normalisation std (3 numbers)")
    p.add_argument("--no-render", action="store_true", help="save the top-k only, no images")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def _run_mine(args) -> int:
    import torch

    from .atlas import distributed
    from .atlas.folder import ImageFolder
    from .atlas.mining import mine

    for name, value, lo in (
        ("--size", args.size, 8),
        ("--k", args.k, 1),
        ("--batch-size", args.batch_size, 1),
        ("--workers", args.workers, 0),
    ):
        if value < lo:
            raise UsageError(f"{name}: expected an int >= {lo}, got {value}")
    if args.chunk_size is not None and args.chunk_size < 1:
        raise UsageError(f"--chunk-size: expected a positive int, got {args.chunk_size}")
    mean, std = _floats(args.mean, "--mean"), _floats(args.std, "--std")
    if any(s <= 0 for s in std):
        raise UsageError(f"--std: expected positive numbers, got {args.std!r}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out: {args.out!r} exists and is not a folder")
    device = _device(args.device)
    data_dir = Path(args.data)
    if not data_dir.is_dir():
        raise UsageError(f"--data: expected a folder of images, got {args.data!r} (not a folder)")
    try:
        data = ImageFolder(data_dir, size=args.size, mean=mean, std=std)
    except ValueError as e:
        raise UsageError(f"--data: {e}") from e
    if args.k > len(data):
        raise UsageError(f"--k: expected at most the number of images ({len(data)}), got {args.k}")
    model = _import_model(args.model)
    if args.weights:
        _load_weights(model, args.weights)
    model = model.to(device).eval()
    if args.layers:
        layers = [s.strip() for s in args.layers.split(",") if s.strip()]
        names = dict(model.named_modules())
        unknown = [n for n in layers if n not in names or not n]
        if unknown:
            from .base.layers import resolve_layer

            try:
                resolve_layer(model, unknown[0])
            except ValueError as e:
                raise UsageError(f"--layers: {e}") from e
    else:
        layers = _default_layers(model, args.size)
    checkpoint = (
        Path(args.checkpoint) if args.checkpoint else out.with_name(out.name + ".checkpoint")
    )
    if checkpoint.resolve() == out.resolve() or out.resolve() in checkpoint.resolve().parents:
        raise UsageError(
            f"--checkpoint: must lie outside --out ({args.out!r}), got {str(checkpoint)!r}"
        )
    ctx = distributed.context(device)
    start = time.perf_counter()
    try:
        atlas = mine(
            model,
            data,
            layers=layers,
            k=args.k,
            batch_size=args.batch_size,
            num_workers=args.workers,
            checkpoint=checkpoint,
            chunk_size=args.chunk_size,
            progress=not args.quiet,
        )
    except (ValueError, TypeError) as e:
        raise UsageError(str(e)) from e
    elapsed = time.perf_counter() - start
    skipped = atlas.provenance.get("skipped", [])
    if ctx.is_main:
        atlas.save(out)
    ctx.barrier()
    if not args.no_render:  # every rank renders its share of the units
        if not ctx.is_main:
            from .atlas.core import Atlas

            atlas = Atlas.load(out, model=model, data=data)
        atlas.render(batch_size=args.batch_size, device=device, progress=not args.quiet)
    if ctx.is_main:
        n = len(data)
        print(
            f"mined {n - len(skipped)} images over {len(layers)} layers in {elapsed:.1f} s "
            f"({(n - len(skipped)) / max(elapsed, 1e-9):.0f} images/s on {ctx.world} process(es)); "
            f"atlas written to {out}",
            file=sys.stderr,
        )
        if skipped:
            print(f"skipped {len(skipped)} unreadable image(s):", file=sys.stderr)
            for i in skipped[:20]:
                print(f"  {data.files[i]}", file=sys.stderr)
            if len(skipped) > 20:
                print(f"  ... and {len(skipped) - 20} more", file=sys.stderr)
    ctx.barrier()
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    return 0


def _site_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "site",
        help="a static site of a stored atlas (opens from file:// or any web server)",
        description=(
            "Write a folder with index.html, one JS and one CSS bundle, the atlas's tiles and a "
            "manifest: the layers, a whole-layer overview and every unit's top-k patches beside "
            "their deconvnet reconstructions, browsable with no kernel and no network."
        ),
    )
    p.add_argument("atlas", help="an atlas folder written by atlas.save() / mine --out")
    p.add_argument("out", help="the site folder (new, empty, or a site written before)")
    p.add_argument(
        "--data",
        help="the image folder the atlas was mined over: its class sub-folders name the hits",
    )
    p.add_argument(
        "--classes", help="a text file of class names, one per line (label 0 first), or JSON"
    )
    p.add_argument("--title", help="the page title")
    p.add_argument("--copy", action="store_true", help="copy the tiles instead of hard-linking")
    return p


def _read_classes(path: str) -> list[str]:
    import json

    p = Path(path)
    if not p.is_file():
        raise UsageError(f"--classes: no file at {path!r}")
    if p.stat().st_size > 64 << 20:
        raise UsageError(f"--classes: {path!r} is larger than 64 MB; expected a list of names")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"--classes: cannot read {path!r} as UTF-8 text ({e})") from e
    if p.suffix == ".json":
        try:
            names = json.loads(text)
        except json.JSONDecodeError as e:
            raise UsageError(f"--classes: {path!r} is not valid JSON ({e})") from e
        if isinstance(names, dict):  # {"0": "tench", ...}
            try:
                names = [names[str(i)] for i in range(len(names))]
            except KeyError as e:
                raise UsageError(
                    f"--classes: expected keys 0..{len(names) - 1} in {path!r}, missing {e}"
                ) from e
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise UsageError(f"--classes: expected a JSON list of strings in {path!r}")
        return names
    return [line.rstrip("\r") for line in text.split("\n") if line.strip()]


def _run_site(args) -> int:
    from .atlas.core import Atlas

    src = Path(args.atlas)
    if not src.exists():
        raise UsageError(f"atlas: no folder at {args.atlas!r}")
    if not src.is_dir():
        raise UsageError(
            f"atlas: {args.atlas!r} is a file; a site is made from an atlas folder "
            "(atlas.save('atlas/') or mine --out)"
        )
    classes = _read_classes(args.classes) if args.classes else None
    data = None
    try:
        probe = Atlas.load(src)
    except (ValueError, FileNotFoundError) as e:
        raise UsageError(f"atlas: {args.atlas!r} cannot be read: {e}") from e
    if args.data:
        from .atlas.folder import ImageFolder

        if not Path(args.data).is_dir():
            raise UsageError(f"--data: expected a folder of images, got {args.data!r}")
        try:
            data = ImageFolder(args.data, size=max(8, min(probe.input_size)))
        except ValueError as e:
            raise UsageError(f"--data: {e}") from e
        try:
            probe = Atlas.load(src, data=data)
        except ValueError as e:
            raise UsageError(f"--data: {e}") from e
    try:
        report = probe.export_site(args.out, classes=classes, title=args.title, link=not args.copy)
    except (ValueError, TypeError) as e:
        raise UsageError(str(e)) from e
    print(report.summary(), file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m zfwidgets", description=__doc__.splitlines()[0]
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    _mine_parser(sub)
    _site_parser(sub)
    args = parser.parse_args(argv)
    try:
        if args.command == "mine":
            return _run_mine(args)
        if args.command == "site":
            return _run_site(args)
    except UsageError as e:
        print(f"zfwidgets {args.command}: error: {e}", file=sys.stderr)
        return 2
    parser.error(f"unknown command {args.command!r}")
    return 2
