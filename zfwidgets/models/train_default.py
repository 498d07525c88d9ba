"""Train the bundled default model: ``python -m zfwidgets.models.train_default``.

Trains :func:`~zfwidgets.models.default.zfnet_small` on the 60,000 Fashion-MNIST training
images (Debian's ``dataset-fashion-mnist``, read from ``--data``) the way docs/method.md Sec. 1
describes, scaled to a few CPU minutes:

- weights of conv1 drawn from N(0, 0.01) and every bias set to 0, as in the paper; the other
  layers N(0, sqrt(2 / fan_in)) (``--init paper`` draws them all from N(0, 0.01), which
  trains too slowly for this budget);
- SGD, batch 128, Nesterov momentum 0.9, weight decay 5e-4, dropout 0.5 on fc6/fc7, random
  horizontal flips; the learning rate divided by 10 twice, after 60% and 85% of the
  steps (the paper's drops "by hand when validation error plateaus", on a fixed schedule);
- the paper's RMS filter renormalisation after every step (:func:`zfwidgets.engine.filters.
  renormalize_filters_`): any convolution filter whose RMS exceeds ``--radius`` is rescaled
  to it. The paper's radius 0.1 on 7x7x3 filters bounds each filter's L2 norm, its gain on
  the input, at 0.1 * sqrt(147) = 1.21; the same bound on our 5x5x1 filters (inputs scaled to
  unit variance instead of [-128, 128]) is the radius 1.21 / 5 = 0.24 (``DEFAULT_RADIUS``).
  It binds on layer 1 only, the layer the paper introduced it for (the deeper filters stay
  below RMS 0.12): in the default run it rescaled a conv1 filter 438 times (of 1884 steps x 16
  filters). In a 400-step trial at lr 0.1 without it, one conv1 filter grew to RMS 0.6 while
  the others stayed below 0.23 (the domination of the paper's Fig. 6 (a)); lr 0.1 diverged
  with or without it, and at lr 0.05 it made no measurable difference to accuracy in 400 steps;
- checkpoints at the paper's epochs 1, 2, 5, 10, 20, 30, 40 and 64 of 64 (docs/method.md Sec. 3.2,
  Fig. 4, mapped onto this schedule: checkpoint ``p`` is taken after ``p / 64`` of the steps.

Writes into ``--out`` (default: the package's ``models/weights``):

- ``zfnet_small_fashion_mnist.safetensors``: the final weights (float32);
- ``zfnet_small_fashion_mnist_checkpoints.safetensors``: the checkpoints before the last,
  float16, keys ``p{paper_epoch:02d}/{parameter}``;
- ``zfnet_small_fashion_mnist.json``: configuration, per-epoch train loss and test accuracy,
  the checkpoint list, the final accuracy on the 10,000 test images and on the bundled ones;
- ``zfnet_small_fashion_mnist_atlas.safetensors``: the top-9 atlas (docs/method.md Sec. 3.1, Fig. 2)
  of every conv layer over the bundled images, without images (no pickle anywhere).

Reproducible: seeded (``--seed``), torch threads fixed (``--threads``); the same machine and
torch version give the same tensors.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..data import CLASSES, MEAN, STD, FashionMNISTImages, load_fashion_mnist_images, normalize
from ..engine.filters import filter_rms, renormalize_filters_
from .default import ZFNetSmall, zfnet_small

__all__ = ["PAPER_EPOCHS", "checkpoint_steps", "init_", "main", "read_idx", "train"]

#: The epochs of the paper's Fig. 4, out of 64 (docs/method.md Sec. 3.2).
PAPER_EPOCHS: tuple[int, ...] = (1, 2, 5, 10, 20, 30, 40, 64)
PAPER_TOTAL = 64
DATA_DIR = Path("/usr/share/datasets/fashion-mnist")
OUT_DIR = Path(__file__).resolve().parent / "weights"
NAME = "zfnet_small_fashion_mnist"
#: Filter RMS radius: the paper's L2-norm bound 0.1 * sqrt(7 * 7 * 3) on 5x5x1 filters.
DEFAULT_RADIUS = 0.24
CONV_LAYERS = ("features.0", "features.4", "features.8", "features.10", "features.12")


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (``.gz`` or plain), the format of MNIST and Fashion-MNIST.

    Returns
    -------
    ndarray, uint8, shape from the header (images (N, 28, 28), labels (N,))
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    offset = 4 + 4 * ndim
    arr = np.frombuffer(data, dtype=np.uint8, offset=offset)
    if arr.size != math.prod(shape):
        raise ValueError(f"{path}: expected {math.prod(shape)} values, found {arr.size}")
    return arr.reshape(shape)


def load_split(root: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``split`` "train" or "t10k" -> (images (N, 28, 28) uint8, labels (N,) long)."""
    images = read_idx(root / f"{split}-images-idx3-ubyte.gz")
    labels = read_idx(root / f"{split}-labels-idx1-ubyte.gz")
    return torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64))


