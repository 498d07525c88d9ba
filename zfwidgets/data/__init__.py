"""The bundled default: a trained small ZFNet, Fashion-MNIST test images, CC0 photos.

Everything loads from files inside the package (safetensors, PNG/JPEG, JSON): nothing is
downloaded and nothing is unpickled.

- :func:`load_default`: the trained :func:`~zfwidgets.models.zfnet_small` (docs/method.md Sec. 1,
  scaled to 28x28 grey images), 300 Fashion-MNIST test images (30 per class) as a Dataset,
  the class names, the preprocessing, and the checkpoints at the paper's epochs 1, 2, 5, 10,
  20, 30, 40 and 64 mapped onto the training schedule (docs/method.md Sec. 3.2, Fig. 4).
- :func:`load_default_atlas`: the precomputed top-9 atlas (docs/method.md Sec. 3.1, Fig. 2) of every
  convolutional layer of that model over those images.
- :func:`load_photos`: six public-domain / CC0 photos from scikit-image (``LICENSES.md``).

The files are written by ``python -m zfwidgets.models.train_default`` (weights, history,
atlas) and ``python -m zfwidgets.data._build`` (images).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

__all__ = [
    "CLASSES",
    "MEAN",
    "STD",
    "Default",
    "FashionMNISTImages",
    "PHOTOS",
    "default_transform",
    "load_default",
    "load_default_atlas",
    "load_fashion_mnist_images",
    "load_photos",
    "normalize",
]

#: Fashion-MNIST class names, in label order (Zalando's README).
CLASSES: list[str] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]

#: Mean and standard deviation of the Fashion-MNIST training pixels in [0, 1] (60,000 images:
#: 0.28604 and 0.35302), rounded; the model was trained on ``(x / 255 - MEAN) / STD``.
MEAN: float = 0.2860
STD: float = 0.3530

#: The bundled photos (file stems under ``zfwidgets/data/photos``), see ``LICENSES.md``.
PHOTOS: tuple[str, ...] = ("astronaut", "camera", "chelsea", "coffee", "rocket", "hubble")

DATA_DIR = Path(__file__).resolve().parent
WEIGHTS_DIR = DATA_DIR.parent / "models" / "weights"
IMAGES_FILE = DATA_DIR / "fashion_mnist_test300.safetensors"
WEIGHTS_FILE = WEIGHTS_DIR / "zfnet_small_fashion_mnist.safetensors"
CHECKPOINTS_FILE = WEIGHTS_DIR / "zfnet_small_fashion_mnist_checkpoints.safetensors"
HISTORY_FILE = WEIGHTS_DIR / "zfnet_small_fashion_mnist.json"
ATLAS_FILE = WEIGHTS_DIR / "zfnet_small_fashion_mnist_atlas.safetensors"


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 pixels -> the model's input: ``(x / 255 - MEAN) / STD`` in float32.

    The same operations, in the same order, as ``ToTensor()`` followed by
    ``Normalize((MEAN,), (STD,))`` (:func:`default_transform`), so a PIL image and its tensor
    give bit-identical inputs.

    Parameters
    ----------
    images : Tensor, uint8, any shape (e.g. (N, 1, 28, 28) or (1, 28, 28))

    Returns
    -------
    Tensor, float32, same shape
    """
    if images.dtype != torch.uint8:
        raise TypeError(f"images: expected uint8 pixels, got {images.dtype}")
    x = images.to(torch.float32).div(255)
    mean = torch.tensor(MEAN, dtype=torch.float32)
    std = torch.tensor(STD, dtype=torch.float32)
    return x.sub(mean).div(std)


def default_transform(size: int = 28):
    """The preprocessing of the default model for any PIL image (an upload, a photo).

    Grey (ITU-R 601-2 luma), smaller side resized to ``size`` (antialiased), centre crop
    ``size`` x ``size``, to a tensor in [0, 1], then ``(x - MEAN) / STD``.

    Fashion-MNIST shows light garments on a black background: a dark object on a light
    background reads as its negative (``PIL.ImageOps.invert`` before the transform).

    Returns
    -------
    torchvision.transforms.Compose
        PIL image (any mode) -> Tensor (1, size, size), float32.
    """
    from torchvision import transforms

    return transforms.Compose(
        [
            transforms.Grayscale(num_output_channels=1),
            transforms.Resize(size, antialias=True),
            transforms.CenterCrop(size),
            transforms.ToTensor(),
            transforms.Normalize((MEAN,), (STD,)),
        ]
    )


class FashionMNISTImages(Dataset):
    """Fashion-MNIST images as a map-style Dataset of ``(image, label)``.

    Parameters
    ----------
    images : Tensor (N, H, W), uint8
    labels : Tensor (N,), integer
    source_indices : Tensor (N,), optional
        Index of each image in the original split (the bundled ones: the 10,000 test images).

    ``dataset[i]`` is ``(Tensor (1, H, W) float32 normalised by :func:`normalize`, int label)``;
    ``mean`` and ``std`` are :data:`MEAN` and :data:`STD` (``pixel = x * std + mean``).
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        source_indices: torch.Tensor | None = None,
    ):
        if images.dtype != torch.uint8 or images.dim() != 3:
            raise ValueError(
                f"images: expected uint8 (N, H, W), got {images.dtype} {tuple(images.shape)}"
            )
        if labels.shape != images.shape[:1]:
            raise ValueError(
                f"labels: expected shape ({images.shape[0]},), got {tuple(labels.shape)}"
            )
        self.images = images
        self.labels = labels.long()
        self.source_indices = source_indices
        self.classes = list(CLASSES)
        # what normalize() applies: an atlas renders its patches back through it
        self.mean, self.std = MEAN, STD

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return normalize(self.images[index].unsqueeze(0)), int(self.labels[index])

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Every image at once: ``(Tensor (N, 1, H, W) float32, Tensor (N,) long)``."""
        return normalize(self.images.unsqueeze(1)), self.labels

    def __repr__(self) -> str:
        n, h, w = self.images.shape
        return f"FashionMNISTImages({n} images, 1x{h}x{w}, {len(self.classes)} classes)"


