"""Faithfulness and localisation metrics for saliency maps, framework-agnostic.

Faithfulness metrics perturb the input where a map says it matters and score the perturbed
inputs with the backend's batched, forward-only ``predict`` (any adapter works); localisation
metrics compare maps with ground-truth boxes or masks and need no model. Every metric returns
one value per sample.

Common arguments of the model-based metrics:

model, inputs
    The model and its native input ``(N, C, *S)`` or ``(N, *S, C)`` (a framework tensor or
    NumPy array); the channel axis is found as in
    :func:`interp_core.methods.perturbation.input_layout`.
maps
    ``(N, *S)`` saliency maps at the input's spatial size, values in [0, 1] (``cam(x)``).
targets
    As for the methods (``None`` is each sample's top-1 class *on the unperturbed input*: the
    class is pinned, so perturbed inputs are scored for the same class).
backend, output
    As for the methods; ``backend=None`` detects it from the model.
batch_size
    Perturbed inputs per forward pass; memory holds at most that many copies of one input.
    Results do not depend on it.

Scores are whatever the target scores (logits for class targets). The papers use class
probabilities: give a model that ends in a softmax, or ``output=`` a callable that applies one
(torch: ``output=lambda o: o.softmax(-1)``).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from interp_core.methods import method_class
from interp_core.methods.perturbation import _check_batch_size, blend, fixed_targets, input_layout
from interp_core.registry import get_backend
from interp_core.targets import TargetSpec, resolve_targets

#: ROAD's neighbour weights (Rong et al. 2022): 1/6 along the axes, 1/12 on the diagonals.
ROAD_NEIGHBOURS: tuple[tuple[tuple[int, int], float], ...] = tuple(
    ((dy, dx), 1 / 6 if dy == 0 or dx == 0 else 1 / 12)
    for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)
)
ROAD_PERCENTAGES = (10, 20, 30, 40, 50, 60, 70, 80, 90)


# -- shared set-up -----------------------------------------------------------------------------
@dataclass
class _Setup:
    backend: Any
    model: Any
    x: np.ndarray  # native layout, NumPy
    maps: np.ndarray  # (N, *S) float32
    layout: str
    spec: TargetSpec  # top-1 pinned
    batch_size: int
    output: Any

    @property
    def n(self) -> int:
        return len(self.maps)

    @property
    def spatial(self) -> tuple[int, ...]:
        return tuple(self.maps.shape[1:])

    def predict(self, batch: np.ndarray, samples: np.ndarray) -> np.ndarray:
        """Scores of perturbed copies ``batch`` of the samples ``samples`` (one forward)."""
        native = self.backend.from_numpy(np.asarray(batch), self.model)
        return np.asarray(self.backend.predict(
            self.model, native, self.spec.take(np.asarray(samples)),
            batch_size=self.batch_size, output=self.output,
        ), dtype=np.float32)

    def scores_of(self, count: int, build: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
                  ) -> np.ndarray:
        """Score ``count`` perturbed inputs built ``batch_size`` at a time.

        ``build(items) -> (batch, samples)``: the perturbed inputs of item indices ``items``
        and the sample each one comes from.
        """
        out = np.empty(count, dtype=np.float32)
        for start in range(0, count, self.batch_size):
            items = np.arange(start, min(start + self.batch_size, count))
            batch, samples = build(items)
            out[items] = self.predict(batch, samples)
        return out


def _check_maps(maps: Any, n: int | None = None) -> np.ndarray:
    maps = np.asarray(maps, dtype=np.float32)
    if maps.ndim < 2:
        raise ValueError(f"maps must be (N, *spatial), got shape {maps.shape}")
    if n is not None and len(maps) != n:
        raise ValueError(f"maps has {len(maps)} samples but the inputs have {n}")
    if not np.isfinite(maps).all():
        raise ValueError("maps contain NaN or infinite values")
    return maps


def _setup(model: Any, inputs: Any, maps: Any, targets: Any, backend: Any, batch_size: int,
           output: Any) -> _Setup:
    impl = get_backend(backend if backend is not None else model)
    x = np.asarray(impl.to_numpy(inputs))
    maps = _check_maps(maps, len(x))
    layout = input_layout(x, maps.shape[1:], impl, model)
    bs = _check_batch_size(batch_size)
    spec = resolve_targets(targets, len(x))
    if spec.kind == "top1":
        spec = fixed_targets(spec, _top1_classes(impl, model, x, spec, bs, output))
    return _Setup(impl, model, x, maps, layout, spec, bs, output)


def _top1_classes(impl: Any, model: Any, x: np.ndarray, spec: TargetSpec, batch_size: int,
                  output: Any) -> np.ndarray:
    """Each sample's top-1 class on the unperturbed input, from captures of no layer."""
    parts = []
    for start in range(0, len(x), batch_size):
        sl = slice(start, min(start + batch_size, len(x)))
        cap = impl.capture(model, impl.from_numpy(x[sl], model), [], spec.take(sl),
                           gradients=False, output=output)
        parts.append(np.asarray(cap.targets, dtype=np.int64))
    return np.concatenate(parts) if parts else np.zeros(0, np.int64)