def init_(model: nn.Module, *, mode: str = "zf") -> None:
    """Initialise in place (uses torch's global RNG). Biases 0 everywhere.

    ``"paper"``: every weight N(0, 0.01) (docs/method.md Sec. 1). ``"zf"``: conv1 N(0, 0.01) as in
    the paper, every other layer N(0, sqrt(2 / fan_in)) (He et al. 2015), so a deep ReLU stack
    without normalisation starts training at once.
    """
    if mode not in ("paper", "zf"):
        raise ValueError(f"mode: expected 'paper' or 'zf', got {mode!r}")
    first = True
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            if mode == "paper" or first:
                nn.init.normal_(m.weight, 0.0, 0.01)
            else:
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
            first = False


def checkpoint_steps(total_steps: int) -> dict[int, int]:
    """Paper epoch -> the step after which its checkpoint is taken (``p / 64`` of the steps,
    at least one step, strictly increasing)."""
    out: dict[int, int] = {}
    last = 0
    for p in PAPER_EPOCHS:
        step = max(round(total_steps * p / PAPER_TOTAL), last + 1)
        out[p] = min(step, total_steps)
        last = out[p]
    return out


@torch.no_grad()
def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, bs: int = 1000):
    """(correct count, mean loss) of ``model`` in eval mode on uint8 (N, 28, 28) images."""
    was = model.training
    model.eval()
    correct, loss = 0, 0.0
    for s in range(0, len(images), bs):
        x = normalize(images[s : s + bs].unsqueeze(1))
        y = labels[s : s + bs]
        out = model(x)
        loss += float(nn.functional.cross_entropy(out, y, reduction="sum"))
        correct += int((out.argmax(1) == y).sum())
    model.train(was)
    return correct, loss / len(images)


def bundled_record(model: nn.Module, bundled: FashionMNISTImages) -> dict:
    """Accuracy of ``model`` on the bundled images through the Dataset path, with the smallest
    top-1 margin (logit gap), which says how far rounding is from changing a prediction."""
    was = model.training
    model.eval()
    with torch.no_grad():
        x = torch.stack([bundled[i][0] for i in range(len(bundled))])
        logits = model(x)
    model.train(was)
    top2 = logits.topk(2, dim=1).values
    pred = logits.argmax(1)
    return {
        "n": len(bundled),
        "correct": int((pred == bundled.labels).sum()),
        "accuracy": float((pred == bundled.labels).float().mean()),
        "min_margin": float((top2[:, 0] - top2[:, 1]).min()),
        "logits_sum": float(logits.double().sum()),
        "predictions": pred.tolist(),
    }


def _fp16(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to(torch.float16).contiguous() for k, v in sd.items()}


