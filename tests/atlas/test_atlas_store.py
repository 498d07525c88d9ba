"""The atlas directory: save/load round trips, lazy tiles, rendering, resuming."""

import importlib
import json
import os

import numpy as np
import pytest
import torch
from models import hook_count, tiny_zf

import zfwidgets as zf
from zfwidgets.atlas.core import Atlas
from zfwidgets.atlas.store import MANIFEST, Store
from zfwidgets.base.images import contrast_normalize
from zfwidgets.base.progress import Cancelled

LAYERS = ["0", "4", "8"]


@pytest.fixture(scope="module")
def data():
    torch.manual_seed(0)
    return torch.rand(23, 3, 32, 32)


@pytest.fixture(scope="module")
def model():
    return tiny_zf()


@pytest.fixture
def atlas(model, data):
    return zf.mine(model, data, layers=LAYERS, k=4, progress=False)


def manifest(path):
    return json.loads((path / MANIFEST).read_text())


def test_directory_round_trip(tmp_path, model, data, atlas):
    atlas.provenance = {"data": {"n": 23, "fingerprint": "abc"}, "skipped": []}
    path = tmp_path / "atlas"
    atlas.save(path)
    assert atlas.path == path
    m = manifest(path)
    assert (
        m["format"] == "zfwidgets.atlas.core-dir/1" and m["k"] == 4 and m["input_size"] == [32, 32]
    )
    assert [L["name"] for L in m["layers"]] == LAYERS
    assert all(L["images"] is None for L in m["layers"])
    assert m["provenance"]["data"] == {"n": 23, "fingerprint": "abc"}
    assert "model" in m["provenance"]  # filled from the attached model
    for loaded in (Atlas.load(path), Atlas.load(path, model=model, data=data)):
        assert loaded.layers == LAYERS and loaded.k == 4 and loaded.input_size == (32, 32)
        assert loaded.path == path and not loaded.has_images("4")
        assert loaded.provenance["data"]["fingerprint"] == "abc"
        for n in LAYERS:
            assert torch.equal(loaded.indices[n], atlas.indices[n])
            assert torch.equal(loaded.positions[n], atlas.positions[n])
            torch.testing.assert_close(loaded.values[n], atlas.values[n])
            assert loaded.field(n) == atlas.field(n)
    back = Atlas.load(path, model=model, data=data)
    torch.testing.assert_close(back.reconstructions("4", 2), atlas.reconstructions("4", 2))
    with pytest.raises(RuntimeError, match="no model/data"):
        Atlas.load(path).patches("4", 0)
    with pytest.raises(ValueError, match="mined over 23 images"):
        Atlas.load(path, data=data[:10])
    # saving again writes the same files (content-addressed tensors), nothing left behind
    before = sorted(os.listdir(path))
    back.save(path)
    assert sorted(os.listdir(path)) == before
    assert not any(name.endswith(".tmp") for name in os.listdir(path))


