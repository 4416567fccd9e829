"""Deprecated: the Grad-CAM family moved to :mod:`interp_core.methods.grad_cam`, Grad-CAM on
guided gradients to :mod:`interp_core.methods.guided`.

This module re-exports them for one release and warns (``DeprecationWarning``) when imported.
"""

from __future__ import annotations

import warnings

from interp_core.methods.base import CAMMethod, ChannelWeightCAM, LayerContext, spatial_axes
from interp_core.methods.grad_cam import (
    GradCAM,
    GradCAMElementWise,
    GradCAMPlusPlus,
    HiResCAM,
    LayerCAM,
    XGradCAM,
    gradcam_plus_plus_weights,
    gradcam_weights,
    xgradcam_weights,
)
from interp_core.methods.guided import GuidedGradientsGradCAM, guided_gradient_weights

warnings.warn(
    "interp_core.methods.gradient is deprecated and will be removed in the next release: "
    "import from interp_core.methods.grad_cam (GuidedGradientsGradCAM and "
    "guided_gradient_weights: interp_core.methods.guided), or from interp_core",
    DeprecationWarning, stacklevel=2,
)

__all__ = [
    "CAMMethod", "ChannelWeightCAM", "GradCAM", "GradCAMElementWise", "GradCAMPlusPlus",
    "GuidedGradientsGradCAM", "HiResCAM", "LayerCAM", "LayerContext", "XGradCAM",
    "gradcam_plus_plus_weights", "gradcam_weights", "guided_gradient_weights",
    "spatial_axes", "xgradcam_weights",
]
