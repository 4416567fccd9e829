"""Complexity of maps: Sparseness (Gini index), Complexity (entropy), histogram entropy.

These read the maps alone (no model, no ground truth). A concise explanation puts its mass on
few pixels: high Sparseness, low Complexity.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from interp_core.backend.inputs import check_positive_int
from interp_core.metrics._common import _check_maps


def _magnitudes(maps: Any) -> np.ndarray:
    """``|maps|`` flattened per sample, float64 ``(N, P)``."""
    flat = _check_maps(maps)
    return np.abs(flat.reshape(len(flat), -1).astype(np.float64))


def sparseness(maps: Any) -> np.ndarray:
    """Sparseness: the Gini index of each map's magnitudes (Chalasani et al., "Concise
    Explanations of Neural Networks using Adversarial Training", ICML 2020).

    With ``a_(1) <= ... <= a_(P)`` the sorted values of ``|map|``::

        G = sum_k (2k - P - 1) a_(k) / (P * sum_k a_(k))

    0 for a uniform map, ``1 - 1/P`` for a map with one non-zero pixel: higher is sparser
    (more concise). An all-zero map counts as uniform (0). Scale-invariant, so the maps need
    no normalisation.

    Parameters
    ----------
    maps : np.ndarray
        ``(N, *S)``; signed maps are taken in absolute value.

    Returns
    -------
    np.ndarray
        float32 ``(N,)`` in [0, 1).
    """
    a = np.sort(_magnitudes(maps), axis=1)
    p = a.shape[1]
    weights = 2.0 * np.arange(1, p + 1) - p - 1
    total = a.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        gini = np.where(total > 0, (a @ weights) / (p * np.where(total > 0, total, 1.0)), 0.0)
    return gini.astype(np.float32)


def complexity(maps: Any) -> np.ndarray:
    """Complexity: the entropy of each map's fractional contributions (Bhatt, Weller and Moura,
    "Evaluating and Aggregating Feature-based Model Explanations", IJCAI 2020).

    ``H = -sum_i p_i log p_i`` with ``p_i = |map_i| / sum_j |map_j|`` (natural log, ``0 log 0 =
    0``): 0 when one pixel holds all the mass, ``log P`` for a uniform map. Lower is simpler.
    An all-zero map counts as uniform (``log P``). Scale-invariant.

    Parameters
    ----------
    maps : np.ndarray
        ``(N, *S)``; signed maps are taken in absolute value.

    Returns
    -------
    np.ndarray
        float32 ``(N,)`` in [0, log P], nats.
    """
    a = _magnitudes(maps)
    total = a.sum(axis=1, keepdims=True)
    zero = total[:, 0] == 0
    p = np.where(zero[:, None], 1.0, a / np.where(total > 0, total, 1.0))
    logs = np.log(p, out=np.zeros_like(p), where=p > 0)
    h = -(p * logs).sum(axis=1)
    return np.where(zero, np.log(a.shape[1]), h).astype(np.float32)


def histogram_entropy(maps: Any, n_bins: int = 100) -> np.ndarray:
    """Entropy of the histogram of each map's values (Hedström et al. 2023, eMPRT's
    complexity; Quantus's ``discrete_entropy``).

    The values are counted in ``n_bins`` equal bins between the map's minimum and maximum
    (:func:`numpy.histogram`), and ``H = -sum_b q_b log q_b`` of the bins' shares ``q_b``
    (nats). A map whose values spread evenly scores ``log n_bins``; a constant map, or one
    with a few distinct values, scores low. Unlike :func:`complexity` it reads the values'
    distribution, not where they are.

    Parameters
    ----------
    maps : np.ndarray
        ``(N, *S)``, values as given (not absolute).
    n_bins : int
        Number of bins (Quantus's default: 100).

    Returns
    -------
    np.ndarray
        float32 ``(N,)`` in [0, log n_bins].
    """
    n_bins = check_positive_int(n_bins, "n_bins")
    flat = _check_maps(maps)
    flat = flat.reshape(len(flat), -1)
    # np.histogram per map: each map has its own range, and bin membership must match
    # numpy's edge rules exactly (a value moved to a neighbouring bin changes the entropy).
    counts = np.stack([np.histogram(row, bins=int(n_bins))[0] for row in flat]) \
        if len(flat) else np.zeros((0, int(n_bins)), np.int64)
    q = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    logs = np.log(q, out=np.zeros_like(q), where=q > 0)
    return (-(q * logs).sum(axis=1)).astype(np.float32)
