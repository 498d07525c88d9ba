"""torchvision's architectures (weights=None: nothing downloads) through every public engine
function with its default arguments, on small inputs where the network allows."""

from __future__ import annotations

import os

import pytest
import torch
import torchvision
from models import assert_unchanged, snapshot

import zfwidgets as zf
from zfwidgets.engine.probe import last_called_conv

#: (constructor, keyword arguments, input size): the smallest sizes the networks take
#: (Inception v3 needs 75 x 75).
ARCHS = {
    "googlenet": (torchvision.models.googlenet, {"init_weights": False, "aux_logits": True}, 64),
    "inception_v3": (torchvision.models.inception_v3, {"init_weights": False}, 75),
    "resnet18": (torchvision.models.resnet18, {}, 64),
    "vgg11": (torchvision.models.vgg11, {}, 32),
    "densenet121": (torchvision.models.densenet121, {}, 32),
    "mobilenet_v3_small": (torchvision.models.mobilenet_v3_small, {}, 64),
    "efficientnet_b0": (torchvision.models.efficientnet_b0, {}, 64),
}


#: In the default run: GoogLeNet (auxiliary heads registered last) and ResNet-18. The others
#: take minutes on 2 shared cores: ZF_TORCHVISION_ALL=1 runs them too.
DEFAULT_RUN = ("googlenet", "resnet18")


def _finite(obj) -> bool:
    tensors = [v for v in vars(obj).values() if isinstance(v, torch.Tensor)]
    return all(bool(torch.isfinite(t).all()) for t in tensors if t.is_floating_point())


@pytest.mark.slow
@pytest.mark.parametrize("arch", list(ARCHS))
def test_every_function_with_its_defaults(arch):
    if arch not in DEFAULT_RUN and not os.environ.get("ZF_TORCHVISION_ALL"):
        pytest.skip("set ZF_TORCHVISION_ALL=1 to run every architecture")
    ctor, kwargs, size = ARCHS[arch]
    torch.manual_seed(0)
    model = ctor(weights=None, num_classes=10, **kwargs).eval()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, size, size, generator=g)
    before = snapshot(model)

    layer, _ = last_called_conv(model, x.shape)
    if arch == "googlenet":
        assert not layer.startswith("aux")
    assert zf.grad_cam(model, x).layer == layer
    res = zf.occlusion(model, x[:1], window=size // 2, stride=size // 2)
    assert res.layer == layer and _finite(res)
    assert zf.deconv(model, x, layer=layer, channel=0).shape == x.shape
    assert zf.saliency(model, x[:1], layer=layer, units=[(0, 0, 0, 0)]).shape == x[:1].shape
    if arch in ("googlenet", "inception_v3", "resnet18", "efficientnet_b0"):  # GAP modules
        c = zf.cam(model, x)
        assert c.map.shape[0] == 2 and _finite(c)
    inv = zf.invariance(model, x, amounts=[0, 4])
    assert inv.probability.shape == (2, 2)
    corr = zf.correspondence(model, x, {"part": (0, 0, size // 4, size // 4)}, n_random=1)
    assert set(corr.score) == {"part"}
    emb = zf.embed(model, x, method="pca")
    assert emb.coords.shape == (2, 2)
    rf = zf.receptive_field(model, layer, size)
    assert rf.layer == layer
    assert zf.filters(model).min() >= 0 and zf.filter_rms(model).ndim == 1
    assert zf.dominating_filters(model).dtype == torch.bool
    with zf.capture(model) as cap:
        model(x[:1])
    assert cap.activations
    assert_unchanged(model, before)


@pytest.mark.parametrize("arch", ["inception_v3", "vgg11"])
def test_too_small_is_named_before_any_forward(arch):
    ctor, kwargs, size = ARCHS[arch]
    model = ctor(weights=None, num_classes=10, **kwargs).eval()
    small = torch.randn(1, 3, size - 8, size - 8)
    with pytest.raises(ValueError, match=f"x: .* needs images of at least {size}x{size} pixels"):
        zf.grad_cam(model, small)
