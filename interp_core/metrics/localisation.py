"""Localisation against boxes or masks: pointing game, energy-based pointing game, Relevance
Rank Accuracy and Relevance Mass Accuracy."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from interp_core.metrics._common import _check_maps


def _regions(maps: np.ndarray, boxes: Any, masks: Any) -> np.ndarray:
    """Ground truth as a bool ``(N, *S)`` mask, from boxes or masks (exactly one given)."""
    if (boxes is None) == (masks is None):
        raise ValueError("pass exactly one of boxes= or masks=")
    n, spatial = len(maps), maps.shape[1:]
    if masks is not None:
        region = np.asarray(masks).astype(bool)
        if region.shape != maps.shape:
            raise ValueError(f"masks have shape {region.shape}, the maps {maps.shape}")
        return region
    b = np.asarray(boxes)
    d = len(spatial)
    if b.shape != (n, 2 * d):
        raise ValueError(
            f"boxes must be (N, {2 * d}) as (starts..., ends...) end-exclusive, e.g. "
            f"(y0, x0, y1, x1) for 2-D maps; got {b.shape} for maps of shape {maps.shape}"
        )
    region = np.ones(maps.shape, dtype=bool)
    for axis in range(d):
        pos = np.arange(spatial[axis]).reshape((1,) * (axis + 1) + (-1,) + (1,) * (d - axis - 1))
        lo = b[:, axis].reshape((n,) + (1,) * d)
        hi = b[:, d + axis].reshape((n,) + (1,) * d)
        region &= (pos >= lo) & (pos < hi)
    return region


def pointing_game(maps: Any, *, boxes: Any = None, masks: Any = None,
                  tolerance: float = 0.0) -> np.ndarray:
    """Pointing game (Zhang et al., "Top-down Neural Attention by Excitation Backprop",
    ECCV 2016).

    A sample is a hit when the map's maximum lies on the object: within ``tolerance`` pixels
    (Euclidean) of the box or mask (the paper uses 15 px). Where several pixels share the
    maximum, a hit needs any of them on the object; a constant map points nowhere and is a
    miss. Accuracy is the mean of the hits.

    Parameters
    ----------
    maps : np.ndarray
        ``(N, *S)``.
    boxes : np.ndarray, optional
        int ``(N, 2 * len(S))``: ``(y0, x0, y1, x1)`` end-exclusive for 2-D (as
        :func:`interp_core.datasets.shapes.make_shapes`).
    masks : np.ndarray, optional
        bool ``(N, *S)`` object masks.
    tolerance : float
        Pixels.

    Returns
    -------
    np.ndarray
        bool ``(N,)``.
    """
    maps = _check_maps(maps)
    region = _regions(maps, boxes, masks)
    n = len(maps)
    flat = maps.reshape(n, -1)
    top = flat == flat.max(axis=1, keepdims=True)
    constant = top.all(axis=1)
    if tolerance <= 0:
        hits = (top & region.reshape(n, -1)).any(axis=1)
        return hits & ~constant
    hits = np.zeros(n, dtype=bool)
    shape = maps.shape[1:]
    for i in np.flatnonzero(~constant):
        points = np.stack(np.unravel_index(np.flatnonzero(top[i]), shape), axis=1)
        target = np.argwhere(region[i])
        if not len(target):
            continue
        for start in range(0, len(points), 256):
            d2 = ((points[start : start + 256, None, :] - target[None]) ** 2).sum(-1)
            if (d2 <= tolerance * tolerance).any():
                hits[i] = True
                break
    return hits


def energy_pointing_game(maps: Any, *, boxes: Any = None, masks: Any = None) -> np.ndarray:
    """Energy-based pointing game (Wang et al., "Score-CAM", CVPR-W 2020).

    ``sum(map inside the object) / sum(map)``: the share of the map's energy on the box or
    mask; 1 is perfect, an uninformative uniform map scores the object's area fraction. An
    all-zero map scores 0. Maps must be non-negative.

    Returns
    -------
    np.ndarray
        float32 ``(N,)`` in [0, 1].
    """
    maps = _check_maps(maps)
    if (maps < 0).any():
        raise ValueError("energy_pointing_game needs non-negative maps (e.g. cam(x) in [0, 1])")
    region = _regions(maps, boxes, masks)
    n = len(maps)
    total = maps.reshape(n, -1).astype(np.float64).sum(axis=1)
    inside = (maps * region).reshape(n, -1).astype(np.float64).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(total > 0, inside / np.where(total > 0, total, 1.0), 0.0)
    return share.astype(np.float32)


def relevance_rank_accuracy(maps: Any, *, boxes: Any = None, masks: Any = None) -> np.ndarray:
    """Relevance Rank Accuracy (Arras, Osman and Samek, "CLEVR-XAI: A benchmark dataset for
    the ground truth evaluation of neural network explanations", Information Fusion 2022).

    With ``K`` the number of ground-truth pixels, the share of the map's ``K`` highest pixels
    that lie on the object: 1 when the top of the map covers the object exactly. Pixels tied
    at the ``K``-th value count in proportion (the expected value over the orders of the
    tie), so a constant map scores ``K / P``, the object's area fraction, whatever the pixel
    order. A sample with an empty object gives NaN and a warning.

    Parameters
    ----------
    maps : np.ndarray
        ``(N, *S)``, signed or not (ranked as given).
    boxes, masks
        The ground truth, as for :func:`pointing_game` (exactly one).

    Returns
    -------
    np.ndarray
        float32 ``(N,)`` in [0, 1].
    """
    maps = _check_maps(maps)
    region = _regions(maps, boxes, masks)
    n = len(maps)
    flat = maps.reshape(n, -1).astype(np.float64)
    inside = region.reshape(n, -1)
    k = inside.sum(axis=1)
    empty = k == 0
    _warn_empty("relevance_rank_accuracy", empty)
    # the K-th highest value of each map (K >= 1 where defined)
    cut = np.sort(flat, axis=1)[np.arange(n), flat.shape[1] - np.maximum(k, 1)][:, None]
    above = flat > cut
    tied = flat == cut
    # the tied pixels fill the K - |above| remaining places, each one equally likely
    hits = (above & inside).sum(axis=1) + (k - above.sum(axis=1)) * (
        (tied & inside).sum(axis=1) / tied.sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(empty, np.nan, hits / np.maximum(k, 1))
    return out.astype(np.float32)


def relevance_mass_accuracy(maps: Any, *, boxes: Any = None, masks: Any = None) -> np.ndarray:
    """Relevance Mass Accuracy (Arras, Osman and Samek, "CLEVR-XAI", Information Fusion 2022).

    ``sum(map inside the object) / sum(map)`` over the map's positive part: the share of the
    positive relevance that lies on the object. For non-negative maps (CAMs) it equals
    :func:`energy_pointing_game`. A map without positive values scores 0; a sample with an
    empty object gives NaN and a warning.

    Parameters
    ----------
    maps : np.ndarray
        ``(N, *S)``; negative values (evidence against the class) count as 0.
    boxes, masks
        The ground truth, as for :func:`pointing_game` (exactly one).

    Returns
    -------
    np.ndarray
        float32 ``(N,)`` in [0, 1].
    """
    maps = _check_maps(maps)
    region = _regions(maps, boxes, masks)
    n = len(maps)
    positive = np.maximum(maps.reshape(n, -1).astype(np.float64), 0.0)
    inside = region.reshape(n, -1)
    empty = ~inside.any(axis=1)
    _warn_empty("relevance_mass_accuracy", empty)
    total = positive.sum(axis=1)
    within = (positive * inside).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(total > 0, within / np.where(total > 0, total, 1.0), 0.0)
    return np.where(empty, np.nan, share).astype(np.float32)


def _warn_empty(name: str, empty: np.ndarray) -> None:
    if empty.any():
        warnings.warn(
            f"{name}: samples {np.flatnonzero(empty).tolist()} have an empty box or mask, "
            "so the metric is undefined there (NaN)", RuntimeWarning, stacklevel=3,
        )
