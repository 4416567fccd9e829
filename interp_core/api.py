"""Functional entry points: ``explain`` and ``methods``."""

from __future__ import annotations

from typing import Any, Literal, overload

import numpy as np

from interp_core.methods import METHODS, MethodInfo, method_class, method_table


@overload
def methods(details: Literal[False] = False) -> list[str]: ...


@overload
def methods(details: Literal[True]) -> list[MethodInfo]: ...


def methods(details: bool = False) -> list[str] | list[MethodInfo]:
    """The available methods, sorted by name (``ic.explain(..., method=name)``).

    Parameters
    ----------
    details : bool
        False: their names. True: their rows of the method table
        (:class:`~interp_core.methods.MethodInfo`): what each map is, what it needs from the
        backend (``needs``: activations, gradients, Hessian-vector products, a forward per
        channel, input gradients, attention), whether it explains no target
        (``target_free``), its cost, when it is faithful and its source.
    """
    return method_table() if details else sorted(METHODS)


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
