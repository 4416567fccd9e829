"""ROAD: RemOve And Debias (Rong et al., ICML 2022), with noisy linear imputation."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from interp_core.metrics._common import _order, _setup

#: ROAD's neighbour weights (Rong et al. 2022): 1/6 along the axes, 1/12 on the diagonals.
ROAD_NEIGHBOURS: tuple[tuple[tuple[int, int], float], ...] = tuple(
    ((dy, dx), 1 / 6 if dy == 0 or dx == 0 else 1 / 12)
    for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)
)
ROAD_PERCENTAGES = (10, 20, 30, 40, 50, 60, 70, 80, 90)


def _neighbour_sum(v: np.ndarray) -> np.ndarray:
    """``sum_o w_o v[i + o]`` over ROAD's 8 neighbours, zero outside: ``(..., H, W)``."""
    h, w = v.shape[-2:]
    pad = np.zeros((*v.shape[:-2], h + 2, w + 2), dtype=v.dtype)
    pad[..., 1:-1, 1:-1] = v
    out = np.zeros_like(v)
    for (dy, dx), weight in ROAD_NEIGHBOURS:
        out += weight * pad[..., 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]
    return out


def noisy_linear_imputation(images: np.ndarray, removed: np.ndarray, *, noise: float = 0.01,
                            rngs: Sequence[np.random.Generator] | None = None,
                            tol: float = 1e-7, max_iter: int | None = None) -> np.ndarray:
    """ROAD's noisy linear imputation (Rong et al., ICML 2022), for 2-D images.

    Each removed pixel takes the weighted mean of its 8 neighbours (weights 1/6 along the
    axes, 1/12 on the diagonals, only neighbours inside the image), which couples the removed
    pixels into one sparse, symmetric positive-definite linear system per image and channel::

        sum_j w_ij * x_i - sum_{j removed} w_ij * x_j = sum_{j kept} w_ij * x_j

    solved here by Jacobi-preconditioned conjugate gradients on the 8-neighbour stencil,
    vectorised over images and channels (no sparse-matrix library); then Gaussian noise of
    standard deviation ``noise`` is added to the imputed pixels. With every pixel removed the
    system has no data: imputed pixels are 0 plus noise.

    Parameters
    ----------
    images : np.ndarray
        ``(K, C, H, W)``, channels first.
    removed : np.ndarray
        bool ``(K, H, W)``, the pixels to impute.
    noise : float
        Absolute noise level (ROAD: 0.01).
    rngs : sequence of np.random.Generator, optional
        One generator per image (so that results do not depend on how images are batched);
        default: ``np.random.default_rng(i)`` for image ``i``.
    tol : float
        Stop when every residual norm is below ``tol`` times its right-hand side's norm.
    max_iter : int, optional
        Default ``4 * (H + W) + 50``.

    Returns
    -------
    np.ndarray
        float32 ``(K, C, H, W)``: kept pixels unchanged, removed pixels imputed.
    """
    x = np.asarray(images, dtype=np.float64)
    if x.ndim != 4 or removed.shape != (x.shape[0], *x.shape[2:]):
        raise ValueError(
            f"images must be (K, C, H, W) and removed (K, H, W); got {x.shape} and "
            f"{removed.shape}"
        )
    k, c, h, w = x.shape
    u = np.asarray(removed, dtype=np.float64)[:, None]  # (K, 1, H, W)
    diag = _neighbour_sum(np.ones((1, 1, h, w)))  # in-image neighbour weight per pixel
    b = u * _neighbour_sum(x * (1.0 - u))

    def apply(v: np.ndarray) -> np.ndarray:
        return u * (diag * v - _neighbour_sum(u * v))

    v = np.zeros_like(x)
    r = b.copy()
    z = r / diag
    p = z.copy()
    rz = (r * z).sum(axis=(2, 3), keepdims=True)
    b_norm = np.sqrt((b * b).sum(axis=(2, 3), keepdims=True))
    limit = tol * np.maximum(b_norm, 1e-30)
    for _ in range(max_iter if max_iter is not None else 4 * (h + w) + 50):
        if (np.sqrt((r * r).sum(axis=(2, 3), keepdims=True)) <= limit).all():
            break
        ap = apply(p)
        pap = (p * ap).sum(axis=(2, 3), keepdims=True)
        alpha = np.divide(rz, pap, out=np.zeros_like(rz), where=pap > 0)
        v += alpha * p
        r -= alpha * ap
        z = r / diag
        rz_new = (r * z).sum(axis=(2, 3), keepdims=True)
        beta = np.divide(rz_new, rz, out=np.zeros_like(rz), where=rz > 0)
        p = z + beta * p
        rz = rz_new
    if rngs is None:
        rngs = [np.random.default_rng(i) for i in range(k)]
    eps = np.stack([g.standard_normal((c, h, w)) for g in rngs]) if noise else 0.0
    return (x * (1.0 - u) + u * (v + noise * eps)).astype(np.float32)


