"""Region perturbation (Samek et al. 2017): patches replaced in order of relevance, AOPC."""

from __future__ import annotations

from typing import Any

import numpy as np

from interp_core.backend.inputs import check_positive_int
from interp_core.imaging import blend
from interp_core.metrics._common import _check_order, _setup, make_baseline
from interp_core.metrics.faithfulness import Curve


def patch_grid(spatial: tuple[int, ...], patch_size: int) -> tuple[np.ndarray, int]:
    """The patch of each pixel on a grid of non-overlapping ``patch_size`` patches.

    Where a side is not a multiple of ``patch_size`` the grid overhangs it by the remainder,
    split as Quantus pads (``floor`` before, ``ceil`` after), so border patches are smaller.

    Returns
    -------
    ids : np.ndarray
        int64 ``(P,)``, the patch index of each pixel in raster order.
    count : int
        The number of patches.
    """
    index = np.zeros(spatial, dtype=np.int64)
    count = 1
    for axis, size in enumerate(spatial):
        pad = (-size) % patch_size
        cells = (np.arange(size) + pad // 2) // patch_size
        per_axis = (size + pad) // patch_size
        shape = [1] * len(spatial)
        shape[axis] = size
        index = index * per_axis + cells.reshape(shape)
        count *= per_axis
    return index.reshape(-1), count


def region_perturbation_curve(model: Any, inputs: Any, maps: Any, targets: Any = None, *,
                              patch_size: int = 8, regions: int | None = 100,
                              order: str = "morf", baseline: Any = "zeros",
                              blur_sigma: float = 5.0, seed: int = 0, backend: Any = None,
                              batch_size: int = 32, output: Any = None) -> Curve:
    """Region perturbation (Samek, Binder, Montavon, Lapuschkin and Müller, "Evaluating the
    Visualization of What a Deep Neural Network Has Learned", IEEE TNNLS 2017).

    The input is cut into non-overlapping ``patch_size`` patches (:func:`patch_grid`); the
    patches are ordered by the sum of the map over them, and replaced by ``baseline`` one more
    at a time, ``regions`` steps, the target score measured after each. Samek et al. replaced
    a 9x9 neighbourhood of each pixel in turn (overlapping) by uniform noise; the grid of
    patches is Quantus's ``RegionPerturbation``, whose curve is ``scores[:, :1] - scores[:,
    1:]`` here.

    Parameters
    ----------
    patch_size : int
        Side of the patches in pixels (every spatial axis).
    regions : int, optional
        Number of steps; at most the number of patches; None: all of them.
    order : str
        ``"morf"`` (most relevant first), ``"lerf"`` (least relevant first) or ``"random"``
        (a permutation per sample, seeded from ``seed`` and the sample's index: a baseline
        to compare with). Ties are broken by patch position.
    baseline : str or np.ndarray
        See :func:`make_baseline`; an array (e.g. uniform noise as Samek et al.) works too.

    Returns
    -------
    Curve
        ``fractions (K + 1,)``, the fraction of the patches replaced (0 = intact input), and
        ``scores (N, K + 1)``.
    """
    order = _check_order(order, ("morf", "lerf", "random"))
    patch_size = check_positive_int(patch_size, "patch_size")
    s = _setup(model, inputs, maps, targets, backend, batch_size, output)
    ids, count = patch_grid(s.spatial, patch_size)
    steps = count if regions is None else min(check_positive_int(regions, "regions"), count)
    flat = s.maps.reshape(s.n, -1).astype(np.float64)
    offsets = np.arange(s.n)[:, None] * count
    sums = np.bincount((ids[None, :] + offsets).ravel(), weights=flat.ravel(),
                       minlength=s.n * count).reshape(s.n, count)
    if order == "random":
        ranked = np.stack([np.random.default_rng([seed, i]).permutation(count)
                           for i in range(s.n)]) if s.n else np.zeros((0, count), np.int64)
    else:
        ranked = np.argsort(-sums if order == "morf" else sums, axis=1, kind="stable")
    patch_rank = np.empty_like(ranked)
    np.put_along_axis(patch_rank, ranked, np.arange(count)[None, :], axis=1)
    pixel_rank = patch_rank[:, ids]  # (N, P): the step at which each pixel is replaced
    base = make_baseline(s.x, s.layout, len(s.spatial), baseline, blur_sigma)
    points = steps + 1

    def build(items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        samples, k = np.divmod(items, points)
        keep = pixel_rank[samples] >= k[:, None]
        masks = keep.reshape((len(items), *s.spatial)).astype(np.float32)
        return blend(s.x[samples], masks, s.layout, base[samples]), samples

    scores = s.scores_of(s.n * points, build).reshape(s.n, points)
    return Curve(np.arange(points) / count, scores)


def region_perturbation(model: Any, inputs: Any, maps: Any, targets: Any = None,
                        **kwargs: Any) -> np.ndarray:
    """AOPC, the area over the region-perturbation curve, per sample (Samek et al. 2017)::

        AOPC = 1 / (K + 1) * sum_{k=0}^{K} (f(x) - f(x_k))

    with ``x_k`` the input after ``k`` regions were replaced. MoRF: a faithful map makes the
    score fall fast, **higher is better**; LeRF: lower is better. Arguments as
    :func:`region_perturbation_curve`.

    Returns
    -------
    np.ndarray
        float32 ``(N,)``.
    """
    scores = region_perturbation_curve(model, inputs, maps, targets, **kwargs).scores
    return (scores[:, 0] - scores.mean(axis=1)).astype(np.float32)
