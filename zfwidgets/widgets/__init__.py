"""The anywidget classes of zfwidgets (the only package that imports anywidget/ipywidgets).

Each widget holds synced traits and turns trait changes into calls of the plain-Python
engine; the front end (``js/``, bundled into ``zfwidgets/static/``) only draws.
"""

from __future__ import annotations

from .filter_grid import FilterGrid
from .gallery import Gallery
from .layer_grid import LayerGrid
from .occlusion_map import OcclusionMap
from .predictions import Predictions

__all__ = ["FilterGrid", "Gallery", "LayerGrid", "OcclusionMap", "Predictions"]
