"""``python -m zfwidgets mine``: the batch job over a folder of images, and its bad arguments."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from models import tiny_zf
from PIL import Image
from safetensors.torch import save_file

import zfwidgets as zf
from zfwidgets.atlas.folder import ImageFolder

REPO = Path(__file__).resolve().parents[1]
TESTS = REPO / "tests"


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """24 images of assorted sizes in two class folders, one corrupt JPEG, one text file."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for i in range(24):
        cls = root / ("cat" if i % 2 else "dog")
        cls.mkdir(exist_ok=True)
        h, w = int(rng.integers(30, 60)), int(rng.integers(30, 60))
        arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        Image.fromarray(arr).save(cls / f"{i:03d}.{'png' if i % 3 else 'jpg'}")
    (root / "dog" / "007_broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (root / "dog" / "notes.txt").write_text("not an image")
    return root


def run_here(capsys, *args):
    """The command line in this process (argument errors need no torch import of their own)."""
    from zfwidgets.cli import main

    code = main([str(a) for a in args])
    return subprocess.CompletedProcess(args, code, "", capsys.readouterr().err)


def run(*args, cwd=TESTS):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, "-m", "zfwidgets", *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def base(folder, out, **extra):
    args = {
        "--model": "models:tiny_zf",
        "--data": folder,
        "--size": 32,
        "--layers": "0,4",
        "--k": 3,
        "--out": out,
        "--batch-size": 4,
        "--workers": 0,
    }
    args.update(extra)
    flat = [a for kv in args.items() for a in kv if a is not None]
    return ["mine", *flat, "--quiet"]


def test_image_folder_lists_classes_and_skips_the_unreadable(folder):
    ds = ImageFolder(folder, size=32)
    assert len(ds) == 25 and ds.classes == ["cat", "dog"]
    x, label = ds[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and label == 0
    broken = ds.files.index(os.path.join("dog", "007_broken.jpg"))
    with pytest.raises(zf.atlas.mining.UnreadableImage, match="007_broken"):
        ds[broken]
    assert ds.fingerprint() == ImageFolder(folder, size=32).fingerprint()
    assert ds.fingerprint() != ImageFolder(folder, size=40).fingerprint()


def test_mine_folder_in_process_matches_the_images(folder):
    ds = ImageFolder(folder, size=32)
    atlas = zf.mine(tiny_zf(), ds, layers=["4"], k=3, batch_size=4, progress=False)
    broken = ds.files.index(os.path.join("dog", "007_broken.jpg"))
    assert atlas.provenance["skipped"] == [broken]
    keep = [i for i in range(len(ds)) if i != broken]
    ref = zf.mine(
        tiny_zf(), torch.stack([ds[i][0] for i in keep]), layers=["4"], k=3, progress=False
    )
    assert torch.equal(atlas.indices["4"], torch.tensor(keep)[ref.indices["4"]])


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"--model": "no_such_module:make"}, "--model: cannot import module 'no_such_module'"),
        ({"--model": "models"}, "--model: expected MODULE:CALLABLE"),
        ({"--model": "models:nothing_here"}, "has no attribute 'nothing_here'"),
        ({"--model": "models:torch"}, "is not callable"),
        ({"--model": "torch:randn"}, "--model: calling torch:randn() failed"),
        ({"--data": "/no/such/folder"}, "--data: expected a folder of images"),
        ({"--layers": "0,nope"}, "--layers: layer: no module named 'nope'"),
        ({"--k": 0}, "--k: expected an int >= 1"),
        ({"--k": 500}, "--k: expected at most the number of images (25)"),
        ({"--device": "cuda:7" if torch.cuda.is_available() else "cuda"}, "--device"),
        ({"--device": "tpu"}, "--device: expected cpu, cuda or cuda:N"),
        ({"--mean": "0.5,0.5"}, "--mean: expected 3 comma-separated numbers"),
        ({"--weights": "/no/such/file.pt"}, "--weights: no file"),
    ],
)
def test_bad_arguments_exit_2_with_a_message(folder, tmp_path, capsys, change, message):
    result = run_here(capsys, *base(folder, tmp_path / "out", **change))
    assert result.returncode == 2, result.stderr[-2000:]
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_weights_that_do_not_fit_and_empty_folders(folder, tmp_path, capsys):
    wrong = tmp_path / "wrong.safetensors"
    save_file({"0.weight": torch.zeros(2, 2)}, str(wrong))
    result = run_here(capsys, *base(folder, tmp_path / "out", **{"--weights": wrong}))
    assert result.returncode == 2 and "--weights:" in result.stderr
    assert "does not fit the model" in result.stderr
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x80\x04 not a state dict")
    result = run_here(capsys, *base(folder, tmp_path / "out", **{"--weights": junk}))
    assert result.returncode == 2 and "torch.load(weights_only=True)" in result.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no images")
    result = run_here(capsys, *base(empty, tmp_path / "out"))
    assert result.returncode == 2 and "--data: root: no image files" in result.stderr


def reference(folder):
    ds = ImageFolder(folder, size=32)
    return ds, zf.mine(tiny_zf(), ds, layers=["0", "4"], k=3, batch_size=4, progress=False)


def test_mine_command_writes_a_rendered_atlas_and_reruns_for_free(folder, tmp_path):
    out = tmp_path / "atlas"
    result = run(*base(folder, out))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "skipped 1 unreadable image(s)" in result.stderr
    assert "007_broken.jpg" in result.stderr
    ds, ref = reference(folder)
    atlas = zf.Atlas.load(out, model=tiny_zf(), data=ds)
    for layer in ("0", "4"):
        assert torch.equal(atlas.indices[layer], ref.indices[layer])
        torch.testing.assert_close(atlas.values[layer], ref.values[layer])
        assert atlas.has_images(layer)
    assert atlas.provenance["skipped"] == ref.provenance["skipped"]
    assert (tmp_path / "atlas.checkpoint" / "job.json").is_file()
    again = run(*base(folder, out))  # every chunk is in the checkpoint: nothing is mined again
    assert again.returncode == 0, again.stderr[-3000:]
    assert torch.equal(zf.Atlas.load(out).indices["4"], ref.indices["4"])


@pytest.mark.slow
def test_mine_command_under_torchrun_gives_the_same_atlas(folder, tmp_path):
    out = tmp_path / "atlas"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    result = subprocess.run(
        [*cmd, "-m", "zfwidgets", *map(str, base(folder, out, **{"--chunk-size": 8}))],
        cwd=TESTS,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "on 2 process(es)" in result.stderr
    ds, ref = reference(folder)
    atlas = zf.Atlas.load(out)
    for layer in ("0", "4"):
        assert torch.equal(atlas.indices[layer], ref.indices[layer])
        torch.testing.assert_close(atlas.values[layer], ref.values[layer])
        assert atlas.has_images(layer)  # rendered by both ranks, named once by rank 0
    assert not list((out / "tiles").glob("*.partial"))


def test_default_layers_are_the_convolutions_the_forward_calls():
    from zfwidgets.cli import _default_layers

    net = torchvision.models.googlenet(weights=None, init_weights=False, aux_logits=True)
    layers = _default_layers(net, 96)
    assert layers[0] == "conv1.conv" and layers[-1] == "inception5b.branch4.1.conv"
    assert not [n for n in layers if n.startswith("aux")]  # eval: the auxiliary heads never run
