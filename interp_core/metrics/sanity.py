"""Sanity checks: rank correlation of maps, the model-randomisation test and its efficient
variant (eMPRT)."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from interp_core.methods import method_class
from interp_core.metrics.complexity import complexity, histogram_entropy


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
    first, second = _original_and_randomized(model, inputs, randomize, method, layer, targets,
                                             backend, method_options)
    return spearman(first, second)


def _original_and_randomized(model: Any, inputs: Any, randomize: Callable[[Any], Any],
                             method: str, layer: Any, targets: Any, backend: Any,
                             method_options: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Maps of ``model`` and of ``randomize(model)``, the latter for the classes explained by
    the former (its top-1 classes where ``targets`` is None)."""
    if not callable(randomize):
        raise TypeError(f"randomize must be a callable, model -> re-initialised copy, got "
                        f"{type(randomize).__name__}")
    cls = method_class(method)
    first = cls(model, layer, backend=backend, **method_options).explain(inputs, targets)
    fixed = targets
    if targets is None and not cls.target_free:
        fixed = [int(t) for t in first.targets]
    randomized = randomize(model)
    if randomized is model:
        raise ValueError("randomize(model) returned the model itself; return a re-initialised "
                         "copy (e.g. copy.deepcopy(model), then reset its top layers)")
    second = cls(randomized, layer, backend=backend, **method_options)(inputs, fixed)
    return first.maps, second


def efficient_mprt(model: Any, inputs: Any, randomize: Callable[[Any], Any], *,
                   method: str = "gradcam", layer: Any = None, targets: Any = None,
                   backend: Any = None, measure: str = "histogram", n_bins: int = 100,
                   **method_options: Any) -> np.ndarray:
    """Efficient model-parameter randomisation test, eMPRT (Hedström, Weber, Lapuschkin and
    Höhne, "Sanity Checks Revisited: An Exploration to Repair the Model Parameter
    Randomisation Test", XAI in Action workshop, NeurIPS 2023).

    Instead of comparing maps of the model and of a randomised copy pixel by pixel (which
    :func:`model_randomization` does and whose similarity measures the paper found
    unreliable), eMPRT measures how much more *complex* the maps become once the model's
    weights are randomised: ``(H(randomised) - H(original)) / H(original)`` per sample. A
    method that explains the model gives noisy, complex maps of a random model: a large rise
    is good; a rise near 0 means the maps do not depend on the weights.

    As in Quantus (``skip_layers=True``) only the original and the fully randomised model are
    explained; progressive randomisation's intermediate stages would only add curves.

    Parameters
    ----------
    randomize : callable
        ``randomize(model) -> model``: a copy with its weights re-initialised (the paper:
        every layer, bottom-up), leaving ``model`` unchanged, as for
        :func:`model_randomization` (torch: ``copy.deepcopy``, then ``reset_parameters()`` of
        each module that has one). Framework-specific, hence the user's.
    method, layer, targets, backend, method_options
        As :func:`interp_core.explain`; the randomised copy is explained for the classes
        explained on ``model`` (its top-1 classes where ``targets`` is None). Give ``layer``
        by name, so that it resolves in the copy.
    measure : str
        ``"histogram"``: :func:`~interp_core.metrics.complexity.histogram_entropy` with
        ``n_bins`` bins (the paper and Quantus); ``"entropy"``:
        :func:`~interp_core.metrics.complexity.complexity`.

    Returns
    -------
    np.ndarray
        float32 ``(N,)``; NaN, with a warning, where the original map's complexity is 0 (a
        constant map under ``"histogram"``).
    """
    if measure not in ("histogram", "entropy"):
        raise ValueError(f"measure={measure!r} must be 'histogram' (the paper's) or 'entropy'")
    first, second = _original_and_randomized(model, inputs, randomize, method, layer, targets,
                                             backend, method_options)
    if measure == "histogram":
        before, after = histogram_entropy(first, n_bins), histogram_entropy(second, n_bins)
    else:
        before, after = complexity(first), complexity(second)
    before = before.astype(np.float64)
    bad = before <= 0
    if bad.any():
        warnings.warn(
            f"efficient_mprt: the original maps of samples {np.flatnonzero(bad).tolist()} have "
            "complexity 0 (constant maps), so the relative rise is undefined (NaN)",
            RuntimeWarning, stacklevel=2,
        )
    with np.errstate(invalid="ignore", divide="ignore"):
        rise = (after - before) / np.where(bad, 1.0, before)
    return np.where(bad, np.nan, rise).astype(np.float32)
