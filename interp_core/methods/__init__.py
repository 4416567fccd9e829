"""The CAM family, one module per kind of evidence, and the name -> class table."""

from __future__ import annotations

from interp_core.methods.activation import CAM, EigenCAM, EigenGradCAM
from interp_core.methods.base import CAMMethod, ChannelWeightCAM, Explanation
from interp_core.methods.gradient import (
    GradCAM,
    GradCAMElementWise,
    GradCAMPlusPlus,
    HiResCAM,
    LayerCAM,
    XGradCAM,
)
from interp_core.methods.perturbation import AblationCAM, ScoreCAM

#: Method name -> class; ``ic.methods()`` lists the keys.
METHODS: dict[str, type[CAMMethod]] = {
    cls.name: cls
    for cls in (
        CAM, AblationCAM, EigenCAM, EigenGradCAM, GradCAM, GradCAMElementWise, GradCAMPlusPlus,
        HiResCAM, LayerCAM, ScoreCAM, XGradCAM,
    )
}


def method_class(name: str) -> type[CAMMethod]:
    """The class of method ``name`` (case-insensitive; ``"gradcampp"`` means ``"gradcam++"``)."""
    key = name.lower().replace("_", "-")
    key = {"gradcampp": "gradcam++", "gradcamplusplus": "gradcam++"}.get(key, key)
    if key not in METHODS:
        raise ValueError(f"unknown method {name!r}; known methods: {sorted(METHODS)}")
    return METHODS[key]


__all__ = [
    "CAM", "METHODS", "AblationCAM", "CAMMethod", "ChannelWeightCAM", "EigenCAM", "EigenGradCAM",
    "Explanation", "GradCAM", "GradCAMElementWise", "GradCAMPlusPlus", "HiResCAM", "LayerCAM",
    "ScoreCAM", "XGradCAM", "method_class",
]
