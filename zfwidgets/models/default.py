"""The bundled default model: ZFNet's layer pattern scaled to 28x28 grey Fashion-MNIST.

The paper's network (docs/method.md Sec. 1, its Fig. 3) takes 224x224 RGB crops and reduces them
16-fold before layer 3 (224 -> 13) with stride-2 convolutions and overlapping 3x3/2 pools.
A 28x28 image cannot lose that much, so here the two overlapping pools do the downsampling
(28 -> 14 -> 7) and the first two convolutions keep stride 1; everything else is the paper's
pattern, with the same module indices as :class:`~zfwidgets.models.ZFNet` (``features.0`` is
conv1, ``features.12`` conv5), so code written for one reads the other::

    features.0  conv1 16x5x5 pad 2      28x28x16 -> ReLU
    features.2  pool1 3x3 /2 (ceil)     14x14x16 -> LRN (features.3)
    features.4  conv2 32x5x5 pad 2      14x14x32 -> ReLU
    features.6  pool2 3x3 /2 (ceil)     7x7x32   -> LRN (features.7)
    features.8  conv3 64x3x3 pad 1      7x7x64   -> ReLU
    features.10 conv4 64x3x3 pad 1      7x7x64   -> ReLU
    features.12 conv5 32x3x3 pad 1      7x7x32   -> ReLU
    features.14 pool3 3x3 /2            3x3x32
    avgpool     adaptive 3x3 (the identity at 28x28; other sizes still fit the classifier)
    classifier  dropout, fc6 128, ReLU, dropout, fc7 128, ReLU, fc8 num_classes

Unit receptive fields (side, in input pixels): conv1 5, conv2 15, conv3 27, conv4 35, conv5 43;
from conv3 on a unit sees most of the 28x28 image, as layer 5's units see most of the crop in
the paper. About 141k parameters (0.57 MB in float32); the widths are the paper's divided by 6
(fc by 32), which trains on two CPU cores in minutes.

The first filters are 5x5 rather than the paper's 7x7: on 28-pixel images 5x5 already spans a
sixth of the image and shows oriented edges and blobs.
"""

from __future__ import annotations

import torch
from torch import nn

from ..base.checks import check_architecture

__all__ = ["ZFNetSmall", "zfnet_small"]


class ZFNetSmall(nn.Module):
    """ZFNet's layer pattern for 28x28 grey images (see the module docstring for the sizes).

    Parameters
    ----------
    num_classes : int
        Outputs of the last layer (10 for Fashion-MNIST).
    in_channels : int
        Input channels (1 for grey images).
    dropout : float
        Dropout probability before fc6 and fc7 (0.5 in the paper).
    widths : tuple of 5 ints
        Filters of conv1 .. conv5 (the paper's 96, 256, 384, 384, 256 divided by 6 to 8).
    hidden : int
        Units of fc6 and fc7 (the paper's 4096).

    Notes
    -----
    Input (N, in_channels, 28, 28); output (N, num_classes) logits.
    """

    #: The image size the network is built for (read by :func:`zfwidgets.feature_vis`;
    #: other sizes run too, thanks to the adaptive pool).
    input_size: tuple[int, int] = (28, 28)

    def __init__(
        self,
        num_classes: int = 10,
        *,
        in_channels: int = 1,
        dropout: float = 0.5,
        widths: tuple[int, int, int, int, int] = (16, 32, 64, 64, 32),
        hidden: int = 128,
    ):
        super().__init__()
        c1, c2, c3, c4, c5 = widths
        self.features = nn.Sequential(
            # layer 1: conv 5x5 -> ReLU -> overlapping max-pool 3x3/2 -> contrast norm
            nn.Conv2d(in_channels, c1, kernel_size=5, stride=1, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),
            nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0),
            # layer 2: conv 5x5 -> ReLU -> overlapping max-pool 3x3/2 -> contrast norm
            nn.Conv2d(c1, c2, kernel_size=5, stride=1, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2, ceil_mode=True),
            nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0),
            # layers 3-5: dense 3x3 convolutions, the last followed by a max-pool
            nn.Conv2d(c2, c3, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(c3, c4, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(c4, c5, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((3, 3))
        self.classifier = nn.Sequential(
            nn.Dropout(p=dropout),
            nn.Linear(c5 * 3 * 3, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(p=dropout),
            nn.Linear(hidden, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, in_channels, 28, 28) images -> (N, num_classes) logits."""
        x = self.features(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)


def zfnet_small(num_classes: int = 10, in_channels: int = 1, *, dropout: float = 0.5) -> ZFNetSmall:
    """The default model's architecture, randomly initialised (torch's default init).

    No weights are loaded; :func:`zfwidgets.load_default` returns it trained, and
    ``python -m zfwidgets.models.train_default`` trains it (with the paper's N(0, 0.01)
    initialisation of the first layer).

    Parameters
    ----------
    num_classes : int
        Outputs of the last layer.
    in_channels : int
        Input channels.
    dropout : float
        Dropout probability on the fc6/fc7 inputs.

    Returns
    -------
    ZFNetSmall
        Module with ``features``, ``avgpool`` and ``classifier``, in training mode.

    Examples
    --------
    >>> model = zfnet_small().eval()
    >>> model(torch.zeros(2, 1, 28, 28)).shape
    torch.Size([2, 10])
    """
    dropout = check_architecture(num_classes, in_channels, dropout)
    return ZFNetSmall(num_classes, in_channels=in_channels, dropout=dropout)
