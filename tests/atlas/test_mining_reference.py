"""The per-batch hot path of ``zf.mine`` against the straightforward computation it replaced.

On the CPU ``mine`` finds each map's spatial maximum in the layer's hook, copies only the maps
that beat their channel's k-th greatest maximum so far (or, before k images, the batch's own
k-th), and searches their positions and merges them with the entries later, several batches at
once; elsewhere it searches k maps per channel and merges every batch with one ``topk`` over
distinct keys. It checks the images' finiteness by their sums (then max and min). The
reference below is the earlier code, kept literally: ``out.flatten(2).max(2)`` of every map of
every image, a stable sort of [running | batch] per batch, ``isfinite(x).all()``. The atlases
must be bit-identical, ties, signed zeros and NaN included.
"""

import pytest
import torch
from models import tiny_zf, torchvision_model
from torch import nn

import zfwidgets as zf
from zfwidgets.atlas.mining import TopK, _plan, _spatial_amax, merge_topk


def reference_mine(model, data, layers, k, batch_size):
    """(values, indices, positions) per layer, computed as ``mine`` did before, over the
    batches ``mine`` runs in one process (a kernel may round a batch of one differently)."""
    tops = {}
    for s, e, _ in _plan([0], len(data), len(data), batch_size):
        x = data[s:e]
        with zf.capture(model, layers, clone=True, switches=False) as cap, torch.no_grad():
            model(x)
        for layer in layers:
            out = cap.activations[layer]
            if out.dim() == 4:
                values, flat = out.flatten(2).max(2)
                w = out.shape[3]
                positions = torch.stack([flat // w, flat % w], -1)
            else:
                values = out
                positions = torch.zeros(out.shape + (2,), dtype=torch.long)
            C = values.shape[1]
            v0, i0, p0 = tops.get(
                layer,
                (
                    torch.full((C, k), float("-inf")),
                    torch.full((C, k), -1, dtype=torch.long),
                    torch.zeros((C, k, 2), dtype=torch.long),
                ),
            )
            v = torch.cat([v0, values.t().float()], 1)
            i = torch.cat([i0, torch.arange(s, s + len(x)).expand(C, len(x))], 1)
            p = torch.cat([p0, positions.transpose(0, 1)], 1)
            order = torch.sort(v, dim=1, descending=True, stable=True).indices[:, :k]
            tops[layer] = (
                torch.gather(v, 1, order),
                torch.gather(i, 1, order),
                torch.gather(p, 1, order.unsqueeze(-1).expand(-1, -1, 2)),
            )
    return {layer: merge_topk(*tops[layer], k) for layer in layers}


@pytest.fixture(params=[True, False], ids=["compact", "fixed-shape"])
def compact(request, monkeypatch):
    """Both ways of searching positions: only the maps that enter (the CPU's), k per channel
    (a fixed shape, the GPU's)."""
    monkeypatch.setattr(TopK, "compact", request.param)
    return request.param


def assert_same_atlas(atlas, ref):
    for layer, (v, i, p) in ref.items():
        got = atlas.values[layer]
        assert got.dtype == v.dtype == torch.float32
        # bit for bit: -0.0 is not 0.0 here, and NaN equals NaN of the same bits
        assert torch.equal(got.view(torch.int32), v.view(torch.int32)), layer
        assert torch.equal(atlas.indices[layer], i), layer
        assert torch.equal(atlas.positions[layer], p), layer


class Ties(nn.Module):
    """Outputs full of ties: maps rounded to a coarse grid, constant maps, +0.0 and -0.0
    side by side; a NaN in map 4 and a negative NaN in map 6 of the images marked 50, an infinity in map 5 of those
    marked -50 (``marks``: the first pixel of each input image)."""

    def forward(self, x, marks):
        y = torch.round(x * 2) / 2  # many equal maxima within a map and across images
        y[:, 1] = 0.0  # constant maps: the first position
        y[:, 2] = torch.where(x[:, 2] > 0, 0.0, -0.0)  # signed zeros only: max is +0 or -0
        y[:, 3] = torch.where(x[:, 3] > 0.5, 0.0, -1.0) * torch.sign(x[:, 0])  # ±0 and ±1
        y[marks == 50, 4, 1, 2] = float("nan")
        y[marks == 50, 6, 2, 2] = -float("nan")  # the sign bit set, as x86's default NaN
        y[marks == -50, 5, 0, 3] = float("inf")
        return y


class TiesNet(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.ties = Ties()
        self.fc = nn.Linear(8 * 8 * 8, 6)
        self.clip = nn.Hardtanh(-0.1, 0.1)

    def forward(self, x):
        y = self.ties(self.conv(x), x[:, 0, 0, 0])
        return self.clip(self.fc(y.flatten(1)))


@pytest.mark.parametrize("batch_size", [1, 3, 9, 10, 16, 64])
def test_atlas_bit_identical_to_reference(batch_size, compact):
    torch.manual_seed(1)
    data = torch.randn(45, 3, 32, 32)
    data[20:23] = data[5]  # equal images: equal values, lower index first
    data[30] = 0
    model = tiny_zf()
    layers = ["0", "1", "4", "8", "11"]  # convs, a ReLU (zero maps), a Linear (B, C)
    atlas = zf.mine(model, data, layers=layers, k=9, batch_size=batch_size, progress=False)
    assert_same_atlas(atlas, reference_mine(model, data, layers, 9, batch_size))


@pytest.mark.parametrize(("batch_size", "k"), [(4, 5), (7, 3), (16, 9), (40, 1)])
def test_ties_signed_zeros_nan_inf_bit_identical(batch_size, k, compact):
    torch.manual_seed(2)
    data = torch.randn(40, 3, 8, 8)
    data[10:14] = data[2]
    data[6, 0, 0, 0], data[17, 0, 0, 0] = 50, -50
    model = TiesNet().eval()
    layers = ["ties", "clip"]
    atlas = zf.mine(model, data, layers=layers, k=k, batch_size=batch_size, progress=False)
    ref = reference_mine(model, data, layers, k, batch_size)
    assert_same_atlas(atlas, ref)
    # the cases are there: a NaN, an infinity, signed zeros on top, (B, C) ties
    v = atlas.values["ties"]
    assert torch.isnan(v[4, 0]) and atlas.indices["ties"][4, 0] == 6
    assert torch.isnan(v[6, 0]) and torch.signbit(v[6, 0]) and atlas.indices["ties"][6, 0] == 6
    assert v[5, 0] == float("inf") and atlas.indices["ties"][5, 0] == 17
    assert (torch.signbit(v[2:4]) & (v[2:4] == 0)).any()
    assert k == 1 or (atlas.values["clip"][:, 1:].abs() == 0.1).any()  # NaN first


class Marked(nn.Module):
    """Rounds its input (ties) and, in the images marked 50, sets a NaN of each sign."""

    def forward(self, y, marks):
        y = torch.round(y * 4) / 4
        h, w = y.shape[2:]
        y[marks == 50, 1, h - 1, w - 1] = float("nan")
        y[marks == 50, 2, h // 2, 0] = -float("nan")  # the sign bit set, as x86's default NaN
        return y


class Sizes(nn.Module):
    """Maps of 121, 49, 25 and 16 elements: each way of ``_spatial_amax``."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(4)
        self.c1 = nn.Conv2d(3, 6, 3, padding=1)
        self.c2 = nn.Conv2d(6, 6, 1)
        self.c3 = nn.Conv2d(6, 6, 1)
        self.c4 = nn.Conv2d(6, 6, 1)
        self.m1, self.m2, self.m3, self.m4 = Marked(), Marked(), Marked(), Marked()

    def forward(self, x):
        marks, pool = x[:, 0, 0, 0], nn.functional.adaptive_max_pool2d
        y = self.m1(self.c1(x), marks)
        y = self.m2(self.c2(pool(y.nan_to_num(0.0), 7)), marks)
        y = self.m3(self.c3(pool(y.nan_to_num(0.0), 5)), marks)
        return self.m4(self.c4(pool(y.nan_to_num(0.0), 4)), marks)


@pytest.mark.parametrize("batch_size", [5, 16])
def test_map_sizes_of_every_reduction_bit_identical(batch_size, compact):
    """11x11, 7x7, 5x5 and 4x4 maps with ties and NaN of both signs; the last batch smaller
    than the others (the padded rows of 5x5 maps are made again for it)."""
    torch.manual_seed(5)
    data = torch.randn(38, 3, 11, 11)
    data[12:15] = data[3]
    data[7, 0, 0, 0] = 50
    model = Sizes().eval()
    layers = ["m1", "m2", "m3", "m4", "c2"]
    atlas = zf.mine(model, data, layers=layers, k=4, batch_size=batch_size, progress=False)
    assert_same_atlas(atlas, reference_mine(model, data, layers, 4, batch_size))
    for layer in layers[:4]:  # the NaNs come first
        assert torch.isnan(atlas.values[layer][1:3, 0]).all(), layer
        assert (atlas.indices[layer][1:3, 0] == 7).all(), layer


def test_resnet_relu_called_twice_and_float64_and_channels_last(compact):
    model = torchvision_model("resnet18").double().to(memory_format=torch.channels_last)
    torch.manual_seed(3)
    data = torch.randn(21, 3, 48, 48, dtype=torch.float64).contiguous(
        memory_format=torch.channels_last
    )
    layers = ["layer1.0.relu", "layer2.1.conv2", "fc"]  # the ReLU runs twice per forward
    atlas = zf.mine(model, data, layers=layers, k=4, batch_size=8, progress=False)
    assert_same_atlas(atlas, reference_mine(model, data, layers, 4, 8))


def test_topk_update_and_add_agree_with_the_stable_sort(compact):
    """The public ``TopK.update`` (values and positions given) and ``TopK.add`` (a layer's
    output) give the stable sort's entries, whatever ties, zeros and NaN the scores hold."""
    g = torch.Generator().manual_seed(4)
    C, k = 6, 5
    by_update, by_add = TopK(C, k, torch.device("cpu")), TopK(C, k, torch.device("cpu"))
    ref = (
        torch.full((C, k), float("-inf")),
        torch.full((C, k), -1, dtype=torch.long),
        torch.zeros((C, k, 2), dtype=torch.long),
    )
    start = 0
    for B in (3, 8, 0, 1, 12, 5):  # an empty batch too
        out = torch.randint(-3, 4, (B, C, 4, 5), generator=g).float()
        out[out == 0] = torch.where(torch.rand(int((out == 0).sum()), generator=g) > 0.5, 0.0, -0.0)
        if B == 8:
            out[0, 0, 2, 2] = float("nan")
        values, flat = out.flatten(2).max(2)
        positions = torch.stack([flat // 5, flat % 5], -1)
        by_update.update(values, positions, start)
        by_add.add(out, torch.arange(start, start + B))
        v = torch.cat([ref[0], values.t()], 1)
        i = torch.cat([ref[1], torch.arange(start, start + B).expand(C, B)], 1)
        p = torch.cat([ref[2], positions.transpose(0, 1)], 1)
        order = torch.sort(v, dim=1, descending=True, stable=True).indices[:, :k]
        ref = (
            torch.gather(v, 1, order),
            torch.gather(i, 1, order),
            torch.gather(p, 1, order.unsqueeze(-1).expand(-1, -1, 2)),
        )
        for top in (by_update, by_add):
            assert torch.equal(top.values.view(torch.int32), ref[0].view(torch.int32))
            assert torch.equal(top.indices, ref[1])
            assert torch.equal(top.positions, ref[2])
        start += B
    assert torch.isnan(ref[0][0, 0])


def test_a_non_finite_image_is_named():
    model = tiny_zf()
    torch.manual_seed(5)
    for bad in (float("nan"), -float("nan"), float("inf"), -float("inf")):
        data = torch.randn(12, 3, 32, 32)
        data[7, 2, 31, 30] = bad
        with pytest.raises(ValueError, match="image 7 has NaN or infinite"):
            zf.mine(model, data, layers=["4"], k=2, batch_size=5, progress=False)
    data = torch.randn(12, 3, 32, 32).clamp(-1, 1) * 3e38  # huge but finite: accepted
    zf.mine(model, data, layers=["0"], k=2, batch_size=5, progress=False)


SPATIAL_SIZES = [(1, 1), (3, 4), (4, 4), (5, 5), (1, 31), (31, 1), (5, 6), (6, 6), (8, 8)]
# overlapping 32s (7x7), blocks and the last 32 (9x9, 11x11, 12x12), amax around them and
# for long rows (27x27)
SPATIAL_SIZES += [(7, 7), (6, 7), (9, 9), (11, 11), (1, 127), (10, 10), (12, 12), (13, 13)]
SPATIAL_SIZES += [(27, 27), (1, 48), (1, 80)]


@pytest.mark.parametrize("hw", SPATIAL_SIZES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_spatial_maxima_equal_amax_nan_and_infinities_included(hw, dtype):
    """Halving (12 to 19 elements), rows padded with -inf (20 to 31, the padded rows kept
    from call to call), two overlapping 32s (40 to 63), blocks of 32 and the last 32 (64 and
    more with a long remainder) and ``amax`` elsewhere: the maxima of ``amax`` (NaN where a map holds one), contiguous or channels-last,
    whichever the sign of NaN and wherever it and the infinities lie."""
    g = torch.Generator().manual_seed(8)
    scratch: dict = {}
    for b in (3, 3, 2):  # the same shape again, then a smaller last batch
        x = torch.randn(b, 7, *hw, generator=g).to(dtype)
        x[0, 1, 0, -1] = float("nan")
        x[1, 2, -1, -1] = float("inf")
        x[-1, 3] = -float("inf")
        x[0, 4].view(-1)[hw[0] * hw[1] // 2] = -torch.tensor(float("nan"), dtype=dtype)
        x[1, 5] = -torch.rand(*hw, generator=g).to(dtype) - 1  # all below zero
        x[-1, 6].view(-1)[0] = float("inf")
        for t in (x, x.contiguous(memory_format=torch.channels_last)):
            got, want = _spatial_amax(t, scratch), t.amax((2, 3))
            assert got.dtype == want.dtype
            assert torch.equal(torch.isnan(got), torch.isnan(want))
            assert torch.equal(got.nan_to_num(0.5), want.nan_to_num(0.5))
        assert torch.isnan(_spatial_amax(x)[0, 1]) and torch.isnan(_spatial_amax(x)[0, 4])
        assert _spatial_amax(x)[-1, 3] == -float("inf")


def test_queued_candidates_hold_no_maps():
    """Between merges the CPU path keeps (M,) maxima and (M,) flat positions per batch, not
    the candidate maps it copied in the hook: what it holds does not grow with the map size."""
    top = TopK(4, 3, torch.device("cpu"))
    g = torch.Generator().manual_seed(9)
    for s in range(0, 40, 8):
        top.add(torch.randn(8, 4, 32, 32, generator=g), s)
    assert top._queue and all(q[1].dim() == 1 and q[2].dim() == 1 for q in top._queue)
    values, indices, positions = top.state()
    assert not top._queue and (indices >= 0).all()


def test_a_long_run_keeps_a_bounded_queue():
    """Memory flat in the data size: a batch that brings no candidate leaves nothing queued,
    and the queue is merged after at most 256 batches however few candidates each brings (a
    million images make 15,625 batches of 64); the entries stay those of the stable sort."""
    C, k, B = 64, 9, 2
    top = TopK(C, k, torch.device("cpu"))
    outs = [torch.full((k + 1, C, 4, 4), 100.0)]  # k images seen after the first batch
    outs += [torch.full((B, C, 4, 4), -1.0) for _ in range(300)]  # below every bound
    for j in range(600):  # one map a batch beats the bound: one candidate a batch
        out = torch.full((B, C, 4, 4), -1.0)
        out[1, 5, 2, 3] = 101.0 + j
        outs.append(out)
    longest = 0
    start = 0
    for j, out in enumerate(outs):
        top.add(out, torch.arange(start, start + out.shape[0]))
        start += out.shape[0]
        longest = max(longest, len(top._queue))
        if j == 300:
            assert len(top._queue) == 1  # the first batch's candidates only
    assert 200 < longest <= 256
    values, flat = torch.cat(outs).flatten(2).max(2)  # (N, C)
    order = torch.sort(values.t(), dim=1, descending=True, stable=True).indices[:, :k]
    assert torch.equal(top.values, torch.gather(values.t(), 1, order))
    assert torch.equal(top.indices, order)
    flat = torch.gather(flat.t(), 1, order)
    assert torch.equal(top.positions, torch.stack([flat // 4, flat % 4], -1))
    assert top.indices[5, 0] == start - 1 and top.values[5, 0] == 700.0
