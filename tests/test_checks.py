import pytest
import torch
from models import tiny_zf

from zfwidgets._checks import check_finite_batch, check_images


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
