"""Input-gradient attributions: :class:`InputGradientMethod`, and Saliency, Input x Gradient,
SmoothGrad, Integrated Gradients. (Guided backpropagation, also an input-gradient method, is in
:mod:`~interp_core.methods.guided` with the other guided methods; FullGrad in
:mod:`~interp_core.methods.fullgrad`.)

The adapter only supplies gradients of the target scores with respect to the input
(:meth:`~interp_core.backend.protocol.ScoreInputGradientBackend.score_input_gradients`, the
``"score_input_gradients"`` capability); the noise, the integration path, the quadrature and
the averaging are computed here, in NumPy, with seeded generators, so every framework gets the
same numbers.

Every method returns maps like the CAM family, float32 ``(N, *input_spatial)`` in [0, 1]: the
input-shaped attribution reduced over the input's channel axis (``reduce``), ReLU (a no-op for
the absolute reductions) and min-max scaled per sample. The attribution itself, in the input's
shape and native layout, is ``Explanation.raw["input"]``; Integrated Gradients adds
``raw["convergence_delta"]`` ``(N,)``: ``sum(attribution) - (F(x) - F(baseline))``, the
completeness error of the quadrature (Captum's "convergence delta").

The ``layer`` argument is accepted so that every method takes the same arguments, and ignored:
these methods attribute to the input (``takes_layer = False``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar, Literal

import numpy as np

from interp_core.backend.inputs import check_batch_size, check_positive_int
from interp_core.backend.layout import CHANNELS_FIRST, input_layout
from interp_core.backend.protocol import SCORE_INPUT_GRADIENTS, InputGradients
from interp_core.backend.target_spec import TargetSpec, fixed_targets
from interp_core.methods.catalog import Needs
from interp_core.methods.method import Explanation, Method
from interp_core.methods.postprocess import normalize_minmax
from interp_core.methods.postprocess import relu as relu_map

#: How an input-shaped attribution becomes one value per position.
Reduce = Literal["max-abs", "sum-abs", "sum"]
REDUCTIONS = ("max-abs", "sum-abs", "sum")

#: Integration rules of Integrated Gradients (``riemann_*`` and ``gausslegendre`` as Captum's).
Rule = Literal["gausslegendre", "riemann_left", "riemann_right", "riemann_middle", "trapezoid"]
RULES = ("gausslegendre", "riemann_left", "riemann_right", "riemann_middle", "trapezoid")

#: The key of the input-shaped attribution in ``Explanation.raw``.
INPUT = "input"


def channel_axis(x: np.ndarray, backend: Any, model: Any) -> int | None:
    """The channel axis of a native input batch, or None for ``(N, features)`` inputs."""
    if x.ndim <= 2:
        return None
    return 1 if input_layout(backend, model) == CHANNELS_FIRST else x.ndim - 1


def reduce_channels(attribution: np.ndarray, axis: int | None, how: Reduce) -> np.ndarray:
    """One value per position: ``(N, *spatial)`` float32 from an input-shaped attribution.

    ``"max-abs"``: the largest magnitude over channels (Simonyan et al.'s saliency map);
    ``"sum-abs"``: the sum of magnitudes; ``"sum"``: the signed sum. Without a channel axis
    (``axis=None``) ``"sum"`` keeps the values and the others take magnitudes.
    """
    a = np.asarray(attribution, dtype=np.float32)
    if axis is None:
        return a if how == "sum" else np.abs(a)
    if how == "max-abs":
        return np.abs(a).max(axis=axis)
    if how == "sum-abs":
        return np.abs(a).sum(axis=axis)
    return a.sum(axis=axis)


def input_maps(attribution: np.ndarray, axis: int | None, reduce: Reduce, *,
               relu: bool = True, normalize: bool = True) -> np.ndarray:
    """``(N, *spatial)`` float32 maps from an input-shaped attribution: reduce over channels,
    ReLU, min-max per sample. Samples with a non-finite value get zeros."""
    a = np.asarray(attribution, dtype=np.float32)
    bad = ~np.isfinite(a).reshape(len(a), -1).all(axis=1)
    reduced = reduce_channels(np.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0), axis, reduce)
    reduced[bad] = 0.0
    m = relu_map(reduced) if relu else reduced.astype(np.float32)
    return normalize_minmax(m) if normalize else m


def check_reduce(reduce: str) -> str:
    """``reduce`` if it is one of :data:`REDUCTIONS`; ValueError otherwise."""
    if reduce not in REDUCTIONS:
        raise ValueError(f"reduce={reduce!r} is not one of {REDUCTIONS}")
    return reduce


def check_single_input(method: Method, x: Any) -> None:
    """ValueError where ``x`` is a tuple, list or dict of inputs: attributions to the input
    need one array or tensor."""
    if isinstance(x, tuple | list | dict):
        raise ValueError(
            f"{type(method).__name__} attributes to a single input array or tensor, not a "
            f"{type(x).__name__} of inputs"
        )


class InputGradientMethod(Method):
    """Base of the methods that attribute the target score to the input from its gradients.

    Subclasses set ``name``, ``default_reduce`` (and ``requires`` where they need more than
    ``"score_input_gradients"``) and implement :meth:`attribute`; :meth:`compute` turns the
    attribution into maps (:meth:`attribution_maps`) and the :class:`Explanation`.

    Parameters
    ----------
    model
        As for every method (:class:`~interp_core.methods.method.Method`).
    layer : ignored
        Accepted for a uniform signature; the attribution is at the input.
    reduce : {"max-abs", "sum-abs", "sum"}, optional
        How the input-shaped attribution becomes a map (default: the method's own).
    batch_size : int
        Inputs per forward and backward pass (SmoothGrad and Integrated Gradients run
        ``n_samples`` or ``steps`` copies of each input in as few passes as this allows: 64
        holds one image's 50 path points, so Integrated Gradients on one image is one pass,
        plus a forward-only pass that scores the input and the baseline).
    **kwargs
        ``backend``, ``output``, ``relu``, ``normalize``, ``aug_smooth``: as for every method
        (:class:`~interp_core.methods.method.Method`).

    Raises
    ------
    NotImplementedError
        The backend lacks a capability in ``requires``.
    """

    requires: ClassVar[tuple[str, ...]] = (SCORE_INPUT_GRADIENTS,)
    needs: ClassVar[Needs] = "input gradients"
    takes_layer: ClassVar[bool] = False
    instead: ClassVar[str] = "use a CAM method such as GradCAM"
    default_reduce: ClassVar[Reduce] = "sum-abs"

    def __init__(self, model: Any, layer: Any = None, *, reduce: Reduce | None = None,
                 batch_size: int = 64, **kwargs: Any) -> None:
        super().__init__(model, layer, **kwargs)
        self.reduce: Reduce = check_reduce(reduce or self.default_reduce)  # type: ignore[assignment]
        self.batch_size = check_batch_size(batch_size)

    # -- what subclasses implement ------------------------------------------------------
    def attribute(self, x: Any, x_np: np.ndarray, spec: TargetSpec
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """``(attribution, scores, classes, extra raw arrays)`` for a batch.

        ``attribution``: float32, the input's shape and native layout.
        """
        raise NotImplementedError

    # -- the pipeline -------------------------------------------------------------------
    def compute(self, x: Any, targets: TargetSpec) -> Explanation:
        """:meth:`attribute`, then maps from the attribution (:meth:`attribution_maps`).

        ``raw["input"]`` is the attribution (the input's shape and native layout), with the
        extra arrays :meth:`attribute` returns; ``layers`` is ``["input"]``.
        """
        check_single_input(self, x)
        x_np = np.asarray(self.backend.to_numpy(x))
        attribution, scores, classes, extra = self.attribute(x, x_np, targets)
        attribution = np.asarray(attribution, dtype=np.float32)
        maps = self.attribution_maps(attribution, x_np)
        return Explanation(
            maps=maps, raw={INPUT: attribution, **extra},
            scores=np.asarray(scores, dtype=np.float32),
            targets=np.asarray(classes, dtype=np.int64), layers=[INPUT], method=self.name,
            backend=self.backend.name,
        )

    def attribution_maps(self, attribution: np.ndarray, x_np: np.ndarray) -> np.ndarray:
        """``(N, *spatial)`` maps from an input-shaped attribution (:func:`input_maps`)."""
        return input_maps(attribution, channel_axis(x_np, self.backend, self.model),
                          self.reduce, relu=self.relu, normalize=self.normalize)

    # -- helpers for subclasses ---------------------------------------------------------
    def gradients(self, x: Any, spec: TargetSpec, *, guided: bool = False) -> InputGradients:
        """The backend's gradients of the target scores with respect to ``x``."""
        return self.backend.score_input_gradients(  # type: ignore[attr-defined]
            self.model, x, spec, batch_size=self.batch_size, output=self.output, guided=guided)

    def classes(self, x: Any, spec: TargetSpec) -> tuple[np.ndarray, np.ndarray]:
        """Scores and classes of the unperturbed input, forward only: ``(N,)``, ``(N,)``."""
        capture = self.backend.capture(self.model, x, [], spec, gradients=False,
                                       output=self.output)
        return capture.scores, capture.targets

    def weighted_gradients(self, x_np: np.ndarray, spec: TargetSpec, weights: np.ndarray,
                           make: Callable[[int, int], np.ndarray]
                           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``sum_k weights[k] * grad(copy k)`` over ``len(weights)`` copies of the batch.

        Parameters
        ----------
        x_np : np.ndarray
            The batch ``(N, ...)``, native layout (for its shape).
        spec : TargetSpec
            The targets of one copy (tiled for each pass).
        weights : np.ndarray
            ``(K,)``; a copy of weight 0 is only scored (e.g. the input itself, riding along
            in a pass instead of a pass of its own).
        make : callable
            ``make(start, stop)``: copies ``start..stop-1`` stacked copy-major,
            ``((stop - start) * N, ...)``, native layout; called with increasing ranges.

        Returns
        -------
        total : np.ndarray
            float64, ``x_np``'s shape.
        scores : np.ndarray
            float32 ``(K, N)``, every copy's target scores.
        targets : np.ndarray
            int64 ``(N,)``, the classes of the first copy.
        """
        n, count = len(x_np), len(weights)
        per = max(1, self.batch_size // max(n, 1))
        total = np.zeros(x_np.shape, dtype=np.float64)
        scores = np.empty((count, n), dtype=np.float32)
        targets = None
        for start in range(0, count, per):
            stop = min(start + per, count)
            got = self.gradients(self.backend.from_numpy(make(start, stop), self.model),
                                 spec.tile(stop - start))
            grads = np.asarray(got.gradients, dtype=np.float64).reshape(
                (stop - start, *x_np.shape))
            total += np.tensordot(weights[start:stop], grads, axes=(0, 0))
            scores[start:stop] = np.asarray(got.scores, np.float32).reshape(stop - start, n)
            if targets is None:
                targets = np.asarray(got.targets, np.int64)[:n]
        return total, scores, targets


# -- the methods ------------------------------------------------------------------------------
#: The name this base had before :class:`Method` existed.
InputAttribution = InputGradientMethod


class Saliency(InputGradientMethod):
    """Saliency (Simonyan et al. 2014): ``|dScore/dx|``, the map its maximum over channels.

    ``raw["input"]`` is ``|gradient|`` as Captum's ``Saliency(abs=True)``.
    """

    name = "saliency"
    default_reduce = "max-abs"

    def attribute(self, x: Any, x_np: np.ndarray, spec: TargetSpec
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        got = self.gradients(x, spec)
        return np.abs(got.gradients), got.scores, got.targets, {}


class InputXGradient(InputGradientMethod):
    """Input x Gradient (Shrikumar et al. 2016): ``x * dScore/dx``; the map sums magnitudes
    over channels."""

    name = "inputxgradient"

    def attribute(self, x: Any, x_np: np.ndarray, spec: TargetSpec
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        got = self.gradients(x, spec)
        return x_np.astype(np.float32) * got.gradients, got.scores, got.targets, {}


def noise_sigmas(x: np.ndarray, noise_level: float) -> np.ndarray:
    """SmoothGrad's noise scale per sample: ``noise_level * (max(x_n) - min(x_n))``, ``(N,)``."""
    flat = x.reshape(len(x), -1).astype(np.float64)
    return noise_level * (flat.max(axis=1) - flat.min(axis=1))


class SmoothGrad(InputGradientMethod):
    """SmoothGrad (Smilkov et al. 2017): the gradient averaged over noisy copies of the input.

    Copy ``k`` of sample ``n`` is ``x_n + sigma_n * z`` with ``z`` standard normal noise drawn
    from ``np.random.default_rng(seed)`` (one draw of the whole batch's shape per copy, in copy
    order and channels-last, so the numbers depend neither on ``batch_size`` nor on the
    framework's layout) and
    ``sigma_n = noise_level * (max(x_n) - min(x_n))``, the paper's noise level. Targets are the
    unperturbed input's (top-1 of ``x`` when ``targets`` is None). ``raw["input"]`` is the mean
    gradient (signed); the map takes the largest magnitude over channels, as Saliency.

    Parameters
    ----------
    n_samples : int
        Noisy copies per input (the paper uses 50).
    noise_level : float
        Noise standard deviation as a fraction of each input's value range (0.1 to 0.2 in the
        paper).
    seed : int
        Seed of the noise.
    """

    name = "smoothgrad"
    default_reduce = "max-abs"

    def __init__(self, model: Any, layer: Any = None, *, n_samples: int = 50,
                 noise_level: float = 0.15, seed: int = 0, **kwargs: Any) -> None:
        super().__init__(model, layer, **kwargs)
        n_samples = check_positive_int(n_samples, "n_samples")
        if not math.isfinite(noise_level) or noise_level < 0:
            raise ValueError(f"noise_level must be a finite number >= 0, got {noise_level!r}")
        self.n_samples = n_samples
        self.noise_level = float(noise_level)
        self.seed = int(seed)

    def attribute(self, x: Any, x_np: np.ndarray, spec: TargetSpec
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        base = x_np.astype(np.float32)
        # Top-1 targets need the input's classes before the noisy copies; other targets let
        # the input ride along in the first pass (copy 0, weight 0) for its scores.
        top1 = spec.kind == "top1"
        if top1:
            scores, classes = self.classes(x, spec)
            spec = fixed_targets(spec, classes)
        extra = 0 if top1 else 1
        sigmas = noise_sigmas(base, self.noise_level).reshape((-1,) + (1,) * (base.ndim - 1))
        rng = np.random.default_rng(self.seed)
        axis = channel_axis(base, self.backend, self.model)
        first = axis == 1 and base.ndim > 2
        # Noise is drawn channels-last, in copy order, so that every framework (and every
        # batch_size) gets the same noise at the same pixel and channel.
        canonical = (base.shape[0], *base.shape[2:], base.shape[1]) if first else base.shape

        def make(start: int, stop: int) -> np.ndarray:
            plain = max(0, min(stop, extra) - start)
            noise = rng.standard_normal((stop - start - plain, *canonical))
            if first:
                noise = np.moveaxis(noise, -1, 2)
            noisy = base[None] + sigmas[None] * noise
            copies = np.concatenate([np.broadcast_to(base, (plain, *base.shape)), noisy])
            return copies.astype(np.float32).reshape((-1, *base.shape[1:]))

        weights = np.concatenate([np.zeros(extra), np.full(self.n_samples,
                                                           1.0 / self.n_samples)])
        mean, all_scores, targets = self.weighted_gradients(base, spec, weights, make)
        if not top1:
            scores, classes = all_scores[0], targets
        return mean.astype(np.float32), scores, classes, {}


def integration_rule(rule: Rule, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Points ``alpha`` in [0, 1] and weights of a quadrature of ``int_0^1 f``: ``(steps,)``.

    ``"riemann_left"``, ``"riemann_right"``, ``"riemann_middle"`` and ``"gausslegendre"`` are
    Captum's. ``"trapezoid"`` is the trapezoidal rule on ``steps`` equally spaced points from 0
    to 1 (weights ``1 / (steps - 1)``, halved at both ends); Captum's ``"riemann_trapezoid"``
    uses weights ``1 / steps`` (halved at the ends) on the same points, so its attributions are
    ours times ``(steps - 1) / steps``.
    """
    if rule not in RULES:
        raise ValueError(f"rule={rule!r} is not one of {RULES}")
    if isinstance(steps, bool) or not isinstance(steps, int | np.integer) or steps < 2:
        raise ValueError(f"steps must be an int >= 2, got {steps!r}")
    n = int(steps)
    if rule == "gausslegendre":
        points, weights = np.polynomial.legendre.leggauss(n)
        return 0.5 * (points + 1.0), 0.5 * weights
    if rule == "trapezoid":
        weights = np.full(n, 1.0 / (n - 1))
        weights[[0, -1]] /= 2.0
        return np.linspace(0.0, 1.0, n), weights
    weights = np.full(n, 1.0 / n)
    if rule == "riemann_left":
        return np.linspace(0.0, 1.0 - 1.0 / n, n), weights
    if rule == "riemann_right":
        return np.linspace(1.0 / n, 1.0, n), weights
    return np.linspace(1.0 / (2 * n), 1.0 - 1.0 / (2 * n), n), weights


class IntegratedGradients(InputGradientMethod):
    """Integrated Gradients (Sundararajan et al. 2017).

    ``attribution = (x - x0) * sum_k w_k dScore/dx(x0 + alpha_k (x - x0))`` for the quadrature
    ``(alpha_k, w_k)`` of :func:`integration_rule`, batched (``batch_size`` inputs per pass;
    the input and the baseline are scored in a forward-only pass, without gradients). Targets
    are the input's (top-1 of ``x`` when ``targets`` is None).
    ``raw["convergence_delta"]`` ``(N,)`` is ``sum(attribution) - (F(x) - F(x0))``: zero for an
    exact integral (completeness), so it measures the quadrature's error.

    Parameters
    ----------
    baseline : None, float or array
        ``x0``: None for zeros, a number, or an array broadcastable to the input (native
        layout).
    steps : int
        Quadrature points (Captum's ``n_steps``; 50 by default there and here).
    rule : {"gausslegendre", "riemann_left", "riemann_right", "riemann_middle", "trapezoid"}
        The quadrature; ``"gausslegendre"`` is Captum's default.
    """

    name = "integratedgradients"

    def __init__(self, model: Any, layer: Any = None, *, baseline: Any = None, steps: int = 50,
                 rule: Rule = "gausslegendre", **kwargs: Any) -> None:
        super().__init__(model, layer, **kwargs)
        self.alphas, self.weights = integration_rule(rule, steps)
        self.rule, self.steps = rule, int(steps)
        self.baseline = baseline

    def attribute(self, x: Any, x_np: np.ndarray, spec: TargetSpec
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        end = x_np.astype(np.float32)
        start = self._baseline(end)
        diff = end - start
        n = len(end)
        # F(x) and F(baseline) need no gradient: one forward-only pass of both (a backward
        # through them would cost twice their forward); top-1 targets need the input's
        # classes first, so then the input and the baseline are scored one after the other.
        if spec.kind == "top1":
            scores, classes = self.classes(x, spec)
            spec = fixed_targets(spec, classes)
            start_scores = self._scores(start, spec)
        else:
            both = self._scores(np.concatenate([end, start]), spec.tile(2))
            scores, start_scores = both[:n], both[n:]
            classes = spec.resolved_indices()
        alphas = self.alphas.astype(np.float32)

        def make(a: int, b: int) -> np.ndarray:
            return np.concatenate([start + alphas[k] * diff for k in range(a, b)])

        summed, _, _ = self.weighted_gradients(end, spec, self.weights, make)
        attribution = (diff.astype(np.float64) * summed).astype(np.float32)
        delta = attribution.reshape(len(end), -1).astype(np.float64).sum(axis=1) - (
            np.asarray(scores, np.float64) - np.asarray(start_scores, np.float64))
        return attribution, scores, classes, {"convergence_delta": delta.astype(np.float32)}

    def _scores(self, x_np: np.ndarray, spec: TargetSpec) -> np.ndarray:
        """Target scores of a batch, forward only: float32 ``(len(x_np),)``."""
        return np.asarray(self.backend.predict(
            self.model, self.backend.from_numpy(x_np, self.model), spec,
            batch_size=self.batch_size, output=self.output), dtype=np.float32)

    def _baseline(self, x: np.ndarray) -> np.ndarray:
        if self.baseline is None:
            return np.zeros_like(x)
        b = np.asarray(self.backend.to_numpy(self.baseline), dtype=np.float32)
        try:
            return np.broadcast_to(b, x.shape).astype(np.float32)
        except ValueError:
            raise ValueError(
                f"baseline of shape {b.shape} does not broadcast to the input's shape "
                f"{x.shape} (native layout); pass a number, one sample's shape or the batch's"
            ) from None