def load_fashion_mnist_images() -> FashionMNISTImages:
    """The 300 bundled Fashion-MNIST test images (30 per class, fixed seed), in file order."""
    from safetensors.torch import load_file

    t = load_file(str(IMAGES_FILE))
    return FashionMNISTImages(t["images"], t["labels"], t["test_indices"])


def _state_dict(path: Path, prefix: str = "") -> dict[str, torch.Tensor]:
    from safetensors import safe_open

    out: dict[str, torch.Tensor] = {}
    with safe_open(str(path), framework="pt") as f:
        for key in f.keys():  # noqa: SIM118 (safe_open is not a mapping)
            if key.startswith(prefix):
                out[key[len(prefix) :]] = f.get_tensor(key).float()
    return out


def load_history() -> dict[str, Any]:
    """The training record written by ``train_default``: configuration, per-epoch loss and
    test accuracy, the checkpoint list, test accuracy on all 10,000 and on the bundled images."""
    return json.loads(HISTORY_FILE.read_text())


@dataclass
class Default:
    """What :func:`load_default` returns.

    Attributes
    ----------
    model : ZFNetSmall
        Trained, in eval mode, on the CPU.
    images : FashionMNISTImages
        The bundled test images: ``images[i]`` is ``(Tensor (1, 28, 28), label)``.
    classes : list of str
        The 10 class names, by label.
    transform : callable
        PIL image -> Tensor (1, 28, 28), the model's preprocessing (:func:`default_transform`).
    mean, std : float
        Normalisation constants: ``pixel = x * std + mean`` gives [0, 1] back for display.
    checkpoints : list of (int, dict)
        ``(paper_epoch, state_dict)`` for the paper's epochs 1, 2, 5, 10, 20, 30, 40, 64
        (docs/method.md Sec. 3.2, Fig. 4): the weights after ``paper_epoch / 64`` of the training
        schedule (``history["checkpoints"]`` gives the actual epoch and step). Float32 tensors
        (stored as float16 except the last, which is the final model).
        ``model.load_state_dict(state_dict)`` loads one.
    accuracy : float
        Recorded accuracy on the 10,000 Fashion-MNIST test images.
    history : dict
        The full training record (:func:`load_history`).
    """

    model: nn.Module
    images: FashionMNISTImages
    classes: list[str]
    transform: Any
    mean: float
    std: float
    checkpoints: list[tuple[int, dict[str, torch.Tensor]]] = field(repr=False)
    accuracy: float
    history: dict[str, Any] = field(repr=False)


def _model() -> nn.Module:
    from safetensors.torch import load_file

    from ..models.default import zfnet_small

    model = zfnet_small()
    model.load_state_dict(load_file(str(WEIGHTS_FILE)))
    return model.eval()


def load_default() -> Default:
    """The trained default model, its bundled images and its training history.

    Everything is read from the package with safetensors/JSON; nothing is downloaded.

    Returns
    -------
    Default
        ``model`` (eval mode), ``images`` (a Dataset of ``(Tensor (1, 28, 28), label)``),
        ``classes``, ``transform``, ``mean``, ``std``, ``checkpoints``, ``accuracy``,
        ``history``.

    Examples
    --------
    >>> d = load_default()
    >>> x, label = d.images[0]
    >>> d.model(x.unsqueeze(0)).argmax(1).item() == label
    True
    """
    history = load_history()
    model = _model()
    checkpoints: list[tuple[int, dict[str, torch.Tensor]]] = []
    for c in history["checkpoints"]:
        if c.get("final"):
            sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            sd = _state_dict(CHECKPOINTS_FILE, c["key"] + "/")
        checkpoints.append((int(c["paper_epoch"]), sd))
    return Default(
        model=model,
        images=load_fashion_mnist_images(),
        classes=list(CLASSES),
        transform=default_transform(),
        mean=MEAN,
        std=STD,
        checkpoints=checkpoints,
        accuracy=float(history["test_accuracy"]),
        history=history,
    )


def load_default_atlas(default: Default | None = None):
    """The precomputed top-9 atlas of the default model over the bundled images.

    docs/method.md Sec. 3.1, Fig. 2: for every feature map of every convolutional layer
    (``features.0``, ``.4``, ``.8``, ``.10``, ``.12``) the 9 bundled images that excite it
    most, with the positions. The crops and deconvnet projections are computed on demand
    from the attached model and images (a few milliseconds per feature map).

    Parameters
    ----------
    default : Default, optional
        Attach this model and these images; default: a fresh :func:`load_default`.

    Returns
    -------
    Atlas
        ``indices[layer]`` (C, 9) index into ``default.images``.
    """
    from ..atlas.core import Atlas

    d = load_default() if default is None else default
    return Atlas.load(ATLAS_FILE, model=d.model, data=d.images)


def load_photos() -> dict[str, Any]:
    """The bundled photos (public domain / CC0, from scikit-image; see ``LICENSES.md``).

    Returns
    -------
    dict of str -> PIL.Image.Image
        ``{"astronaut": ..., "camera": ..., ...}``, RGB, longer side 256 pixels at most.
    """
    from PIL import Image

    out = {}
    for name in PHOTOS:
        path = DATA_DIR / "photos" / f"{name}.jpg"
        with Image.open(path) as im:
            out[name] = im.convert("RGB")
    return out
