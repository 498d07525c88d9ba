"""zfwidgets: the Zeiler & Fergus deconvnet method (ECCV 2014), live in Jupyter."""

from __future__ import annotations

from . import models
from .atlas import Atlas, mine
from .base.codec import get_transport, set_transport
from .data import load_default, load_default_atlas, load_photos
from .engine import (
    Cam,
    Capture,
    Correspondence,
    Embedding,
    FeatureVis,
    FilterStats,
    GradCam,
    Invariance,
    NoRuleError,
    NoRuleWarning,
    OcclusionResult,
    ReceptiveField,
    backprop,
    cam,
    capture,
    correspondence,
    dead_filters,
    deconv,
    dominating_filters,
    embed,
    feature_vis,
    filter_rms,
    filters,
    grad_cam,
    guided_backprop,
    invariance,
    occlusion,
    receptive_field,
    renormalize_filters_,
    saliency,
)
from .monitor import TrainingMonitor, compare
from .version import __version__ as __version__

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
    "FeatureVis",
    "Invariance",
    "cam",
    "correspondence",
    "embed",
    "feature_vis",
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
    "get_transport",
    "set_transport",
]
