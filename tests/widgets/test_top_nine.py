"""TopNine without a kernel: set traits as the front end would, check what goes back."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch
import traitlets
from models import assert_unchanged, hook_count, snapshot, tiny_zf
from torch import nn
from torch.utils.data import DataLoader, Dataset

import zfwidgets as zf
from zfwidgets.base.codec import decode
from zfwidgets.base.images import GridLayout, contrast_normalize, display_image, to_rgba
from zfwidgets.widgets.top_nine import TopNine

EVIL = "<img src=x onerror=zfXSS=1>"
MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


@pytest.fixture
def images():
    return torch.randn(20, 3, 32, 32, generator=torch.Generator().manual_seed(0))


class Labelled(Dataset):
    """(image, label) items, as torchvision datasets give them."""

    def __init__(self, x: torch.Tensor, labels: list[int], classes: list[str] | None = None):
        self.x, self.labels = x, labels
        if classes is not None:
            self.classes = classes

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        return self.x[i], self.labels[i]


class Gated(Dataset):
    """Items from index `after` on wait for `gate`: mining stops there until it opens."""

    def __init__(self, x: torch.Tensor, after: int):
        self.x, self.after, self.gate = x, after, threading.Event()

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        if i >= self.after:
            assert self.gate.wait(20), "gate never opened"
        return self.x[i]


class Unused(nn.Module):
    """A module whose `extra` convolution is never called."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.extra = nn.Conv2d(4, 4, 3)

    def forward(self, x):
        return self.conv(x)


def until(pred, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.005)


def blocks(w: TopNine) -> tuple[np.ndarray, np.ndarray, GridLayout]:
    """The reconstruction block and the patch block of the frame's atlas."""
    g = w.frame["grid"]
    a = decode(w.frame["atlas"])
    layout = GridLayout(g["count"], g["columns"], *g["tile"], g["pad"])
    assert (
        a.shape == (g["height"], g["width"], 4) == (layout.height, 2 * layout.width + g["gap"], 4)
    )
    return a[:, : layout.width], a[:, layout.width + g["gap"] :], layout


def test_frame_is_mines_top9_with_reconstructions_and_patches(model, images):
    before = snapshot(model)
    w = TopNine(model, images, layer="4", channel=2, mean=MEAN, std=STD).wait()
    ref = zf.mine(model, images, layers=["4"], k=9, progress=False)
    f = w.frame
    assert (f["layer"], f["channel"], f["checkpoint"], f["k"]) == ("4", 2, None, 9)
    assert w.status == "ready" and w.progress == 1.0 and w.error == ""
    values, indices = decode(f["values"]), decode(f["indices"])
    assert values.dtype == np.float32 and indices.dtype == np.int32
    np.testing.assert_allclose(values, ref.values["4"][2].numpy(), rtol=1e-6)
    np.testing.assert_array_equal(indices, ref.indices["4"][2].numpy())
    np.testing.assert_array_equal(w.values, values)
    # the two 3x3 blocks, tile by tile
    rec, pat, layout = blocks(w)
    assert f["grid"]["columns"] == 3 and f["grid"]["rows"] == 3
    assert f["crop"] == list(ref.crop_size("4")) == [layout.tile_h, layout.tile_w]
    expect_rec = to_rgba(contrast_normalize(ref.reconstructions("4", 2)))
    expect_pat = to_rgba(display_image(ref.patches("4", 2), MEAN, STD))
    for i in (0, 4, 8):
        x, y, tw, th = layout.rect(i)
        np.testing.assert_array_equal(rec[y : y + th, x : x + tw], expect_rec[i].numpy())
        np.testing.assert_array_equal(pat[y : y + th, x : x + tw], expect_pat[i].numpy())
    assert w.caption == "4 · feature map 2 / 12 · top 9 of 20 images"
    assert w.layers == ["0", "4", "7"] and w.channels == 12
    assert f["classes"] == [""] * 9
    assert_unchanged(model, before)  # ran on a private copy; no hooks, flags, grads left