def _order(maps: np.ndarray) -> np.ndarray:
    """Rank of each pixel, 0 = most salient; ties broken by position. ``(N, P)`` int64."""
    flat = maps.reshape(len(maps), -1)
    order = np.argsort(-flat, axis=1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(flat.shape[1])[None, :], axis=1)
    return ranks


# -- baselines -------------------------------------------------------------------------------
def gaussian_kernel_matrix(length: int, sigma: float) -> np.ndarray:
    """``(length, length)`` Gaussian smoothing along one axis, truncated at 3 sigma; each row
    is renormalised to sum to 1 (at the borders only the in-image taps count)."""
    if sigma <= 0:
        return np.eye(length, dtype=np.float32)
    idx = np.arange(length)
    d = idx[:, None] - idx[None, :]
    k = np.exp(-0.5 * (d / sigma) ** 2) * (np.abs(d) <= math.ceil(3 * sigma))
    return (k / k.sum(axis=1, keepdims=True)).astype(np.float32)


def gaussian_blur(x: np.ndarray, sigma: float, axes: Sequence[int]) -> np.ndarray:
    """Separable Gaussian blur of ``x`` along ``axes`` (NumPy, no SciPy), float32.

    Parameters
    ----------
    x : np.ndarray
        Any shape.
    sigma : float
        Standard deviation in pixels; 0 returns ``x`` unchanged.
    axes : sequence of int
        The spatial axes.
    """
    out = np.asarray(x, dtype=np.float32)
    for axis in axes:
        axis %= out.ndim
        k = gaussian_kernel_matrix(out.shape[axis], sigma)
        out = np.moveaxis(np.tensordot(out, k, axes=([axis], [1])), -1, axis)
    return np.ascontiguousarray(out)


def _spatial_axes(layout: str, ndim: int, k: int) -> tuple[int, ...]:
    start = 2 if layout == "channels_first" else 1
    return tuple(range(start, start + k))


def make_baseline(x: np.ndarray, layout: str, spatial_ndim: int, baseline: Any,
                  blur_sigma: float = 5.0) -> np.ndarray:
    """The input that replaces removed pixels, native layout, ``x``'s shape.

    Parameters
    ----------
    baseline : str or np.ndarray
        ``"zeros"``; ``"blur"`` (Gaussian blur with ``blur_sigma`` px, as RISE's insertion
        start, which used an 11-tap kernel, sigma about 1.1 px); ``"mean"`` (each sample's
        per-channel spatial mean); or an array of ``x``'s shape or of one sample's shape.
    """
    axes = _spatial_axes(layout, x.ndim, spatial_ndim)
    if isinstance(baseline, np.ndarray):
        if baseline.shape == x.shape:
            return baseline.astype(np.float32)
        if baseline.shape == x.shape[1:]:
            return np.broadcast_to(baseline, x.shape).astype(np.float32)
        raise ValueError(
            f"a baseline array must have the inputs' shape {x.shape} or one sample's shape "
            f"{x.shape[1:]}, got {baseline.shape}"
        )
    if baseline == "zeros":
        return np.zeros(x.shape, dtype=np.float32)
    if baseline == "mean":
        mean = np.asarray(x, dtype=np.float32).mean(axis=axes, keepdims=True)
        return np.broadcast_to(mean, x.shape).astype(np.float32)
    if baseline == "blur":
        return gaussian_blur(x, blur_sigma, axes)
    raise ValueError(f"baseline={baseline!r} must be 'zeros', 'blur', 'mean' or an array")


# -- deletion and insertion --------------------------------------------------------------------
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
           output: Any) -> Curve:
    s = _setup(model, inputs, maps, targets, backend, batch_size, output)
    pixels = int(np.prod(s.spatial))
    if step is None:
        step = max(1, round(math.sqrt(pixels)))
    if isinstance(step, bool) or not isinstance(step, int | np.integer) or step < 1:
        raise ValueError(f"step must be a positive number of pixels, got {step!r}")
    counts = np.minimum(np.arange(0, pixels + step, step), pixels)
    counts = np.unique(counts)
    base = make_baseline(s.x, s.layout, len(s.spatial), baseline, blur_sigma)
    ranks = _order(s.maps)
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


# -- ROAD ------------------------------------------------------------------------------------
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


# -- localisation ----------------------------------------------------------------------------
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


# -- sanity check ----------------------------------------------------------------------------
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
