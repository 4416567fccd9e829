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
    """``sum_o w_o v[i + o]`` over ROAD's 8 neighbours, zero outside: ``(..., H, W)``.

    With the weights 1/6 (axes) and 1/12 (diagonals) this is ``(box + cross - 2 v) / 12``,
    ``box`` the 3x3 sum and ``cross`` the sum of the pixel and its 4 axial neighbours, built
    from shifted in-place additions (about a dozen passes over ``v`` instead of 8 weighted
    shifted copies).
    """
    col = v.copy()  # the vertical 3-sum
    col[..., 1:, :] += v[..., :-1, :]
    col[..., :-1, :] += v[..., 1:, :]
    out = col.copy()  # the 3x3 box
    out[..., :, 1:] += col[..., :, :-1]
    out[..., :, :-1] += col[..., :, 1:]
    out += col  # plus the cross: the vertical 3-sum and the two horizontal neighbours
    out[..., :, 1:] += v[..., :, :-1]
    out[..., :, :-1] += v[..., :, 1:]
    out -= v
    out -= v
    out *= 1.0 / 12.0
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
    imputed = _solve_imputation(x.reshape(k * c, h, w), np.repeat(u[:, 0], c, axis=0), tol,
                                max_iter if max_iter is not None else 4 * (h + w) + 50)
    v = imputed.reshape(k, c, h, w)
    if rngs is None:
        rngs = [np.random.default_rng(i) for i in range(k)]
    eps = np.stack([g.standard_normal((c, h, w)) for g in rngs]) if noise else 0.0
    return (x * (1.0 - u) + u * (v + noise * eps)).astype(np.float32)


def _solve_imputation(x: np.ndarray, u: np.ndarray, tol: float, max_iter: int) -> np.ndarray:
    """Jacobi-preconditioned conjugate gradients on ROAD's system, one per image plane.

    ``x``, ``u``: ``(S, H, W)`` float64 planes and their removed-pixel indicators. Planes that
    have converged leave the working set, so a batch costs what its planes need, not what its
    slowest one needs.
    """
    diag = _neighbour_sum(np.ones((1, *x.shape[1:])))  # in-image neighbour weight, >= 1/3
    inv_diag = 1.0 / diag
    b = u * _neighbour_sum(x * (1.0 - u))
    out = np.zeros_like(x)
    active = np.arange(len(x))
    v = np.zeros_like(x)
    r = b
    z = r * inv_diag
    p = z.copy()
    rz = np.einsum("shw,shw->s", r, z)
    limit = tol * np.maximum(np.sqrt(np.einsum("shw,shw->s", b, b)), 1e-30)
    for step in range(max_iter + 1):
        done = np.sqrt(np.einsum("shw,shw->s", r, r)) <= limit
        if done.any():
            out[active[done]] = v[done]
            keep = ~done
            active, u, v, r, p, rz, limit = (a[keep] for a in (active, u, v, r, p, rz, limit))
        if not len(active) or step == max_iter:
            break
        ap = _neighbour_sum(u * p)
        np.subtract(diag * p, ap, out=ap)
        ap *= u
        pap = np.einsum("shw,shw->s", p, ap)
        alpha = np.divide(rz, pap, out=np.zeros_like(rz), where=pap > 0)[:, None, None]
        v += alpha * p
        r -= alpha * ap
        z = r * inv_diag
        rz_new = np.einsum("shw,shw->s", r, z)
        beta = np.divide(rz_new, rz, out=np.zeros_like(rz), where=rz > 0)[:, None, None]
        p *= beta
        p += z
        rz = rz_new
    out[active] = v  # any plane still short of tol after max_iter
    return out


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

    # items run percentage by percentage, so that a batch holds one percentage: holes of one
    # size converge in about the same number of iterations
    def build(items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        steps, samples = np.divmod(items, s.n)
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

    return np.ascontiguousarray(s.scores_of(s.n * points, build).reshape(points, s.n).T)


def road_combined(model: Any, inputs: Any, maps: Any, targets: Any = None, **kwargs: Any
                  ) -> np.ndarray:
    """``(mean LeRF score - mean MoRF score) / 2`` per sample, as pytorch-grad-cam's
    ``ROADCombined``; higher is better. Arguments as :func:`road`. ``(N,)`` float32."""
    lerf = road(model, inputs, maps, targets, order="lerf", **kwargs).mean(axis=1)
    morf = road(model, inputs, maps, targets, order="morf", **kwargs).mean(axis=1)
    return ((lerf - morf) / 2).astype(np.float32)
