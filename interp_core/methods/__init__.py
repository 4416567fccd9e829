"""The methods, one module per kind of evidence, their bases, and the name -> class table.

- :mod:`~interp_core.methods.method`: :class:`Method`, the base of every method (model,
  backend, targets, ``explain``; the hook :meth:`Method.compute`), and :class:`Explanation`;
- CAM family (maps from layers), on :class:`CAMMethod` (:mod:`~interp_core.methods.base`):
  :mod:`~interp_core.methods.grad_cam`, :mod:`~interp_core.methods.activation`,
  :mod:`~interp_core.methods.kpca`, :mod:`~interp_core.methods.perturbation`,
  :mod:`~interp_core.methods.meta` (Finer-CAM and RefineCAM, built on a base method);
  :mod:`~interp_core.methods.shapley`;
- attributions to the input, on :class:`InputGradientMethod`:
  :mod:`~interp_core.methods.input_gradients` (Saliency, Input x Gradient, SmoothGrad,
  Integrated Gradients); and :mod:`~interp_core.methods.fullgrad`;
- attention methods for vision transformers, on :class:`AttentionMethod`:
  :mod:`~interp_core.methods.attention` (attention rollout, gradient-weighted rollout, LeGrad);
- :mod:`~interp_core.methods.guided`: every guided method (guided backpropagation, Guided
  Grad-CAM, Grad-CAM on guided gradients);
- :mod:`~interp_core.methods.smoothing`: the ``aug_smooth`` and ``eigen_smooth`` options;
- :mod:`~interp_core.methods.catalog`: what each method is and costs (:func:`method_table`).

Each class declares its name and what it needs (``requires``, ``needs``, ``takes_layer``);
``ic.methods()`` (the names in :data:`METHODS`), :func:`method_table` and
:func:`required_capabilities` read those declarations.
``interp_core.methods.gradient`` and ``interp_core.methods.attribution`` are the deprecated
former paths of ``grad_cam`` and ``input_gradients``.
"""

from __future__ import annotations

import difflib

from interp_core.methods.activation import CAM, FEM, EigenCAM, EigenGradCAM, SegEigenCAM
from interp_core.methods.attention import AttentionMethod, AttentionRollout, GradientRollout, LeGrad
from interp_core.methods.base import CAMMethod, ChannelWeightCAM
from interp_core.methods.catalog import NOTES, MethodInfo, method_info, methods_markdown
from interp_core.methods.fullgrad import FullGrad
from interp_core.methods.grad_cam import (
    GradCAM,
    GradCAMElementWise,
    GradCAMPlusPlus,
    HiResCAM,
    LayerCAM,
    XGradCAM,
)
from interp_core.methods.guided import GuidedBackprop, GuidedGradCAM, GuidedGradientsGradCAM
from interp_core.methods.input_gradients import (
    InputAttribution,
    InputGradientMethod,
    InputXGradient,
    IntegratedGradients,
    Saliency,
    SmoothGrad,
)
from interp_core.methods.kpca import KPCACAM
from interp_core.methods.meta import BaseMethodCAM, FinerCAM, RefineCAM
from interp_core.methods.method import Explanation, Method, needed_capabilities
from interp_core.methods.perturbation import AblationCAM, ScoreCAM
from interp_core.methods.shapley import ShapleyCAM

#: Method name -> class; ``ic.methods()`` lists the keys.
METHODS: dict[str, type[Method]] = {
    cls.name: cls
    for cls in (
        CAM, FEM, AblationCAM, AttentionRollout, EigenCAM, EigenGradCAM, FinerCAM, FullGrad,
        GradCAM, GradCAMElementWise, GradCAMPlusPlus, GradientRollout, GuidedBackprop,
        GuidedGradCAM, GuidedGradientsGradCAM, HiResCAM, InputXGradient, IntegratedGradients,
        KPCACAM, LayerCAM, LeGrad, RefineCAM, Saliency, ScoreCAM, SegEigenCAM, ShapleyCAM,
        SmoothGrad, XGradCAM,
    )
}

_unnoted = set(METHODS) ^ {notes.name for notes in NOTES}
if _unnoted:  # pragma: no cover - caught by the tests at import
    raise RuntimeError(
        f"interp_core.methods.catalog.NOTES and METHODS disagree: {sorted(_unnoted)}")

#: Every method's row of the method table, by name (:func:`method_table`).
CATALOG: tuple[MethodInfo, ...] = tuple(method_info(METHODS[name]) for name in sorted(METHODS))


def method_class(name: str) -> type[Method]:
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
    (``"activations"``, ``"gradients"``, ``"forward per channel"`` or ``"input gradients"``:
    the class's ``needs``), cost, when it is faithful, its source, the capabilities it calls
    (``requires``) and whether it takes a layer (``takes_layer``); sorted by name."""
    return list(CATALOG)


def required_capabilities(name: str) -> tuple[str, ...]:
    """The backend capabilities method ``name`` needs beyond ``"gradients"``: its class's
    ``requires`` in declared order (``()`` for most CAM methods; ``("linear_weights",)`` for
    CAM, ``("score_input_gradients", "guided_backprop")`` for guided backprop)."""
    return needed_capabilities(method_class(name))


__all__ = [
    "CAM", "CATALOG", "FEM", "KPCACAM", "METHODS", "AblationCAM", "AttentionMethod",
    "AttentionRollout", "BaseMethodCAM", "CAMMethod", "ChannelWeightCAM", "EigenCAM",
    "EigenGradCAM", "Explanation", "FinerCAM", "FullGrad", "GradCAM", "GradCAMElementWise",
    "GradCAMPlusPlus", "GradientRollout", "GuidedBackprop", "GuidedGradCAM",
    "GuidedGradientsGradCAM", "HiResCAM", "InputAttribution", "InputGradientMethod",
    "InputXGradient", "IntegratedGradients", "LayerCAM", "LeGrad", "Method", "MethodInfo",
    "RefineCAM", "Saliency", "ScoreCAM", "SegEigenCAM", "ShapleyCAM", "SmoothGrad", "XGradCAM",
    "method_class", "method_table", "methods_markdown", "required_capabilities",
]
