"""The deconvnet and guided rules on modern activations (issue 14).

Oracle: a *twin* of the model, a deep copy whose activation modules are replaced by modules
whose autograd backward is the rule, written here from closed-form derivatives (not from
torch's own activation backward, which the library uses): ``relu(g)`` for deconv,
``relu(g) * max(f'(x), 0)`` for guided. The twin's plain gradient, taken with a forward hook
and ``torch.autograd.grad`` (no zfwidgets code), must equal ``zf.deconv`` / ``zf.guided_backprop``
on the original model.
"""

from __future__ import annotations

import copy
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from models import assert_unchanged, hook_count, snapshot, torchvision_model
from torch import nn

import zfwidgets as zf
from zfwidgets.engine.backprop import ACTIVATIONS, NoRuleError, NoRuleWarning, relu_rule

RULES = ["deconv", "guided"]
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


# -- closed-form derivatives -------------------------------------------------------------------
def d_gelu(x, approximate="none"):
    if approximate == "tanh":
        k = math.sqrt(2 / math.pi)
        u = k * (x + 0.044715 * x**3)
        t = torch.tanh(u)
        return 0.5 * (1 + t) + 0.5 * x * (1 - t**2) * k * (1 + 3 * 0.044715 * x**2)
    cdf = 0.5 * (1 + torch.erf(x / math.sqrt(2)))
    pdf = torch.exp(-0.5 * x**2) / math.sqrt(2 * math.pi)
    return cdf + x * pdf


def d_silu(x):
    s = torch.sigmoid(x)
    return s * (1 + x * (1 - s))


def d_hardswish(x):
    return torch.where(x < -3, 0.0, torch.where(x <= 3, x / 3 + 0.5, 1.0))


def d_mish(x):
    t = torch.tanh(F.softplus(x))
    return t + x * (1 - t**2) * torch.sigmoid(x)


def derivative(m: nn.Module):
    """The local derivative of activation module ``m`` as a function of its input."""
    if isinstance(m, nn.ReLU):
        return lambda x: (x > 0).to(x.dtype)
    if isinstance(m, nn.GELU):
        return lambda x: d_gelu(x, m.approximate)
    if isinstance(m, nn.SiLU):
        return d_silu
    if isinstance(m, nn.Hardswish):
        return d_hardswish
    if isinstance(m, nn.LeakyReLU):
        return lambda x: torch.where(x > 0, 1.0, m.negative_slope)
    if isinstance(m, nn.SELU):
        return lambda x: SELU_SCALE * torch.where(x > 0, 1.0, SELU_ALPHA * torch.exp(x))
    if isinstance(m, nn.ELU):
        return lambda x: torch.where(x > 0, 1.0, m.alpha * torch.exp(x))
    if isinstance(m, nn.CELU):
        return lambda x: torch.where(x > 0, 1.0, torch.exp(x / m.alpha))
    if isinstance(m, nn.Mish):
        return d_mish
    if isinstance(m, nn.Softplus):
        return lambda x: torch.where(x * m.beta > m.threshold, 1.0, torch.sigmoid(m.beta * x))
    if isinstance(m, nn.PReLU):
        w = m.weight.detach()
        return lambda x: torch.where(x > 0, 1.0, w.view(1, -1, *[1] * (x.dim() - 2)))
    if isinstance(m, nn.RReLU):
        return lambda x: torch.where(x >= 0, 1.0, (m.lower + m.upper) / 2)
    return None


