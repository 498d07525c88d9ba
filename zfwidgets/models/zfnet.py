"""ZFNet, the architecture of Zeiler & Fergus (ECCV 2014), docs/method.md Sec. 1 (the paper's Fig. 3).

Laid out like ``torchvision.models.alexnet`` (``features``, ``avgpool``, ``classifier``), so
layer names read the same: ``features.0`` is conv1, ``features.12`` is conv5.

Sizes for a 224x224 input (the paper's table)::

    features.0  conv1 96x7x7 /2 pad 1   110x110x96
    features.2  pool1 3x3 /2            55x55x96    -> LRN (features.3)
    features.4  conv2 256x5x5 /2        26x26x256
    features.6  pool2 3x3 /2            13x13x256   -> LRN (features.7)
    features.8  conv3 384x3x3 pad 1     13x13x384
    features.10 conv4 384x3x3 pad 1     13x13x384
    features.12 conv5 256x3x3 pad 1     13x13x256
    features.14 pool3 3x3 /2            6x6x256
    classifier  fc6 4096, fc7 4096, fc8 num_classes
"""

from __future__ import annotations

import torch
from torch import nn

from ..base.checks import check_architecture

__all__ = ["ZFNet", "zfnet"]


class ZFNet(nn.Module):
    """ZFNet (docs/method.md Sec. 1): 5 convolutional and 3 fully connected layers.

    Parameters
    ----------
    num_classes : int
        Outputs of the last layer (1000 for ImageNet).
    in_channels : int
        Input channels (3 for RGB).
    dropout : float
        Dropout probability before fc6 and fc7 (0.5 in the paper).

    Notes
    -----
    Input (N, in_channels, H, W), 224x224 in the paper; output (N, num_classes) logits.
    """

    def __init__(self, num_classes: int = 1000, *, in_channels: int = 3, dropout: float = 0.5):
        super().__init__()
        with torch.device("meta"):  # no default init: reset_parameters draws the paper's
            self._build(num_classes, in_channels, dropout)
        self.to_empty(device="cpu")
        self.reset_parameters()

    def _build(self, num_classes: int, in_channels: int, dropout: float) -> None:
        self.features = nn.Sequential(
            # layer 1: 96 filters 7x7 stride 2 -> ReLU -> max-pool 3x3/2 -> contrast norm
            nn.Conv2d(in_channels, 96, kernel_size=7, stride=2, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),
            nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0),
            # layer 2: 256 filters 5x5 stride 2 -> ReLU -> max-pool 3x3/2 -> contrast norm
            nn.Conv2d(96, 256, kernel_size=5, stride=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),
            nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0),
            # layers 3-5: dense 3x3 convolutions (no two-GPU split)
            nn.Conv2d(256, 384, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(384, 384, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(
            nn.Dropout(p=dropout),
            nn.Linear(256 * 6 * 6, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(p=dropout),
            nn.Linear(4096, 4096),
            nn.ReLU(inplace=True),
            nn.Linear(4096, num_classes),
        )

    def reset_parameters(self) -> None:
        """The paper's initialisation: weights N(0, 0.01), biases 0 (uses torch's global RNG)."""
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.normal_(m.weight, mean=0.0, std=0.01)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_channels, H, W) images -> (N, num_classes) logits."""
        x = self.features(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)


def zfnet(num_classes: int = 1000, *, in_channels: int = 3, dropout: float = 0.5) -> ZFNet:
    """ZFNet as in the paper (docs/method.md Sec. 1), randomly initialised; no weights are downloaded.

    Weights are drawn from N(0, 0.01) and biases set to 0 (docs/method.md Sec. 1, training
    setup), from torch's global RNG: seed with ``torch.manual_seed`` first for a repeatable
    model.

    Parameters
    ----------
    num_classes : int
        Outputs of the last layer.
    in_channels : int
        Input channels.
    dropout : float
        Dropout probability on fc6/fc7 inputs.

    Returns
    -------
    ZFNet
        Module with ``features`` (nn.Sequential), ``avgpool`` and ``classifier``, in training
        mode like every freshly built torch module.

    Examples
    --------
    >>> _ = torch.manual_seed(0)
    >>> model = zfnet().eval()
    >>> model(torch.randn(1, 3, 224, 224)).shape
    torch.Size([1, 1000])
    """
    dropout = check_architecture(num_classes, in_channels, dropout)
    return ZFNet(num_classes, in_channels=in_channels, dropout=dropout)
