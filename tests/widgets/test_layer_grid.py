"""LayerGrid without a kernel: set traits as the front end would, check what goes back."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torchvision
import traitlets
from ipywidgets.widgets.widget import _remove_buffers
from torch import nn

import zfwidgets as zf
from zfwidgets.base import static
from zfwidgets.base.codec import decode
from zfwidgets.base.images import GridLayout, colormap, display_image, normalize_maps, to_rgba
from zfwidgets.widgets import LayerGrid
from zfwidgets.widgets.layer_grid import map_layers, mean_std_of


def atlas_of(w: LayerGrid) -> np.ndarray:
    return decode(w.frame["atlas"])


def test_offers_map_layers_and_draws_the_first_conv(model, image):
    w = LayerGrid(model, image)
    # every conv / relu / pool / LRN whose output is (1, C, H, W); not the Linear "11"
    assert w.layers == ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]
    assert w.layer == "0" and w.channel is None
    frame = w.frame
    assert frame["layer"] == "0" and frame["shape"] == [8, 32, 32]
    g = frame["grid"]
    a = atlas_of(w)
    assert a.dtype == np.uint8 and a.shape == (g["height"], g["width"], 4)
    assert g["count"] == 8
    # the atlas is the colour-mapped maps, tile by tile
    with zf.capture(model, ["0"]) as cap:
        model(image[None])
    maps = cap.activations["0"][0]
    maxima = decode(frame["maxima"])
    assert maxima.dtype == np.float32 and maxima.shape == (8,)
    np.testing.assert_allclose(maxima, maps.flatten(1).amax(1).numpy(), rtol=1e-6)
    layout = GridLayout(g["count"], g["columns"], *g["tile"], g["pad"])
    x, y, tw, th = layout.rect(5)
    expected = colormap(normalize_maps(maps)[5], "viridis").numpy()
    np.testing.assert_array_equal(a[y : y + th, x : x + tw], expected)
    assert "0 · 8 maps of 32×32" in w.caption


def test_front_end_layer_change_updates_atlas_bytes_and_shape(model, image, frontend):
    w = LayerGrid(model, image)
    fe = frontend(w)
    before = bytes(w.frame["atlas"]["view"])
    shape_before = w.frame["atlas"]["shape"]
    fe.set(layer="4")
    assert w.layer == "4"
    assert w.frame["layer"] == "4" and w.frame["shape"] == [12, 16, 16]
    assert w.frame["atlas"]["shape"] != shape_before
    assert bytes(w.frame["atlas"]["view"]) != before
    assert decode(w.frame["maxima"]).shape == (12,)
    # one message back, carrying the frame with its binary buffers
    sent = [(m, b) for m, b in fe.sent if m["method"] == "update" and "frame" in m["state"]]
    assert len(sent) == 1
    msg, buffers = sent[0]
    assert ["frame", "atlas", "view"] in msg["buffer_paths"]
    assert ["frame", "maxima", "view"] in msg["buffer_paths"]
    assert sum(b.nbytes for b in buffers) == w.frame["atlas"]["view"].nbytes + 12 * 4
    assert "caption" in msg["state"]  # sent in the same message (hold_sync)


def test_front_end_channel_click_is_seen_by_python(model, image, frontend):
    w = LayerGrid(model, image, "4")
    seen = []
    w.observe(lambda change: seen.append(change.new), "channel")
    fe = frontend(w)
    fe.set(channel=7)
    assert w.channel == 7 and seen == [7]
    maxima = decode(w.frame["maxima"])
    assert w.caption == f"4 · channel 7 · max {float(maxima[7]):.4g}"
    assert "caption" in fe.updates()
    assert "channel" not in fe.updates()  # only echoed, not changed by the kernel
    fe.set(channel=None)
    assert w.channel is None and "click to select" in w.caption
    # a layer change clears the selection (channels of another layer mean something else)
    w.channel = 3
    w.layer = "8"
    assert w.channel is None


def test_channel_out_of_range(model, image):
    w = LayerGrid(model, image, "0")
    with pytest.raises(traitlets.TraitError, match=r"\[0, 8\)"):
        w.channel = 8
    with pytest.raises(traitlets.TraitError):
        w.channel = -1


def test_bad_layer_name_lists_close_names(model, image):
    w = LayerGrid(model, image)
    with pytest.raises(ValueError, match=r"close matches: '8'") as err:
        w.layer = "8x"
    assert "layers with feature maps" in str(err.value)
    with pytest.raises(ValueError, match=r"'11' \(Linear\) gives no \(1, C, H, W\) feature maps"):
        w.layer = "11"
    assert w.layer == "0"
    alex = torchvision.models.alexnet(weights=None).eval()
    x = torch.randn(3, 224, 224)
    with pytest.raises(ValueError, match=r"close matches: 'features\.10'"):
        LayerGrid(alex, x, "features.100")
    with pytest.raises(ValueError, match="no feature-map layer named 'conv1'"):
        LayerGrid(alex, x, "conv1")


def test_bad_images(model, image):
    with pytest.raises(ValueError, match=r"one image .* got shape \(2, 3, 32, 32\).*x\[0\]"):
        LayerGrid(model, torch.stack([image, image]))
    with pytest.raises(ValueError, match=r"got shape \(32, 32\)"):
        LayerGrid(model, image[0])
    with pytest.raises(TypeError, match="torch.Tensor"):
        LayerGrid(model, image.numpy())
    with pytest.raises(TypeError, match="floating-point"):
        LayerGrid(model, (image * 100).to(torch.uint8))
    with pytest.raises(ValueError, match="takes 3 channels, got 1"):
        LayerGrid(model, image[:1])
    with pytest.raises(ValueError, match="finite"):
        LayerGrid(model, image.clone().fill_(float("nan")))
    with pytest.raises(TypeError, match="torch.nn.Module"):
        LayerGrid("alexnet", image)


def test_thumbnail_is_unnormalised(model, image):
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    weights_like = torchvision.transforms.Compose(
        [torchvision.transforms.CenterCrop(32), torchvision.transforms.Normalize(mean, std)]
    )
    assert mean_std_of(weights_like) == (mean, std)
    w = LayerGrid(model, image, transform=weights_like)
    thumb = decode(w.thumbnail)
    expected = to_rgba(display_image(image[None], mean, std))[0].numpy()
    np.testing.assert_array_equal(thumb, expected)
    assert thumb.shape == (32, 32, 4)
    with pytest.raises(ValueError, match="no Normalize"):
        LayerGrid(model, image, transform=torchvision.transforms.CenterCrop(32))
    with pytest.raises(ValueError, match="both"):
        LayerGrid(model, image, mean=mean)


def test_colormap_and_scale_redraw_and_keep_the_channel(model, image, frontend):
    w = LayerGrid(model, image, "1")
    w.channel = 2
    fe = frontend(w)
    before = bytes(w.frame["atlas"]["view"])
    fe.set(colormap="gray")
    assert w.frame["colormap"] == "gray" and bytes(w.frame["atlas"]["view"]) != before
    a = atlas_of(w)
    opaque = a[a[..., 3] == 255]
    assert (opaque[:, 0] == opaque[:, 1]).all()
    fe.set(scale="layer")
    assert w.frame["scale"] == "layer" and w.channel == 2
    with pytest.raises(ValueError, match="colormap"):
        w.colormap = "rainbow"
    with pytest.raises(ValueError, match="scale"):
        LayerGrid(model, image, scale="global")


def test_state_is_small_json_plus_binary_buffers(model, image):
    w = LayerGrid(model, image)
    state, paths, buffers = _remove_buffers(w.get_state())
    assert ["frame", "atlas", "view"] in paths and ["thumbnail", "view"] in paths
    text = json.dumps({k: v for k, v in state.items() if k not in ("_esm", "_css")})
    assert len(text) < 2000  # no base64, no number lists
    assert w._esm and "zf-layer-grid" in str(w._esm)


def test_no_hooks_left_and_flags_restored(model, image):
    model.train()
    w = LayerGrid(model, image)
    w.layer = "5"
    assert model.training
    for m in model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks
    assert all(p.grad is None for p in model.parameters())


def test_scales_to_512_maps():
    torch.manual_seed(0)
    wide = nn.Sequential(nn.Conv2d(3, 600, 3, padding=1), nn.ReLU()).eval()
    w = LayerGrid(wide, torch.randn(3, 12, 12), "1")
    g = w.frame["grid"]
    assert g["count"] == 600 and g["rows"] * g["columns"] >= 600
    assert 1.2 < g["width"] / g["height"] < 2.2
    assert decode(w.frame["maxima"]).shape == (600,)
    w.channel = 599
    assert "channel 599" in w.caption


def test_without_the_cache_gives_the_same_atlas(model, image):
    cached = LayerGrid(model, image, "6")
    uncached = LayerGrid(model, image, "6", cache_bytes=0)
    assert uncached.layers == cached.layers
    assert bytes(uncached.frame["atlas"]["view"]) == bytes(cached.frame["atlas"]["view"])
    uncached.layer = "2"
    cached.layer = "2"
    assert bytes(uncached.frame["atlas"]["view"]) == bytes(cached.frame["atlas"]["view"])
    assert torch.equal(uncached.maps("7"), cached.maps("7"))


def test_set_image_redraws(model, image):
    w = LayerGrid(model, image, "4")
    before = bytes(w.frame["atlas"]["view"])
    w.set_image(torch.flip(image, [2]))
    assert w.layer == "4" and bytes(w.frame["atlas"]["view"]) != before


def test_alexnet_every_layer():
    alex = torchvision.models.alexnet(weights=None).eval()
    x = torch.randn(1, 3, 224, 224)
    w = LayerGrid(alex, x, columns=16)
    assert w.layer == "features.0"
    assert w.layers == [n for n in map_layers(alex) if n.startswith("features") or n == "avgpool"]
    shapes = {}
    for name in w.layers:
        w.layer = name
        shapes[name] = w.frame["shape"]
        assert w.frame["grid"]["columns"] == 16
    assert shapes["features.0"] == [64, 55, 55] and shapes["features.12"] == [256, 6, 6]


def test_missing_bundle_says_how_to_build(model, image, monkeypatch, tmp_path):
    monkeypatch.setattr(static, "STATIC", tmp_path)

    class Fresh(LayerGrid):
        pass

    with pytest.raises(FileNotFoundError, match="npm run build"):
        Fresh(model, image)
