"""Functional entry points: ``explain`` and ``methods``."""

from __future__ import annotations

from typing import Any

import numpy as np

from interp_core.methods import METHODS, method_class


def methods() -> list[str]:
    """Names of the available methods, sorted (``ic.explain(..., method=name)``)."""
    return sorted(METHODS)


def explain(
    model: Any, x: Any, method: str = "gradcam", layer: Any = None, targets: Any = None,
    **options: Any,
) -> np.ndarray:
    """One-shot explanation: ``method_class(method)(model, layer, **options)(x, targets)``.

    Returns
    -------
    np.ndarray
        float32 ``(N, *input_spatial)`` maps in [0, 1].
    """
    return method_class(method)(model, layer, **options)(x, targets)
