"""zfwidgets: the Zeiler & Fergus deconvnet method (ECCV 2014), live in Jupyter."""

from __future__ import annotations

from .capture import Capture, capture

__version__ = "0.1.0.dev0"

__all__ = ["Capture", "capture"]
