"""One view over the kinds of image collections users have.

A tensor (N, C, H, W), a map-style Dataset returning tensors or (tensor, label, ...) tuples,
a DataLoader over such a dataset (in a fixed order), or a list of tensors / PIL images with a
transform. :class:`ImageSource` gives batches in order and random access by index, both as
floating (C, H, W) tensors, so results can point back at the images they came from.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, SequentialSampler

__all__ = ["ImageSource"]


def _first(item: Any) -> Any:
    if isinstance(item, (tuple, list)) and item and not isinstance(item, torch.Tensor):
        return item[0]
    if isinstance(item, dict):
        for key in ("image", "img", "pixel_values", "input"):
            if key in item:
                return item[key]
        raise TypeError(f"data: a dict item needs an 'image' key, got keys {sorted(item)}")
    return item


class ImageSource:
    """Ordered batches and random access over ``data``; see module docstring."""

    #: ``items`` is what the data indexes (the tensor, the dataset, or the list),
    #: ``is_tensor`` says it is one (N, C, H, W) tensor, ``loader`` the user's ``DataLoader``
    #: when one was given (iterated as it is, with its own workers), else ``None``.
    items: Any
    is_tensor: bool
    loader: DataLoader | None

    def __init__(self, data: Any, *, transform: Callable | None = None, batch_size: int = 64):
        self.transform = transform
        self.batch_size = batch_size
        self.loader: DataLoader | None = None
        if isinstance(data, torch.Tensor):
            if data.dim() != 4:
                raise ValueError(
                    f"data: expected a 4-d tensor (N, C, H, W), got shape {tuple(data.shape)}"
                )
            self.items = data
            self.is_tensor = True
        elif isinstance(data, DataLoader):
            if isinstance(data.dataset, IterableDataset):
                raise TypeError(
                    "data: a DataLoader over an IterableDataset has no random access; pass a map-style dataset"
                )
            if not isinstance(data.sampler, SequentialSampler):
                raise ValueError(
                    "data: the DataLoader must iterate in a fixed order (shuffle=False, the default "
                    f"sampler), got a {type(data.sampler).__name__}; results point back at images by index"
                )
            self.loader = data
            self.items = data.dataset
            self.is_tensor = False
        elif isinstance(data, IterableDataset):
            raise TypeError(
                "data: an IterableDataset has no random access; pass a map-style Dataset or a tensor"
            )
        elif isinstance(data, (Dataset, Sequence)) and not isinstance(data, (str, bytes)):
            self.items = data
            self.is_tensor = False
        else:
            raise TypeError(
                "data: expected a tensor (N, C, H, W), a Dataset, a DataLoader, or a list of "
                f"tensors/PIL images, got {type(data).__name__}"
            )
        try:
            self.n = len(self.items)
        except TypeError as e:
            raise TypeError(f"data: expected a sized collection, got {type(data).__name__}") from e
        if self.n == 0:
            raise ValueError("data: the dataset is empty (0 images)")

    def __len__(self) -> int:
        return self.n

    def prepare(self, item: Any, index: int) -> torch.Tensor:
        x = _first(item)
        if not isinstance(x, torch.Tensor):
            if self.transform is None:
                raise TypeError(
                    f"data: item {index} is a {type(x).__name__}, not a tensor; pass transform= "
                    "(e.g. torchvision.transforms.ToTensor() or weights.transforms())"
                )
            x = self.transform(x)
        elif self.transform is not None and not self.is_tensor and self.loader is None:
            x = self.transform(x)
        if not isinstance(x, torch.Tensor) or x.dim() != 3:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(
                f"data: expected item {index} to become a (C, H, W) tensor, got {shape}"
            )
        if not x.is_floating_point():
            raise TypeError(
                f"data: item {index} has dtype {x.dtype}; expected floating point (use a transform)"
            )
        return x

    def get(self, index: int) -> torch.Tensor:
        """The image at ``index`` as a (C, H, W) floating tensor."""
        if self.is_tensor:
            return self.items[index]
        return self.prepare(self.items[index], index)

    def stack(self, indices: Sequence[int]) -> torch.Tensor:
        return torch.stack([self.get(int(i)) for i in indices])

    def first(self) -> torch.Tensor:
        return self.get(0)

    def batches(self) -> Iterator[tuple[int, torch.Tensor]]:
        """Yield ``(start_index, batch (B, C, H, W))`` in order."""
        if self.is_tensor:
            for s in range(0, self.n, self.batch_size):
                yield s, self.items[s : s + self.batch_size]
            return
        if self.loader is not None:
            start = 0
            for batch in self.loader:
                x = _first(batch)
                if not isinstance(x, torch.Tensor) or x.dim() != 4:
                    raise ValueError(
                        f"data: expected the DataLoader to yield (B, C, H, W) tensors, got {type(x).__name__}"
                    )
                yield start, x
                start += x.shape[0]
            return
        for s in range(0, self.n, self.batch_size):
            items = [self.get(i) for i in range(s, min(self.n, s + self.batch_size))]
            shapes = {tuple(t.shape) for t in items}
            if len(shapes) > 1:
                raise ValueError(
                    f"data: images must share one size to be batched, got sizes {sorted(shapes)}"
                )
            yield s, torch.stack(items)
