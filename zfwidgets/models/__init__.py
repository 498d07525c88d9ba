"""Models the paper studies: ZFNet (docs/method.md Sec. 1)."""

from __future__ import annotations

from .default import ZFNetSmall, zfnet_small
from .zfnet import ZFNet, zfnet

__all__ = ["ZFNet", "ZFNetSmall", "zfnet", "zfnet_small"]
