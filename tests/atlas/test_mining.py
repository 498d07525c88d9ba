import pytest
import torch
from models import assert_unchanged, hook_count, snapshot, tiny_zf, torchvision_model
from PIL import Image
from torch.utils.data import DataLoader, Dataset, TensorDataset

import zfwidgets as zf
from zfwidgets.atlas.core import Atlas


def brute_force(model, x, layer, k):
    """Every image's spatial maximum per channel, sorted (stable: lower index wins ties)."""
    with zf.capture(model, [layer], clone=True) as cap, torch.no_grad():
        model(x)
    a = cap.activations[layer]
    flat = a.flatten(2)
    values = flat.amax(2).t()  # (C, N)
    order = torch.sort(values, dim=1, descending=True, stable=True).indices[:, :k]
    pos = flat.argmax(2).t()  # (C, N)
    best = torch.gather(pos, 1, order)
    w = a.shape[3]
    return torch.gather(values, 1, order), order, torch.stack([best // w, best % w], -1)


@pytest.fixture(scope="module")
def data():
    torch.manual_seed(0)
    return torch.randn(37, 3, 32, 32)


@pytest.mark.parametrize("batch_size", [1, 8, 64])
def test_mining_equals_brute_force(data, batch_size):
    model = tiny_zf()
    before = snapshot(model)
    data0 = data.clone()
    atlas = zf.mine(model, data, layers=["0", "4", "8"], k=9, batch_size=batch_size, progress=False)
    for layer in ["0", "4", "8"]:
        v, i, p = brute_force(model, data, layer, 9)
        torch.testing.assert_close(atlas.values[layer], v)
        assert torch.equal(atlas.indices[layer], i)
        assert torch.equal(atlas.positions[layer], p)
        # each image at most once per channel
        for row in atlas.indices[layer]:
            assert len(set(row.tolist())) == 9
    assert torch.equal(data, data0)
    assert_unchanged(model, before)


def test_data_kinds_agree(data):
    model = tiny_zf()
    ref = zf.mine(model, data, layers="4", k=5, progress=False)
    labels = torch.arange(len(data))
    kinds = [
        TensorDataset(data, labels),
        DataLoader(TensorDataset(data, labels), batch_size=10),
        list(data),
    ]
    for d in kinds:
        atlas = zf.mine(model, d, layers="4", k=5, batch_size=6, progress=False)
        assert torch.equal(atlas.indices["4"], ref.indices["4"])
        torch.testing.assert_close(atlas.values["4"], ref.values["4"])


def test_pil_images_with_transform():
    model = tiny_zf()
    torch.manual_seed(1)
    arrays = (torch.rand(6, 32, 32, 3) * 255).to(torch.uint8).numpy()
    images = [Image.fromarray(a) for a in arrays]

    def transform(img):
        return torch.from_numpy(__import__("numpy").array(img)).permute(2, 0, 1).float() / 255

    atlas = zf.mine(model, images, layers=["4"], k=3, transform=transform, progress=False)
    tensor = torch.stack([transform(i) for i in images])
    ref = zf.mine(model, tensor, layers=["4"], k=3, progress=False)
    assert torch.equal(atlas.indices["4"], ref.indices["4"])
    with pytest.raises(TypeError, match="transform"):
        zf.mine(model, images, layers=["4"], k=3, progress=False)


def test_patches_and_reconstructions_are_receptive_field_crops(data):
    model = tiny_zf()
    atlas = zf.mine(model, data, layers=["4"], k=4, progress=False)
    rf = atlas.field("4")
    size = atlas.crop_size("4")
    assert size == tuple(min(r, s) for r, s in zip(rf.size, (32, 32)))
    for c in [0, 5]:
        patches = atlas.patches("4", c)
        recon = atlas.reconstructions("4", c)
        assert patches.shape == recon.shape == (4, 3) + size
        for j in range(4):
            n = int(atlas.indices["4"][c, j])
            y, x = atlas.positions["4"][c, j].tolist()
            full = zf.deconv(model, data[n : n + 1], layer="4", units=[(0, c, y, x)])
            top, left = atlas.corners("4", c)[j]
            # the crop holds all of the reconstruction (it lies inside the receptive field)
            torch.testing.assert_close(recon[j].abs().sum(), full.abs().sum(), rtol=1e-5, atol=1e-6)
            t0, l0 = max(top, 0), max(left, 0)
            expect = data[n, :, t0 : top + size[0], l0 : left + size[1]]
            got = patches[
                j, :, t0 - top : t0 - top + expect.shape[1], l0 - left : l0 - left + expect.shape[2]
            ]
            assert torch.equal(got, expect)
    every = atlas.reconstructions("4")
    assert every.shape == (12, 4, 3) + size
    torch.testing.assert_close(every[5], atlas.reconstructions("4", 5))


def test_atlas_save_load_without_pickle(tmp_path, data):
    model = tiny_zf()
    atlas = zf.mine(model, data, layers=["4", "8"], k=3, progress=False)
    path = tmp_path / "atlas.safetensors"
    atlas.save(path)
    back = Atlas.load(path, model=model, data=data)
    for layer in ["4", "8"]:
        assert torch.equal(back.indices[layer], atlas.indices[layer])
        assert torch.equal(back.positions[layer], atlas.positions[layer])
        torch.testing.assert_close(back.values[layer], atlas.values[layer])
        assert back.field(layer) == atlas.field(layer)
    torch.testing.assert_close(back.patches("8", 2), atlas.patches("8", 2))
    # with images stored, no model or data is needed
    atlas.save(path, images=True)
    alone = Atlas.load(path)
    torch.testing.assert_close(
        alone.reconstructions("4", 1), atlas.reconstructions("4", 1), atol=1e-3, rtol=1e-2
    )
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 40)
    with pytest.raises(ValueError, match="safetensors"):
        Atlas.load(bad)
    with pytest.raises(FileNotFoundError):
        Atlas.load(tmp_path / "missing.safetensors")


def test_resnet_layers(data):
    model = torchvision_model("resnet18")
    x = torch.nn.functional.interpolate(data[:12], size=64)
    atlas = zf.mine(model, x, layers=["layer1.0.relu", "layer2.1", "fc"], k=4, progress=False)
    v, i, _ = brute_force(model, x, "layer2.1", 4)
    assert torch.equal(atlas.indices["layer2.1"], i)
    assert atlas.values["fc"].shape == (1000, 4)
    assert atlas.reconstructions("layer2.1", 3).shape[:2] == (4, 3)
    assert hook_count(model) == 0


class Empty(Dataset):
    def __len__(self):
        return 0

    def __getitem__(self, i):
        raise IndexError


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"data": Empty(), "layers": ["4"]}, ValueError, "empty"),
        ({"data": torch.randn(3, 3, 32, 32), "layers": ["4"], "k": 4}, ValueError, "at most"),
        ({"data": torch.randn(3, 3, 32, 32), "layers": ["nope"]}, ValueError, "no module"),
        ({"data": torch.randn(3, 1, 32, 32), "layers": ["4"], "k": 2}, ValueError, "channels"),
        ({"data": torch.randn(3, 3, 32), "layers": ["4"], "k": 2}, ValueError, "4-d"),
        ({"data": torch.randn(3, 3, 32, 32), "layers": ["4"], "k": 0}, ValueError, "k"),
        (
            {
                "data": DataLoader(TensorDataset(torch.randn(4, 3, 32, 32)), shuffle=True),
                "layers": ["4"],
                "k": 2,
            },
            ValueError,
            "fixed order",
        ),
        ({"data": "images/", "layers": ["4"]}, TypeError, "expected"),
    ],
)
def test_bad_input(kwargs, error, match):
    model = tiny_zf()
    with pytest.raises(error, match=match):
        zf.mine(model, progress=False, **kwargs)
    assert hook_count(model) == 0
