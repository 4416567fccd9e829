"""Shared set-up of the model-based metrics: inputs, layout, pinned targets, baselines."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from interp_core.backend.inputs import check_batch, check_batch_size
from interp_core.backend.layout import CHANNELS_FIRST, infer_layout
from interp_core.backend.protocol import scoring_session
from interp_core.backend.registry import get_backend
from interp_core.backend.target_spec import TargetSpec, fixed_targets, resolve_targets
from interp_core.imaging import gaussian_blur


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
        # the adapter's faster stand-in for many forward-only scorings, where it has one
        # (torch: BatchNorms folded into the convolutions); the same function to float32
        # rounding, dropped when the block ends
        with scoring_session(self.backend, self.model):
            for start in range(0, count, self.batch_size):
                items = np.arange(start, min(start + self.batch_size, count))
                batch, samples = build(items)
                out[items] = self.predict(batch, samples)
        return out

    def original_scores(self) -> np.ndarray:
        """Target scores of the unperturbed inputs, ``(N,)``."""
        return self.scores_of(self.n, lambda items: (self.x[items], items))


def _check_maps(maps: Any, n: int | None = None) -> np.ndarray:
    try:
        maps = np.asarray(maps, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"maps must be a numeric array (N, *spatial), got "
                        f"{type(maps).__name__}: {exc}") from exc
    if maps.ndim < 2:
        raise ValueError(f"maps must be (N, *spatial), got shape {maps.shape}")
    if n is not None and len(maps) != n:
        raise ValueError(f"maps has {len(maps)} samples but the inputs have {n}")
    if not np.isfinite(maps).all():
        raise ValueError("maps contain NaN or infinite values")
    return maps


def _setup(model: Any, inputs: Any, maps: Any, targets: Any, backend: Any, batch_size: int,
           output: Any) -> _Setup:
    check_batch(inputs)
    impl = get_backend(backend if backend is not None else model)
    x = np.asarray(impl.to_numpy(inputs))
    maps = _check_maps(maps, len(x))
    layout = infer_layout(x, maps.shape[1:], impl, model)
    bs = check_batch_size(batch_size)
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


def _order(maps: np.ndarray, most_first: bool = True) -> np.ndarray:
    """Rank of each pixel, 0 = most salient (``most_first``) or least salient; ties broken by
    position. ``(N, P)`` int64."""
    flat = maps.reshape(len(maps), -1)
    order = np.argsort(-flat if most_first else flat, axis=1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(flat.shape[1])[None, :], axis=1)
    return ranks


def _check_order(order: Any, allowed: tuple[str, ...] = ("morf", "lerf")) -> str:
    if order not in allowed:
        names = {"morf": "'morf' (most relevant first)", "lerf": "'lerf' (least relevant first)",
                 "random": "'random'"}
        raise ValueError(f"order={order!r} must be " + " or ".join(names[a] for a in allowed))
    return str(order)


# -- baselines -------------------------------------------------------------------------------
def _spatial_axes(layout: str, ndim: int, k: int) -> tuple[int, ...]:
    start = 2 if layout == CHANNELS_FIRST else 1
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
