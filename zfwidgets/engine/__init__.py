"""The paper's maths, on any PyTorch model (docs/method.md).

- :mod:`.capture`: activations and switches (the package's only hook registrations).
- :mod:`.probe`: shape-only passes on the meta device (sizes, the layers the forward calls).
- :mod:`.backprop`: the deconvnet and its peers through autograd; :mod:`.literal`: the literal
  chain of Sec. 2.1, the fast path's reference.
- :mod:`.receptive`: receptive fields and image patches.
- :mod:`.occlusion` (+ :mod:`.incremental`), :mod:`.gradcam`, :mod:`.cam`: where the evidence is;
  :mod:`.attribution`: the maps of one image side by side (the Explorer's views).
- :mod:`.filters`: first-layer filters, RMS renormalisation.
- :mod:`.featurevis`: inputs optimised to excite units (Olah et al. 2017), many units per batch.
- :mod:`.invariance`, :mod:`.correspondence`, :mod:`.embed`: Sec. 3.3, 4.2 and the codes.
"""

from __future__ import annotations

from .attribution import AttributionMaps, attribution_maps
from .backprop import NoRuleError, NoRuleWarning, backprop, deconv, guided_backprop, saliency
from .cam import Cam, cam
from .capture import Capture, capture
from .correspondence import Correspondence, correspondence
from .embed import Embedding, embed
from .featurevis import FeatureVis, feature_vis
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
from .occlusion import OcclusionResult, occlusion
from .receptive import ReceptiveField, receptive_field

__all__ = [
    "AttributionMaps",
    "Cam",
    "Capture",
    "Correspondence",
    "Embedding",
    "FeatureVis",
    "FilterStats",
    "GradCam",
    "Invariance",
    "NoRuleError",
    "NoRuleWarning",
    "OcclusionResult",
    "ReceptiveField",
    "attribution_maps",
    "backprop",
    "cam",
    "capture",
    "correspondence",
    "dead_filters",
    "deconv",
    "dominating_filters",
    "embed",
    "feature_vis",
    "filter_rms",
    "filters",
    "grad_cam",
    "guided_backprop",
    "invariance",
    "occlusion",
    "receptive_field",
    "renormalize_filters_",
    "saliency",
]
