"""interp-core: CAM, Grad-CAM and feature visualisation for PyTorch, TensorFlow/Keras and JAX.

One NumPy core computes every method; adapters (pluggy plugins, found through the entry point
group ``interp_core.backends``) supply activations and gradients. Importing this package imports
no framework. This namespace is the user API; what adapter authors need lives in
:mod:`interp_core.backend` (``Backend``, ``Capture``, ``BackendRegistration`` and ``hookimpl``
stay importable from here for compatibility).

>>> import interp_core as ic
>>> cam = ic.GradCAM(model, layer="layer4")        # doctest: +SKIP
>>> maps = cam(x, targets=[3, 7])                  # doctest: +SKIP
"""

from interp_core import detection
from interp_core.api import explain, methods
from interp_core.audit import AuditResult, audit
from interp_core.backend.hookspecs import BackendRegistration, hookimpl
from interp_core.backend.protocol import Backend, Capture, LayerCapture
from interp_core.backend.registry import (
    backends,
    get_backend,
    register_backend,
    reset_registry,
)
from interp_core.features import feature_maps, filter_patterns
from interp_core.features.grids import feature_grid
from interp_core.methods import (
    CAM,
    FEM,
    KPCACAM,
    AblationCAM,
    AttentionMethod,
    AttentionRollout,
    CAMMethod,
    ChannelWeightCAM,
    EigenCAM,
    EigenGradCAM,
    Explanation,
    FinerCAM,
    FullGrad,
    GradCAM,
    GradCAMElementWise,
    GradCAMPlusPlus,
    GradientRollout,
    GuidedBackprop,
    GuidedGradCAM,
    GuidedGradientsGradCAM,
    HiResCAM,
    InputGradientMethod,
    InputXGradient,
    IntegratedGradients,
    LayerCAM,
    LeGrad,
    Method,
    RefineCAM,
    Saliency,
    ScoreCAM,
    SegEigenCAM,
    ShapleyCAM,
    SmoothGrad,
    XGradCAM,
)
from interp_core.methods.postprocess import normalize_minmax, resize_bilinear, tokens_to_grid
from interp_core.split import Split
from interp_core.targets import (
    BinaryTarget,
    ClassTarget,
    ContrastTarget,
    DetectionTarget,
    OutputTarget,
    SegmentationTarget,
    SimilarityTarget,
)
from interp_core.viz import overlay, save_png

__version__ = "0.1.0"

__all__ = [
    "CAM",
    "FEM",
    "KPCACAM",
    "AblationCAM",
    "AttentionMethod",
    "AttentionRollout",
    "AuditResult",
    "Backend",
    "BackendRegistration",
    "BinaryTarget",
    "CAMMethod",
    "Capture",
    "ChannelWeightCAM",
    "ClassTarget",
    "ContrastTarget",
    "DetectionTarget",
    "EigenCAM",
    "EigenGradCAM",
    "Explanation",
    "FinerCAM",
    "FullGrad",
    "GradCAM",
    "GradCAMElementWise",
    "GradCAMPlusPlus",
    "GradientRollout",
    "GuidedBackprop",
    "GuidedGradCAM",
    "GuidedGradientsGradCAM",
    "HiResCAM",
    "InputGradientMethod",
    "InputXGradient",
    "IntegratedGradients",
    "LayerCAM",
    "LayerCapture",
    "LeGrad",
    "Method",
    "OutputTarget",
    "RefineCAM",
    "Saliency",
    "ScoreCAM",
    "SegEigenCAM",
    "SegmentationTarget",
    "ShapleyCAM",
    "SimilarityTarget",
    "SmoothGrad",
    "Split",
    "XGradCAM",
    "__version__",
    "audit",
    "backends",
    "detection",
    "explain",
    "feature_grid",
    "feature_maps",
    "filter_patterns",
    "get_backend",
    "hookimpl",
    "methods",
    "normalize_minmax",
    "overlay",
    "register_backend",
    "reset_registry",
    "resize_bilinear",
    "save_png",
    "tokens_to_grid",
]
