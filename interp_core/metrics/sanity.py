"""Sanity checks: rank correlation of maps and the model-randomisation test."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from interp_core.methods import method_class


def _average_ranks(row: np.ndarray) -> np.ndarray:
    _, inverse, counts = np.unique(row, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return (ends - (counts - 1) / 2.0)[inverse]


def spearman(a: Any, b: Any) -> np.ndarray:
    """Spearman rank correlation of each pair of maps (ties get their average rank).

    Parameters
    ----------
    a, b : np.ndarray
        ``(N, ...)`` of one shape.

    Returns
    -------
    np.ndarray
        float32 ``(N,)`` in [-1, 1]; 0 where either map is constant (it ranks nothing).
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim < 2:
        raise ValueError(f"spearman needs two (N, ...) arrays of one shape, got {a.shape}, "
                         f"{b.shape}")
    n = len(a)
    ra = np.stack([_average_ranks(r) for r in a.reshape(n, -1)])
    rb = np.stack([_average_ranks(r) for r in b.reshape(n, -1)])
    ra -= ra.mean(axis=1, keepdims=True)
    rb -= rb.mean(axis=1, keepdims=True)
    den = np.sqrt((ra * ra).sum(axis=1) * (rb * rb).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = np.where(den > 0, (ra * rb).sum(axis=1) / np.where(den > 0, den, 1.0), 0.0)
    return np.clip(rho, -1.0, 1.0).astype(np.float32)


def model_randomization(model: Any, inputs: Any, randomize: Callable[[Any], Any], *,
                        method: str = "gradcam", layer: Any = None, targets: Any = None,
                        backend: Any = None, **method_options: Any) -> np.ndarray:
    """Model-randomisation sanity check (Adebayo et al., "Sanity Checks for Saliency Maps",
    NeurIPS 2018).

    Maps of ``model`` are compared with maps of ``randomize(model)``, a copy whose top layers
    are re-initialised, by Spearman rank correlation per sample. A method that explains the
    model (not the input alone) gives a low correlation; a value near 1 fails the check.
    The randomised model is explained for the same classes (top-1 classes of ``model``
    where ``targets`` is None).

    Parameters
    ----------
    randomize : callable
        ``randomize(model) -> model``: returns a re-initialised copy and leaves ``model``
        unchanged (torch: ``copy.deepcopy`` then ``reset_parameters()`` of the top layers).
        Framework-specific, hence the user's.
    method, layer, method_options
        As :func:`interp_core.explain`; give ``layer`` by name, so that it resolves in the
        copy too.

    Returns
    -------
    np.ndarray
        float32 ``(N,)``, see :func:`spearman`.
    """
    cls = method_class(method)
    first = cls(model, layer, backend=backend, **method_options).explain(inputs, targets)
    fixed = targets
    if targets is None:
        fixed = [int(t) for t in first.targets]
    randomized = randomize(model)
    if randomized is model:
        raise ValueError("randomize(model) returned the model itself; return a re-initialised "
                         "copy (e.g. copy.deepcopy(model), then reset its top layers)")
    second = cls(randomized, layer, backend=backend, **method_options)(inputs, fixed)
    return spearman(first.maps, second)
