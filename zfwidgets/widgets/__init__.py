"""The anywidget classes of zfwidgets (the only package that imports anywidget/ipywidgets).

Each widget holds synced traits and turns trait changes into calls of the plain-Python
engine; the front end (``js/``, bundled into ``zfwidgets/static/``) only draws.
"""

from __future__ import annotations

from .correspondence_table import CorrespondenceTable
from .embedding import EmbeddingView
from .evolution import EvolutionSlider
from .explorer import Explorer
from .filter_grid import FilterGrid
from .gallery import Gallery
from .invariance_curves import InvarianceCurves
from .layer_grid import LayerGrid
from .layer_overview import LayerOverview
from .occlusion_map import OcclusionMap
from .predictions import Predictions
from .top_nine import TopNine

__all__ = [
    "CorrespondenceTable",
    "EmbeddingView",
    "EvolutionSlider",
    "Explorer",
    "FilterGrid",
    "Gallery",
    "InvarianceCurves",
    "LayerGrid",
    "LayerOverview",
    "OcclusionMap",
    "Predictions",
    "TopNine",
]
