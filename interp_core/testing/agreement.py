"""Cross-framework agreement: the demo model explained by several backends on the same images.

Used by the agreement test and ``benchmarks/cross_framework.py``.
"""

from __future__ import annotations

from collections.abc import Sequence

from interp_core.backend.layout import to_backend_layout
from interp_core.backend.registry import get_backend
from interp_core.datasets import make_shapes
from interp_core.datasets.demo import FC, LAYER, demo_model
from interp_core.methods import Explanation, method_class

#: Every gradient method, and CAM.
AGREEMENT_METHODS = ("cam", "gradcam", "gradcam++", "xgradcam", "hirescam",
                     "gradcam-elementwise", "layercam", "eigengradcam", "eigencam", "fem",
                     "finercam", "segeigencam", "shapleycam")


def explain_everywhere(backends: Sequence[str], n: int = 16, seed: int = 11,
                       methods: Sequence[str] = AGREEMENT_METHODS
                       ) -> dict[str, dict[str, Explanation]]:
    """``{backend: {method: Explanation}}`` for ``n`` shapes images, top-1 targets."""
    images = make_shapes(n, seed=seed).images
    out: dict[str, dict[str, Explanation]] = {}
    for backend in backends:
        model = demo_model(backend)
        x = to_backend_layout(images, get_backend(backend))
        out[backend] = {}
        for name in methods:
            options = {"fc": FC} if name == "cam" else {}
            cam = method_class(name)(model, LAYER, backend=backend, **options)
            out[backend][name] = cam.explain(x)
    return out
