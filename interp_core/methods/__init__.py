"""The method families, one module per kind of evidence, and the name -> class table.

- CAM family (maps from one layer): :mod:`~interp_core.methods.gradient`,
  :mod:`~interp_core.methods.activation`, :mod:`~interp_core.methods.kpca`,
  :mod:`~interp_core.methods.perturbation`;
- input attributions: :mod:`~interp_core.methods.attribution` (Saliency, Input x Gradient,
  SmoothGrad, Integrated Gradients), :mod:`~interp_core.methods.guided` (guided
  backpropagation, Guided Grad-CAM), :mod:`~interp_core.methods.fullgrad`;
- :mod:`~interp_core.methods.smoothing`: the ``aug_smooth`` and ``eigen_smooth`` options;
- :mod:`~interp_core.methods.catalog`: what each method needs and costs (:func:`method_table`).
"""

from __future__ import annotations

import difflib

from interp_core.methods.activation import CAM, EigenCAM, EigenGradCAM
from interp_core.methods.attribution import (
    InputAttribution,
    InputXGradient,
    IntegratedGradients,
    Saliency,
    SmoothGrad,
)
from interp_core.methods.base import CAMMethod, ChannelWeightCAM, Explanation
from interp_core.methods.catalog import CATALOG, MethodInfo, methods_markdown
from interp_core.methods.fullgrad import FullGrad
from interp_core.methods.gradient import (
    GradCAM,
    GradCAMElementWise,
    GradCAMPlusPlus,
    GuidedGradientsGradCAM,
    HiResCAM,
    LayerCAM,
    XGradCAM,
)
from interp_core.methods.guided import GuidedBackprop, GuidedGradCAM
from interp_core.methods.kpca import KPCACAM
from interp_core.methods.perturbation import AblationCAM, ScoreCAM

#: Method name -> class; ``ic.methods()`` lists the keys.
METHODS: dict[str, type[CAMMethod]] = {
    cls.name: cls
    for cls in (
        CAM, AblationCAM, EigenCAM, EigenGradCAM, FullGrad, GradCAM, GradCAMElementWise,
        GradCAMPlusPlus, GuidedBackprop, GuidedGradCAM, GuidedGradientsGradCAM, HiResCAM,
        InputXGradient, IntegratedGradients, KPCACAM, LayerCAM, Saliency, ScoreCAM, SmoothGrad,
        XGradCAM,
    )
}

_INFO = {info.name: info for info in CATALOG}
if set(_INFO) != set(METHODS):  # pragma: no cover - caught by the tests at import
    raise RuntimeError(
        f"interp_core.methods.catalog and METHODS disagree: {sorted(set(_INFO) ^ set(METHODS))}"
    )


def method_class(name: str) -> type[CAMMethod]:
    """The class of method ``name`` (case-insensitive; ``"gradcampp"`` means ``"gradcam++"``)."""
    key = name.lower().replace("_", "-")
    key = {"gradcampp": "gradcam++", "gradcamplusplus": "gradcam++"}.get(key, key)
    if key not in METHODS:
        close = difflib.get_close_matches(key, list(METHODS), n=3, cutoff=0.6)
        hint = f"did you mean {' or '.join(map(repr, close))}? " if close else ""
        raise ValueError(f"unknown method {name!r}; {hint}known methods: {sorted(METHODS)}")
    return METHODS[key]


def method_table() -> list[MethodInfo]:
    """Every method's name, one-line description, what it needs from the backend
    (``"activations"``, ``"gradients"``, ``"forward per channel"`` or ``"input gradients"``),
    cost, when it is faithful, and its source; sorted by name."""
    return [_INFO[name] for name in sorted(METHODS)]


def required_capabilities(name: str) -> tuple[str, ...]:
    """The backend capabilities method ``name`` needs beyond ``"gradients"`` (``()`` for most
    CAM methods; e.g. ``("score_input_gradients", "guided_backprop")`` for guided backprop)."""
    cls = method_class(name)
    from interp_core.backend.protocol import ACTIVATION_PATCH, GRADIENTS, LINEAR_WEIGHTS

    extra = {"cam": (LINEAR_WEIGHTS,), "ablationcam": (ACTIVATION_PATCH,)}.get(cls.name, ())
    return tuple(c for c in (*getattr(cls, "requires", ()), *extra) if c != GRADIENTS)


__all__ = [
    "CAM", "CATALOG", "KPCACAM", "METHODS", "AblationCAM", "CAMMethod", "ChannelWeightCAM",
    "EigenCAM", "EigenGradCAM", "Explanation", "FullGrad", "GradCAM", "GradCAMElementWise",
    "GradCAMPlusPlus", "GuidedBackprop", "GuidedGradCAM", "GuidedGradientsGradCAM", "HiResCAM",
    "InputAttribution", "InputXGradient", "IntegratedGradients", "LayerCAM", "MethodInfo",
    "Saliency", "ScoreCAM", "SmoothGrad", "XGradCAM", "method_class", "method_table",
    "methods_markdown", "required_capabilities",
]
