import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
torch.set_num_threads(2)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


# Shared fixtures: a tiny seeded ZFNet-shaped model (tests/models.py) and one 32x32 image.
@pytest.fixture
def model():
    from models import tiny_zf

    return tiny_zf()


@pytest.fixture
def image():
    g = torch.Generator().manual_seed(3)
    return torch.randn(3, 32, 32, generator=g)