def road(model: Any, inputs: Any, maps: Any, targets: Any = None, *, order: str = "morf",
         percentages: Sequence[float] = ROAD_PERCENTAGES, noise: float = 0.01, seed: int = 0,
         backend: Any = None, batch_size: int = 32, output: Any = None) -> np.ndarray:
    """ROAD, RemOve And Debias (Rong et al., "A Consistent and Efficient Evaluation Strategy
    for Attribution Methods", ICML 2022).

    For each percentage ``p``, the ``round(p% * H * W)`` most salient pixels (``order="morf"``,
    most relevant first) or least salient ones (``"lerf"``) are removed and filled by
    :func:`noisy_linear_imputation`, which leaks less of the removed shape to the model than a
    constant fill; the imputed input is scored. MoRF scores should fall fast (lower is
    better), LeRF scores stay high (higher is better); :func:`road_combined` merges both.
    Only 2-D inputs. Noise is seeded per sample and percentage from ``seed``.

    Returns
    -------
    np.ndarray
        float32 ``(N, len(percentages))``, the target score of each imputed input; the mean
        over axis 1 is pytorch-grad-cam's ``ROAD*Average`` up to the original score.
    """
    if order not in ("morf", "lerf"):
        raise ValueError(f"order={order!r} must be 'morf' (most relevant first) or 'lerf'")
    pct = np.asarray(percentages, dtype=np.float64)
    if pct.ndim != 1 or pct.size == 0 or (pct < 0).any() or (pct > 100).any():
        raise ValueError(f"percentages must be a non-empty sequence in [0, 100], got {percentages}")
    s = _setup(model, inputs, maps, targets, backend, batch_size, output)
    if len(s.spatial) != 2:
        raise ValueError(f"ROAD's imputation is defined for 2-D images, got spatial {s.spatial}")
    pixels = int(np.prod(s.spatial))
    counts = np.round(pct / 100.0 * pixels).astype(np.int64)
    ranks = _order(s.maps)
    points = len(counts)

    def build(items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        samples, steps = np.divmod(items, points)
        rank = ranks[samples]
        cut = counts[steps][:, None]
        gone = rank < cut if order == "morf" else rank >= pixels - cut
        removed = gone.reshape((len(items), *s.spatial))
        x = s.x[samples].astype(np.float32)
        if s.layout == "channels_last":
            x = np.moveaxis(x, -1, 1)
        elif s.layout == "none":
            x = x[:, None]
        rngs = [np.random.default_rng([seed, int(i), int(j)]) for i, j in zip(samples, steps,
                                                                               strict=True)]
        filled = noisy_linear_imputation(x, removed, noise=noise, rngs=rngs)
        if s.layout == "channels_last":
            filled = np.moveaxis(filled, 1, -1)
        elif s.layout == "none":
            filled = filled[:, 0]
        return filled, samples

    return s.scores_of(s.n * points, build).reshape(s.n, points)


def road_combined(model: Any, inputs: Any, maps: Any, targets: Any = None, **kwargs: Any
                  ) -> np.ndarray:
    """``(mean LeRF score - mean MoRF score) / 2`` per sample, as pytorch-grad-cam's
    ``ROADCombined``; higher is better. Arguments as :func:`road`. ``(N,)`` float32."""
    lerf = road(model, inputs, maps, targets, order="lerf", **kwargs).mean(axis=1)
    morf = road(model, inputs, maps, targets, order="morf", **kwargs).mean(axis=1)
    return ((lerf - morf) / 2).astype(np.float32)
