"""Receptive fields: known values, exactness on conv/pool chains, soundness on branchy models."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.vgg import cfgs, make_layers

from tests.models import hook_count, tiny_2x2, tiny_zf, torchvision_model
from zfwidgets.engine.capture import Capture
from zfwidgets.engine.receptive import ReceptiveField, receptive_field


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Tiny forwards: thread start-up and contention cost more than they save.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def alexnet() -> nn.Module:
    return torchvision_model("alexnet")


@pytest.fixture(scope="module")
def resnet18() -> nn.Module:
    return torchvision_model("resnet18")


def _hand(layers: list[tuple[int, int, int, int]]) -> tuple[int, int, int]:
    """(stride, offset, size) after a chain of (kernel, stride, left padding, dilation)."""
    s, o, r = 1, 0, 1
    for k, st, p, d in layers:
        o -= p * s
        r += d * (k - 1) * s
        s *= st
    return s, o, r


def _grad_support(model: nn.Module, layer: str, x: torch.Tensor, y: int, xx: int) -> torch.Tensor:
    """(H, W) bool mask of the input pixels where d(sum over channels of unit (y, xx)) / dx != 0."""
    x = x.clone().requires_grad_(True)
    with Capture(model, [layer], switches=False, keep_graph=True) as cap:
        model(x)
    out = cap.activations[layer]
    (g,) = torch.autograd.grad(out[0, :, y, xx].sum(), x)
    return g[0].abs().sum(0) != 0


def _bbox(mask: torch.Tensor) -> tuple[int, int, int, int]:
    rows = mask.any(1).nonzero().flatten()
    cols = mask.any(0).nonzero().flatten()
    return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1


def _inside(mask: torch.Tensor, box: tuple[int, int, int, int]) -> bool:
    top, left, bottom, right = box
    outside = mask.clone()
    outside[top:bottom, left:right] = False
    return not bool(outside.any())


def _units(h: int, w: int) -> list[tuple[int, int]]:
    return sorted({(0, 0), (0, w - 1), (h - 1, 0), (h - 1, w - 1), (h // 2, w // 2), (1, w // 3)})


# ---------------------------------------------------------------------------------------------
# Known values
# ---------------------------------------------------------------------------------------------
def test_alexnet_known_values(alexnet):
    # torchvision AlexNet: conv 11/4 p2, pool 3/2, conv 5 p2, pool 3/2, conv 3 p1 (x3), pool 3/2.
    # conv5 (features.10): s = 4*2*2 = 16, r = 11 + 2*4 + 4*8 + 2*8 + 3*(2*16) = 163,
    # o = -2 - 2*8 - 3*16 = -66. The pool after it (features.12) reaches r = 163 + 2*16 = 195
    # with stride 32: the "195" often quoted for conv5 is the field of pool5.
    conv5 = receptive_field(alexnet, "features.10", input_size=(224, 224))
    assert isinstance(conv5, ReceptiveField)
    assert conv5.stride == (16, 16)
    assert conv5.size == (163, 163)
    assert conv5.offset == (-66, -66)
    assert conv5.output_size == (13, 13) and conv5.input_size == (224, 224)
    assert not conv5.is_global
    assert _hand(
        [(11, 4, 2, 1), (3, 2, 0, 1), (5, 1, 2, 1), (3, 2, 0, 1)] + [(3, 1, 1, 1)] * 3
    ) == (
        16,
        -66,
        163,
    )
    pool5 = receptive_field(alexnet, alexnet.features[12], 224)
    assert (pool5.stride, pool5.size, pool5.offset) == ((32, 32), (195, 195), (-66, -66))
    assert pool5.output_size == (6, 6) and pool5.layer == "features.12"
    # the unit at the centre of conv5 sees a 163-pixel window inside the image
    assert conv5.box(6, 6) == (30, 30, 193, 193)
    assert conv5.box(0, 0) == (0, 0, 97, 97)
    assert conv5.box(0, 0, clip=False) == (-66, -66, 97, 97)
    fc = receptive_field(alexnet, "classifier.1", 224)
    assert fc.is_global and fc.output_size == (1, 1) and fc.box(0, 0) == (0, 0, 224, 224)


def test_vgg11_bn_last_conv():
    # torchvision's VGG11_bn feature stack (what vgg11_bn() builds as `features`); the full
    # model spends seconds initialising its 25088 x 4096 classifier, which this field ignores.
    torch.manual_seed(0)
    vgg = nn.Sequential(OrderedDict(features=make_layers(cfgs["A"], batch_norm=True))).eval()
    last = max(i for i, m in enumerate(vgg.features) if isinstance(m, nn.Conv2d))
    assert last == 25
    rf = receptive_field(vgg, f"features.{last}", (224, 224))
    c, p = (3, 1, 1, 1), (2, 2, 0, 1)
    s, o, r = _hand([c, p, c, p, c, c, p, c, c, p, c, c])
    assert (s, o, r) == (16, -59, 134)
    assert rf.stride == (s, s) and rf.offset == (o, o) and rf.size == (r, r)
    assert rf.output_size == (14, 14) and not rf.is_global


def test_tiny_models_by_hand():
    zf = tiny_zf()
    # conv5 p2 | relu | pool 3/2 ceil | LRN | conv3 p1 | relu | pool 3/2 ceil | conv3 p1
    c5, c3, p3 = (5, 1, 2, 1), (3, 1, 1, 1), (3, 2, 0, 1)
    expected = {
        "0": [c5],
        "2": [c5, p3],
        "3": [c5, p3],  # LRN mixes channels only
        "4": [c5, p3, c3],
        "6": [c5, p3, c3, p3],
        "8": [c5, p3, c3, p3, c3],
    }
    for name, chain in expected.items():
        rf = receptive_field(zf, name, 32)
        s, o, r = _hand(chain)
        assert (rf.stride, rf.offset, rf.size) == ((s, s), (o, o), (r, r)), name
    # adaptive average pool 8 -> 2: exact, kernel = stride = 4
    rf = receptive_field(zf, "9", 32)
    assert (rf.stride, rf.offset, rf.size) == ((16, 16), (-8, -8), (23 + 3 * 4,) * 2)
    assert rf.output_size == (2, 2)
    assert receptive_field(zf, "11", 32).is_global

    t = tiny_2x2()
    # conv3 p1 | pool 2 | conv3 p2 d2 | pool 2 | conv3 s2 p1
    chain = [(3, 1, 1, 1), (2, 2, 0, 1), (3, 1, 2, 2), (2, 2, 0, 1), (3, 2, 1, 1)]
    for name, n in {"0": 1, "2": 2, "3": 3, "5": 4, "6": 5}.items():
        rf = receptive_field(t, name, (32, 32))
        s, o, r = _hand(chain[:n])
        assert (rf.stride, rf.offset, rf.size) == ((s, s), (o, o), (r, r)), name
    assert receptive_field(t, "6", 32).size == (22, 22)
    # the head needs 32 x 32 but the convolutions work at any size: the field does not change
    rf = receptive_field(t, "6", (48, 64))
    assert rf.input_size == (48, 64) and rf.output_size == (6, 8) and rf.size == (22, 22)


def test_box_and_boxes_agree():
    rf = receptive_field(tiny_2x2(), "5", (32, 40))
    h, w = rf.output_size
    ys = [y for y in range(h) for _ in range(w)]
    xs = [x for _ in range(h) for x in range(w)]
    boxes = rf.boxes(ys, xs)
    assert boxes.dtype == torch.long and boxes.shape == (h * w, 4)
    assert boxes.tolist() == [list(rf.box(y, x)) for y, x in zip(ys, xs)]
    raw = rf.boxes(torch.tensor(ys), torch.tensor(xs), clip=False)
    assert raw.tolist() == [list(rf.box(y, x, clip=False)) for y, x in zip(ys, xs)]
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= 32).all() and (boxes[:, 3] <= 40).all()
    assert rf.boxes(2, [0, 1]).tolist() == [list(rf.box(2, 0)), list(rf.box(2, 1))]
    assert rf.boxes([], []).shape == (0, 4)
    with pytest.raises(ValueError, match="outside the output"):
        rf.box(h, 0)
    with pytest.raises(ValueError, match="outside the output"):
        rf.boxes([0, -1], [0, 0])
    with pytest.raises(ValueError, match="same number"):
        rf.boxes([0, 1, 2], [0, 1])


# ---------------------------------------------------------------------------------------------
# Exactness: positive chains of convolutions and average pools
# ---------------------------------------------------------------------------------------------
def _positive(model: nn.Module) -> nn.Module:
    with torch.no_grad():
        for p in model.parameters():
            p.abs_().add_(0.01)
    return model.eval()


def _chain_2x2() -> nn.Sequential:
    torch.manual_seed(3)
    return _positive(
        nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1),
            nn.ReLU(),
            nn.AvgPool2d(2),
            nn.Conv2d(4, 4, 3, padding=2, dilation=2),
            nn.ReLU(),
            nn.AvgPool2d(2),
            nn.Conv2d(4, 5, 3, stride=2, padding=1),
            nn.ReLU(),
        )
    )


def _chain_zf() -> nn.Sequential:
    torch.manual_seed(4)
    return _positive(
        nn.Sequential(
            nn.Conv2d(3, 4, 5, stride=2, padding=2),
            nn.ReLU(inplace=True),
            nn.AvgPool2d(3, stride=2, padding=1, ceil_mode=True),
            nn.LocalResponseNorm(3),
            nn.Conv2d(4, 4, 3, padding=1),
            nn.BatchNorm2d(4),
            nn.ReLU(inplace=True),
            nn.AvgPool2d(3, stride=2),
            nn.Conv2d(4, 3, (3, 5), padding=(0, 2)),
        )
    )


def _chain_drop() -> nn.Sequential:
    """A 3/2 conv without padding drops the last row or column of an even-sized input; the
    padded conv after it must not claim it."""
    torch.manual_seed(8)
    return _positive(
        nn.Sequential(
            nn.Conv2d(3, 4, 3, stride=2),
            nn.Conv2d(4, 4, 3, padding=1),
            nn.AvgPool2d(2, ceil_mode=True),
            nn.Conv2d(4, 4, 3, padding=2, dilation=2),
        )
    )


class _SamePad(nn.Module):
    """F.conv2d with padding='same' (even kernel), F.pad and a strided conv."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(5)
        self.a = nn.Conv2d(3, 4, 4, padding="same")
        self.b = nn.Conv2d(4, 4, 3, stride=2)
        self.c = nn.Identity()
        _positive(self)

    def forward(self, x):
        x = F.relu(self.a(x))
        x = F.pad(x, (2, 1, 1, 0))
        return self.c(F.avg_pool2d(F.relu(self.b(x)), (2, 3), stride=(1, 2)))