class _RuleFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, act, deriv, rule):
        ctx.save_for_backward(x)
        ctx.deriv, ctx.rule = deriv, rule
        return act(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        g = g.clamp_min(0)
        if ctx.rule == "guided":
            g = g * ctx.deriv(x).clamp_min(0)
        return g, None, None, None


class RuleActivation(nn.Module):
    """``act`` forward (out of place), the rule as its autograd backward."""

    def __init__(self, act: nn.Module, rule: str):
        super().__init__()
        self.deriv = derivative(act)
        self.act = copy.deepcopy(act).eval()  # RReLU: its mean slope, as in the model
        if hasattr(self.act, "inplace"):
            self.act.inplace = False
        self.rule = rule

    def forward(self, x):
        return _RuleFn.apply(x, self.act, self.deriv, self.rule)


def twin(model: nn.Module, rule: str) -> nn.Module:
    """A deep copy whose activation modules back-propagate by ``rule``; everything else (SE
    sigmoids, LayerNorm, BatchNorm, pooling) keeps its gradient."""
    t = copy.deepcopy(model)
    for name, m in list(t.named_modules()):
        if name and derivative(m) is not None and not isinstance(m, RuleActivation):
            parent, _, child = name.rpartition(".")
            setattr(t.get_submodule(parent) if parent else t, child, RuleActivation(m, rule))
    return t


def unit_grad(model: nn.Module, x: torch.Tensor, layer: str, units) -> torch.Tensor:
    """Plain autograd: d out[n, c, y, x] / d input for one unit per image (no zfwidgets)."""
    module = model.get_submodule(layer)
    store = {}

    def hook(m, inputs, out):
        store["out"] = out
        return out.clone()  # downstream in-place ops cannot touch the kept output

    xg = x.detach().clone().requires_grad_(True)
    handle = module.register_forward_hook(hook)
    try:
        model(xg)
    finally:
        handle.remove()
    out = store["out"]
    seed = torch.zeros_like(out)
    for n, c, yy, xx in units:
        seed[n, c, yy, xx] = 1.0
    (g,) = torch.autograd.grad(out, xg, seed)
    return g


def strongest(model, x, layer, channel):
    with zf.capture(model, [layer], clone=True) as cap, torch.no_grad():
        model(x)
    a = cap.activations[layer][:, channel].flatten(1).argmax(1)
    w = cap.activations[layer].shape[3]
    return [(n, channel, int(p) // w, int(p) % w) for n, p in enumerate(a)]


def close(ours, ref):
    scale = float(ref.abs().max())
    assert scale > 0
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-5 * scale)


def differs(a, b, by=0.05):
    """a and b differ by more than ``by`` of b's largest value (the rule had an effect)."""
    return float((a - b).abs().max()) > by * float(b.abs().max())


# -- small models: every activation, as modules (in place where torch allows) and as calls ----
def module_zoo() -> nn.Sequential:
    acts = [
        nn.GELU(),
        nn.GELU(approximate="tanh"),
        nn.SiLU(inplace=True),
        nn.Hardswish(inplace=True),
        nn.LeakyReLU(0.2, inplace=True),
        nn.ELU(alpha=0.7, inplace=True),
        nn.SELU(inplace=True),
        nn.CELU(alpha=0.8, inplace=True),
        nn.Mish(inplace=True),
        nn.Softplus(beta=2.0, threshold=3.0),
        nn.PReLU(8, init=0.3),
        nn.RReLU(),
    ]
    torch.manual_seed(7)
    layers: list[nn.Module] = []
    for i, act in enumerate(acts):
        layers += [nn.Conv2d(3 if i == 0 else 8, 8, 3, padding=1), act]
        if i in (3, 7):
            layers.append(nn.MaxPool2d(2))
    layers.append(nn.Conv2d(8, 10, 3, padding=1))
    return nn.Sequential(*layers).eval()


class FunctionalZoo(nn.Module):
    """Calls every activation functionally (F.gelu, F.silu, ..., in place where possible), each
    in its own branch, in two stages: every rule is crossed twice, one after another."""

    CALLS = [
        (lambda x, w: F.gelu(x), nn.GELU()),
        (lambda x, w: F.gelu(x, approximate="tanh"), nn.GELU(approximate="tanh")),
        (lambda x, w: F.silu(x, inplace=True), nn.SiLU()),
        (lambda x, w: F.hardswish(x), nn.Hardswish()),
        (lambda x, w: F.leaky_relu_(x, 0.2), nn.LeakyReLU(0.2)),
        (lambda x, w: F.elu(x, 0.7), nn.ELU(0.7)),
        (lambda x, w: torch.selu_(x), nn.SELU()),
        (lambda x, w: torch.celu(x, alpha=0.8), nn.CELU(0.8)),
        (lambda x, w: F.mish(x), nn.Mish()),
        (lambda x, w: F.softplus(x, beta=2.0, threshold=3.0), nn.Softplus(2.0, 3.0)),
        (lambda x, w: F.prelu(x, w), None),
        (lambda x, w: F.rrelu(x), nn.RReLU()),
        (lambda x, w: F.elu_(x), nn.ELU()),
    ]

    def __init__(self):
        super().__init__()
        torch.manual_seed(8)
        n = len(self.CALLS)
        self.stage1 = nn.ModuleList(nn.Conv2d(3, 8, 3, padding=1) for _ in range(n))
        self.stage2 = nn.ModuleList(nn.Conv2d(8, 8, 3, padding=1) for _ in range(n))
        self.slope = nn.Parameter(torch.full((8,), 0.3))
        self.head = nn.Conv2d(8, 10, 3, padding=1)

    def forward(self, x):
        for stage in (self.stage1, self.stage2):
            x = sum(call(conv(x), self.slope) for conv, (call, _) in zip(stage, self.CALLS))
            x = F.max_pool2d(x, 2)
        return self.head(x)


class FunctionalZooTwin(nn.Module):
    """FunctionalZoo with rule modules: the same weights, the same function."""

    def __init__(self, net: FunctionalZoo, rule: str):
        super().__init__()
        self.net = net
        acts = []
        for _, module in net.CALLS:
            if module is None:  # F.prelu with the net's own slopes
                module = nn.PReLU(8)
                module.weight = net.slope
            acts.append(RuleActivation(module, rule))
        self.acts = nn.ModuleList(acts)

    def forward(self, x):
        for stage in (self.net.stage1, self.net.stage2):
            x = sum(act(conv(x)) for conv, act in zip(stage, self.acts))
            x = F.max_pool2d(x, 2)
        return self.net.head(x)


def test_every_rule_is_listed():
    names = {a.name for a in ACTIVATIONS.values()}
    assert {"gelu", "silu", "hardswish", "leaky_relu", "elu", "selu", "celu", "mish"} <= names
    assert {"softplus", "prelu", "rrelu"} <= names


@pytest.mark.parametrize("rule", RULES)
def test_activation_modules_follow_the_rule(rule):
    model = module_zoo()
    last = str(len(model) - 1)
    torch.manual_seed(9)
    x = torch.randn(3, 3, 16, 16)
    units = strongest(model, x, last, channel=4)
    before = snapshot(model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every activation here has a rule: no warning
        ours = zf.backprop(model, x, layer=last, units=units, rule=rule, strategy="shared")
    assert_unchanged(model, before)
    assert all(m.inplace for m in model if hasattr(m, "inplace") and not isinstance(m, nn.RReLU))
    ref = unit_grad(twin(model, rule), x, last, units)
    close(ours, ref)
    assert differs(ours, zf.saliency(model, x, layer=last, units=units))


@pytest.mark.parametrize("rule", RULES)
def test_functional_activations_follow_the_rule(rule):
    net = FunctionalZoo()
    torch.manual_seed(10)
    x = torch.randn(2, 3, 16, 16)
    units = strongest(net, x, "head", channel=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ours = zf.backprop(net, x, layer="head", units=units, rule=rule)
    ref = unit_grad(FunctionalZooTwin(net, rule), x, "net.head", units)
    close(ours, ref)
    assert differs(ours, zf.saliency(net, x, layer="head", units=units))
    assert net.slope.grad is None


def test_gelu_and_silu_calls_in_a_model_forward():
    """The issue's case: a model calling F.gelu and F.silu in its own forward."""

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(11)
            self.a, self.b, self.c = (nn.Conv2d(i, 8, 3, padding=1) for i in (3, 8, 8))

        def forward(self, x):
            return self.c(F.silu(self.b(F.gelu(self.a(x)))))

    class Twin(nn.Module):
        def __init__(self, net, rule):
            super().__init__()
            self.net = net
            self.gelu, self.silu = RuleActivation(nn.GELU(), rule), RuleActivation(nn.SiLU(), rule)

        def forward(self, x):
            return self.net.c(self.silu(self.net.b(self.gelu(self.net.a(x)))))

    net = Net().eval()
    torch.manual_seed(12)
    x = torch.randn(2, 3, 12, 12)
    units = strongest(net, x, "c", channel=2)
    sal = zf.saliency(net, x, layer="c", units=units)
    for rule in RULES:
        ours = zf.backprop(net, x, layer="c", units=units, rule=rule)
        close(ours, unit_grad(Twin(net, rule), x, "net.c", units))
        assert differs(ours, sal)


def test_forward_is_untouched():
    """Inside the rule context the model computes exactly what it computes outside, in-place
    activations still modify their input, and nothing changes for saliency."""
    for model in (module_zoo(), FunctionalZoo().eval()):
        torch.manual_seed(13)
        x = torch.randn(2, 3, 16, 16)
        with torch.no_grad():
            plain = model(x)
        for rule in ("deconv", "guided", "saliency"):
            xg = x.clone().requires_grad_(True)
            with relu_rule(rule, model):
                y = model(xg * 1)
            assert torch.equal(y.detach(), plain), rule
    t = torch.randn(5, requires_grad=True) * 1
    with relu_rule("deconv"):
        out = F.silu(t, inplace=True)
    assert out is t and out.grad_fn.name() == "_ActivationBackward"


@pytest.mark.parametrize("rule", RULES)
def test_guided_derivative_is_clipped_at_zero(rule):
    """GELU's derivative is negative below about -0.75: guided passes nothing there."""
    x = torch.linspace(-3, 3, 61, requires_grad=True)
    with relu_rule(rule):
        y = F.gelu(x * 1)
    g = torch.linspace(-1, 1, 61)
    (gx,) = torch.autograd.grad(y, x, g)
    want = g.clamp_min(0)
    if rule == "guided":
        want = want * d_gelu(x.detach()).clamp_min(0)
    torch.testing.assert_close(gx, want)
    assert bool((gx[x.detach() < -1] == 0).all())


# -- torchvision models ------------------------------------------------------------------------
def convnext_tiny():
    model = torchvision_model("convnext_tiny")
    torch.manual_seed(1)
    for name, p in model.named_parameters():
        if name.endswith("layer_scale"):  # 1e-6 at init: the blocks would hardly contribute
            p.data.uniform_(0.5, 1.0)
    for m in model.modules():  # torch's default init instead of ConvNeXt's std-0.02 normal
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            m.reset_parameters()
    return model


TORCHVISION = {
    # name: (model, layer, the unruled operation its SE gates bring, or None)
    "convnext_tiny": (convnext_tiny, "features.3", None),
    "efficientnet_b0": (lambda: torchvision_model("efficientnet_b0"), "features.3", "sigmoid"),
    "mobilenet_v3_small": (
        lambda: torchvision_model("mobilenet_v3_small"),
        "features.4",
        "hardsigmoid",
    ),
    "regnet_y_400mf": (
        lambda: torchvision_model("regnet_y_400mf"),
        "trunk_output.block2",
        "sigmoid",
    ),
}


@pytest.mark.parametrize("name", list(TORCHVISION))
def test_torchvision_models_against_twin(name):
    make, layer, gate = TORCHVISION[name]
    model = make()
    torch.manual_seed(14)
    x = torch.randn(2, 3, 64, 64)
    units = strongest(model, x, layer, channel=5)
    before = snapshot(model)
    sal = zf.saliency(model, x, layer=layer, units=units)
    close(sal, unit_grad(model, x, layer, units))
    for rule in RULES:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ours = zf.backprop(model, x, layer=layer, units=units, rule=rule)
        ours_warned = [w for w in caught if issubclass(w.category, NoRuleWarning)]
        if gate is None:
            assert not ours_warned
        else:  # the SE gates keep their gradient, and the warning says where they are
            assert len(ours_warned) == 1
            sites = ours_warned[0].message.sites
            assert {op for op, _ in sites} == {gate}
            assert all(layer_name.endswith("scale_activation") for _, layer_name in sites)
            assert all(model.get_submodule(layer_name) is not None for _, layer_name in sites)
        close(ours, unit_grad(twin(model, rule), x, layer, units))
        assert differs(ours, sal), f"{rule} equals saliency on {name}"
    assert_unchanged(model, before)


def test_convnext_crop_strategy_equals_shared():
    model = convnext_tiny()
    torch.manual_seed(15)
    x = torch.randn(2, 3, 64, 64)
    units = [(0, 1, 2, 3), (1, 7, 5, 0), (0, 9, 7, 7)]
    for rule in RULES:
        full = zf.backprop(model, x, layer="features.2", units=units, rule=rule, strategy="shared")
        crop = zf.backprop(model, x, layer="features.2", units=units, rule=rule, strategy="crop")
        torch.testing.assert_close(crop, full, atol=1e-6, rtol=1e-4)


# -- ReLU networks: bit for bit as before ------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "layer", "size"), [("alexnet", "features.10", 96), ("resnet18", "layer3.1", 64)]
)
def test_relu_results_bit_for_bit(name, layer, size):
    """On ReLU networks the rules are the old ones, computed the old way: the result equals
    the twin's (the same ops in the same order) exactly, not only to a tolerance."""
    model = torchvision_model(name)
    torch.manual_seed(0)
    x = torch.randn(2, 3, size, size)
    units = strongest(model, x, layer, channel=3)
    for rule in RULES:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # and no warning on AlexNet / ResNet
            ours = zf.backprop(model, x, layer=layer, units=units, rule=rule, strategy="shared")
        assert torch.equal(ours, unit_grad(twin(model, rule), x, layer, units)), rule


# -- the warning -------------------------------------------------------------------------------
class Swish(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * torch.sigmoid(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        s = torch.sigmoid(x)
        return g * s * (1 + x * (1 - s))


class SwishModule(nn.Module):
    def forward(self, x):
        return Swish.apply(x)


class Gated(nn.Module):
    """conv -> ReLU -> squeeze-and-excitation gate (nn.Sigmoid) -> conv -> tanh (called in the
    model's own forward) -> conv -> custom autograd swish -> conv; plus a sigmoid of a
    parameter (off the input's path) and a sigmoid after the last conv (past any unit)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(16)
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Conv2d(8, 8, 1)
        self.gate = nn.Sigmoid()
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.conv3 = nn.Conv2d(8, 8, 3, padding=1)
        self.swish = SwishModule()
        self.conv4 = nn.Conv2d(8, 8, 3, padding=1)
        self.temperature = nn.Parameter(torch.tensor(0.5))

    def forward(self, x):
        x = self.relu(self.conv1(x))
        x = x * self.gate(self.fc(x.mean((2, 3), keepdim=True)))
        x = torch.tanh(self.conv2(x)) * torch.sigmoid(self.temperature)
        x = self.swish(self.conv3(x))
        return torch.sigmoid(self.conv4(x))


@pytest.mark.parametrize(
    ("layer", "want"),
    [
        ("conv1", []),
        ("conv2", [("sigmoid", "gate")]),
        ("conv3", [("sigmoid", "gate"), ("tanh", "Gated.forward")]),
        (
            "conv4",
            [
                ("sigmoid", "gate"),
                ("tanh", "Gated.forward"),
                ("Swish (custom autograd Function)", "swish"),
            ],
        ),
    ],
)
def test_warning_names_operations_and_layers(layer, want):
    model = Gated().eval()
    torch.manual_seed(17)
    x = torch.randn(3, 3, 12, 12)
    for rule in RULES:
        for strategy in ("shared", "crop"):
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                zf.backprop(
                    model, x, layer=layer, channel=1, rule=rule, strategy=strategy, batch_size=1
                )
            ours = [w for w in caught if issubclass(w.category, NoRuleWarning)]
            if not want:
                assert not ours
                continue
            assert len(ours) == 1, "one warning per call, not one per batch"
            assert ours[0].message.sites == want
            assert ours[0].filename == __file__  # points at the caller
            for op, where in want:
                assert op in str(ours[0].message) and where in str(ours[0].message)
            assert "strict=True" in str(ours[0].message)


def test_strict_raises_before_any_backward():
    model = Gated().eval()
    before = snapshot(model)
    x = torch.randn(2, 3, 12, 12)
    for call in (zf.deconv, zf.guided_backprop):
        with pytest.raises(NoRuleError, match="sigmoid at gate") as info:
            call(model, x, layer="conv2", channel=0, strict=True)
        assert info.value.sites == [("sigmoid", "gate")]
    assert hook_count(model) == 0
    assert_unchanged(model, before)
    # nothing to complain about: strict is silent
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        zf.deconv(model, x, layer="conv1", channel=0, strict=True)
        zf.saliency(model, x, layer="conv4", channel=0, strict=True)  # saliency has no rule
    with pytest.raises(TypeError, match="strict"):
        zf.deconv(model, x, layer="conv1", channel=0, strict="yes")


def test_no_warning_on_alexnet():
    model = torchvision_model("alexnet")
    x = torch.randn(1, 3, 96, 96)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for rule in ("deconv", "guided"):
            zf.backprop(model, x, layer="features.10", channel=3, rule=rule, strict=True)


def test_activation_the_rule_context_cannot_see_is_reported():
    """An activation computed where the TorchFunctionMode cannot see it (here torch.ops.aten,
    as TorchScript or a C++ extension would) is caught on the graph."""

    class Hidden(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(18)
            self.a, self.b = nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 3)

        def forward(self, x):
            return self.b(torch.ops.aten.gelu(self.a(x)))

    with pytest.warns(NoRuleWarning, match="gelu") as caught:
        zf.deconv(Hidden().eval(), torch.randn(1, 3, 10, 10), layer="b", channel=0)
    assert caught[0].message.sites == [("gelu", "(layer not found)")]


@pytest.mark.cuda
def test_cuda_matches_cpu():
    model = convnext_tiny()
    torch.manual_seed(19)
    x = torch.randn(2, 3, 64, 64)
    for rule in RULES:
        cpu = zf.backprop(model, x, layer="features.3", channel=5, rule=rule)
        gpu = zf.backprop(model.cuda(), x.cuda(), layer="features.3", channel=5, rule=rule)
        model.cpu()
        torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-5 * float(cpu.abs().max()), rtol=1e-3)
