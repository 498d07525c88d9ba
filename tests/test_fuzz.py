"""Property-based tests over every public engine function.

For generated arguments (valid and invalid mixed), every call ends in one of two ways:

- a result whose floating tensors and numbers are finite, or
- a ``ValueError``/``TypeError`` whose message starts with the name of the argument at fault
  (``"target: ..."``), raised before any forward pass of real data (forwards are counted by a
  forward pre-hook; the checks' shape-only passes on the meta device do not count).

In every case the model (parameters, buffers, flags, grads, hooks) and the inputs come back
unchanged. The tallies are printed by the last test (run with ``-s`` to see them):

    .venv/bin/python -m pytest tests/test_fuzz.py -q -s -p no:cacheprovider
"""

from __future__ import annotations

import collections
import dataclasses
import inspect
import math

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from models import FixedHead, assert_unchanged, snapshot, tiny_zf
from torch import nn

import zfwidgets as zf

SETTINGS = settings(
    derandomize=True,
    max_examples=30,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
)
STATS: collections.Counter = collections.Counter()

# Names an error may start with besides the function's own parameters.
EXTRA_NAMES = {"model output", "data", "images", "x", "units, channel", "activations"}


class GapNet(nn.Module):
    """conv -> relu -> conv -> relu -> global average pooling -> linear (CAM applies)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(5)
        self.features = nn.Sequential(
            nn.Conv2d(3, 6, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 8, 3, padding=1),
            nn.ReLU(),
        )
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        return self.fc(self.avgpool(self.features(x)).flatten(1))


# "head": a classifier that takes 20x20 images only (a size no square ladder tries): every
# size error names x and 20x20 before the work; projections of its conv units still run
MODELS = {
    "zf": tiny_zf(),
    "gap": GapNet().eval(),
    "zf64": tiny_zf().double(),
    "head": FixedHead().eval(),
}


def _images():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 3, 32, 32, generator=g)
    nan = x.clone()
    nan[2, 1, 4, 4] = float("nan")
    return {
        "ok": x,
        "one": x[:1].clone(),
        "f64": x.double(),
        "half": x.half(),
        "nan": nan,
        "inf": x.clone().fill_(float("inf")),
        "int": (x * 50).to(torch.uint8),
        "3d": x[0].clone(),
        "gray": x[:, :1].clone(),
        "tiny": x[:, :, :2, :2].clone(),
        "odd": x[:, :, :17, :29].clone(),
        "empty": x[:0].clone(),
        "meta": torch.empty(2, 3, 32, 32, device="meta"),
        "numpy": x.numpy().copy(),
        "list": [[1.0, 2.0]],
        "mixed": [x[0].clone(), x[1, :, :28, :28].clone(), x[2].clone()],
        "none": None,
    }


IMAGES = _images()
LAYERS = ["0", "4", "7", "9", "11", "features.0", "features.3", "fc", "nope", 3, None, ["0", 3]]
INTS = [None, 0, 1, 2, 4, 9, -1, 10**12, 2.5, True, "3", float("nan"), np.int64(1)]
NUMBERS = [0.0, 0.5, -1.0, 1e30, float("nan"), float("inf"), "x", None, True, 3]


def _finite(obj, path="result", allow_nan=()):
    if isinstance(obj, torch.Tensor):
        if obj.is_floating_point() and path not in allow_nan:
            assert bool(torch.isfinite(obj).all()), f"{path} is not finite"
    elif isinstance(obj, float):
        assert math.isfinite(obj), f"{path} = {obj}"
    elif dataclasses.is_dataclass(obj):
        for f in dataclasses.fields(obj):
            _finite(getattr(obj, f.name), f"{path}.{f.name}", allow_nan)
    elif isinstance(obj, dict):
        for k, v in obj.items():
            _finite(v, f"{path}[{k!r}]" if path not in allow_nan else path, allow_nan)
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _finite(v, f"{path}[{i}]", allow_nan)


def _clone(v):
    if isinstance(v, torch.Tensor):
        return v.clone() if v.device.type != "meta" else v
    if isinstance(v, np.ndarray):
        return v.copy()
    return v


def _same(a, b):
    if isinstance(a, torch.Tensor):
        if a.device.type == "meta":
            return True
        return torch.equal(a, b) or (a.is_floating_point() and torch.allclose(a, b, equal_nan=True))
    if isinstance(a, np.ndarray):
        return np.array_equal(a, b, equal_nan=a.dtype.kind == "f")
    return True


def check_call(fn, model_key, *args, allow_nan=(), **kwargs):
    """Call ``fn(model, *args, **kwargs)`` and assert the contract; tally the outcome."""
    model = MODELS[model_key] if model_key else None
    before = snapshot(model) if model is not None else None
    inputs = [_clone(a) for a in args] + [_clone(v) for v in kwargs.values()]
    forwards = []

    def count(module, inp):
        t = inp[0] if inp else None
        if isinstance(t, torch.Tensor) and t.device.type != "meta":
            forwards.append(1)

    handle = model.register_forward_pre_hook(count) if model is not None else None
    STATS["calls"] += 1
    params = set(inspect.signature(fn).parameters) | set(kwargs)
    try:
        result = fn(model, *args, **kwargs) if model is not None else fn(*args, **kwargs)
    except (ValueError, TypeError) as exc:
        msg = str(exc)
        head = msg.split(":", 1)[0]
        clear = head.split("[")[0] in params or head in EXTRA_NAMES or head.startswith("parts[")
        STATS["clear errors" if clear else "unclear errors"] += 1
        if forwards:
            STATS["errors after a forward"] += 1
        assert clear, f"{fn.__name__}: the message does not name the argument: {msg!r}"
        assert not forwards, f"{fn.__name__}: {len(forwards)} forward(s) before {msg!r}"
    except Exception as exc:
        STATS["unclear errors"] += 1
        raise AssertionError(f"{fn.__name__}: {type(exc).__name__}: {exc}") from exc
    else:
        STATS["results"] += 1
        _finite(result, allow_nan=allow_nan)
    finally:
        if handle is not None:
            handle.remove()
    if model is not None:
        assert_unchanged(model, before)
    now = list(args) + list(kwargs.values())
    for a, b in zip(inputs, now):
        assert _same(a, b), f"{fn.__name__}: an input was modified"


def opt(values):
    """Either leave the argument out or pick one of ``values``."""
    return st.one_of(st.just(inspect.Parameter.empty), st.sampled_from(values))


def call_kwargs(draw_dict):
    return {k: v for k, v in draw_dict.items() if v is not inspect.Parameter.empty}


model_keys = st.sampled_from(list(MODELS))
image_keys = st.sampled_from(list(IMAGES))


@SETTINGS
@given(
    model_keys,
    image_keys,
    st.fixed_dictionaries(
        {
            "layer": st.sampled_from(["0", "4", "7", "11", "features.3", "fc", "nope", 3]),
            "rule": opt(["deconv", "guided", "saliency", "bogus", 1]),
            "units": opt([None, [(0, 0, 1, 1)], [(0, 99, 0, 0)], [(5, 0, 0, 0)], [(0, 1)], "a"]),
            "channel": opt([None, 0, 2, 100, -1, 1.5]),
            "batch_size": opt([1, 2, 0, "2"]),
            "strategy": opt(["auto", "shared", "crop", "x"]),
        }
    ),
)
def test_backprop(model_key, image_key, kw):
    check_call(zf.backprop, model_key, IMAGES[image_key], **call_kwargs(kw))


@SETTINGS
@given(
    model_keys,
    image_keys,
    st.fixed_dictionaries(
        {
            "target": opt(INTS + [[0, 1, 2], torch.tensor([0, 1, 2]), torch.tensor([0.5])]),
            "window": opt([8, 16, (8, 16), 0, 100, "8", (8,)]),
            "stride": opt([8, 16, (16, 8), 0, -2, 1.5]),
            "fill": opt(
                [None, 0.0, [0.1, 0.2, 0.3], float("nan"), [1.0], "grey", True, 1e308, 10**400]
            ),
            "layer": opt(LAYERS),
            "channel": opt(INTS),
            "batch_size": opt([None, 1, 64, 0, "4"]),
            "max_memory": opt([2**20, 0, -5, 1.5]),
        }
    ),
)
def test_occlusion(model_key, image_key, kw):
    kw = call_kwargs(kw)
    kw.setdefault("window", 16)
    kw.setdefault("stride", 16)
    check_call(zf.occlusion, model_key, IMAGES[image_key], **kw)


@SETTINGS
@given(
    model_keys,
    image_keys,
    st.fixed_dictionaries(
        {"layer": opt(LAYERS), "target": opt(INTS), "relu": opt([True, False, 0, "yes"])}
    ),
)
def test_grad_cam(model_key, image_key, kw):
    check_call(zf.grad_cam, model_key, IMAGES[image_key], **call_kwargs(kw))


@SETTINGS
@given(
    model_keys,
    image_keys,
    st.fixed_dictionaries(
        {
            "target": opt(INTS),
            "layer": opt(["features", "features.4", "features.0", "fc", "nope", 3]),
            "fc": opt(["fc", "features.0", "11", 2]),
        }
    ),
)
def test_cam(model_key, image_key, kw):
    check_call(zf.cam, model_key, IMAGES[image_key], **call_kwargs(kw))


@SETTINGS
@given(
    model_keys,
    image_keys,
    st.fixed_dictionaries(
        {
            "transform": opt(["translate", "scale", "rotate", "shear", 3]),
            "amounts": opt([None, [0, 2], [0.5, 1.0], [-40], [], [float("nan")], 5, "x"]),
            "layers": opt(LAYERS),
            "target": opt(INTS),
            "fill": opt(["mean", 0.0, float("inf"), "max", None]),
            "batch_size": opt([1, 64, 0, 2.0]),
        }
    ),
)
def test_invariance(model_key, image_key, kw):
    kw = call_kwargs(kw)
    kw.setdefault("amounts", [0, 2])
    check_call(zf.invariance, model_key, IMAGES[image_key], allow_nan=("result.distance",), **kw)


PARTS = [
    {"eye": [(2, 2, 8, 8)] * 3},
    {"eye": (2, 2, 8, 8)},
    [(0, 0, 4, 4)] * 3,
    torch.tensor([[0, 0, 4, 4]] * 3),
    {"eye": [(8, 8, 2, 2)] * 3},
    {"eye": [(0, 0, 40, 40)] * 3},
    {"eye": [(0.5, 0, 4, 4)] * 3},
    {"eye": [(2, 2, 8, 8)] * 2},
    {},
    {3: (0, 0, 4, 4)},
    "eye",
    {"eye": [(0, 0, 10**30, 4)]},
]


@SETTINGS
@given(
    model_keys,
    image_keys,
    st.sampled_from(range(len(PARTS))),
    st.fixed_dictionaries(
        {
            "layers": opt(LAYERS),
            "n_random": opt([1, 3, 0, -1, 2.5, 10**9]),
            "seed": opt([0, 7, -3, "a", 1.5, 2**70]),
            "fill": opt([0.0, 1, float("nan"), float("inf"), "x"]),
            "batch_size": opt([1, 64, 0]),
        }
    ),
)
def test_correspondence(model_key, image_key, part, kw):
    kw = call_kwargs(kw)
    kw.setdefault("n_random", 2)
    check_call(zf.correspondence, model_key, IMAGES[image_key], PARTS[part], **kw)


@SETTINGS
@given(
    model_keys,
    image_keys,
    st.fixed_dictionaries(
        {
            "layer": opt(LAYERS),
            "method": opt(["pca", "tsne", "umap", 1]),
            "max_points": opt([None, 2, 3, 1, 0, 2.5]),
            "labels": opt([None, [0, 1, 2], [0], [0.5, 1, 2], "abc", torch.tensor([1, 2, 3])]),
            "transform": opt([None, 5, "x"]),
            "batch_size": opt([1, 2, 64, 0]),
            "seed": opt([0, 1, -1, "s", 2**70]),
            "perplexity": opt([2.0, 30, 0, -1, float("nan"), "p"]),
        }
    ),
)
def test_embed(model_key, image_key, kw):
    kw = call_kwargs(kw)
    kw.setdefault("method", "pca")
    check_call(zf.embed, model_key, IMAGES[image_key], **kw)


@SETTINGS
@given(
    model_keys,
    st.fixed_dictionaries(
        {
            "layer": opt(LAYERS),
            "input_size": opt([32, (32, 32), 64, 2, 0, -1, (32,), "32", 2.5]),
            "in_channels": opt([None, 3, 0, 1.5, 1, 4]),
        }
    ),
)
def test_receptive_field(model_key, kw):
    kw = call_kwargs(kw)
    kw.setdefault("layer", "4")
    check_call(zf.receptive_field, model_key, **kw)


@SETTINGS
@given(
    model_keys,
    st.sampled_from(["filters", "filter_rms", "dominating_filters"]),
    st.fixed_dictionaries(
        {
            "layer": opt(LAYERS),
            "normalize": opt(["filter", "layer", "x", 1]),
            "radius": opt(NUMBERS),
        }
    ),
)
def test_filters(model_key, which, kw):
    kw = call_kwargs(kw)
    fn = getattr(zf, which)
    if which != "filters":
        kw.pop("normalize", None)
    if which != "dominating_filters":
        kw.pop("radius", None)
    check_call(fn, model_key, **kw)


@SETTINGS
@given(
    st.sampled_from([*IMAGES, "activations"]),
    st.fixed_dictionaries({"threshold": opt(NUMBERS)}),
)
def test_dead_filters(image_key, kw):
    acts = torch.rand(4, 6, 5, 5) if image_key == "activations" else IMAGES[image_key]
    check_call(zf.dead_filters, None, acts, **call_kwargs(kw))


@SETTINGS
@given(
    model_keys,
    st.fixed_dictionaries(
        {
            "layers": opt(LAYERS),
            "switches": opt([True, False]),
            "clone": opt([True, False, "auto", "x"]),
        }
    ),
)
def test_capture(model_key, kw):
    def run(model, **kw):
        with zf.capture(model, **kw) as cap:
            pass
        return len(cap.activations)

    run.__signature__ = inspect.signature(zf.capture)
    check_call(run, model_key, **call_kwargs(kw))


@SETTINGS
@given(
    model_keys,
    # mixed sizes in a later batch are found as that batch is stacked, after a forward
    # (mining's batching, left to its own change)
    st.sampled_from([k for k in IMAGES if k != "mixed"]),
    st.fixed_dictionaries(
        {
            "layers": st.sampled_from(LAYERS[:-2] + [["0", "4"], [], 3]),
            "k": opt([1, 2, 3, 0, 100, 2.0]),
            "batch_size": opt([1, 2, 64, 0]),
            "transform": opt([None, 5]),
            "chunk_size": opt([1, 4096, 0]),
        }
    ),
)
def test_mine(model_key, image_key, kw):
    check_call(zf.mine, model_key, IMAGES[image_key], progress=False, **call_kwargs(kw))


@SETTINGS
@given(
    model_keys,
    st.fixed_dictionaries({"radius": opt(NUMBERS), "layers": opt(LAYERS)}),
)
def test_renormalize_filters_refuses_before_changing_anything(model_key, kw):
    """The one function that changes the model on purpose: on a copy, and only errors are
    checked against the contract (a bad argument changes nothing)."""
    import copy

    MODELS["copy"] = copy.deepcopy(MODELS[model_key])
    try:
        kw = call_kwargs(kw)
        before = snapshot(MODELS["copy"])
        try:
            zf.renormalize_filters_(MODELS["copy"], **kw)
        except (ValueError, TypeError):
            check_call(zf.renormalize_filters_, "copy", **kw)
            assert_unchanged(MODELS["copy"], before)
        else:
            STATS["calls"] += 1
            STATS["results"] += 1
    finally:
        del MODELS["copy"]


def test_zz_tallies():
    """Prints the tallies of the suite (run it with -s)."""
    print("\nfuzz tallies:", dict(STATS))
    assert STATS["unclear errors"] == 0 and STATS["errors after a forward"] == 0