@pytest.mark.parametrize(
    "make, layers, size",
    [
        (_chain_2x2, ["0", "2", "3", "5", "6"], (32, 32)),
        (_chain_zf, ["2", "4", "6", "8"], (40, 36)),
        (_chain_drop, ["0", "1", "2", "3"], (22, 23)),
        (_SamePad, ["a", "b", "c"], (23, 29)),
    ],
)
@pytest.mark.filterwarnings("ignore:Using padding='same'")
def test_exact_on_positive_chains(make, layers, size):
    torch.manual_seed(0)
    model = make()
    x = torch.rand(1, 3, *size) + 0.1
    for layer in layers:
        rf = receptive_field(model, layer, size)
        assert not rf.is_global
        h, w = rf.output_size
        for y, xx in _units(h, w):
            mask = _grad_support(model, layer, x, y, xx)
            assert _bbox(mask) == rf.box(y, xx), (layer, y, xx)


def test_box_trims_what_only_padding_reaches():
    # tiny_2x2's dilated conv (features "3") reads pooled rows y-2, y, y+2. For y = 1 the row
    # -1 is padding: the affine field [-3, 9) clipped is [0, 9), but input row 0 reaches the
    # unit only through that padding, so the box starts at row 1.
    rf = receptive_field(tiny_2x2(), "3", 32)
    assert rf.box(1, 5, clip=False) == (-3, 5, 9, 17)
    assert rf.box(1, 5) == (1, 5, 9, 17)
    assert rf.rows[1] == (1, 9) and rf.cols[5] == (5, 17)
    # always inside the clipped affine field
    for y in range(rf.output_size[0]):
        top, _, bottom, _ = rf.box(y, 0, clip=False)
        start, end = rf.rows[y]
        assert max(top, 0) <= start <= end <= min(bottom, 32)
    # a position made only of F.pad zeros depends on nothing: an empty box
    model = _Ops(lambda t: F.pad(t, (0, 0, 3, 0))).eval()
    rf = receptive_field(model, "mark", 8)
    assert rf.output_size == (11, 8) and rf.box(0, 0) == (0, 0, 0, 2)
    assert rf.box(0, 0, clip=False) == (-4, -1, -1, 2)
    assert rf.box(4, 4) == (0, 3, 3, 6)