def test_front_end_switches_channel_and_layer(model, images, frontend):
    w = TopNine(model, images, layer="4", channel=2).wait()
    fe = frontend(w)
    first = bytes(w.frame["atlas"]["view"])
    fe.set(channel=5)
    w.wait()
    assert w.frame["channel"] == 5 and "frame" in fe.updates()
    assert bytes(w.frame["atlas"]["view"]) != first
    ref = zf.mine(model, images, layers=["0", "4", "7"], k=9, progress=False)
    np.testing.assert_allclose(w.values, ref.values["4"][5].numpy(), rtol=1e-6)
    # another layer: larger receptive field, more maps; channel 5 still valid there
    shape4 = decode(w.frame["atlas"]).shape
    fe.set(layer="7")
    w.wait()
    assert (w.frame["layer"], w.frame["channel"], w.channels) == ("7", 5, 16)
    assert decode(w.frame["atlas"]).shape != shape4
    assert w.frame["crop"] == list(ref.crop_size("7"))
    np.testing.assert_allclose(w.values, ref.values["7"][5].numpy(), rtol=1e-6)
    # a layer with fewer maps than the channel: the channel resets to 0
    fe.set(channel=14)
    fe.set(layer="0")
    w.wait()
    assert (w.layer, w.channel, w.channels) == ("0", 0, 8)
    np.testing.assert_allclose(w.values, ref.values["0"][0].numpy(), rtol=1e-6)
    # both in one message, cross-validated together
    fe.set(layer="4", channel=11)
    w.wait()
    assert (w.frame["layer"], w.frame["channel"]) == ("4", 11)
    fe.set(channel=12)  # rejected by validation (ipywidgets logs it); nothing changes
    assert w.channel == 11
    fe.set(layer="nope", channel=1)  # an unknown layer rolls the whole message back
    assert (w.layer, w.channel) == ("4", 11)
    with pytest.raises(traitlets.TraitError, match=r"\[0, 12\)"):
        w.channel = 12


def test_python_side_switching_and_other_layers(model, images):
    w = TopNine(model, images, layer="4", channel=1).wait()
    w.show("7", 15)
    w.wait()
    assert (w.frame["layer"], w.frame["channel"]) == ("7", 15)
    w.show(layer=model[4])  # a module; channel 0
    w.wait()
    assert (w.frame["layer"], w.frame["channel"]) == ("4", 0)
    # a layer that was not offered (a ReLU) is probed, offered and mined on demand
    w.layer = "5"
    w.wait()
    assert w.layers == ["0", "4", "5", "7"] and w.frame["layer"] == "5"
    ref = zf.mine(model, images, layers=["5"], k=9, progress=False)
    np.testing.assert_allclose(w.values, ref.values["5"][0].numpy(), rtol=1e-6)
    with pytest.raises(ValueError, match="close matches: '4'"):
        w.layer = "4x"
    assert w.layer == "5"
    with pytest.raises(ValueError, match="close matches: '4'"):
        w.show("4x", 1)  # both roll back
    assert (w.layer, w.channel) == ("5", 0)


def test_click_sets_selected(model, images, frontend):
    w = TopNine(model, images, layer="4", channel=3).wait()
    fe = frontend(w)
    hit = int(w.indices[4])
    fe.set(selected=hit)
    assert w.selected == hit
    fe.set(selected=20)  # not an image index: rejected, logged by ipywidgets
    assert w.selected == hit
    with pytest.raises(traitlets.TraitError, match=r"\[0, 20\)"):
        w.selected = 20


def test_class_names_from_labels_dataset_and_attributes(model, images):
    classes = ["cat", EVIL, "dog"]
    labels = [i % 3 for i in range(20)]
    w = TopNine(model, images, layer="4", channel=0, classes=classes, labels=labels).wait()
    expect = [classes[labels[i]] for i in w.indices]
    assert w.frame["classes"] == expect
    # (image, label) items and a dataset with .classes
    ds = Labelled(images, labels, classes)
    w2 = TopNine(model, ds, layer="4", channel=0).wait()
    assert w2.frame["classes"] == expect
    np.testing.assert_array_equal(w2.indices, w.indices)
    # labels without names
    w3 = TopNine(model, Labelled(images, labels), layer="4", channel=0).wait()
    assert w3.frame["classes"] == [f"class {labels[i]}" for i in w3.indices]
    # a DataLoader over it (the loader's dataset gives labels and classes)
    w4 = TopNine(model, DataLoader(ds, batch_size=6), layer="4", channel=0).wait()
    assert w4.frame["classes"] == expect
    np.testing.assert_array_equal(w4.indices, w.indices)


