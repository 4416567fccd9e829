"""Array operations on batches of images that methods, metrics and features share.

- :func:`gaussian_blur`: separable Gaussian smoothing of chosen axes, with the two border rules
  the library needs (mirror reflection for filter patterns, renormalised truncation for the
  blurred baselines of the faithfulness metrics).
- :func:`blend`: mask inputs along their spatial axes (Score-CAM, deletion/insertion, ROAD).

NumPy only: no SciPy, no OpenCV.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache
from typing import Literal

import numpy as np

from interp_core.backend.layout import CHANNELS_FIRST, NO_CHANNELS

Borders = Literal["reflect", "renormalize"]


@lru_cache(maxsize=128)
def gaussian_matrix(n: int, sigma: float, borders: Borders = "renormalize") -> np.ndarray:
    """``(n, n)`` Gaussian smoothing along one axis, float32, read-only; rows sum to 1.

    Parameters
    ----------
    n : int
        Length of the axis.
    sigma : float
        Standard deviation in samples; ``<= 0`` gives the identity.
    borders : {"reflect", "renormalize"}
        ``"reflect"``: taps outside the axis are mirrored back in (``d c b | a b c d | c b a``,
        however far out), kernel radius ``max(1, ceil(3 sigma))``. ``"renormalize"``: taps
        outside are dropped and each row is renormalised, kernel truncated at ``3 sigma``.
    """
    if sigma <= 0:
        out = np.eye(n, dtype=np.float32)
    elif borders == "renormalize":
        idx = np.arange(n)
        d = idx[:, None] - idx[None, :]
        k = np.exp(-0.5 * (d / sigma) ** 2) * (np.abs(d) <= math.ceil(3 * sigma))
        out = (k / k.sum(axis=1, keepdims=True)).astype(np.float32)
    elif borders == "reflect":
        radius = max(1, int(np.ceil(3 * sigma)))
        offsets = np.arange(-radius, radius + 1)
        kernel = np.exp(-0.5 * (offsets / sigma) ** 2)
        kernel /= kernel.sum()
        matrix = np.zeros((n, n), dtype=np.float64)
        rows = np.arange(n)
        period = max(1, 2 * (n - 1))
        for off, w in zip(offsets, kernel, strict=True):
            src = (rows + off) % period
            src = np.where(src >= n, period - src, src) if n > 1 else np.zeros_like(rows)
            np.add.at(matrix, (rows, src), w)
        out = matrix.astype(np.float32)
    else:
        raise ValueError(f"borders={borders!r} must be 'reflect' or 'renormalize'")
    out.setflags(write=False)
    return out


def gaussian_blur(x: np.ndarray, sigma: float, axes: Sequence[int],
                  borders: Borders = "renormalize") -> np.ndarray:
    """Separable Gaussian blur of ``x`` along ``axes``.

    Parameters
    ----------
    x : np.ndarray
        Any shape, e.g. channels-last ``(K, H, W, C)`` with ``axes=(1, 2)``.
    sigma : float
        Standard deviation in pixels; ``<= 0`` returns a float32 copy of ``x``.
    axes : sequence of int
        The axes to smooth (negative values count from the end).
    borders : {"reflect", "renormalize"}
        See :func:`gaussian_matrix`.

    Returns
    -------
    np.ndarray
        float32, C-contiguous, ``x``'s shape.
    """
    out = np.array(x, dtype=np.float32, order="C")
    if sigma <= 0:
        return out
    shape = out.shape
    for axis in axes:
        axis %= out.ndim
        matrix = gaussian_matrix(shape[axis], float(sigma), borders)
        # (lead, n, trail) views of a contiguous array: one batched matmul, no transposes.
        lead, trail = int(np.prod(shape[:axis])), int(np.prod(shape[axis + 1 :]))
        out = np.matmul(matrix, out.reshape(lead, shape[axis], trail)).reshape(shape)
    return out


def blend(x: np.ndarray, masks: np.ndarray, layout: str,
          baseline: np.ndarray | None = None) -> np.ndarray:
    """``x * masks + baseline * (1 - masks)``, the masks applied along the spatial axes.

    Parameters
    ----------
    x : np.ndarray
        Native-layout inputs ``(K, ...)`` or one sample ``(1, ...)`` (broadcast over masks).
    masks : np.ndarray
        ``(K, *spatial)``, typically in [0, 1].
    layout : str
        ``"channels_first"``, ``"channels_last"`` or ``"none"``
        (:func:`interp_core.backend.layout.infer_layout`).
    baseline : np.ndarray, optional
        Same shape as ``x`` (or broadcastable); None means zeros.

    Returns
    -------
    np.ndarray
        ``(K, ...)`` in the native layout. Channels-first results are built channels-last in
        memory (the mask broadcasts along the contiguous last axis) and returned as a
        transposed view: same values and logical shape; torch receives a channels-last tensor,
        which its oneDNN convolutions also run faster on.
    """
    masks = np.asarray(masks, dtype=np.float32)
    if layout == CHANNELS_FIRST:
        x = np.moveaxis(x, 1, -1)
        baseline = None if baseline is None else np.moveaxis(baseline, 1, -1)
    m = masks if layout == NO_CHANNELS else masks[..., None]
    shape = np.broadcast_shapes(np.shape(x), m.shape)
    out = np.empty(shape, dtype=np.result_type(x, m))  # C order: channels last in memory
    np.multiply(x, m, out=out)
    if baseline is not None:
        out += baseline * (1.0 - m)
    return np.moveaxis(out, -1, 1) if layout == CHANNELS_FIRST else out
