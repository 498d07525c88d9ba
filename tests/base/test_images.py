"""zfwidgets.base.images: tensors -> uint8 tiles and atlases on the input's device."""

from __future__ import annotations

import math

import pytest
import torch
import torchvision.transforms as T

from zfwidgets.base.images import (
    COLORMAPS,
    GridLayout,
    colormap,
    colormap_lut,
    contrast_normalize,
    display_image,
    feature_atlas,
    filter_atlas,
    grid_columns,
    normalize_maps,
    resize_to_fit,
    tile,
    to_rgba,
    unnormalize,
)

# int(colormap_lut(name).long().sum()) and entries 0, 100, 255: js/test/colormap.test.js checks
# the very same numbers, so Python and the browser colour identically.
LUT_FINGERPRINTS = {
    "gray": (163200, [0, 0, 0, 255], [100, 100, 100, 255], [255, 255, 255, 255]),
    "viridis": (149864, [68, 1, 84, 255], [42, 118, 142, 255], [253, 231, 37, 255]),
    "inferno": (146229, [0, 0, 4, 255], [145, 37, 104, 255], [252, 255, 164, 255]),
    "jet": (159040, [0, 0, 128, 255], [18, 255, 238, 255], [128, 0, 0, 255]),
}


@pytest.mark.parametrize("name", sorted(COLORMAPS))
def test_lut_matches_js(name):
    lut = colormap_lut(name)
    assert lut.shape == (256, 4) and lut.dtype == torch.uint8
    total, first, mid, last = LUT_FINGERPRINTS[name]
    assert int(lut.long().sum()) == total
    assert lut[0].tolist() == first and lut[100].tolist() == mid and lut[255].tolist() == last


def test_lut_close_to_matplotlib():
    mpl = pytest.importorskip("matplotlib")
    for name in ("viridis", "inferno"):
        ref = torch.tensor(mpl.colormaps[name](torch.linspace(0, 1, 256).numpy())[:, :3] * 255)
        assert (colormap_lut(name)[:, :3].double() - ref).abs().max() < 3


def test_colormap_clips_and_nan_is_transparent():
    v = torch.tensor([[0.0, 0.5, 1.0], [-3.0, 7.0, float("nan")]])
    out = colormap(v, "gray")
    assert out.shape == (2, 3, 4) and out.dtype == torch.uint8
    assert out[0, :, 0].tolist() == [0, 128, 255]
    assert out[1, 0].tolist() == [0, 0, 0, 255] and out[1, 1].tolist() == [255, 255, 255, 255]
    assert out[1, 2].tolist() == [0, 0, 0, 0]
    with pytest.raises(ValueError, match="viridis"):
        colormap(v, "rainbow")
    with pytest.raises(TypeError):
        colormap(torch.zeros(3, dtype=torch.uint8))


def test_normalize_maps():
    m = torch.stack([torch.zeros(2, 2), torch.tensor([[1.0, 3.0], [2.0, 3.0]])])
    per_map = normalize_maps(m, "map")
    assert per_map[0].eq(0).all()  # constant (dead) map -> 0
    assert per_map[1].tolist() == [[0.0, 1.0], [0.5, 1.0]]
    per_layer = normalize_maps(m, "layer")
    assert per_layer[1, 0, 1] == 1 and per_layer[0].eq(0).all()
    assert torch.allclose(per_layer[1, 0, 0], torch.tensor(1 / 3))
    with pytest.raises(ValueError, match="scale"):
        normalize_maps(m, "global")
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        normalize_maps(m[0], "map")


def test_unnormalize_inverts_torchvision_normalize():
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    x = torch.rand(2, 3, 8, 8)
    y = T.Normalize(mean, std)(x)
    before = y.clone()
    assert torch.allclose(unnormalize(y, mean, std), x, atol=1e-6)
    assert torch.equal(y, before)  # input untouched
    assert torch.allclose(unnormalize(y[0], mean, std), x[0], atol=1e-6)
    with pytest.raises(ValueError, match="one per channel"):
        unnormalize(y, (0.5, 0.5), std)
    with pytest.raises(ValueError, match="non-zero"):
        unnormalize(y, mean, (0.0, 1.0, 1.0))


