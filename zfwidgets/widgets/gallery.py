"""Gallery: a row or grid of images with captions, one of which may be selected.

The Explorer's image strip and its view of the selected unit (the image beside its
deconvnet and guided-backprop projections, docs/method.md Sec. 2) are galleries. The tiles are
packed into one uint8 atlas on the images' device and sent in one transfer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import traitlets as t

from ..base.codec import pack
from ..base.images import resize_to_fit, tile, to_rgba
from ._base import ZFWidget

__all__ = ["Gallery"]


class Gallery(ZFWidget):
    """Images as tiles; hover shows each caption, click sets ``selected`` (when selectable).

    Parameters
    ----------
    images : Tensor (N, C, H, W), C in {1, 3}, values in [0, 1]
        Already prepared for display (see :mod:`zfwidgets.base.images`).
    captions : list of str, optional
        One per image, shown on hover (as text).
    title, caption : str
        Text above and below the tiles.
    selectable : bool
    tile_size : int or None
        Images larger than this (either side) are shrunk before sending.
    columns : int, optional
        Default: one row.
    """

    _bundle = "gallery.js"

    frame = t.Dict().tag(sync=True)
    captions = t.List(t.Unicode()).tag(sync=True)
    selected = t.Int(None, allow_none=True).tag(sync=True)
    selectable = t.Bool(True).tag(sync=True)
    title = t.Unicode("").tag(sync=True)
    caption = t.Unicode("").tag(sync=True)
    max_width = t.Int(720).tag(sync=True)

    def __init__(
        self,
        images: torch.Tensor,
        captions: Sequence[str] | None = None,
        *,
        title: str = "",
        caption: str = "",
        selectable: bool = True,
        selected: int | None = None,
        tile_size: int | None = 96,
        columns: int | None = None,
        max_width: int = 720,
        **kwargs: Any,
    ) -> None:
        self._tile_size = tile_size
        self._columns = columns
        frame, caps = self._frame(images, captions)
        super().__init__(
            frame=frame,
            captions=caps,
            title=title,
            caption=caption,
            selectable=selectable,
            selected=selected,
            max_width=max_width,
            **kwargs,
        )

    def _frame(
        self, images: torch.Tensor, captions: Sequence[str] | None
    ) -> tuple[dict[str, Any], list[str]]:
        if not isinstance(images, torch.Tensor) or images.dim() != 4:
            raise ValueError(
                "images: expected an (N, C, H, W) tensor in [0, 1], got "
                f"{getattr(images, 'shape', type(images).__name__)}"
            )
        if images.shape[0] == 0:
            raise ValueError("images: expected at least one image, got none")
        if images.shape[1] not in (1, 3):
            raise ValueError(f"images: expected 1 or 3 channels, got {images.shape[1]}")
        captions = [str(c) for c in (captions or [""] * images.shape[0])]
        if len(captions) != images.shape[0]:
            raise ValueError(
                f"captions: expected {images.shape[0]} (one per image), got {len(captions)}"
            )
        small = resize_to_fit(images.detach().float(), self._tile_size)
        columns = self._columns or images.shape[0]
        atlas, layout = tile(to_rgba(small), columns=columns, pad=2)
        return {"grid": layout.to_json(), **pack({"atlas": atlas})}, captions

    def set_images(self, images: torch.Tensor, captions: Sequence[str] | None = None) -> None:
        """Replace the images (and captions); keeps ``selected`` when it is still in range."""
        frame, caps = self._frame(images, captions)
        with self.hold_sync():
            if self.selected is not None and self.selected >= images.shape[0]:
                self.selected = None
            self.captions = caps
            self.frame = frame

    @t.validate("selected")
    def _validate_selected(self, proposal: dict) -> int | None:
        i = proposal["value"]
        if i is None or not self.frame:
            return i
        count = self.frame["grid"]["count"]
        if not 0 <= i < count:
            raise t.TraitError(f"selected: expected an int in [0, {count}) or None, got {i}")
        return i