def test_refuses_a_foreign_folder(tmp_path, atlas):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="holds 'notes.txt' and no manifest.json"):
        atlas.save(tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine"
    # hidden entries (a mining checkpoint) may share the folder, and are left alone
    out = tmp_path / "out"
    (out / ".checkpoint").mkdir(parents=True)
    (out / ".checkpoint" / "part.safetensors").write_bytes(b"x")
    atlas.save(out)
    atlas.save(out)
    assert (out / ".checkpoint" / "part.safetensors").read_bytes() == b"x"
    assert Atlas.load(out).layers == LAYERS


def test_render_png_equals_the_computed_crops(tmp_path, model, data, atlas):
    path = tmp_path / "atlas"
    atlas.save(path)
    seen = []
    atlas.render(format="png", progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (8 + 12 + 16, 8 + 12 + 16)
    assert hook_count(model) == 0
    alone = Atlas.load(path)
    for n in LAYERS:
        assert alone.has_images(n) and alone.has_images(n, rule="deconv")
        assert not alone.has_images(n, rule="guided")
    for n, c in [("0", 1), ("4", 3), ("8", 15)]:
        ref_p = atlas.patches(n, c)
        ref_r = atlas.reconstructions(n, c)
        p, r = alone.patches(n, c), alone.reconstructions(n, c)
        assert p.shape == ref_p.shape and r.shape == ref_r.shape
        # uint8 PNG: within half a step of 1/255
        assert float((p - ref_p).abs().max()) <= 0.5 / 255 + 1e-6
        diff = contrast_normalize(r) - contrast_normalize(ref_r)
        assert float(diff.abs().max()) <= 0.5 / 255 + 1e-6
        u = alone.unit_images(n, c)
        assert u.mime == "image/png" and u.data[:4] == b"\x89PNG"
        h, w = atlas.crop_size(n)
        assert u.sprite.shape == (u.layout.height, u.layout.width, 3)
        assert u.patches.shape == u.reconstructions.shape == (4, h, w, 3)
        assert alone.image_file(n, c).read_bytes() == u.data
    every = alone.reconstructions("4")
    assert every.shape == (12, 4, 3) + atlas.crop_size("4")
    # the layout the manifest gives a browser
    rec = manifest(path)["layers"][1]["images"]
    assert rec["layout"]["kind"] == "unit-sprite"
    assert rec["layout"]["blocks"] == ["reconstructions", "patches"]
    assert rec["display"]["reconstructions"] == {"kind": "contrast", "mode": "symmetric"}
    assert rec["display"]["patches"] == {"kind": "clip"}
    assert (path / rec["dir"] / "00003.png").is_file()


def test_render_webp_with_mean_std_and_grey(tmp_path):
    torch.manual_seed(1)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 6, 5, padding=2),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(6, 5, 3),
        torch.nn.ReLU(),
    )
    x = (torch.rand(12, 1, 24, 24) - 0.4) / 0.3  # as Normalize((0.4,), (0.3,)) gives
    atlas = zf.mine(model, x, layers=["3"], k=3, progress=False)
    atlas.save(tmp_path / "a")
    atlas.render(mean=[0.4], std=[0.3], progress=False, max_tile=8)
    alone = Atlas.load(tmp_path / "a")
    u = alone.unit_images("3", 2)
    assert u.mime == "image/webp" and u.data[8:12] == b"WEBP"
    assert u.patches.ndim == 3  # grey tiles
    assert u.display["patches"] == {"kind": "unnormalize", "mean": [0.4], "std": [0.3]}
    p = alone.patches("3", 2)
    assert p.shape == (3, 1, 8, 8)
    # mapped back through the normalisation: roughly the model-input values
    ref = torch.nn.functional.interpolate(atlas.patches("3", 2), size=(8, 8), mode="area")
    assert float((p - ref).abs().mean()) < 0.15


def test_render_needs_a_directory_and_good_arguments(tmp_path, atlas):
    with pytest.raises(RuntimeError, match=r"save it first"):
        atlas.render(progress=False)
    atlas.save(tmp_path / "a")
    for kwargs, match in [
        ({"rule": "nope"}, "rule"),
        ({"format": "gif"}, "format"),
        ({"quality": 0}, "quality"),
        ({"batch_size": 0}, "batch_size"),
        ({"max_tile": -1}, "max_tile"),
        ({"mean": [0.5]}, "mean and std"),
        ({"layers": ["nope"]}, "not in this atlas"),
        ({"progress": "yes"}, "progress"),
    ]:
        with pytest.raises((ValueError, TypeError), match=match):
            atlas.render(**kwargs)
    with pytest.raises(RuntimeError, match="no model/data"):
        Atlas.load(tmp_path / "a").render(progress=False)


def test_render_resumes_and_skips_finished_layers(tmp_path, atlas, monkeypatch):
    path = tmp_path / "atlas"
    atlas.save(path)
    calls = {"units": 0}
    bp = importlib.import_module("zfwidgets.engine.backprop")  # the module, not the function
    real = bp.backprop

    def counting(*args, **kwargs):
        calls["units"] += len(kwargs["units"])
        return real(*args, **kwargs)

    monkeypatch.setattr(bp, "backprop", counting)

    def stop_in_layer_two(done, total):
        if done > 8 + 4:  # layer "0" finished, part of layer "4" written
            raise Cancelled

    with pytest.raises(Cancelled):
        atlas.render(batch_size=8, progress=stop_in_layer_two)  # 2 channels per chunk
    m = manifest(path)
    assert m["layers"][0]["images"] is not None and m["layers"][1]["images"] is None
    assert Atlas.load(path).has_images("0") and not Atlas.load(path).has_images("4")
    first = calls["units"]
    calls["units"] = 0
    atlas.render(batch_size=8, progress=False)
    # layer "0" skipped, the units of layer "4" already written not computed again
    assert calls["units"] < (12 + 16) * 4
    assert calls["units"] + first <= (8 + 12 + 16) * 4 + 2 * 4 * 2
    calls["units"] = 0
    atlas.render(progress=False)
    assert calls["units"] == 0
    # another rule replaces the tiles, and the old ones are removed
    dirs = {L["images"]["dir"] for L in manifest(path)["layers"]}
    atlas.render(["4"], rule="guided", progress=False)
    m = manifest(path)
    assert m["layers"][1]["images"]["rule"] == "guided"
    assert not (path / m["layers"][0]["images"]["dir"]).parent.joinpath("1.partial").exists()
    left = {p.name for p in (path / "tiles").iterdir()}
    assert left == {d.split("/")[1] for d in {L["images"]["dir"] for L in m["layers"]}}
    assert dirs - {L["images"]["dir"] for L in m["layers"]}


