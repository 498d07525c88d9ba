import pytest
import torch
from models import tiny_zf

from zfwidgets.base.checks import check_finite_batch
from zfwidgets.engine.probe import check_images, last_called_conv


def test_finite_batch_passes_and_returns_the_batch():
    x = torch.randn(4, 3, 8, 8)
    assert check_finite_batch(x, 10) is x
    ints = torch.zeros(2, 3, 4, 4, dtype=torch.uint8)
    assert check_finite_batch(ints) is ints


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_finite_batch_names_the_image_index(bad):
    x = torch.randn(6, 3, 8, 8)
    x[4, 1, 2, 3] = bad
    with pytest.raises(ValueError, match=r"data: .*finite.* image 104\b"):
        check_finite_batch(x, 100)
    x[2, 0, 0, 0] = bad
    with pytest.raises(ValueError, match=r"images: .*image 2\b.*2 image\(s\)"):
        check_finite_batch(x, 0, name="images")


def test_check_images_names_the_bad_image():
    model = tiny_zf()
    x = torch.randn(3, 3, 32, 32)
    x[1, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"x: expected finite values.*image 1\b"):
        check_images(model, x)


def test_float64_is_converted_and_overflow_refused():
    model = tiny_zf()
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    y = check_images(model, x)
    assert y.dtype == torch.float32 and x.dtype == torch.float64
    half = tiny_zf().half()
    with pytest.raises(TypeError, match=r"x: .*torch.float16.*torch.float32"):
        check_images(half, torch.full((1, 3, 32, 32), 1e6))


def test_sizes_are_named_before_any_forward():
    import torchvision

    vgg = torchvision.models.vgg11(weights=None)
    with pytest.raises(
        ValueError, match=r"x: VGG needs images of at least 32x32 pixels, got 20x20"
    ):
        check_images(vgg, torch.zeros(1, 3, 20, 20))
    fixed = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.Linear(4 * 30 * 30, 5)
    )
    with pytest.raises(ValueError, match=r"takes images of 32x32 pixels .*fixed size.*got 20x20"):
        check_images(fixed, torch.zeros(1, 3, 20, 20))


def test_default_layer_is_the_last_conv_the_forward_calls():
    import torchvision

    import zfwidgets as zf

    net = torchvision.models.googlenet(weights=None, init_weights=False, aux_logits=True).eval()
    name, _ = last_called_conv(net, (1, 3, 64, 64))
    assert name.startswith("inception5b")
    x = torch.randn(1, 3, 64, 64)
    assert zf.grad_cam(net, x).layer == name
    assert zf.occlusion(net, x, window=32, stride=32).layer == name
    assert zf.cam(net, x).layer == "inception5b"


class SideBranch(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3)
        self.side = torch.nn.Conv2d(4, 4, 1)
        self.fc = torch.nn.Linear(4, 3)

    def forward(self, x):
        y = self.conv(x)
        self.side(y)  # computed and thrown away
        return self.fc(y.mean((2, 3)))


def test_grad_cam_on_a_layer_off_the_output_path_is_a_value_error():
    import zfwidgets as zf

    model = SideBranch().eval()
    calls = []
    model.register_forward_pre_hook(lambda m, a: calls.append(a[0].device.type))
    with pytest.raises(ValueError, match=r"layer: the output of 'side' does not reach"):
        zf.grad_cam(model, torch.randn(2, 3, 8, 8), layer="side")
    assert "cpu" not in calls
    assert zf.grad_cam(model, torch.randn(2, 3, 8, 8)).layer == "conv"  # side is not last


def test_layers_of_the_wrong_type_name_the_argument():
    import zfwidgets as zf

    model = tiny_zf()
    with pytest.raises(TypeError, match="layers: expected"):
        zf.invariance(model, torch.randn(1, 3, 32, 32), layers=3)
    with pytest.raises(TypeError, match="layers: expected"):
        zf.capture(model, [0.5])


def test_the_shape_pass_never_touches_the_users_modules():
    """The meta pass runs on a copy of the module tree: a forward of the real model on another
    thread at the same time sees its own parameters and no hook."""
    import threading

    from zfwidgets.engine.probe import dry_run

    model = tiny_zf()
    errors = []
    stop = threading.Event()

    def checks():
        i = 0
        while not stop.is_set():
            i += 1
            try:
                dry_run(model, (1, 3, 32 + i % 300, 32))  # new shapes: real passes
            except Exception as exc:  # pragma: no cover - reported below
                errors.append(exc)

    t = threading.Thread(target=checks)
    t.start()
    try:
        for _ in range(40):
            assert model(torch.randn(2, 3, 32, 32)).device.type == "cpu"
            assert all(not m._forward_hooks for m in model.modules())
            assert all(p.device.type == "cpu" for p in model.parameters())
    finally:
        stop.set()
        t.join()
    assert not errors
