"""Write the bundled images: ``python -m zfwidgets.data._build [--fashion-mnist DIR]``.

- ``fashion_mnist_test300.safetensors``: 30 images per class from the 10,000 Fashion-MNIST
  test images (Debian's ``dataset-fashion-mnist``), drawn with a fixed seed, sorted by their
  test index; tensors ``images`` (300, 28, 28) uint8, ``labels`` (300,) uint8,
  ``test_indices`` (300,) int64.
- ``photos/*.jpg``: six public-domain / CC0 photos from scikit-image's bundled data, longer
  side resized to 256 pixels.

Needs the Debian package and scikit-image only when run; neither is used at run time.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from . import CLASSES, DATA_DIR, IMAGES_FILE

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
SEED = 0
PER_CLASS = 30
PHOTO_SIZE = 256
#: bundled name -> scikit-image loader
SKIMAGE_PHOTOS = {
    "astronaut": "astronaut",
    "camera": "camera",
    "chelsea": "chelsea",
    "coffee": "coffee",
    "rocket": "rocket",
    "hubble": "hubble_deep_field",
}


def select_balanced(labels: np.ndarray, per_class: int = PER_CLASS, seed: int = SEED) -> np.ndarray:
    """``per_class`` indices of each label, drawn without replacement with ``seed``, sorted.

    Parameters
    ----------
    labels : ndarray (N,), integer labels 0 .. 9

    Returns
    -------
    ndarray (10 * per_class,), int64, increasing
    """
    rng = np.random.default_rng(seed)
    picks = [
        rng.choice(np.flatnonzero(labels == c), size=per_class, replace=False)
        for c in range(len(CLASSES))
    ]
    return np.sort(np.concatenate(picks)).astype(np.int64)


def write_images(root: Path = FASHION_MNIST_DIR, out: Path = IMAGES_FILE) -> None:
    """Write the 300 bundled test images (see the module docstring)."""
    from safetensors.torch import save_file

    from ..models.train_default import read_idx

    images = read_idx(root / "t10k-images-idx3-ubyte.gz")
    labels = read_idx(root / "t10k-labels-idx1-ubyte.gz")
    idx = select_balanced(labels)
    meta = {
        "source": "Fashion-MNIST test split (t10k), Zalando SE, MIT licence",
        "selection": f"{PER_CLASS} per class, numpy default_rng({SEED}).choice, sorted",
        "classes": json.dumps(CLASSES),
    }
    save_file(
        {
            "images": torch.from_numpy(images[idx].copy()),
            "labels": torch.from_numpy(labels[idx].copy()),
            "test_indices": torch.from_numpy(idx),
        },
        str(out),
        metadata=meta,
    )
    out.chmod(0o644)  # safetensors writes 0600; package data must be world-readable


def write_photos(out_dir: Path = DATA_DIR / "photos", size: int = PHOTO_SIZE) -> None:
    """Copy the scikit-image photos, longer side ``size`` pixels, as JPEG (quality 90)."""
    import skimage.data
    from PIL import Image

    out_dir.mkdir(parents=True, exist_ok=True)
    for name, loader in SKIMAGE_PHOTOS.items():
        im = Image.fromarray(getattr(skimage.data, loader)())
        im.thumbnail((size, size), Image.Resampling.LANCZOS)
        im.convert("L" if im.mode == "L" else "RGB").save(
            out_dir / f"{name}.jpg", quality=90, optimize=True
        )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--fashion-mnist", type=Path, default=FASHION_MNIST_DIR)
    p.add_argument("--no-photos", action="store_true", help="skip the scikit-image photos")
    args = p.parse_args(argv)
    write_images(args.fashion_mnist)
    if not args.no_photos:
        write_photos()


if __name__ == "__main__":
    main()