@pytest.mark.filterwarnings("ignore:Using padding='same'")
def test_same_padding_hand_values():
    rf = receptive_field(_SamePad(), "a", 20)
    # 'same' with k=4: 3 padded pixels, 1 on the left
    assert (rf.stride, rf.offset, rf.size, rf.output_size) == ((1, 1), (-1, -1), (4, 4), (20, 20))
    rf = receptive_field(_SamePad(), "c", 20)
    # pad (left 2, top 1), conv 3/2, avg pool (2, 3) / (1, 2)
    assert rf.stride == (2, 4)
    assert rf.offset == (-1 - 1, -1 - 2)
    assert rf.size == (4 + 2 + 2, 4 + 2 + 2 * 2)


# ---------------------------------------------------------------------------------------------
# Soundness on branchy models
# ---------------------------------------------------------------------------------------------
class _Branchy(nn.Module):
    """A residual add and a concatenation of two branches with different kernel sizes."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(6)
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.a = nn.Conv2d(4, 4, 3, padding=1)
        self.b = nn.Conv2d(4, 4, 5, padding=2)
        self.pool = nn.MaxPool2d(2)
        self.head = nn.Conv2d(8, 8, 3, padding=1)
        self.out = nn.ReLU()
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        x = F.relu(self.stem(x))
        y = torch.cat([self.a(x), self.b(x)], dim=1)
        y = self.pool(F.relu(y))
        z = self.out(self.head(y) + y)
        return self.fc(z.mean((2, 3)))


def test_branchy_values_and_soundness():
    model = _Branchy().eval()
    # stem: o -1, r 3; cat: union of o -2 r 5 and o -3 r 7 -> o -3 r 7; pool 2: s 2, r 8;
    # head: o -3 - 2 = -5, r 8 + 2*2 = 12; + y (o -3, r 8) -> o -5, r 12
    expected = {
        "stem": ((1, 1), (-1, -1), (3, 3)),
        "a": ((1, 1), (-2, -2), (5, 5)),
        "b": ((1, 1), (-3, -3), (7, 7)),
        "pool": ((2, 2), (-3, -3), (8, 8)),
        "head": ((2, 2), (-5, -5), (12, 12)),
        "out": ((2, 2), (-5, -5), (12, 12)),
    }
    torch.manual_seed(0)
    x = torch.randn(1, 3, 24, 20)
    for layer, (s, o, r) in expected.items():
        rf = receptive_field(model, layer, (24, 20))
        assert (rf.stride, rf.offset, rf.size) == (s, o, r), layer
        h, w = rf.output_size
        for y, xx in _units(h, w):
            mask = _grad_support(model, layer, x, y, xx)
            assert mask.any() and _inside(mask, rf.box(y, xx)), (layer, y, xx)
    assert receptive_field(model, "fc", 24).is_global


@pytest.mark.parametrize(
    "layer, expect_local",
    [
        ("maxpool", True),
        ("layer1.0.relu", True),  # called twice per block: the last call (after the add)
        ("layer1.1", True),
        ("layer2.0.downsample.0", True),
        ("layer2.1.bn2", False),  # 99 pixels at stride 8: covers 64 x 64
        ("layer3.0", False),  # 64 x 64 input: the field already covers the whole image
    ],
)
def test_resnet18_soundness(resnet18, layer, expect_local):
    torch.manual_seed(0)
    x = torch.randn(1, 3, 64, 64)
    rf = receptive_field(resnet18, layer, 64)
    assert not rf.is_global
    h, w = rf.output_size
    for y, xx in _units(h, w):
        mask = _grad_support(resnet18, layer, x, y, xx)
        assert _inside(mask, rf.box(y, xx)), (layer, y, xx)
    if expect_local:
        assert rf.box(h // 2, w // 2) != (0, 0, 64, 64)


def test_resnet18_known_values(resnet18):
    # conv1 7/2 p3, maxpool 3/2 p1, layer1: 4 convs 3 p1 at stride 4
    rf = receptive_field(resnet18, "layer1.1", 64)
    s, o, r = _hand([(7, 2, 3, 1), (3, 2, 1, 1)] + [(3, 1, 1, 1)] * 4)
    assert (rf.stride, rf.offset, rf.size) == ((s, s), (o, o), (r, r))
    # the last call of layer1.0.relu comes after `out += identity`: conv1..bn2 of the block
    rf = receptive_field(resnet18, "layer1.0.relu", 64)
    assert rf.calls == 2 and rf.channels == 64
    s, o, r = _hand([(7, 2, 3, 1), (3, 2, 1, 1)] + [(3, 1, 1, 1)] * 2)
    assert (rf.stride, rf.offset, rf.size) == ((s, s), (o, o), (r, r))
    # the standard 435-pixel field of ResNet-18's last block, and the global head
    rf = receptive_field(resnet18, "layer4", 64)
    assert rf.stride == (32, 32) and rf.size == (435, 435)
    assert rf.box(0, 0) == (0, 0, 64, 64)
    assert receptive_field(resnet18, "fc", 64).is_global


# ---------------------------------------------------------------------------------------------
# Operations: which are exact, which are global
# ---------------------------------------------------------------------------------------------
class _Ops(nn.Module):
    """Functional operations the tracer must follow."""

    def __init__(self, op):
        super().__init__()
        torch.manual_seed(7)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.op = op
        self.mark = nn.Identity()

    def forward(self, x):
        return self.mark(self.op(self.conv(x)))


def _se(t):
    return t * torch.sigmoid(F.adaptive_avg_pool2d(t, 1))


@pytest.mark.parametrize(
    "op, expected",
    [
        (lambda t: F.max_pool2d(t, 2, return_indices=True)[0], ((2, 2), (-1, -1), (4, 4))),
        (lambda t: F.max_pool2d(t, 3, 2, 1, dilation=2), ((2, 2), (-2, -2), (7, 7))),
        (lambda t: F.avg_pool2d(t, 3, stride=None, padding=1), ((3, 3), (-2, -2), (5, 5))),
        (lambda t: t[:, :2, 1::2, 3:], ((2, 1), (0, 2), (3, 3))),
        (lambda t: torch.flip(t, [1]).relu_().clamp(max=1) * 2 - 1, ((1, 1), (-1, -1), (3, 3))),
        (lambda t: t.view(1, 2, 2, 16, 16).transpose(1, 2).reshape(1, 4, 16, 16), "same"),
        (lambda t: t.mean(1, keepdim=True).softmax(1) + t.chunk(2, 1)[0].sum(1), "same"),
        (lambda t: F.adaptive_avg_pool2d(t, (16, 8)), ((1, 2), (-1, -1), (3, 4))),
        (lambda t: F.adaptive_max_pool2d(t, 5), ((3, 3), (-1, -1), (6, 6))),  # 16 -> 5: bound
        (lambda t: F.interpolate(t, scale_factor=2), None),
        (lambda t: F.pad(t, (1, 1, 1, 1), mode="reflect"), None),
        (lambda t: t.flatten(2).unflatten(2, (16, 16)), None),
        (lambda t: t.transpose(2, 3), None),
        (lambda t: t.softmax(-1), None),
        (lambda t: F.group_norm(t, 2), None),
        (_se, None),
    ],
)
def test_functional_ops(op, expected):
    model = _Ops(op).eval()
    rf = receptive_field(model, "mark", 16)
    if expected is None:
        assert rf.is_global
        assert (rf.stride, rf.offset, rf.size) == ((0, 0), (0, 0), (16, 16))
        assert rf.box(0, 0) == (0, 0, 16, 16)
        return
    if expected == "same":
        expected = ((1, 1), (-1, -1), (3, 3))
    assert not rf.is_global
    assert (rf.stride, rf.offset, rf.size) == expected
    # and the field is sound
    torch.manual_seed(1)
    x = torch.randn(1, 3, 16, 16)
    h, w = rf.output_size
    for y, xx in _units(h, w):
        mask = _grad_support(model, "mark", x, y, xx)
        assert _inside(mask, rf.box(y, xx)), (y, xx)


def test_adaptive_bound_is_sound_and_tight_when_possible():
    # 7 -> 3 bins [0,3) [2,5) [4,7): stride 2, kernel 3, exact
    model = nn.Sequential(nn.AdaptiveAvgPool2d(3)).eval()
    rf = receptive_field(model, "0", 7, in_channels=2)
    assert (rf.stride, rf.size, rf.offset) == ((2, 2), (3, 3), (0, 0))
    # 10 -> 4 bins [0,3) [2,5) [5,8) [7,10): stride 2, kernel 4 holds each bin; the boxes are
    # the bins themselves
    model = nn.Sequential(nn.AdaptiveAvgPool2d(4)).eval()
    rf = receptive_field(model, "0", 10, in_channels=2)
    assert (rf.stride, rf.size, rf.offset) == ((2, 2), (4, 4), (0, 0))
    bins = [(0, 3), (2, 5), (5, 8), (7, 10)]
    for i, (a, b) in enumerate(bins):
        assert rf.box(i, i) == (a, a, b, b)
        top, left, bottom, right = rf.box(i, i, clip=False)
        assert top <= a and b <= bottom
    # upsampling: global
    assert receptive_field(model, "0", 2, in_channels=2).is_global


def test_maxpool_module_with_indices_and_unused_module():
    class Unpool(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3, padding=1)
            self.pool = nn.MaxPool2d(2, return_indices=True)
            self.spare = nn.Conv2d(2, 2, 1)

        def forward(self, x):
            y, idx = self.pool(self.conv(x))
            return y, idx

    model = Unpool().eval()
    rf = receptive_field(model, "pool", 8)
    assert (rf.stride, rf.offset, rf.size) == ((2, 2), (-1, -1), (4, 4))
    assert model.pool.return_indices is True and hook_count(model) == 0
    with pytest.raises(ValueError, match="not called"):
        receptive_field(model, "spare", 8)
    assert hook_count(model) == 0


# ---------------------------------------------------------------------------------------------
# Checks and side effects
# ---------------------------------------------------------------------------------------------
def test_no_hooks_training_restored_and_errors():
    model = tiny_zf()
    model.train()
    model[3].eval()  # a mixed state must come back as it was
    flags = [m.training for m in model.modules()]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    receptive_field(model, "4", 32)
    assert hook_count(model) == 0
    assert [m.training for m in model.modules()] == flags
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())

    with pytest.raises(ValueError, match=r"close matches: .*'4'") as info:
        receptive_field(model, "44", 32)
    assert "'4'" in str(info.value)
    with pytest.raises(ValueError, match="input_size"):
        receptive_field(model, "4", 0)
    with pytest.raises(ValueError, match="input_size"):
        receptive_field(model, "4", (32,))
    with pytest.raises(ValueError, match="input_size"):
        receptive_field(model, "4", (32, 2.5))
    with pytest.raises(ValueError, match="input_size"):
        receptive_field(model, "4", (True, 32))
    with pytest.raises(ValueError, match="input_size"):
        receptive_field(model, "4", "32")
    with pytest.raises(ValueError, match="input_size"):
        receptive_field(model, "4", (32, 32, 3))
    with pytest.raises(ValueError, match="in_channels"):
        receptive_field(model, "4", 32, in_channels=0)
    # a forward that fails before the layer is reached
    with pytest.raises(ValueError, match="failed before reaching layer '4'"):
        receptive_field(model, "4", 32, in_channels=5)
    # a forward that fails after it (the head wants 32 x 32) still gives the field
    assert receptive_field(tiny_2x2(), "3", 20).output_size == (10, 10)
    assert hook_count(model) == 0
    assert [m.training for m in model.modules()] == flags
    with pytest.raises(TypeError, match="nn.Module"):
        receptive_field("not a model", "4", 32)


class _Normalised(nn.Module):
    """Normalisation constants kept as plain tensor attributes (not buffers)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(9)
        self.mean = torch.tensor([0.5]).view(1, 1, 1, 1)
        self.conv = nn.Conv2d(1, 2, 3, padding=1, dtype=torch.float64)

    def forward(self, x):
        return self.conv((x - self.mean) / 2)