def test_top_classes_with_counts(model, images, tmp_path):
    """frame["top_classes"]: the classes of the unit's hits with counts, most frequent first,
    ties by class index; from labels=/the data, else as stored with an atlas loaded alone."""
    classes = ["cat", EVIL, "dog"]
    labels = [(i * 7) % 3 for i in range(20)]
    w = TopNine(model, images, layer="4", channel=1, classes=classes, labels=labels).wait()
    ys = [labels[i] for i in w.indices]
    want = sorted(
        ([classes[y], ys.count(y)] for y in set(ys)), key=lambda p: (-p[1], classes.index(p[0]))
    )
    assert w.frame["top_classes"] == want and w.frame["counted"] == 9
    # an atlas of k = 12, rendered with top=4, loaded with no data: 4 hits drawn, 12 counted
    atlas = zf.mine(model, Labelled(images, labels, classes), layers=["4"], k=12, progress=False)
    atlas.save(tmp_path / "a")
    atlas.render(top=4, progress=False, format="png")
    loaded = zf.Atlas.load(tmp_path / "a")
    w2 = TopNine(model, atlas=loaded, layer="4", channel=2).wait()
    assert w2.frame["k"] == 4 and len(w2.indices) == 4 and len(w2.frame["classes"]) == 4
    np.testing.assert_array_equal(w2.indices, atlas.indices["4"][2, :4].numpy())
    assert w2.frame["counted"] == 12
    assert w2.frame["top_classes"] == [list(p) for p in atlas.class_counts("4", 2)]
    assert sum(n for _, n in w2.frame["top_classes"]) == 12
    # the same folder with its data: stored reconstructions (4), patches cut from the data
    with_data = zf.Atlas.load(tmp_path / "a", data=Labelled(images, labels, classes))
    w4 = TopNine(model, atlas=with_data, layer="4", channel=2).wait()
    assert w4.frame["k"] == 4 and w4.frame["top_classes"] == w2.frame["top_classes"]
    np.testing.assert_array_equal(w4.indices, w2.indices)
    # no labels anywhere: an empty list (the front end hides the line)
    w3 = TopNine(model, images, layer="4", channel=0).wait()
    assert w3.frame["top_classes"] == [] and w3.frame["classes"] == [""] * 9


def test_given_atlas_is_used_without_mining(model, images, tmp_path):
    atlas = zf.mine(model, images, layers=["4", "7"], k=4, progress=False)
    w = TopNine(model, atlas=atlas, layer="7", channel=3)
    assert w.status == "computing"
    w.wait()
    assert w.k == 4 and w.layers == ["4", "7"]
    np.testing.assert_array_equal(w.indices, atlas.indices["7"][3].numpy())
    assert w.frame["grid"]["columns"] == 2 and w.frame["grid"]["rows"] == 2
    assert atlas.model is model  # the user's atlas is not re-pointed
    # a file with the crops inside: no data, no model run for patches
    path = tmp_path / "atlas.safetensors"
    atlas.save(path, images=True)
    loaded = zf.Atlas.load(path)
    w2 = TopNine(model, atlas=loaded, layer="4", channel=1).wait()
    np.testing.assert_array_equal(w2.indices, atlas.indices["4"][1].numpy())
    with pytest.raises(ValueError, match="not in the atlas"):
        TopNine(model, atlas=loaded, layer="0")
    no_images = zf.Atlas.load(path)
    no_images._cache.clear()
    with pytest.raises(ValueError, match="no images to crop patches from"):
        TopNine(model, atlas=no_images, layer="4")


