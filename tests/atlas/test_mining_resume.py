"""Mining at scale: the forward stops early, chunks, checkpoints that resume after SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from models import hook_count, tiny_zf, torchvision_model
from safetensors.torch import save_file
from torch import nn
from torch.utils.data import Dataset

import zfwidgets as zf
from zfwidgets.atlas.mining import UnreadableImage, merge_topk
from zfwidgets.base.progress import Cancelled

REPO = Path(__file__).resolve().parents[2]
LAYERS = ["0", "4", "7"]


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(0)
    return torch.randn(40, 3, 32, 32, generator=g)


def same(a, b):
    for layer in a.layers:
        assert torch.equal(a.indices[layer], b.indices[layer]), layer
        assert torch.equal(a.values[layer], b.values[layer]), layer
        assert torch.equal(a.positions[layer], b.positions[layer]), layer


class Counter(nn.Module):
    """Counts its calls; raises when ``fail`` is set (a head that must never run)."""

    def __init__(self):
        super().__init__()
        self.calls = 0
        self.fail = False

    def forward(self, x):
        if x.device.type == "meta":  # the input checks' shape-only pass: no data runs
            return x
        self.calls += 1
        if self.fail:
            raise RuntimeError("the head ran")
        return x


def test_forward_stops_after_the_deepest_layer(data):
    model = tiny_zf()
    head = Counter()
    model.append(head)
    atlas = zf.mine(model, data, layers=["4", "0"], k=3, batch_size=8, progress=False)
    assert head.calls == 0  # the stop comes from the shape-only pass; no forward ran the head
    ref = zf.mine(tiny_zf(), data, layers=["0", "4"], k=3, batch_size=8, progress=False)
    same(atlas, ref)
    # a head that cannot run at this input size does not stop mining the layers before it
    head.fail = True
    same(zf.mine(model, data, layers=["0", "4"], k=3, batch_size=8, progress=False), ref)
    assert hook_count(model) == 0


class DataDependent(nn.Module):
    """A branch on the data (which cannot run on the meta device) before the mined layers, a
    ReLU called twice, and a head after them."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv, self.relu, self.conv2 = nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3)
        self.head = Counter()

    def features(self, x):
        x = x * 2 if bool(torch.isfinite(x).all()) else x  # the same for a batch or an image
        return self.relu(self.conv2(self.relu(self.conv(x))))

    def forward(self, x):
        return self.head(self.features(x).flatten(1))


def test_a_model_that_cannot_run_on_meta_is_traced_by_one_real_forward(data):
    model = DataDependent()
    atlas = zf.mine(model, data, layers=["relu", "conv"], k=3, batch_size=8, progress=False)
    assert model.head.calls == 1  # the real trace of image 0 ran as far as the head
    # the ReLU's second call (after conv2) is the one mined, as a capture of one forward sees
    with torch.no_grad():
        maxima = torch.cat([model.features(x[None]).amax((2, 3)) for x in data])  # (N, 4)
    top = maxima.t().topk(3, dim=1)
    torch.testing.assert_close(atlas.values["relu"], top.values)  # batched vs one image
    assert torch.equal(atlas.indices["relu"], top.indices)