def test_constants_in_channels_and_dtype():
    model = _Normalised().eval()
    rf = receptive_field(model, "conv", 12)  # one input channel, float64: both inferred
    assert (rf.stride, rf.offset, rf.size) == ((1, 1), (-1, -1), (3, 3))
    with pytest.raises(ValueError, match="failed before reaching"):
        receptive_field(model, "conv", 12, in_channels=3)


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_unseen_computation_is_global():
    # a TorchScript submodule runs in C++: the tracer cannot see what it does
    class Scripted(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3, padding=1)
            self.inner = torch.jit.trace(nn.Conv2d(3, 3, 3, padding=1), torch.zeros(1, 3, 4, 4))
            self.mark = nn.Identity()

        def forward(self, x):
            return self.mark(self.inner(self.conv(x)))

    model = Scripted().eval()
    assert not receptive_field(model, "conv", 10).is_global
    assert receptive_field(model, "mark", 10).is_global


def test_in_place_write_through_a_view_is_not_missed():
    def op(t):
        t[:, :2].add_(F.avg_pool2d(t[:, 2:].clone(), 5, 1, 2))  # rewrites channels 0-1 of t
        return t

    model = _Ops(op).eval()
    rf = receptive_field(model, "mark", 12)
    torch.manual_seed(0)
    x = torch.randn(1, 3, 12, 12)
    mask = _grad_support(model, "mark", x, 6, 6)
    assert _inside(mask, rf.box(6, 6))
    assert _bbox(mask) == (3, 3, 10, 10)  # 3 x 3 conv, then a 5 x 5 average


def test_json_round_trip_and_calls():
    import dataclasses
    import json

    rf = receptive_field(tiny_2x2(), "3", (32, 24))
    assert rf.calls == 1 and rf.channels == 10
    back = ReceptiveField(**json.loads(json.dumps(dataclasses.asdict(rf))))
    assert back == rf and back.box(1, 5) == rf.box(1, 5)
    # without explicit bounds: the affine field clipped to the image
    plain = ReceptiveField("l", (10, 10), (3, 3), (4, 4), (-2, -2), (6, 6), False)
    assert plain.box(0, 2) == (0, 6, 4, 10) and plain.box(0, 2, clip=False) == (-2, 6, 4, 12)