def test_mining_reports_progress_and_newer_requests_supersede(model, images, frontend, monkeypatch):
    monkeypatch.setattr(TopNine, "_progress_every_s", 0.0)
    data = Gated(images, after=8)
    w = TopNine(model, data, layer="4", channel=0, batch_size=4)
    fe = frontend(w)
    # batches 0 and 1 went through; batch 2 waits at the gate (no event loop here: flushing
    # the runner applies the progress it reported, as the kernel's loop would)
    until(lambda: w._runner.flush() or w.progress == 8 / 20)
    assert w.status == "mining" and not w.frame
    fe.set(channel=1)
    fe.set(channel=2)
    data.gate.set()
    w.wait()
    assert w.frame["channel"] == 2 and w.status == "ready"
    assert fe.updates().count("frame") == 1  # channels 0 and 1 were never sent
    # quick successive requests: only the last is shown
    for c in (3, 4, 5, 6):
        fe.set(channel=c)
    w.wait()
    assert w.frame["channel"] == 6
    np.testing.assert_allclose(
        w.values,
        zf.mine(model, images, layers=["4"], k=9, progress=False).values["4"][6].numpy(),
        rtol=1e-6,
    )


def test_errors_in_the_worker_show_in_the_widget(model, images):
    w = TopNine(model, images, layer="4", channel=0).wait()
    w._shadow[4] = nn.Conv2d(1, 12, 3)  # breaks the private copy only
    w.refresh()  # mining fails
    with pytest.raises(RuntimeError, match="RuntimeError"):
        w.wait()
    assert w.status == "error" and w.error
    w.channel = 1  # so does the next request
    with pytest.raises(RuntimeError, match="RuntimeError"):
        w.wait()
    assert w.status == "error" and w.error
    assert hook_count(w._shadow) == 0 and hook_count(model) == 0


def test_large_crops_are_shrunk(model, images):
    w = TopNine(model, images, layer="7", channel=0, max_tile=8).wait()
    assert max(w.frame["grid"]["tile"]) == 8 and w.frame["crop"][0] > 8


def test_grey_and_multichannel_inputs():
    torch.manual_seed(0)
    grey = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 5, 3))
    w = TopNine(grey, torch.randn(12, 1, 16, 16), layer="2", channel=4, k=4).wait()
    rec, pat, layout = blocks(w)
    x, y, tw, th = layout.rect(0)
    tile_ = pat[y : y + th, x : x + tw]
    assert (tile_[..., 0] == tile_[..., 1]).all() and (tile_[..., 3] == 255).all()


def test_bad_input_at_construction(model, images):
    with pytest.raises(ValueError, match=r"no module named '44'.*close matches: '4'"):
        TopNine(model, images, layer="44")
    with pytest.raises(ValueError, match=r"channel: expected an int in \[0, 12\)"):
        TopNine(model, images, layer="4", channel=12)
    with pytest.raises(ValueError, match="empty"):
        TopNine(model, images[:0], layer="4")
    with pytest.raises(ValueError, match="empty"):
        TopNine(model, [], layer="4")
    with pytest.raises(ValueError, match="k: expected at most the dataset size"):
        TopNine(model, images[:5], layer="4")
    with pytest.raises(ValueError, match="give data="):
        TopNine(model, layer="4")
    with pytest.raises(ValueError, match="takes 3 channels"):
        TopNine(model, torch.randn(10, 1, 32, 32), layer="4")
    with pytest.raises(TypeError, match="expected a zfwidgets Atlas"):
        TopNine(model, atlas={"4": 1}, layer="4")
    with pytest.raises(ValueError, match="mean and std"):
        TopNine(model, images, layer="4", mean=MEAN)
    with pytest.raises(ValueError, match="labels: expected 20 labels"):
        TopNine(model, images, layer="4", labels=[0, 1])
    with pytest.raises(ValueError, match="'extra' \\(Conv2d\\) gives no \\(N, C, H, W\\)"):
        TopNine(Unused(), images, layer="extra")


