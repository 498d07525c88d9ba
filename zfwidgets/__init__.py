"""zfwidgets: the Zeiler & Fergus deconvnet method (ECCV 2014), live in Jupyter."""

from __future__ import annotations

from . import models
from .atlas import Atlas
from .backprop import NoRuleError, NoRuleWarning, backprop, deconv, guided_backprop, saliency
from .cam import Cam, cam
from .capture import Capture, capture
from .correspondence import Correspondence, correspondence
from .data import load_default, load_default_atlas, load_photos
from .embed import Embedding, embed
from .filters import (
    FilterStats,
    dead_filters,
    dominating_filters,
    filter_rms,
    filters,
    renormalize_filters_,
)
from .gradcam import GradCam, grad_cam
from .invariance import Invariance, invariance
from .mining import mine
from .monitor import TrainingMonitor, compare
from .occlusion import OcclusionResult, occlusion
from .receptive import ReceptiveField, receptive_field

__version__ = "0.1.0.dev0"

#: The widgets, imported on first use so the engine never imports anywidget/ipywidgets.
_WIDGETS = (
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
)


def __getattr__(name: str):
    if name in _WIDGETS:
        from . import widgets

        return getattr(widgets, name)
    raise AttributeError(f"module 'zfwidgets' has no attribute {name!r}")


__all__ = [
    *_WIDGETS,
    "Cam",
    "Correspondence",
    "Embedding",
    "Invariance",
    "cam",
    "correspondence",
    "embed",
    "invariance",
    "Atlas",
    "Capture",
    "FilterStats",
    "GradCam",
    "NoRuleError",
    "NoRuleWarning",
    "OcclusionResult",
    "ReceptiveField",
    "TrainingMonitor",
    "backprop",
    "capture",
    "compare",
    "dead_filters",
    "deconv",
    "dominating_filters",
    "filter_rms",
    "filters",
    "grad_cam",
    "guided_backprop",
    "load_default",
    "load_default_atlas",
    "load_photos",
    "mine",
    "models",
    "occlusion",
    "receptive_field",
    "renormalize_filters_",
    "saliency",
]
