"""Atlas.attached and Atlas.forget_reconstructions: what a widget needs to share an atlas."""

from __future__ import annotations

import torch
from models import tiny_zf

import zfwidgets as zf


def test_attached_copy_shares_hits_not_cache_nor_model():
    model = tiny_zf()
    images = torch.randn(12, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    atlas = zf.mine(model, images, layers=["4"], k=4, progress=False)
    first = atlas.reconstructions("4", 1)
    other = tiny_zf()
    copy = atlas.attached(other)
    assert copy.model is other and atlas.model is model and copy.source is atlas.source
    assert copy.values is atlas.values and copy.indices is atlas.indices
    torch.testing.assert_close(copy.reconstructions("4", 1), first)  # cached crop reused
    copy.reconstructions("4", 2)
    assert len(copy._cache) == len(atlas._cache) + 1
    copy.forget_reconstructions(keep=1)
    assert len(copy._cache) == 1
    copy.forget_reconstructions()
    assert copy._cache == {}
    torch.testing.assert_close(atlas.reconstructions("4", 1), first)
