"""The parameter hash that names a model's weights in checkpoints and in atlas provenance: the
same on every device and with any number of threads, changed by any change of a weight, and
values recorded by the earlier scheme still recognised."""

from __future__ import annotations

import json

import pytest
import torch
from models import tiny_zf
from torch import nn

import zfwidgets as zf
from zfwidgets.atlas.core import Atlas
from zfwidgets.atlas.resume import (
    PARAMETER_SCHEME,
    _bit_sum,
    _legacy_parameter_hash,
    _parameter_hash,
    parameters_match,
)
from zfwidgets.atlas.stored import open_atlas
from zfwidgets.base.progress import Cancelled


def wide(seed: int = 0) -> nn.Module:
    """Weights large enough for torch to split their float sums over threads (2 M elements),
    a BatchNorm's int64 counter and float buffers."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(1024, 2048), nn.BatchNorm1d(2048), nn.Linear(2048, 3))


def with_threads(n: int, fn):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        return fn()
    finally:
        torch.set_num_threads(before)


def test_the_hash_is_the_same_with_any_number_of_threads():
    model = wide()
    hashes = {with_threads(n, lambda: _parameter_hash(model)) for n in (1, 2, 3)}
    assert len(hashes) == 1 and next(iter(hashes)).startswith(PARAMETER_SCHEME)


def test_any_change_of_one_weight_changes_the_hash():
    model = wide()
    before = _parameter_hash(model)
    with torch.no_grad():
        w = model[0].weight.view(-1)
        i = 12345  # not one of the 4,096 sampled elements (every 512th)
        w[i] = torch.nextafter(w[i], torch.tensor(float("inf")))  # one ulp
    after = _parameter_hash(model)
    assert after != before and _parameter_hash(wide()) == before
    with torch.no_grad():
        model[1].num_batches_tracked += 1  # an integer buffer counts too
    assert _parameter_hash(model) not in (before, after)


@pytest.mark.parametrize(
    "t",
    [
        torch.randn(7).half(),  # 14 bytes: read as int16
        torch.zeros(3, dtype=torch.bool),  # 3 bytes: as uint8
        torch.randn(10)[1:],  # a view 4 bytes into its storage: as int32
        torch.randn(6, dtype=torch.float64),  # as int64
    ],
)
def test_bit_sums_of_any_size_offset_and_dtype_are_exact(t):
    flat = t.reshape(-1)
    got = _bit_sum(flat)
    raw = flat.contiguous().view(torch.uint8).tolist()
    width = len(got)
    words = [int.from_bytes(bytes(raw[i : i + width]), "little") for i in range(0, len(raw), width)]
    assert int.from_bytes(got, "little") == sum(words) % 2 ** (8 * width)


def test_values_of_the_earlier_scheme_are_recognised():
    model = tiny_zf()
    legacy = _legacy_parameter_hash(model)
    assert not legacy.startswith(PARAMETER_SCHEME)
    assert parameters_match(legacy, model) and parameters_match(_parameter_hash(model), model)
    assert not parameters_match(legacy, tiny_zf(num_classes=3))
    assert not parameters_match(PARAMETER_SCHEME + legacy, model)
    assert not parameters_match(None, model)


def test_a_checkpoint_written_with_the_earlier_hash_resumes(tmp_path):
    data = torch.randn(40, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    model = tiny_zf()
    ck = tmp_path / "run"
    kw = {"layers": ["0", "4"], "k": 3, "batch_size": 4, "chunk_size": 8}
    ref = zf.mine(model, data, progress=False, **kw)

    def stop(done, total):
        if done >= 20:
            raise Cancelled()

    with pytest.raises(Cancelled):
        zf.mine(model, data, checkpoint=ck, progress=stop, **kw)
    job = json.loads((ck / "job.json").read_text())
    job["model"]["parameters"] = _legacy_parameter_hash(model)  # as an earlier version wrote it
    (ck / "job.json").write_text(json.dumps(job))
    seen = []
    got = zf.mine(model, data, checkpoint=ck, progress=lambda d, t: seen.append(t), **kw)
    assert seen[-1] == 24  # the 16 images of the finished chunks were not mined again
    for layer in kw["layers"]:
        assert torch.equal(got.indices[layer], ref.indices[layer])
        assert torch.equal(got.values[layer], ref.values[layer])
    other = tiny_zf()
    with torch.no_grad():
        other[0].bias += 1
    with pytest.raises(ValueError, match=r"another job.*model\.parameters"):
        zf.mine(other, data, checkpoint=ck, progress=False, **kw)


def test_an_atlas_recorded_with_the_earlier_hash_opens_without_a_note():
    data = torch.randn(12, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    model = tiny_zf()
    atlas = zf.mine(model, data, layers=["4"], k=2, batch_size=4, progress=False)
    atlas.provenance["model"]["parameters"] = _legacy_parameter_hash(model)
    assert (
        isinstance(atlas, Atlas) and "other weights" not in open_atlas(atlas, model=model).message
    )
    changed = tiny_zf()
    with torch.no_grad():
        changed[0].weight.add_(1.0)
    assert "other weights" in open_atlas(atlas, model=changed).message


@pytest.mark.cuda
def test_the_hash_is_the_same_on_cuda_and_on_the_cpu():
    model = wide()
    assert _parameter_hash(model.cuda()) == _parameter_hash(model.cpu())
