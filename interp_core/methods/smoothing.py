"""Smoothing options of the CAM pipeline, with pytorch-grad-cam's semantics.

- ``eigen_smooth=True``: a layer's map is the projection of its per-channel terms (``w_c A_c``
  for channel-weight methods, ``G_c A_c`` for HiResCAM, ...) on their first principal component
  instead of their sum over channels (pytorch-grad-cam's ``get_2d_projection``), which removes
  much of the noise. :func:`first_component` computes it, with a sign chosen so that the
  projection correlates positively with the unsmoothed map (the SVD alone leaves the sign
  arbitrary; pytorch-grad-cam keeps whichever sign its SVD returns).
- ``aug_smooth=True``: test-time augmentation. The explanation is run on every combination of
  a horizontal flip (off, on) and a brightness factor (0.9, 1, 1.1), as pytorch-grad-cam does
  with ttach's ``HorizontalFlip`` and ``Multiply``; each map is flipped back and the six maps
  are averaged (no renormalisation afterwards, as in pytorch-grad-cam). Targets are resolved per
  augmented input (top-1 of each augmented input when ``targets`` is None), as there.

NumPy only; imports nothing from the method classes, so :mod:`~interp_core.methods.method` can
use it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

from interp_core.backend.layout import CHANNELS_LAST, NO_CHANNELS, infer_layout, input_layout

#: pytorch-grad-cam's augmentations: ttach ``HorizontalFlip()`` x ``Multiply([0.9, 1, 1.1])``.
FLIPS = (False, True)
FACTORS = (0.9, 1.0, 1.1)


# -- eigen_smooth -----------------------------------------------------------------------------
def first_component(X: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Projection of each sample's positions on its first principal component.

    Parameters
    ----------
    X : np.ndarray
        ``(N, *spatial, C)``; each sample's positions are the observations, channels the
        variables, centred per channel before the SVD (as pytorch-grad-cam does).
    reference : np.ndarray
        ``(N, *spatial)``; the sign of each projection is chosen so that it correlates
        positively with this map (the SVD alone leaves the sign arbitrary).

    Returns
    -------
    np.ndarray
        ``(N, *spatial)`` float32.
    """
    n, spatial, c = X.shape[0], X.shape[1:-1], X.shape[-1]
    flat = X.reshape(n, -1, c).astype(np.float64)
    flat = flat - flat.mean(axis=1, keepdims=True)
    # The projection on the first right-singular vector v1 is X v1 = s1 u1. Both come from the
    # eigen-decomposition of the smaller Gram matrix (positions or channels), batched: several
    # times faster than a full SVD and identical up to the sign, which is fixed below.
    if flat.shape[1] <= c:
        values, vectors = np.linalg.eigh(flat @ flat.transpose(0, 2, 1))
        proj = vectors[:, :, -1] * np.sqrt(np.maximum(values[:, -1:], 0.0))
    else:
        _, vectors = np.linalg.eigh(flat.transpose(0, 2, 1) @ flat)
        proj = (flat @ vectors[:, :, -1:])[..., 0]
    return orient(proj, reference).reshape((n, *spatial)).astype(np.float32)


def orient(proj: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """``proj`` ``(N, P)`` with each row's sign flipped where it correlates negatively with
    ``reference`` (any shape with N rows of P values); float64."""
    n = len(proj)
    proj = np.asarray(proj, dtype=np.float64).reshape(n, -1)
    ref = np.asarray(reference, dtype=np.float64).reshape(n, -1)
    corr = ((proj - proj.mean(1, keepdims=True)) * (ref - ref.mean(1, keepdims=True))).sum(1)
    return proj * np.where(corr < 0, -1.0, 1.0)[:, None]


def principal_projection(terms: np.ndarray) -> np.ndarray:
    """``eigen_smooth``: the first-principal-component projection of per-channel terms
    ``(N, *spatial, C)``, oriented like their sum over channels; ``(N, *spatial)`` float32."""
    terms = np.nan_to_num(np.asarray(terms, dtype=np.float32))
    return first_component(terms, terms.sum(axis=-1))


# -- aug_smooth -------------------------------------------------------------------------------
def augmented_explanation(explain_once: Callable[[Any, Any], Any], x: Any, targets: Any,
                          backend: Any, model: Any, upsample: bool = True) -> Any:
    """``aug_smooth``: the mean of the de-augmented maps of the six augmented inputs.

    Parameters
    ----------
    explain_once : callable
        ``(x, targets) -> Explanation``, the method without augmentation.
    x : native input
        One array or tensor (not a tuple or dict of inputs).
    targets : any
        As given to ``explain``.
    backend, model
        For conversions and the input layout.
    upsample : bool
        Whether the maps have the input's spatial shape (used to find its channel axis).

    Returns
    -------
    Explanation
        ``maps``: float32 ``(N, *spatial)``, the mean of the six maps; every other field is
        that of the unaugmented input (flip off, factor 1).
    """
    if isinstance(x, tuple | list | dict):
        raise ValueError(
            "aug_smooth needs a single input array or tensor, not a "
            f"{type(x).__name__} of inputs"
        )
    plain = explain_once(x, targets)
    x_np = np.asarray(backend.to_numpy(x))
    axis = _width_axis(x_np, plain.maps, backend, model, upsample)
    total = np.zeros_like(plain.maps, dtype=np.float32)
    for flip in FLIPS:
        for factor in FACTORS:
            if not flip and factor == 1.0:
                maps = plain.maps
            else:
                aug = x_np[(slice(None),) * (axis % x_np.ndim) + (slice(None, None, -1),)] \
                    if flip else x_np
                aug = (aug * np.asarray(factor, dtype=x_np.dtype)).astype(x_np.dtype)
                maps = explain_once(backend.from_numpy(np.ascontiguousarray(aug), model),
                                    targets).maps
                if flip:
                    maps = maps[..., ::-1]
            total += maps
    mean = (total / np.float32(len(FLIPS) * len(FACTORS))).astype(np.float32)
    return dataclasses.replace(plain, maps=np.ascontiguousarray(mean))


def _width_axis(x: np.ndarray, maps: np.ndarray, backend: Any, model: Any,
                upsample: bool) -> int:
    """The input's last spatial axis (ttach's horizontal flip of an NCHW batch flips W)."""
    if upsample:
        layout = infer_layout(x, maps.shape[1:], backend, model)
    else:
        layout = input_layout(backend, model)
    if layout == CHANNELS_LAST:
        return x.ndim - 2
    if layout == NO_CHANNELS:
        return x.ndim - 1
    return x.ndim - 1
