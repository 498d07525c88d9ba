"""Models the paper studies: ZFNet (ZFNET.md Sec. 1)."""

from __future__ import annotations

from .zfnet import ZFNet, zfnet

__all__ = ["ZFNet", "zfnet"]