def test_close_stops_the_worker(model, images):
    data = Gated(images, after=8)
    w = TopNine(model, data, layer="4", batch_size=4)
    w.close()
    data.gate.set()
    w.wait(timeout=20)
    assert not w.frame


@pytest.fixture
def mined(monkeypatch):
    """The layers of each zf.mine call TopNine makes."""
    from zfwidgets.widgets import top_nine

    calls = []

    def counting_mine(*args, **kwargs):
        calls.append(kwargs["layers"])
        return zf.mine(*args, **kwargs)

    monkeypatch.setattr(top_nine, "mine", counting_mine)
    return calls


def test_a_superseded_mining_is_handed_on_not_repeated(model, images, frontend, mined):
    calls = mined
    data = Gated(images, after=8)
    w = TopNine(model, data, layer="4", channel=0, batch_size=4)
    fe = frontend(w)
    until(lambda: w._runner.flush() or w.progress > 0)
    fe.set(channel=1)  # same weights: the mining under way goes on, for this request
    data.gate.set()
    w.wait()
    assert w.frame["channel"] == 1 and calls == [["0", "4", "7"]]
    assert set(w._atlases[None]) == {"0", "4", "7"}
    w.show("7", 2)
    w.wait()
    assert len(calls) == 1  # every offered layer came from the one pass


def test_traits_change_on_the_owner_thread_only_and_weights_are_shared(model, images):
    threads = set()
    w = TopNine(model, images, layer="4", channel=0)
    w.observe(lambda change: threads.add(threading.current_thread()), names=traitlets.All)
    w.wait()
    w.channel = 3
    w.show("7", 1)
    w.refresh()
    w.wait()
    assert w.frame["layer"] == "7" and threads == {threading.current_thread()}
    # the private copy: its own modules (hooks never reach the model), the model's weights
    assert w._shadow is not model and w._shadow[4] is not model[4]
    assert w._shadow[4].weight is model[4].weight


def test_checkpoint_weights_go_into_the_copy_as_the_model_holds_its_own(images):
    model = tiny_zf().double()
    x = images.double()
    before = snapshot(model)
    cp = {k: (v * 0.5).float() for k, v in model.state_dict().items()}  # float32, other values
    kept = {k: v.clone() for k, v in cp.items()}
    top = TopNine(model, x, layer="4", channel=1).wait()
    top.set_checkpoints([cp], ["halved"])
    top.checkpoint = 0
    top.wait()
    assert {v.dtype for v in top._shadow.state_dict().values()} == {torch.float64}
    halved = tiny_zf().double()
    halved.load_state_dict(cp)
    ref = zf.mine(halved, x, layers=["4"], k=9, progress=False)
    np.testing.assert_allclose(top.values, ref.values["4"][1].float().numpy(), rtol=1e-6)
    np.testing.assert_array_equal(top.indices, ref.indices["4"][1].numpy())
    assert all(torch.equal(cp[k], kept[k]) and cp[k].dtype == torch.float32 for k in cp)
    assert_unchanged(model, before)
    top.checkpoint = None  # back to the model's own weights, shared again
    top.wait()
    assert top._shadow[4].weight is model[4].weight


def test_new_checkpoints_keep_the_models_own_hits(model, images, mined):
    w = TopNine(model, images, layer="4", channel=0).wait()
    w.set_checkpoints([model.state_dict()], ["same"])  # still showing the model's own weights
    w.channel = 2
    w.wait()
    assert len(mined) == 1 and w.frame["checkpoint"] is None
    w.checkpoint = 0
    w.wait()
    assert len(mined) == 2
    halved = {k: v * 0.5 for k, v in model.state_dict().items()}
    w.set_checkpoints([halved], ["halved"])  # checkpoint 0 is another one now: mined again
    w.wait()
    assert len(mined) == 3 and w.frame["checkpoint_label"] == "halved"
    ref = zf.mine(model, images, layers=["4"], k=9, progress=False)
    w.checkpoint = None
    w.wait()
    assert len(mined) == 3
    np.testing.assert_allclose(w.values, ref.values["4"][2].numpy(), rtol=1e-6)