def test_tiles_follow_the_hits(tmp_path, model, data, atlas):
    path = tmp_path / "a"
    atlas.save(path)
    atlas.render(["4"], format="png", progress=False)
    # loaded and saved elsewhere: tiles are copied
    other = tmp_path / "b"
    loaded = Atlas.load(path)
    loaded.save(other)
    assert Atlas.load(other).has_images("4")
    assert Atlas.load(other).unit_images("4", 1).data == loaded.unit_images("4", 1).data

    # an interrupted render leaves an unfinished folder behind
    def cancel(done, total):
        raise Cancelled

    with pytest.raises(Cancelled):
        atlas.render(["8"], batch_size=4, progress=cancel)
    assert (path / "tiles" / "2.partial").is_dir()
    # mined again over other data and saved into the same folder: the old tiles are dropped
    again = zf.mine(model, data.flip(0), layers=LAYERS, k=4, progress=False)
    again.save(path)
    assert not Atlas.load(path).has_images("4")
    assert not (path / "tiles").exists() or not any((path / "tiles").iterdir())
    # a render started from an atlas that no longer matches its folder is refused
    with pytest.raises(ValueError, match="save it again"):
        atlas.render(progress=False)


def test_opens_lazily(tmp_path, atlas, monkeypatch):
    path = tmp_path / "a"
    atlas.save(path)
    atlas.render(["8"], progress=False)
    reads = []
    real = Store.read
    monkeypatch.setattr(Store, "read", lambda self, *a: reads.append(a) or real(self, *a))
    loaded = Atlas.load(path)
    assert reads == []
    tile = loaded.image_file("8", 5)
    tile.unlink()  # a missing tile is noticed only when that unit is shown
    loaded.unit_images("8", 4)
    assert reads == [("8", 4)]
    with pytest.raises(FileNotFoundError, match="render the layer again"):
        loaded.unit_images("8", 5)


def test_old_single_file_still_loads(tmp_path, model, data, atlas):
    path = tmp_path / "atlas.safetensors"
    atlas.save(path)
    assert path.is_file() and atlas.path == path
    back = Atlas.load(path, model=model, data=data)
    assert back.provenance["data"]["n"] == 23
    assert torch.equal(back.indices["8"], atlas.indices["8"])
    atlas.save(path, images=True)
    alone = Atlas.load(path)
    assert not alone.has_images("4")
    torch.testing.assert_close(
        alone.patches("4", 1), atlas.patches("4", 1).half().float(), atol=0, rtol=0
    )


def test_stored_tiles_feed_top_nine(tmp_path, model, data, atlas):
    """The widget shows a loaded atlas from its tiles, without data."""
    pytest.importorskip("anywidget")
    from zfwidgets.widgets import TopNine

    atlas.save(tmp_path / "a")
    atlas.render(format="png", progress=False)
    loaded = Atlas.load(tmp_path / "a")
    w = TopNine(model, atlas=loaded, layer="4", channel=2).wait()
    try:
        frame = w.frame
        assert frame["layer"] == "4" and frame["channel"] == 2 and frame["k"] == 4
        assert np.asarray(frame["atlas"]["view"]).size > 0
    finally:
        w.close()


@pytest.mark.cuda
def test_render_on_cuda_matches_cpu(tmp_path, model, data, atlas):
    atlas.save(tmp_path / "cpu")
    atlas.render(format="png", progress=False)
    on_gpu = zf.mine(model, data, layers=LAYERS, k=4, progress=False)
    on_gpu.save(tmp_path / "gpu")
    on_gpu.render(format="png", device="cuda", progress=False, batch_size=256)
    assert next(model.parameters()).device.type == "cpu"  # the model was not moved
    cpu, gpu = Atlas.load(tmp_path / "cpu"), Atlas.load(tmp_path / "gpu")
    for n in LAYERS:
        for c in (0, 3):
            a = cpu.unit_images(n, c).sprite.astype(int)
            b = gpu.unit_images(n, c).sprite.astype(int)
            assert np.abs(a - b).max() <= 2


