"""Faithfulness: deletion and insertion curves, pixel-flipping, Average Drop, Increase in
Confidence."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from interp_core.imaging import blend
from interp_core.metrics._common import _check_order, _order, _setup, make_baseline


@dataclass(frozen=True)
class Curve:
    """A deletion or insertion curve per sample.

    Attributes
    ----------
    fractions : np.ndarray
        float64 ``(K,)``, the fraction of pixels removed (deletion) or inserted (insertion),
        from 0 to 1.
    scores : np.ndarray
        float32 ``(N, K)``, the target score at each fraction.
    """

    fractions: np.ndarray
    scores: np.ndarray

    @property
    def auc(self) -> np.ndarray:
        """Area under each curve over ``fractions`` in [0, 1] (trapezoid rule), ``(N,)``."""
        s = self.scores.astype(np.float64)
        dx = np.diff(self.fractions)
        return ((s[:, 1:] + s[:, :-1]) * 0.5 * dx).sum(axis=1).astype(np.float32)


def _curve(kind: str, model: Any, inputs: Any, maps: Any, targets: Any, *, step: int | None,
           baseline: Any, blur_sigma: float, backend: Any, batch_size: int,
           output: Any, order: str = "morf") -> Curve:
    order = _check_order(order)
    s = _setup(model, inputs, maps, targets, backend, batch_size, output)
    pixels = int(np.prod(s.spatial))
    if step is None:
        step = max(1, round(math.sqrt(pixels)))
    if isinstance(step, bool) or not isinstance(step, int | np.integer) or step < 1:
        raise ValueError(f"step must be a positive number of pixels, got {step!r}")
    counts = np.minimum(np.arange(0, pixels + step, step), pixels)
    counts = np.unique(counts)
    base = make_baseline(s.x, s.layout, len(s.spatial), baseline, blur_sigma)
    ranks = _order(s.maps, most_first=order == "morf")
    points = len(counts)

    def build(items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        samples, steps = np.divmod(items, points)
        changed = ranks[samples] < counts[steps][:, None]  # the first `count` most salient
        keep = ~changed if kind == "deletion" else changed
        masks = keep.reshape((len(items), *s.spatial)).astype(np.float32)
        return blend(s.x[samples], masks, s.layout, base[samples]), samples

    scores = s.scores_of(s.n * points, build).reshape(s.n, points)
    return Curve(counts / pixels, scores)


def deletion_curve(model: Any, inputs: Any, maps: Any, targets: Any = None, *,
                   step: int | None = None, baseline: Any = "zeros", blur_sigma: float = 5.0,
                   backend: Any = None, batch_size: int = 32, output: Any = None) -> Curve:
    """Deletion curve (Petsiuk et al., "RISE", BMVC 2018).

    Pixels are removed (replaced by ``baseline``) in order of decreasing saliency, ``step``
    pixels at a time, and the target score is measured after each step, from the intact
    input (fraction 0) to the all-baseline input (fraction 1). A faithful map makes the score
    fall fast: lower area is better. Ties in the map are broken by pixel position.

    Parameters
    ----------
    step : int, optional
        Pixels removed per step; default ``round(sqrt(H * W))`` (RISE: 224 on 224x224).
    baseline : str or np.ndarray
        See :func:`make_baseline`; RISE deletes to ``"zeros"``.
    blur_sigma : float
        Sigma in pixels of the ``"blur"`` baseline.

    Returns
    -------
    Curve
        ``fractions (K,)`` and ``scores (N, K)``; ``.auc`` gives the per-sample area.
    """
    return _curve("deletion", model, inputs, maps, targets, step=step, baseline=baseline,
                  blur_sigma=blur_sigma, backend=backend, batch_size=batch_size, output=output)


def insertion_curve(model: Any, inputs: Any, maps: Any, targets: Any = None, *,
                    step: int | None = None, baseline: Any = "blur", blur_sigma: float = 5.0,
                    backend: Any = None, batch_size: int = 32, output: Any = None) -> Curve:
    """Insertion curve (Petsiuk et al., "RISE", BMVC 2018).

    Starting from ``baseline`` (RISE: a blurred copy), the input's pixels are inserted in order
    of decreasing saliency, ``step`` at a time, and the target score is measured after each
    step, up to the intact input. A faithful map makes the score rise fast: higher area is
    better. Arguments as :func:`deletion_curve`.
    """
    return _curve("insertion", model, inputs, maps, targets, step=step, baseline=baseline,
                  blur_sigma=blur_sigma, backend=backend, batch_size=batch_size, output=output)


def pixel_flipping_curve(model: Any, inputs: Any, maps: Any, targets: Any = None, *,
                         step: int | None = None, order: str = "morf", baseline: Any = "zeros",
                         blur_sigma: float = 5.0, backend: Any = None, batch_size: int = 32,
                         output: Any = None) -> Curve:
    """Pixel-flipping (Bach et al., "On Pixel-Wise Explanations for Non-Linear Classifier
    Decisions by Layer-Wise Relevance Propagation", PLoS ONE 2015).

    Pixels (all channels) are replaced by ``baseline`` in order of relevance, ``step`` at a
    time, and the target score is measured after each step. ``order="morf"`` (most relevant
    first) is :func:`deletion_curve`: the score should fall fast, a lower area is better;
    ``order="lerf"`` flips the least relevant first: the score should stay high, a higher
    area is better. Ties are broken by pixel position.

    Quantus's ``PixelFlipping`` returns ``scores[:, 1:]`` (no intact point) and, as its "AUC",
    ``np.trapz(scores[:, 1:], axis=1)`` over step indices; on a ``C``-channel input its
    ``features_in_step`` counts values, so ``features_in_step = C * step``.

    Parameters
    ----------
    step : int, optional
        Pixels per step; default ``round(sqrt(H * W))``. Bach et al. flip one at a time
        (``step=1``: ``H * W + 1`` forward passes per sample).
    order : str
        ``"morf"`` or ``"lerf"``.
    baseline : str or np.ndarray
        See :func:`make_baseline`.

    Returns
    -------
    Curve
        ``fractions (K,)`` of pixels flipped, 0 to 1, and ``scores (N, K)``; ``.auc`` gives
        the per-sample area over the fractions.
    """
    return _curve("deletion", model, inputs, maps, targets, step=step, baseline=baseline,
                  blur_sigma=blur_sigma, backend=backend, batch_size=batch_size, output=output,
                  order=order)


def pixel_flipping(model: Any, inputs: Any, maps: Any, targets: Any = None, **kwargs: Any
                   ) -> np.ndarray:
    """Area under the pixel-flipping curve per sample, ``(N,)`` float32 (MoRF: lower is
    better; LeRF: higher is better); see :func:`pixel_flipping_curve`."""
    return pixel_flipping_curve(model, inputs, maps, targets, **kwargs).auc


def deletion(model: Any, inputs: Any, maps: Any, targets: Any = None, **kwargs: Any
             ) -> np.ndarray:
    """Deletion AUC per sample, ``(N,)`` float32 (lower is better); see :func:`deletion_curve`."""
    return deletion_curve(model, inputs, maps, targets, **kwargs).auc


def insertion(model: Any, inputs: Any, maps: Any, targets: Any = None, **kwargs: Any
              ) -> np.ndarray:
    """Insertion AUC per sample, ``(N,)`` float32 (higher is better); see
    :func:`insertion_curve`."""
    return insertion_curve(model, inputs, maps, targets, **kwargs).auc


# -- Average Drop and Increase in Confidence ---------------------------------------------------
def _masked_and_original(model: Any, inputs: Any, maps: Any, targets: Any, backend: Any,
                         batch_size: int, output: Any) -> tuple[np.ndarray, np.ndarray]:
    s = _setup(model, inputs, maps, targets, backend, batch_size, output)
    if (s.maps < 0).any() or (s.maps > 1).any():
        raise ValueError("maps must be in [0, 1]: they multiply the input as soft masks")

    def original(items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return s.x[items], items

    def masked(items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return blend(s.x[items], s.maps[items], s.layout), items

    return s.scores_of(s.n, original), s.scores_of(s.n, masked)


def average_drop(model: Any, inputs: Any, maps: Any, targets: Any = None, *,
                 backend: Any = None, batch_size: int = 32, output: Any = None) -> np.ndarray:
    """Drop in confidence per sample (Chattopadhay et al., "Grad-CAM++", WACV 2018).

    ``drop = max(Y - O, 0) / Y``, where ``Y`` is the target score of the input and ``O`` that
    of the input multiplied by the map (the map as a soft mask). Average Drop is the mean over
    samples (the paper reports it in percent); lower is better. The relative form needs
    ``Y > 0`` (probabilities, see the module docstring): samples with ``Y <= 0`` give NaN and
    a warning.

    Returns
    -------
    np.ndarray
        float32 ``(N,)``.
    """
    y, o = _masked_and_original(model, inputs, maps, targets, backend, batch_size, output)
    bad = y <= 0
    if bad.any():
        warnings.warn(
            f"average_drop: target scores {y[bad].tolist()} of samples "
            f"{np.flatnonzero(bad).tolist()} are <= 0, so the relative drop is undefined (NaN); "
            "score probabilities, e.g. output= a softmax", RuntimeWarning, stacklevel=2,
        )
    with np.errstate(divide="ignore", invalid="ignore"):
        drop = np.maximum(y - o, 0) / y
    return np.where(bad, np.nan, drop).astype(np.float32)


def increase_in_confidence(model: Any, inputs: Any, maps: Any, targets: Any = None, *,
                           backend: Any = None, batch_size: int = 32, output: Any = None
                           ) -> np.ndarray:
    """Whether the map-masked input scores higher than the input (Chattopadhay et al. 2018).

    ``increase = O > Y`` with ``Y``, ``O`` as in :func:`average_drop`; the "Increase in
    Confidence" is the fraction of samples where it holds (higher is better).

    Returns
    -------
    np.ndarray
        bool ``(N,)``.
    """
    y, o = _masked_and_original(model, inputs, maps, targets, backend, batch_size, output)
    return o > y