def train(
    *,
    data: Path = DATA_DIR,
    out: Path = OUT_DIR,
    epochs: float = 12.0,
    train_subset: int | None = 20000,
    batch_size: int = 128,
    lr: float = 0.05,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    radius: float | None = DEFAULT_RADIUS,
    init: str = "zf",
    flip: bool = True,
    seed: int = 0,
    threads: int = 2,
    atlas: bool = True,
    bundled: FashionMNISTImages | None = None,
    log=print,
) -> dict:
    """Train, evaluate and write the files (see the module docstring). Returns the record."""
    t_wall, t_cpu = time.perf_counter(), time.process_time()
    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)  # tiny activations early in training are slow otherwise
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    train_x, train_y = load_split(Path(data), "train")
    test_x, test_y = load_split(Path(data), "t10k")
    if bundled is None:
        bundled = load_fashion_mnist_images()
    n = len(train_x) if train_subset is None else min(train_subset, len(train_x))
    steps_per_epoch = math.ceil(n / batch_size)
    total = max(1, round(epochs * steps_per_epoch))
    ck_steps = checkpoint_steps(total)
    drops = (round(0.60 * total), round(0.85 * total))
    log(
        f"training on {n} of {len(train_x)} images, {epochs} epochs = {total} steps of "
        f"{batch_size}; checkpoints after steps {ck_steps}"
    )

    model = zfnet_small()
    init_(model, mode=init)
    model.train()
    opt = torch.optim.SGD(
        model.parameters(), lr=lr, momentum=momentum, nesterov=True, weight_decay=weight_decay
    )
    history: list[dict] = []
    checkpoints: list[dict] = []
    stored: dict[str, torch.Tensor] = {}
    renormalised = dict.fromkeys(CONV_LAYERS, 0)
    evals: dict[int, tuple[int, float]] = {}  # step -> (correct, loss) on the test set
    step, epoch = 0, 0
    while step < total:
        epoch += 1
        order = torch.randperm(len(train_x), generator=gen)[:n]
        loss_sum, correct, seen = 0.0, 0, 0
        for s in range(0, n, batch_size):
            if step >= total:
                break
            idx = order[s : s + batch_size]
            x = normalize(train_x[idx].unsqueeze(1))
            y = train_y[idx]
            if flip:
                mask = torch.rand(len(idx), generator=gen) < 0.5
                x = torch.where(mask[:, None, None, None], x.flip(3), x)
            lr_now = lr * 0.1 ** sum(step >= d for d in drops)
            for g in opt.param_groups:
                g["lr"] = lr_now
            out_ = model(x)
            loss = nn.functional.cross_entropy(out_, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if radius is not None:
                for k, v in renormalize_filters_(model, radius).items():
                    renormalised[k] += v
            step += 1
            loss_sum += float(loss.detach()) * len(idx)
            correct += int((out_.argmax(1) == y).sum())
            seen += len(idx)
            for p, at in ck_steps.items():
                if at == step:
                    if step not in evals:
                        evals[step] = evaluate(model, test_x, test_y)
                    acc = evals[step][0] / len(test_x)
                    entry = {
                        "paper_epoch": p,
                        "epoch": round(step / steps_per_epoch, 4),
                        "step": step,
                        "test_accuracy": acc,
                        "key": f"p{p:02d}",
                        "final": step == total,
                    }
                    checkpoints.append(entry)
                    if step != total:
                        stored.update(
                            {f"p{p:02d}/{k}": v for k, v in _fp16(model.state_dict()).items()}
                        )
                    log(f"  checkpoint {p:2d}/64 at epoch {entry['epoch']:.3f}: test {acc:.4f}")
        if step not in evals:
            evals[step] = evaluate(model, test_x, test_y)
        test_correct, test_loss = evals[step]
        history.append(
            {
                "epoch": round(step / steps_per_epoch, 4),
                "step": step,
                "lr": lr_now,
                "train_loss": loss_sum / max(seen, 1),
                "train_accuracy": correct / max(seen, 1),
                "test_loss": test_loss,
                "test_accuracy": test_correct / len(test_x),
                "wall_s": round(time.perf_counter() - t_wall, 1),
            }
        )
        h = history[-1]
        log(
            f"epoch {h['epoch']:.2f}: train loss {h['train_loss']:.4f} acc "
            f"{h['train_accuracy']:.4f} | test loss {h['test_loss']:.4f} acc "
            f"{h['test_accuracy']:.4f} | {h['wall_s']:.0f} s"
        )

    model.eval()
    test_correct, test_loss = evals[step]
    record = {
        "model": "zfwidgets.models.default.zfnet_small(num_classes=10, in_channels=1)",
        "dataset": "Fashion-MNIST (Zalando, MIT), Debian dataset-fashion-mnist",
        "classes": CLASSES,
        "normalize": {"mean": MEAN, "std": STD, "formula": "(x / 255 - mean) / std"},
        "config": {
            "epochs": epochs,
            "train_images_per_epoch": n,
            "batch_size": batch_size,
            "steps": total,
            "lr": lr,
            "lr_drops_at_steps": list(drops),
            "momentum": momentum,
            "nesterov": True,
            "weight_decay": weight_decay,
            "renormalize_radius": radius,
            "init": init,
            "hflip": flip,
            "seed": seed,
            "threads": threads,
        },
        "environment": {
            "torch": torch.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
            "machine": platform.machine(),
        },
        "history": history,
        "checkpoints": checkpoints,
        "paper_epochs": list(PAPER_EPOCHS),
        "renormalised_filters": renormalised,
        "final_filter_rms_max": {n_: float(filter_rms(model, n_).max()) for n_ in CONV_LAYERS},
        "test_correct": test_correct,
        "test_total": len(test_x),
        "test_accuracy": test_correct / len(test_x),
        "test_loss": test_loss,
        "bundled": bundled_record(model, bundled),
        "train_wall_s": round(time.perf_counter() - t_wall, 1),
        "train_cpu_s": round(time.process_time() - t_cpu, 1),
    }
    b = record["bundled"]
    log(
        f"test accuracy {record['test_accuracy']:.4f}; bundled {b['correct']}/{b['n']} "
        f"(min margin {b['min_margin']:.3g}); {record['train_cpu_s']:.0f} CPU s"
    )
    _write(model, record, stored, Path(out), atlas=atlas, bundled=bundled, log=log)
    return record


def _write(
    model: ZFNetSmall,
    record: dict,
    stored: dict[str, torch.Tensor],
    out: Path,
    *,
    atlas: bool,
    bundled: FashionMNISTImages,
    log=print,
) -> None:
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    meta = {"format": "zfwidgets.zfnet_small/1", "test_accuracy": str(record["test_accuracy"])}
    sd = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(sd, str(out / f"{NAME}.safetensors"), metadata=meta)
    save_file(stored, str(out / f"{NAME}_checkpoints.safetensors"), metadata=meta)
    (out / f"{NAME}.json").write_text(json.dumps(record, indent=1) + "\n")
    if atlas:
        write_atlas(model, bundled, out / f"{NAME}_atlas.safetensors")
    for f in sorted(out.glob(f"{NAME}*")):
        f.chmod(0o644)  # safetensors writes 0600; package data must be world-readable
        log(f"wrote {f} ({f.stat().st_size / 1e3:.0f} kB)")


def write_atlas(model: nn.Module, images: FashionMNISTImages, path: Path) -> None:
    """The top-9 atlas (docs/method.md Sec. 3.1, Fig. 2) of every conv layer over ``images``, saved
    without images (the crops are recomputed from the bundled images on demand)."""
    from ..atlas.mining import mine

    atlas = mine(model.eval(), images, layers=list(CONV_LAYERS), k=9, progress=False)
    atlas.save(path, images=False)


def main(argv: list[str] | None = None) -> dict:
    """Command line entry point; see ``--help``."""
    p = argparse.ArgumentParser(
        prog="python -m zfwidgets.models.train_default",
        description="Train the bundled default model (a small ZFNet) on Fashion-MNIST.",
    )
    p.add_argument("--data", type=Path, default=DATA_DIR, help="folder of the IDX .gz files")
    p.add_argument("--out", type=Path, default=OUT_DIR, help="where the files are written")
    p.add_argument("--epochs", type=float, default=12.0, help="epochs (may be fractional)")
    p.add_argument(
        "--train-subset",
        type=int,
        default=20000,
        help="images per epoch, drawn afresh from the 60,000 each epoch (0: all)",
    )
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument(
        "--radius",
        type=float,
        default=DEFAULT_RADIUS,
        help="filter RMS radius (the paper's renormalisation); 0 turns it off",
    )
    p.add_argument("--init", choices=("zf", "paper"), default="zf")
    p.add_argument("--no-flip", action="store_true", help="no horizontal flips")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-atlas", action="store_true", help="do not mine the top-9 atlas")
    args = p.parse_args(argv)
    return train(
        data=args.data,
        out=args.out,
        epochs=args.epochs,
        train_subset=args.train_subset or None,
        batch_size=args.batch_size,
        lr=args.lr,
        radius=args.radius or None,
        init=args.init,
        flip=not args.no_flip,
        seed=args.seed,
        threads=args.threads,
        atlas=not args.no_atlas,
    )


if __name__ == "__main__":
    main()