def test_contrast_normalize():
    x = torch.tensor([[-2.0, 0.0, 1.0]]).reshape(1, 1, 1, 3)
    sym = contrast_normalize(x)
    assert sym.flatten().tolist() == [0.0, 0.5, 0.75]  # zero stays mid-grey
    mm = contrast_normalize(x, "minmax")
    assert torch.allclose(mm.flatten(), torch.tensor([0.0, 2 / 3, 1.0]))
    both = contrast_normalize(torch.cat([x, torch.zeros_like(x)]))
    assert both[1].eq(0.5).all()  # all-zero image -> grey, per image
    with pytest.raises(ValueError, match="mode"):
        contrast_normalize(x, "std")


def test_display_image():
    x = torch.rand(1, 3, 4, 4)
    assert torch.equal(display_image(x), x)
    y = x * 4 - 2
    shown = display_image(y)
    assert shown.min() == 0 and shown.max() == 1
    with pytest.raises(ValueError, match="both"):
        display_image(x, mean=(0.5,) * 3)


def test_to_rgba():
    grey = torch.tensor([0.0, 0.5, 1.0]).reshape(1, 1, 1, 3)
    out = to_rgba(grey)
    assert out.shape == (1, 1, 3, 4)
    assert out[0, 0, 1].tolist() == [128, 128, 128, 255]
    rgb = torch.zeros(1, 3, 1, 1)
    rgb[0, 0] = 1
    assert to_rgba(rgb)[0, 0, 0].tolist() == [255, 0, 0, 255]
    with pytest.raises(ValueError, match="1 \\(grey\\) or 3"):
        to_rgba(torch.zeros(1, 2, 1, 1))


def test_grid_layout_matches_js():
    # js/test/grid.test.js checks the same numbers
    g = GridLayout(count=10, columns=4, tile_h=3, tile_w=5, pad=1)
    assert (g.rows, g.width, g.height) == (3, 25, 13)
    assert g.rect(0) == (1, 1, 5, 3) and g.rect(5) == (7, 5, 5, 3) and g.rect(9) == (7, 9, 5, 3)
    assert g.to_json() == {
        "count": 10,
        "columns": 4,
        "rows": 3,
        "tile": [3, 5],
        "pad": 1,
        "width": 25,
        "height": 13,
    }
    with pytest.raises(IndexError):
        g.rect(10)


def test_tile_places_each_tile_at_its_rect():
    n, h, w = 10, 3, 5
    tiles = torch.zeros(n, h, w, 4, dtype=torch.uint8)
    for i in range(n):
        tiles[i] = torch.tensor([i + 1, 2 * i, 255 - i, 255], dtype=torch.uint8)
    atlas, g = tile(tiles, columns=4)
    assert atlas.shape == (g.height, g.width, 4) == (13, 25, 4)
    for i in range(n):
        x, y, tw, th = g.rect(i)
        assert torch.equal(atlas[y : y + th, x : x + tw], tiles[i])
    # padding and the two empty slots are transparent
    assert atlas[0].eq(0).all() and atlas[:, 0].eq(0).all() and atlas[4].eq(0).all()
    x, y, tw, th = 1 + 2 * 6, 1 + 2 * 4, 5, 3
    assert atlas[y : y + th, x : x + tw].eq(0).all()
    opaque = int((atlas[..., 3] == 255).sum())
    assert opaque == n * h * w


def test_grid_columns_about_16_by_10():
    assert grid_columns(512, 13, 13) == 29
    assert grid_columns(64, 55, 55) == 11
    assert grid_columns(1, 5, 5) == 1
    atlas, g = tile(torch.zeros(600, 6, 6, 4, dtype=torch.uint8))
    assert 1.2 < g.width / g.height < 2.2


def test_feature_atlas():
    g = torch.Generator().manual_seed(0)
    maps = torch.randn(7, 9, 11, generator=g)
    before = maps.clone()
    fa = feature_atlas(maps, cmap="gray", columns=3)
    assert torch.equal(maps, before)
    assert fa.image.shape == (fa.layout.height, fa.layout.width, 4)
    assert fa.layout.count == 7 and fa.layout.columns == 3
    assert torch.equal(fa.maxima, maps.flatten(1).amax(1))
    x, y, w, h = fa.layout.rect(4)
    expected = colormap(normalize_maps(maps)[4], "gray")
    assert torch.equal(fa.image[y : y + h, x : x + w], expected)