def test_render_finds_the_data_normalisation(tmp_path, model):
    from PIL import Image
    from torch.utils.data import Dataset
    from torchvision import transforms

    torch.manual_seed(3)
    arrays = (torch.rand(8, 32, 32, 3) * 255).to(torch.uint8).numpy()
    pil = [Image.fromarray(a) for a in arrays]
    mean, std = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]
    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize(mean, std)])

    class Normalised(Dataset):  # normalises itself, as the command line's image folders do
        def __init__(self):
            self.mean, self.std = torch.tensor(mean).view(3, 1, 1), torch.tensor(std).view(3, 1, 1)

        def __len__(self):
            return len(pil)

        def __getitem__(self, i):
            return tf(pil[i])

    for i, (data, kwargs) in enumerate([(pil, {"transform": tf}), (Normalised(), {})]):
        atlas = zf.mine(model, data, layers=["4"], k=2, progress=False, **kwargs)
        atlas.save(tmp_path / str(i))
        atlas.render(format="png", progress=False)
        shown = manifest(tmp_path / str(i))["layers"][0]["images"]["display"]["patches"]
        assert shown["kind"] == "unnormalize"
        np.testing.assert_allclose(shown["mean"], mean, rtol=1e-6)
        np.testing.assert_allclose(shown["std"], std, rtol=1e-6)
        back = Atlas.load(tmp_path / str(i))
        ref = atlas.patches("4", 1)
        # back through the normalisation: the model-input crops, within a grey level
        assert float((back.patches("4", 1) - ref).abs().max()) <= 0.5 / 255 / 0.2 + 1e-5


RENDER_WORKER = """
import sys
sys.path.insert(0, {tests!r})
import torch
import torch.distributed as dist
from models import tiny_zf
from safetensors.torch import load_file
import zfwidgets as zf

data = load_file({data!r})["x"]
out = sys.argv[1]
atlas = zf.mine(tiny_zf(), data, layers={layers!r}, k=4, progress=False)  # the same on each rank
if dist.get_rank() == 0:
    atlas.save(out)
dist.barrier()
if dist.get_rank() != 0:
    atlas = zf.Atlas.load(out, model=tiny_zf(), data=data)
atlas.render(batch_size=2, format={format!r}, progress=False)  # 2 units per group: 2-8 groups
assert dist.get_world_size() == 2
"""


def stored_files(path):
    """Every file of an atlas directory (tile folders named by layer, not by their random
    suffix) -> its bytes; the manifest with the tile folders' names replaced the same way."""
    m = manifest(path)
    dirs = {}
    for i, layer in enumerate(m["layers"]):
        if layer.get("images"):
            dirs[layer["images"]["dir"]] = f"tiles/layer-{i}"
            layer["images"]["dir"] = f"tiles/layer-{i}"
    out = {MANIFEST: json.dumps(m, sort_keys=True).encode()}
    for p in sorted(path.rglob("*")):
        rel = p.relative_to(path).as_posix()
        if p.is_file() and rel != MANIFEST:
            for old, new in dirs.items():
                rel = rel.replace(old + "/", new + "/")
            out[rel] = p.read_bytes()
    return out


@pytest.mark.slow
@pytest.mark.parametrize("format", ["webp"])
def test_render_under_two_gloo_ranks_writes_the_bytes_of_one_process(tmp_path, data, format):
    import subprocess
    import sys
    from pathlib import Path

    from safetensors.torch import save_file

    repo = Path(__file__).resolve().parents[2]
    save_file({"x": data.contiguous()}, str(tmp_path / "data.safetensors"))
    script = tmp_path / "worker.py"
    script.write_text(
        RENDER_WORKER.format(
            tests=str(repo / "tests"),
            data=str(tmp_path / "data.safetensors"),
            layers=LAYERS,
            format=format,
        )
    )
    env = {**os.environ, "PYTHONPATH": str(repo), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    result = subprocess.run(
        [*cmd, "--max-restarts=0", str(script), str(tmp_path / "two")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    torch.set_num_threads(1)  # as torchrun's workers: the same kernels
    try:
        one = zf.mine(tiny_zf(), data, layers=LAYERS, k=4, progress=False)
        one.save(tmp_path / "one")
        one.render(batch_size=2, format=format, progress=False)
    finally:
        torch.set_num_threads(2)
    got, want = stored_files(tmp_path / "two"), stored_files(tmp_path / "one")
    assert sorted(got) == sorted(want)
    assert sum(name.endswith(f".{format}") for name in got) == 8 + 12 + 16
    for name in want:
        assert got[name] == want[name], name
