"""Mining over 2 gloo processes launched by torchrun equals a single-process run, exactly; with
the default chunk size both ranks read images even when there are few of them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from models import tiny_zf
from safetensors.torch import load_file, save_file

import zfwidgets as zf

REPO = Path(__file__).resolve().parents[2]
LAYERS = ["0", "4", "7"]
KW = {"layers": LAYERS, "k": 5, "batch_size": 4, "chunk_size": 8}

WORKER = textwrap.dedent(
    """
    import json, os, sys
    sys.path.insert(0, {tests!r})
    import torch
    import torch.distributed as dist
    from models import tiny_zf
    from safetensors.torch import load_file, save_file
    import zfwidgets as zf
    from zfwidgets.base.progress import Cancelled

    class Counted(torch.utils.data.Dataset):
        # the images, counting the ones this process reads

        def __init__(self, x):
            self.x, self.reads = x, 0

        def __len__(self):
            return len(self.x)

        def __getitem__(self, i):
            self.reads += 1
            return self.x[i]

    out, checkpoint, fail = sys.argv[1], sys.argv[2] or None, sys.argv[3] == "fail"
    data = load_file({data!r})["x"]
    if not checkpoint:  # (the checkpoint's fingerprint names the kind of data: keep a tensor)
        data = Counted(data)
    kw = json.loads(sys.argv[4])
    rank = int(os.environ["RANK"])

    def progress(done, total):
        # rank 1 gives up after its first 8 images: the job dies half done
        if fail and rank == 1 and done > 8:
            raise Cancelled()

    atlas = zf.mine(tiny_zf(), data, checkpoint=checkpoint, progress=progress, **kw)
    assert dist.is_initialized() and dist.get_world_size() == 2
    if not checkpoint:
        with open(f"{{out}}.{{rank}}.reads", "w") as f:
            f.write(str(data.reads))
    tensors = {{}}
    for layer in atlas.layers:
        for what in ("values", "indices", "positions"):
            tensors[f"{{layer}}.{{what}}"] = getattr(atlas, what)[layer].contiguous()
    save_file(tensors, f"{{out}}.{{rank}}.safetensors")
    """
)


def torchrun(tmp_path, data, *, checkpoint="", fail=False, kw=KW):
    save_file({"x": data.contiguous()}, str(tmp_path / "data.safetensors"))
    script = tmp_path / "worker.py"
    script.write_text(
        WORKER.format(tests=str(REPO / "tests"), data=str(tmp_path / "data.safetensors"))
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node=2",
            "--max-restarts=0",
            str(script),
            str(tmp_path / "out"),
            str(checkpoint),
            "fail" if fail else "ok",
            json.dumps(kw),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def single(data, kw=KW, **more):
    torch.set_num_threads(1)  # as torchrun's workers (OMP_NUM_THREADS=1): the same kernels
    try:
        return zf.mine(tiny_zf(), data, progress=False, **kw, **more)
    finally:
        torch.set_num_threads(2)


def assert_every_rank_holds(tmp_path, ref):
    """Both ranks wrote the atlas ``ref`` (indices, values, positions), bit for bit."""
    for rank in (0, 1):
        got = load_file(str(tmp_path / f"out.{rank}.safetensors"))
        for layer in LAYERS:
            assert torch.equal(got[f"{layer}.indices"], ref.indices[layer])
            assert torch.equal(got[f"{layer}.values"], ref.values[layer])
            assert torch.equal(got[f"{layer}.positions"], ref.positions[layer])


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(3)
    return torch.randn(44, 3, 32, 32, generator=g)


@pytest.mark.slow
def test_two_gloo_ranks_equal_one_process(tmp_path, data):
    result = torchrun(tmp_path, data)
    assert result.returncode == 0, result.stderr[-3000:]
    ref = single(data)
    assert_every_rank_holds(tmp_path, ref)


@pytest.mark.slow
def test_few_images_keep_both_ranks_busy(tmp_path, data):
    """44 images, far fewer than the old fixed chunk of 8,192 (one rank read them all): the
    default chunks (here one image each) give each rank half, and the same atlas."""
    kw = {k: v for k, v in KW.items() if k != "chunk_size"}
    result = torchrun(tmp_path, data, kw=kw)
    assert result.returncode == 0, result.stderr[-3000:]
    reads = [int((tmp_path / f"out.{rank}.reads").read_text()) for rank in (0, 1)]
    assert reads == [1 + 22, 1 + 22]  # the first image (to trace the model), then its half
    ref = single(data, kw)
    assert_every_rank_holds(tmp_path, ref)


@pytest.mark.slow
@pytest.mark.parametrize("chunk_size", [8, None])
def test_checkpoint_of_two_ranks_resumes_with_one(tmp_path, data, chunk_size):
    kw = {**KW, "chunk_size": chunk_size}
    ck = tmp_path / "run"
    result = torchrun(tmp_path, data, checkpoint=ck, fail=True, kw=kw)
    assert result.returncode != 0  # rank 1 gave up: the job died half done
    parts = list(ck.glob("part-*.safetensors"))
    assert parts, result.stderr[-3000:]
    saved = json.loads((ck / "job.json").read_text())["chunk_size"]
    assert saved == (chunk_size or 1)  # 44 images: one per chunk by default
    resumed = single(data, kw, checkpoint=ck)
    ref = single(data, kw)
    for layer in LAYERS:
        assert torch.equal(resumed.indices[layer], ref.indices[layer])
        assert torch.equal(resumed.values[layer], ref.values[layer])
        assert torch.equal(resumed.positions[layer], ref.positions[layer])
