"""A folder of images as a dataset for the batch jobs: class sub-folders or flat, any size.

``ImageFolder(root, size=224)`` lists the image files under ``root`` once, sorted, so an index
always names the same file (class sub-folders as torchvision's ``ImageFolder``; files directly
under ``root`` get the class ``""``). Each image is decoded, its shorter side resized to
``size`` and centre-cropped to ``size x size``, then normalised. A file that cannot be read
raises :class:`zfwidgets.atlas.mining.UnreadableImage`, which :func:`zfwidgets.mine` skips and
reports, so one corrupt JPEG does not end an hour-long job.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch.utils.data import Dataset

from ..base.decode import open_image
from ..base.images import IMAGENET_MEAN, IMAGENET_STD
from .mining import UnreadableImage

__all__ = ["ImageFolder", "IMAGENET_MEAN", "IMAGENET_STD", "EXTENSIONS"]

#: File endings read as images (case-insensitive); anything else in the folder is ignored.
EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff", ".ppm")
#: Largest image decoded (pixels, after JPEG draft scaling); larger ones are skipped as
#: unreadable. The formats read are :data:`zfwidgets.base.decode.ALLOWED_FORMATS`.
MAX_PIXELS = 100_000_000
#: Largest image file read (bytes).
MAX_FILE_BYTES = 1 << 29


def _scan(root: Path) -> list[tuple[str, int]]:
    """(relative path, size in bytes) of every image file under ``root``, sorted by path."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if name.startswith(".") or not name.lower().endswith(EXTENSIONS):
                continue
            full = os.path.join(dirpath, name)
            try:
                size = os.stat(full).st_size
            except OSError:
                size = -1
            out.append((os.path.relpath(full, root), size))
    out.sort(key=lambda t: t[0])
    return out


class ImageFolder(Dataset):
    """Images under ``root`` as ``(tensor (3, size, size), label)``; see the module docstring.

    Parameters
    ----------
    root : path
        A folder of images, flat or with one sub-folder per class (searched recursively).
    size : int
        Output side in pixels (shorter side resized to it, then centre-cropped).
    mean, std : 3 floats
        Normalisation after scaling to [0, 1] (ImageNet's by default).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        *,
        size: int = 224,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
    ):
        if not isinstance(root, (str, os.PathLike)):
            raise TypeError(f"root: expected a folder path, got {type(root).__name__}")
        self.root = Path(root)
        if not self.root.is_dir():
            raise ValueError(f"root: expected an existing folder of images, got {str(root)!r}")
        if isinstance(size, bool) or not isinstance(size, int) or not 8 <= size <= 4096:
            raise ValueError(f"size: expected an int in [8, 4096], got {size!r}")
        for name, v in (("mean", mean), ("std", std)):
            if (
                len(v) != 3
                or not all(isinstance(a, (int, float)) for a in v)
                or not all(abs(a) < 1e6 for a in v)
            ):
                raise ValueError(f"{name}: expected 3 finite numbers, got {v!r}")
        if any(s <= 0 for s in std):
            raise ValueError(f"std: expected 3 positive numbers, got {std!r}")
        self.size = size
        self.mean = torch.tensor([float(m) for m in mean]).view(3, 1, 1)
        self.std = torch.tensor([float(s) for s in std]).view(3, 1, 1)
        files = _scan(self.root)
        if not files:
            raise ValueError(
                f"root: no image files ({', '.join(EXTENSIONS)}) under {str(self.root)!r}"
            )
        self.files = [f for f, _ in files]
        self._sizes = [s for _, s in files]
        self.classes = sorted(
            {str(Path(f).parent) if Path(f).parent != Path(".") else "" for f in self.files}
        )
        index = {c: i for i, c in enumerate(self.classes)}
        self.labels = [
            index[str(Path(f).parent) if Path(f).parent != Path(".") else ""] for f in self.files
        ]

    def __len__(self) -> int:
        return len(self.files)

    def path(self, index: int) -> Path:
        return self.root / self.files[index]

    def fingerprint(self) -> str:
        """A hash of the relative paths and sizes of the files, in order."""
        h = hashlib.sha256(f"ImageFolder:{self.size}:".encode())
        h.update(self.mean.numpy().tobytes() + self.std.numpy().tobytes())
        for f, s in zip(self.files, self._sizes):
            h.update(f"{f}\0{s}\n".encode())
        return h.hexdigest()[:32]

    def load(self, index: int):
        """The image at ``index`` as an RGB PIL image at about ``size`` (raises UnreadableImage).

        Read by :func:`zfwidgets.base.decode.open_image`, the decoder uploads use too (format
        from the bytes, size checks before decoding, EXIF orientation, alpha on white)."""
        path = self.path(index)
        try:
            return open_image(
                path,
                channels=3,
                max_bytes=MAX_FILE_BYTES,
                max_pixels=MAX_PIXELS,
                min_size=(self.size, self.size),
            )
        except (ValueError, OSError) as e:  # one bad file: skip it, keep the job alive
            raise UnreadableImage(f"{path}: {e}") from None

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        import numpy as np
        from PIL import Image

        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(self):
            raise IndexError(f"index: expected an int in [0, {len(self)}), got {index!r}")
        im = self.load(index)
        w, h = im.size
        scale = self.size / min(w, h)
        nw, nh = max(self.size, round(w * scale)), max(self.size, round(h * scale))
        im = im.resize((nw, nh), Image.BILINEAR)
        left, top = (nw - self.size) // 2, (nh - self.size) // 2
        im = im.crop((left, top, left + self.size, top + self.size))
        x = torch.from_numpy(np.asarray(im, dtype=np.uint8).copy()).permute(2, 0, 1)
        x = x.float().div_(255)
        return (x - self.mean) / self.std, self.labels[index]