class WithSpare(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = tiny_zf()
        self.spare = nn.Conv2d(3, 3, 1)  # registered, never called

    def forward(self, x):
        return self.net(x)


def test_layers_the_forward_never_calls_are_refused(data):
    with pytest.raises(ValueError, match=r"layers: \['spare'\] are never called"):
        zf.mine(WithSpare(), data, layers=["net.4", "spare"], k=3, progress=False)


@pytest.mark.parametrize("chunk_size", [4, 7, 16, 10_000, None])
def test_chunks_do_not_change_the_atlas(data, chunk_size):
    model = tiny_zf()
    kw = {"layers": LAYERS, "k": 5, "batch_size": 4, "progress": False}
    ref = zf.mine(model, data, chunk_size=40, **kw)  # one chunk
    got = zf.mine(model, data, chunk_size=chunk_size, **kw)  # None: 40 chunks of one image
    same(got, ref)  # batches run across chunk ends: the same batches, bit for bit


def test_batches_run_across_chunk_ends_and_commit_on_chunk_ends():
    from zfwidgets.atlas.mining import _plan, _share

    # chunks of 2 images, batches of 4: full batches, each finishing two chunks
    assert _plan([0, 1, 2, 3], 8, 2, 4) == [(0, 4, [0, 1]), (4, 8, [2, 3])]
    # chunks of 3, batches of 4: a batch ending inside a chunk commits nothing yet
    assert _plan([0, 1, 2], 9, 3, 4) == [(0, 4, []), (4, 7, []), (7, 9, [0, 1, 2])]
    assert _plan([0, 1, 2, 3], 12, 3, 6) == [(0, 6, [0, 1]), (6, 12, [2, 3])]
    # a run's last batch is never one image when the run has more
    assert _plan([0, 1], 9, 5, 4) == [(0, 4, []), (4, 7, []), (7, 9, [0, 1])]
    # batches of one or two: no batch is ever empty
    for b in (1, 2):
        assert all(e > s for s, e, _ in _plan([0, 1], 5, 3, b))
    # non-consecutive chunks (a resumed job) form separate runs
    assert _plan([0, 2], 6, 2, 4) == [(0, 2, [0]), (4, 6, [2])]
    # ranks take contiguous shares that differ by at most one chunk, and cover every chunk
    for m in range(12):
        for world in (1, 2, 3, 8):
            shares = [_share(list(range(m)), r, world) for r in range(world)]
            assert sum(shares, []) == list(range(m))
            assert max(map(len, shares)) - min(map(len, shares)) <= 1


def test_merge_orders_by_value_then_index():
    values = torch.tensor([[1.0, 3.0, 3.0, 2.0, float("-inf")]])
    indices = torch.tensor([[4, 9, 2, 7, -1]])
    positions = torch.arange(10).view(1, 5, 2)
    v, i, p = merge_topk(values, indices, positions, 3)
    assert i.tolist() == [[2, 9, 7]] and v.tolist() == [[3.0, 3.0, 2.0]]
    assert p[0, 0].tolist() == [4, 5]


def test_workers_and_dataset_give_the_same_atlas(data):
    model = tiny_zf()
    ds = torch.utils.data.TensorDataset(data, torch.arange(len(data)))
    ref = zf.mine(model, data, layers=LAYERS, k=4, batch_size=8, progress=False)
    got = zf.mine(model, ds, layers=LAYERS, k=4, batch_size=8, num_workers=2, progress=False)
    same(got, ref)


class Unreadable(Dataset):
    def __init__(self, x, bad):
        self.x, self.bad = x, set(bad)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        if i in self.bad:
            raise UnreadableImage(f"image {i} is corrupt")
        return self.x[i]


def test_unreadable_images_are_skipped_and_reported(data):
    model = tiny_zf()
    bad = [0, 5, 6, 31]
    atlas = zf.mine(model, Unreadable(data, bad), layers=LAYERS, k=4, batch_size=4, progress=False)
    assert atlas.provenance["skipped"] == bad
    keep = [i for i in range(len(data)) if i not in bad]
    ref = zf.mine(model, data[keep], layers=LAYERS, k=4, batch_size=4, progress=False)
    for layer in LAYERS:
        assert not set(atlas.indices[layer].flatten().tolist()) & set(bad)
        mapped = torch.tensor(keep)[ref.indices[layer]]
        assert torch.equal(atlas.indices[layer], mapped)
        torch.testing.assert_close(atlas.values[layer], ref.values[layer])


def test_nan_anywhere_names_the_image(data, tmp_path):
    x = data.clone()
    x[23, 1, 4, 4] = float("nan")
    with pytest.raises(ValueError, match="image 23 has NaN"):
        zf.mine(tiny_zf(), x, layers=["4"], k=3, batch_size=4, chunk_size=8, progress=False)
    # with a checkpoint, the chunks before the bad image are kept
    with pytest.raises(ValueError, match="image 23"):
        zf.mine(
            tiny_zf(),
            x,
            layers=["4"],
            k=3,
            batch_size=4,
            chunk_size=8,
            progress=False,
            checkpoint=tmp_path / "ck",
        )
    (part,) = (tmp_path / "ck").glob("part-*.safetensors")
    from safetensors import safe_open

    with safe_open(str(part), "pt") as f:
        assert json.loads(f.metadata()["zfwidgets"])["chunks"] == [0, 1]


def test_checkpoint_resumes_after_a_cancel_and_skips_finished_chunks(data, tmp_path):
    model = tiny_zf()
    ck = tmp_path / "run"
    kw = {"layers": LAYERS, "k": 5, "batch_size": 4, "chunk_size": 8}
    ref = zf.mine(model, data, progress=False, **kw)

    def stop_at_20(done, total):
        if done >= 20:
            raise Cancelled()

    with pytest.raises(Cancelled):
        zf.mine(model, data, checkpoint=ck, progress=stop_at_20, **kw)
    assert hook_count(model) == 0
    job = json.loads((ck / "job.json").read_text())
    assert job["k"] == 5 and job["layers"] == LAYERS and job["data"]["n"] == 40
    seen = []
    resumed = zf.mine(model, data, checkpoint=ck, progress=lambda d, t: seen.append((d, t)), **kw)
    same(resumed, ref)
    assert seen[-1] == (24, 24)  # chunks 0 and 1 (16 images) were not mined again
    # everything done: a third call reads the parts and mines nothing
    seen.clear()
    again = zf.mine(model, data, checkpoint=ck, progress=lambda d, t: seen.append(d), **kw)
    same(again, ref)
    assert seen == []


def test_default_chunk_size_depends_on_the_data_size_only():
    from zfwidgets.atlas.mining import DEFAULT_CHUNK_SIZE, default_chunk_size

    sizes = {n: default_chunk_size(n) for n in (1, 40, 256, 257, 1280, 50_000, 1_281_167, 10**8)}
    assert sizes == {
        1: 1,
        40: 1,
        256: 1,
        257: 2,
        1280: 8,
        50_000: 256,
        1_281_167: 8192,
        10**8: DEFAULT_CHUNK_SIZE,
    }
    for n in [*range(1, 3000), *range(3000, 5_000_000, 9973)]:
        c = default_chunk_size(n)
        assert c & (c - 1) == 0 and 1 <= c <= DEFAULT_CHUNK_SIZE  # a power of two
        assert -(-n // c) >= min(n, 129)  # any job of up to 128 ranks (and n) keeps all busy


def test_a_checkpoint_resumes_with_the_chunk_size_it_was_written_with(data, tmp_path):
    """A checkpoint cut into other chunks (the old default of 8,192, or a chunk_size= given
    then) resumes with them when chunk_size is left unset; a different chunk_size is refused."""
    model = tiny_zf()
    ck = tmp_path / "run"
    kw = {"layers": LAYERS, "k": 5, "batch_size": 4}
    ref = zf.mine(model, data, chunk_size=16, progress=False, **kw)

    def stop_at_20(done, total):
        if done >= 20:
            raise Cancelled()

    with pytest.raises(Cancelled):
        zf.mine(model, data, checkpoint=ck, chunk_size=16, progress=stop_at_20, **kw)
    seen = []
    resumed = zf.mine(model, data, checkpoint=ck, progress=lambda d, t: seen.append((d, t)), **kw)
    same(resumed, ref)
    assert seen[-1] == (24, 24)  # chunk 0 (16 images) was kept: the saved chunks resumed
    assert json.loads((ck / "job.json").read_text())["chunk_size"] == 16
    with pytest.raises(ValueError, match=r"chunk_size \(saved 16, now 8\).*Leave chunk_size unset"):
        zf.mine(model, data, checkpoint=ck, chunk_size=8, progress=False, **kw)


def test_checkpoint_of_another_job_is_refused(data, tmp_path):
    model = tiny_zf()
    ck = tmp_path / "run"
    kw = {"layers": ["4"], "batch_size": 4, "chunk_size": 8, "progress": False}
    zf.mine(model, data, k=3, checkpoint=ck, **kw)
    with pytest.raises(ValueError, match=r"another job.*\bk \(saved 3, now 4\)"):
        zf.mine(model, data, k=4, checkpoint=ck, **kw)
    other = tiny_zf()
    with torch.no_grad():
        other[0].bias += 1
    with pytest.raises(ValueError, match=r"another job.*model\.parameters"):
        zf.mine(other, data, k=3, checkpoint=ck, **kw)
    with pytest.raises(ValueError, match=r"another job.*data\.n"):
        zf.mine(model, data[:30], k=3, checkpoint=ck, **kw)
    with pytest.raises(ValueError, match=r"another job.*layers"):
        zf.mine(model, data, k=3, checkpoint=ck, **{**kw, "layers": ["0"]})


def test_corrupt_parts_are_refused(data, tmp_path):
    model = tiny_zf()
    ck = tmp_path / "run"
    kw = {"layers": ["4"], "k": 3, "batch_size": 4, "chunk_size": 8, "progress": False}
    zf.mine(model, data, checkpoint=ck, **kw)
    (part,) = ck.glob("part-*.safetensors")
    # a temporary file left by a kill during a write is ignored
    (ck / (part.name + ".tmp")).write_bytes(b"\x00" * 10)
    zf.mine(model, data, checkpoint=ck, **kw)
    part.write_bytes(part.read_bytes()[:50])
    with pytest.raises(ValueError, match="checkpoint part"):
        zf.mine(model, data, checkpoint=ck, **kw)
    (ck / "job.json").write_text("{not json")
    with pytest.raises(ValueError, match="job description"):
        zf.mine(model, data, checkpoint=ck, **kw)


CHILD = textwrap.dedent(
    """
    import os, signal, sys
    sys.path.insert(0, {tests!r})
    import torch
    from models import tiny_zf
    from safetensors.torch import load_file
    import zfwidgets as zf

    data = load_file({data!r})["x"]
    kill_at = int(sys.argv[1])

    def progress(done, total):
        if kill_at >= 0 and done >= kill_at:
            os.kill(os.getpid(), signal.SIGKILL)

    print("start", flush=True)
    zf.mine(tiny_zf(), data, layers={layers!r}, k=5, batch_size=4, chunk_size=8,
            checkpoint=sys.argv[2], progress=progress)
    """
)


@pytest.mark.parametrize("kill_at", [4, 8, 28, -1])
def test_sigkill_at_any_moment_then_resume_gives_the_uninterrupted_atlas(data, tmp_path, kill_at):
    """kill_at: images done when the child SIGKILLs itself (mid-chunk, at a chunk's last batch
    before its commit, late); -1: the parent kills it as soon as its first part is on disk."""
    torch.set_num_threads(1)
    try:
        ref = zf.mine(
            tiny_zf(), data, layers=LAYERS, k=5, batch_size=4, chunk_size=8, progress=False
        )
    finally:
        torch.set_num_threads(2)
    save_file({"x": data.contiguous()}, str(tmp_path / "data.safetensors"))
    script = tmp_path / "child.py"
    script.write_text(
        CHILD.format(
            tests=str(REPO / "tests"), data=str(tmp_path / "data.safetensors"), layers=LAYERS
        )
    )
    ck = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen(
        [sys.executable, str(script), str(kill_at), str(ck)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        if kill_at < 0:
            deadline = time.monotonic() + 120
            while not list(ck.glob("part-*.safetensors")) and child.poll() is None:
                assert time.monotonic() < deadline, "no part written in time"
                time.sleep(0.01)
            child.send_signal(signal.SIGKILL)
        child.wait(timeout=120)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == -signal.SIGKILL, child.stderr.read().decode()[-2000:]
    torch.set_num_threads(1)
    try:
        resumed = zf.mine(
            tiny_zf(),
            data,
            layers=LAYERS,
            k=5,
            batch_size=4,
            chunk_size=8,
            checkpoint=ck,
            progress=False,
        )
    finally:
        torch.set_num_threads(2)
    same(resumed, ref)


@pytest.mark.cuda
def test_cuda_mining_with_workers_and_pinned_memory_matches_cpu(data, tmp_path):
    model = tiny_zf()
    ds = torch.utils.data.TensorDataset(data, torch.arange(len(data)))
    ref = zf.mine(model, data, layers=LAYERS, k=5, batch_size=8, progress=False)
    gpu = tiny_zf().cuda()
    got = zf.mine(
        gpu,
        ds,
        layers=LAYERS,
        k=5,
        batch_size=8,
        num_workers=2,
        progress=False,
        checkpoint=tmp_path / "ck",
        chunk_size=16,
    )
    for layer in LAYERS:
        assert got.values[layer].is_cuda
        assert torch.equal(got.indices[layer].cpu(), ref.indices[layer])
        torch.testing.assert_close(got.values[layer].cpu(), ref.values[layer], rtol=1e-4, atol=1e-5)
    # resuming the finished CUDA job reads its parts back onto the device
    again = zf.mine(
        gpu,
        ds,
        layers=LAYERS,
        k=5,
        batch_size=8,
        progress=False,
        checkpoint=tmp_path / "ck",
        chunk_size=16,
    )
    same(again, got)


def test_images_too_small_for_the_layers_name_the_sizes():
    x = torch.randn(4, 3, 8, 8)
    model = torchvision_model("alexnet")
    with pytest.raises(ValueError, match=r"data: .*\d+x\d+"):
        zf.mine(model, x, layers=["features.10"], k=2, progress=False)


def test_float64_data_is_mined_in_the_model_dtype(data):
    ref = zf.mine(tiny_zf(), data, layers=["4"], k=3, batch_size=8, progress=False)
    got = zf.mine(tiny_zf(), data.double(), layers=["4"], k=3, batch_size=8, progress=False)
    assert torch.equal(got.indices["4"], ref.indices["4"])
    assert got.values["4"].dtype == torch.float32
