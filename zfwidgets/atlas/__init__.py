"""Atlases: the top-k strongest activations of every unit over a dataset (docs/method.md
Sec. 2.2 and Fig. 2), at any scale.

The pipeline, in the order the data flows:

- :mod:`.folder`: a folder of images as a dataset (streamed, decoded by the one decoder).
- :mod:`.mining`: :func:`mine`, the streaming top-k over fixed chunks of global indices;
  :mod:`.resume` commits each chunk atomically so a rerun skips what is done;
  :mod:`.distributed` spreads the chunks over torchrun ranks and merges them.
- :mod:`.core`: the :class:`Atlas` (the hits and their crops).
- :mod:`.store`: the on-disk format (docs/atlas-format.md); :mod:`.stored`: opening one.
- :mod:`.overview`: the Fig. 2 mosaic of a layer; :mod:`.site`: the static site.
"""

from __future__ import annotations

from .core import Atlas
from .folder import ImageFolder
from .mining import mine

__all__ = ["Atlas", "ImageFolder", "mine"]
