"""Gallery without a kernel."""

from __future__ import annotations

import pytest
import torch
import traitlets

from zfwidgets.base.codec import decode
from zfwidgets.base.images import to_rgba
from zfwidgets.widgets.gallery import Gallery


def test_tiles_are_the_images_in_one_atlas(frontend):
    g = torch.Generator().manual_seed(0)
    images = torch.rand(3, 3, 20, 20, generator=g)
    w = Gallery(images, ["a", "<b>b</b>", "c"], tile_size=None)
    atlas = decode(w.frame["atlas"])
    grid = w.frame["grid"]
    assert grid["count"] == 3 and grid["columns"] == 3
    pad = grid["pad"]
    tiles = to_rgba(images).numpy()
    for i in range(3):
        x0 = pad + i * (20 + pad)
        assert (atlas[pad : pad + 20, x0 : x0 + 20] == tiles[i]).all()
    assert w.captions == ["a", "<b>b</b>", "c"]
    fe = frontend(w)
    fe.set(selected=2)
    assert w.selected == 2


def test_set_images_and_bad_input():
    w = Gallery(torch.zeros(2, 1, 8, 8), selected=1)
    w.set_images(torch.ones(1, 1, 8, 8), ["only"])
    assert w.selected is None and w.frame["grid"]["count"] == 1
    with pytest.raises(traitlets.TraitError):
        w.selected = 5
    with pytest.raises(ValueError, match="captions"):
        Gallery(torch.zeros(2, 3, 8, 8), ["one"])
    with pytest.raises(ValueError, match="channels"):
        Gallery(torch.zeros(2, 4, 8, 8))
    with pytest.raises(ValueError, match="at least one"):
        Gallery(torch.zeros(0, 3, 8, 8))


def test_large_images_are_shrunk():
    w = Gallery(torch.rand(2, 3, 300, 200), tile_size=60)
    assert w.frame["grid"]["tile"] == [60, 40]
    assert decode(w.frame["atlas"]).shape[0] == 60 + 2 * w.frame["grid"]["pad"]
