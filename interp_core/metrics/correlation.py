"""Faithfulness Correlation (Bhatt et al. 2020): attribution of random subsets vs score drop."""

from __future__ import annotations

from typing import Any

import numpy as np

from interp_core.backend.inputs import check_positive_int
from interp_core.backend.layout import CHANNELS_FIRST, NO_CHANNELS
from interp_core.metrics._common import _setup, make_baseline


def pearson(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of each row pair of two ``(N, K)`` arrays, float64 ``(N,)``; 0 where
    either row is constant (it correlates with nothing)."""
    a = np.asarray(a, np.float64) - np.mean(a, axis=1, keepdims=True)
    b = np.asarray(b, np.float64) - np.mean(b, axis=1, keepdims=True)
    den = np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(den > 0, (a * b).sum(axis=1) / np.where(den > 0, den, 1.0), 0.0)
    return np.clip(r, -1.0, 1.0)


def _pixel_major(x: np.ndarray, layout: str) -> np.ndarray:
    """Native-layout inputs as ``(N, P, C)`` (``C = 1`` without a channel axis), at least
    float32 (as :func:`~interp_core.imaging.blend` gives them)."""
    if layout == CHANNELS_FIRST:
        x = np.moveaxis(x, 1, -1)
    elif layout == NO_CHANNELS:
        x = x[..., None]
    return np.ascontiguousarray(x, dtype=np.result_type(x, np.float32)).reshape(
        len(x), -1, x.shape[-1])


def _native(px: np.ndarray, layout: str, spatial: tuple[int, ...]) -> np.ndarray:
    """The inverse of :func:`_pixel_major` (channels-first as a transposed view)."""
    out = px.reshape(len(px), *spatial, px.shape[-1])
    if layout == CHANNELS_FIRST:
        return np.moveaxis(out, -1, 1)
    return out[..., 0] if layout == NO_CHANNELS else out


def random_subsets(n: int, pixels: int, nr_runs: int, subset_size: int,
                   seed: int = 0) -> np.ndarray:
    """The default subsets of :func:`faithfulness_correlation`: for sample ``i``, ``nr_runs``
    draws of ``subset_size`` distinct pixels from ``np.random.default_rng([seed, i])``, so a
    sample's subsets do not depend on the batch it came in. int64 ``(N, nr_runs, subset_size)``.
    """
    out = np.empty((n, nr_runs, subset_size), dtype=np.int64)
    for i in range(n):
        rng = np.random.default_rng([seed, i])
        for r in range(nr_runs):  # Floyd's sampling inside Generator.choice: O(subset_size)
            out[i, r] = rng.choice(pixels, subset_size, replace=False)
    return out


def faithfulness_correlation(model: Any, inputs: Any, maps: Any, targets: Any = None, *,
                             nr_runs: int = 100, subset_size: int = 224,
                             baseline: Any = "zeros", blur_sigma: float = 5.0, seed: int = 0,
                             subsets: Any = None, backend: Any = None, batch_size: int = 32,
                             output: Any = None) -> np.ndarray:
    """Faithfulness Correlation (Bhatt, Weller and Moura, "Evaluating and Aggregating
    Feature-based Model Explanations", IJCAI 2020).

    For ``nr_runs`` random subsets ``S`` of ``subset_size`` pixels, the pixels of ``S`` (all
    channels) are replaced by ``baseline``; the metric is the Pearson correlation, over the
    runs, between the map's sum over ``S`` and the score's drop ``f(x) - f(x_S)``. A faithful
    map gives the pixels whose removal costs the most score the most weight: higher is better,
    in [-1, 1]; 0 where the map sums or the drops do not vary. The map is used as given
    (signed maps keep their sign; Pearson's correlation ignores its scale).

    Parameters
    ----------
    nr_runs : int
        Random subsets per sample (at least 2); ``N * nr_runs`` perturbed inputs are scored,
        ``batch_size`` per forward pass.
    subset_size : int
        Pixels per subset (the paper and Quantus: 224, i.e. 0.45% of 224x224).
    baseline : str or np.ndarray
        See :func:`make_baseline`.
    seed : int
        Seeds the subsets (:func:`random_subsets`).
    subsets : np.ndarray, optional
        int ``(N, nr_runs, subset_size)``: the subsets themselves, as flat pixel indices into
        the map (raster order), e.g. to reproduce another library's draw; ``nr_runs``,
        ``subset_size`` and ``seed`` are then read from it / unused.

    Returns
    -------
    np.ndarray
        float32 ``(N,)``.
    """
    s = _setup(model, inputs, maps, targets, backend, batch_size, output)
    pixels = int(np.prod(s.spatial))
    if subsets is None:
        nr_runs = check_positive_int(nr_runs, "nr_runs")
        subset_size = check_positive_int(subset_size, "subset_size")
        if subset_size > pixels:
            raise ValueError(f"subset_size={subset_size} is larger than the maps' {pixels} "
                             "pixels")
        subsets = random_subsets(s.n, pixels, nr_runs, subset_size, seed)
    else:
        subsets = np.asarray(subsets)
        if (subsets.ndim != 3 or len(subsets) != s.n or not np.issubdtype(subsets.dtype,
                                                                          np.integer)):
            raise ValueError(f"subsets must be integer (N={s.n}, nr_runs, subset_size), got "
                             f"{subsets.dtype} {subsets.shape}")
        if subsets.size and (subsets.min() < 0 or subsets.max() >= pixels):
            raise ValueError(f"subsets must index the maps' {pixels} pixels, got values in "
                             f"[{subsets.min()}, {subsets.max()}]")
        nr_runs = subsets.shape[1]
    if nr_runs < 2:
        raise ValueError(f"nr_runs must be at least 2 for a correlation, got {nr_runs}")
    flat = s.maps.reshape(s.n, -1).astype(np.float64)
    sums = np.take_along_axis(flat, subsets.reshape(s.n, -1), axis=1).reshape(
        s.n, nr_runs, -1).sum(axis=2)
    base = make_baseline(s.x, s.layout, len(s.spatial), baseline, blur_sigma)

    points = nr_runs + 1  # per sample: the intact input, then one per subset

    # pixel-major copies (channels last in memory, as blend builds them): a subset's pixels
    # are then rows, replaced by one fancy assignment instead of a blend of whole images
    x_px, base_px = _pixel_major(s.x, s.layout), _pixel_major(base, s.layout)

    def build(items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        samples, runs = np.divmod(items, points)
        out = x_px[samples]  # (B, P, C) copy
        rows = np.flatnonzero(runs > 0)
        chosen = subsets[samples[rows], runs[rows] - 1]  # (rows, subset_size)
        at = (np.repeat(rows, chosen.shape[1]), chosen.ravel())
        out[at] = base_px[samples[at[0]], at[1]]
        return _native(out, s.layout, s.spatial), samples

    # one pass over all of them: the intact inputs share batches with the perturbed ones
    scores = s.scores_of(s.n * points, build).reshape(s.n, points).astype(np.float64)
    drops = scores[:, :1] - scores[:, 1:]
    return pearson(sums, drops).astype(np.float32)
