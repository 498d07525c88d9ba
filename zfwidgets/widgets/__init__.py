"""The anywidget classes of zfwidgets (the only package that imports anywidget/ipywidgets).

Each widget holds synced traits and turns trait changes into calls of the plain-Python
engine; the front end (``js/``, bundled into ``zfwidgets/static/``) only draws.
"""

from __future__ import annotations

from .evolution import EvolutionSlider
from .explorer import Explorer
from .filter_grid import FilterGrid
from .gallery import Gallery
from .layer_grid import LayerGrid
from .occlusion_map import OcclusionMap
from .predictions import Predictions
from .top_nine import TopNine

__all__ = [
    "EvolutionSlider",
    "Explorer",
    "FilterGrid",
    "Gallery",
    "LayerGrid",
    "OcclusionMap",
    "Predictions",
    "TopNine",
]