def test_feature_atlas_shrinks_big_maps():
    maps = torch.rand(3, 200, 100)
    fa = feature_atlas(maps, max_tile=50)
    assert (fa.layout.tile_h, fa.layout.tile_w) == (50, 25)
    assert torch.equal(fa.maxima, maps.flatten(1).amax(1))  # from the raw maps
    batch = maps[None]
    assert resize_to_fit(batch, None) is batch and resize_to_fit(batch, 200) is batch
    with pytest.raises(ValueError, match="max_tile"):
        resize_to_fit(maps[None], 0)


def test_filter_atlas_rgb_grey_and_mean():
    w = torch.rand(6, 3, 5, 5)
    atlas, g = filter_atlas(w, columns=3)
    x, y, tw, th = g.rect(2)
    assert torch.equal(atlas[y : y + th, x : x + tw], to_rgba(w[2:3])[0])
    grey, _ = filter_atlas(torch.rand(4, 1, 3, 3))
    opaque = grey[grey[..., 3] == 255]
    assert torch.equal(opaque[:, 0], opaque[:, 1]) and torch.equal(opaque[:, 1], opaque[:, 2])
    many, g2 = filter_atlas(torch.rand(4, 16, 3, 3))
    assert g2.count == 4


@pytest.mark.cuda
def test_stays_on_cuda():
    maps = torch.rand(5, 6, 6, device="cuda")
    fa = feature_atlas(maps)
    assert fa.image.device.type == "cuda" and fa.maxima.device.type == "cuda"
    assert to_rgba(torch.rand(1, 3, 4, 4, device="cuda")).device.type == "cuda"


def test_find_normalize_is_the_one_normalize_finder():
    from zfwidgets.base.images import find_normalize, mean_std_of

    mean, std = (0.5, 0.4, 0.3), (0.2, 0.2, 0.2)
    t = T.Compose([T.CenterCrop(8), T.Normalize(mean, std)])
    assert find_normalize(t) == (mean, std) == mean_std_of(t)
    assert find_normalize(torch.zeros(3)) is None  # a tensor's .mean is a method
    assert find_normalize(T.CenterCrop(8)) is None

    class Zero:
        mean, std = (0.5,), (0.0,)

    assert find_normalize(Zero()) is None
    with pytest.raises(ValueError, match="no Normalize"):
        mean_std_of(T.CenterCrop(8))


@pytest.mark.parametrize("k,pad", [(9, 0), (7, 1), (1, 2)])
def test_mosaic_puts_tile_i_at_its_grid_rect(k, pad):
    from zfwidgets.atlas.store import SpriteLayout
    from zfwidgets.base.images import mosaic, pair_mosaic

    g = torch.Generator().manual_seed(k)
    tiles = torch.randint(1, 255, (k, 3, 4, 5), generator=g, dtype=torch.uint8)
    image, layout = mosaic(tiles, pad=pad, fill=(7, 8, 9))
    assert image.shape == (3, layout.height, layout.width)
    assert layout.columns == math.ceil(math.sqrt(k))
    for i in range(k):
        x, y, w, h = layout.rect(i)
        assert torch.equal(image[:, y : y + h, x : x + w], tiles[i])
    assert int((image == 0).sum()) == 0  # padding and empty slots hold the fill
    # the stored sprites are the pad-0, gap-0 pair on the same geometry
    pair, block = pair_mosaic(tiles, tiles.flip(0), columns=layout.columns)
    sprite = SpriteLayout.for_tiles(k, (4, 5))
    assert block == sprite.grid and pair.shape[1:] == (sprite.height, sprite.width)
    for j in range(k):
        x, y, w, h = sprite.rect("patches", j)
        assert torch.equal(pair[:, y : y + h, x : x + w], tiles.flip(0)[j])


def test_mosaic_batches_and_writes_channels_last():
    from zfwidgets.base.images import mosaic, pair_mosaic

    g = torch.Generator().manual_seed(3)
    tiles = torch.rand(2, 5, 3, 4, 6, generator=g)  # two mosaics of five tiles
    both, layout = mosaic(tiles, pad=1, fill=0.5)
    for b in range(2):
        assert torch.equal(both[b], mosaic(tiles[b], pad=1, fill=0.5)[0])
    last, _ = mosaic(tiles, pad=1, fill=0.5, channels_last=True)
    assert last.is_contiguous() and torch.equal(last, both.permute(0, 2, 3, 1))
    pair, _ = pair_mosaic(tiles, tiles, gap=3, channels_last=True)
    assert pair.shape == (2, layout.rows * 4, 2 * layout.columns * 6 + 3, 3)
