"""Perturbation methods: channel weights measured by running the model again, forward only.

- :class:`ScoreCAM` (Wang et al. 2020): mask the input with each channel's upsampled,
  min-max-scaled activation map; the channel's weight is the softmax over channels of the
  masked inputs' target scores.
- :class:`AblationCAM` (Desai & Ramaswamy 2020): zero one channel of the layer's output; the
  weight is the relative drop of the target score, ``(orig - ablated) / orig``.

Both agree with pytorch-grad-cam's ``ScoreCAM`` and ``AblationCAM`` by default. They only use
the backend's batched ``predict`` (Score-CAM) and ``patched_scores`` (Ablation-CAM, the
``"activation_patch"`` capability), so they work through every adapter that has them.

Where the input's channel axis is comes from :func:`interp_core.backend.layout.infer_layout`,
the masking from :func:`interp_core.imaging.blend`; both are shared with the metrics.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from interp_core.backend.inputs import check_batch_size
from interp_core.backend.layout import infer_layout
from interp_core.backend.protocol import ACTIVATION_PATCH, scoring_session
from interp_core.backend.target_spec import fixed_targets
from interp_core.imaging import blend
from interp_core.methods.base import ChannelWeightCAM, LayerContext
from interp_core.methods.postprocess import resize_linear

#: Added to the range of each Score-CAM mask before dividing (pytorch-grad-cam's constant).
MASK_EPS = 1e-8


def softmax_rows(scores: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, float64 inside; ``-inf`` entries get weight 0."""
    s = np.asarray(scores, dtype=np.float64)
    s = s - s.max(axis=-1, keepdims=True)
    e = np.exp(s)
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)


# -- Score-CAM -------------------------------------------------------------------------------
def scorecam_masks(activations: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Score-CAM input masks from one sample's channels.

    Parameters
    ----------
    activations : np.ndarray
        ``(K, *layer_spatial)``, K channels of one sample.
    size : sequence of int
        The input's spatial shape.

    Returns
    -------
    np.ndarray
        float32 ``(K, *size)``: each channel resized with ``align_corners=True`` (torch
        ``UpsamplingBilinear2d``, as pytorch-grad-cam) and scaled by
        ``(a - min) / (max - min + 1e-8)``.
    """
    up = resize_linear(activations, size, align_corners=True)
    flat = up.reshape(len(up), -1)
    lo = flat.min(axis=1)
    hi = flat.max(axis=1)
    shape = (-1,) + (1,) * (up.ndim - 1)
    return ((up - lo.reshape(shape)) / (hi - lo + MASK_EPS).reshape(shape)).astype(np.float32)


class ScoreCAM(ChannelWeightCAM):
    """Score-CAM (Wang et al., CVPR-W 2020): channel weights from masked-input scores.

    For each sample and channel ``c`` of the layer, the activation map ``A_c`` is resized to the
    input with ``align_corners=True`` and min-max scaled to a mask ``M_c``; the masked input
    ``x * M_c`` is scored (forward only); the weights are ``softmax_c(score_c)`` (the raw
    target scores, e.g. logits, softmaxed over the channels), and the map is
    ``sum_c w_c A_c``. These are pytorch-grad-cam's numerics.

    Each distinct mask is scored once: a channel constant over space gives an all-zero mask
    (all such channels share one forward pass of a zero input), and channels of one sample
    whose maps are equal up to a positive scale and offset (e.g. one active position) give
    the same mask up to the ``1e-8`` in the denominator, so they share one score.

    Masked inputs are built ``batch_size`` at a time (chunks run across samples), so memory
    is bounded by a few ``batch_size`` copies of one input for any channel count. They are
    scored inside the adapter's scoring session where it has one
    (:class:`~interp_core.backend.protocol.ScoringSessionBackend`; torch: BatchNorms folded
    into the convolutions before them for the call, :mod:`interp_torch.folding`), which
    computes the same function to float32 rounding with fewer passes over the activations.

    Parameters
    ----------
    batch_size : int
        Masked inputs per forward pass; 16 as pytorch-grad-cam's ScoreCAM. On the CPU larger
        batches are not faster per image (ResNet-50 at 224 x 224, 2 threads: 64 costs
        1.10-1.19x the time per image of 16: larger activation buffers, more page faults and
        cache misses); on a GPU raise it.
    top_k : int, optional
        "Faster Score-CAM": score only the ``top_k`` channels of largest spatial variance of
        each sample. What it changes: the other channels get weight 0, and the softmax is
        taken over the ``top_k`` scored channels only, so the map is ``sum`` over those
        channels and differs from the exact one (low-variance channels carry little spatial
        information, so the maps are usually close). Cost falls from ``C`` to ``top_k``
        forward passes per sample (``C / top_k`` times fewer). ``None``: every channel.
    fast_scoring : bool
        Score inside the adapter's scoring session (above; default). ``False``: run the
        model as it is for every masked input.
    """

    name = "scorecam"
    requires = ()
    needs = "forward per channel"

    def __init__(self, model: Any, layer: Any = None, *, batch_size: int = 16,
                 top_k: int | None = None, fast_scoring: bool = True, **kwargs: Any) -> None:
        super().__init__(model, layer, **kwargs)
        self.batch_size = check_batch_size(batch_size)
        if not isinstance(fast_scoring, bool):
            raise ValueError(f"fast_scoring must be True or False, got {fast_scoring!r}")
        self.fast_scoring = fast_scoring
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int | np.integer)
                                  or top_k < 1):
            raise ValueError(f"top_k must be None or a positive int, got {top_k!r}")
        self.top_k = None if top_k is None else int(top_k)

    def channel_weights(self, activations: np.ndarray, gradients: np.ndarray | None,
                        ctx: LayerContext) -> np.ndarray:
        """Softmax of the masked-input scores, ``(N, C)`` float32 (0 for unscored channels)."""
        session = (scoring_session(ctx.backend, ctx.model) if self.fast_scoring
                   else contextlib.nullcontext())
        with session:
            return self._channel_weights(activations, ctx)

    def _channel_weights(self, activations: np.ndarray, ctx: LayerContext) -> np.ndarray:
        backend, model = ctx.backend, ctx.model
        x = np.asarray(backend.to_numpy(ctx.inputs))
        size = tuple(int(s) for s in ctx.capture.input_spatial)
        layout = infer_layout(x, size, backend, ctx.model)
        if activations.ndim - 2 != len(size):
            raise ValueError(
                f"layer {ctx.layer_name!r} has {activations.ndim - 2} spatial axes but the "
                f"input has {len(size)} {size}: Score-CAM masks the input with the layer's "
                "upsampled maps, so they need the same number of spatial axes"
            )
        spec = fixed_targets(ctx.target, ctx.capture.targets)
        n, c = activations.shape[0], activations.shape[-1]
        channels = np.moveaxis(activations, -1, 1)  # (N, C, *s)
        flat = channels.reshape(n, c, -1)
        lo, hi = flat.min(axis=2), flat.max(axis=2)
        constant = hi == lo
        if self.top_k is None or self.top_k >= c:
            chosen = np.broadcast_to(np.arange(c), (n, c))
        else:
            chosen = np.argsort(-flat.var(axis=2), axis=1, kind="stable")[:, : self.top_k]
        scores = np.full((n, c), -np.inf)
        if np.take_along_axis(constant, chosen, axis=1).any():
            zeros = backend.from_numpy(np.zeros_like(x), model)
            zero_scores = backend.predict(model, zeros, spec, batch_size=self.batch_size,
                                          output=self.output)
            for i in range(n):
                scores[i, chosen[i][constant[i, chosen[i]]]] = zero_scores[i]
        # Distinct masks to score: one per normalised activation pattern of each sample.
        samples, reps, groups = [], [], []
        for i in range(n):
            live = chosen[i][~constant[i, chosen[i]]]
            span = (hi[i, live] - lo[i, live])[:, None]
            pattern = ((flat[i, live] - lo[i, live][:, None]) / span).astype(np.float32)
            _, first, inverse = np.unique(pattern, axis=0, return_index=True,
                                          return_inverse=True)
            samples.append(np.full(first.size, i))
            reps.append(live[first])
            groups.append((i, live, inverse.reshape(-1)))
        samples_all = np.concatenate(samples) if samples else np.zeros(0, np.int64)
        reps_all = np.concatenate(reps) if reps else np.zeros(0, np.int64)
        rep_scores = np.empty(reps_all.size)
        bs = self.batch_size
        for start in range(0, reps_all.size, bs):
            sl = slice(start, start + bs)
            masks = scorecam_masks(channels[samples_all[sl], reps_all[sl]], size)
            masked = blend(x[samples_all[sl]], masks, layout)
            rep_scores[sl] = backend.predict(
                model, backend.from_numpy(masked, model), spec.take(samples_all[sl]),
                batch_size=bs, output=self.output,
            )
        offset = 0
        for (i, live, inverse), r in zip(groups, reps, strict=True):
            scores[i, live] = rep_scores[offset : offset + r.size][inverse]
            offset += r.size
        return softmax_rows(scores)


# -- Ablation-CAM ----------------------------------------------------------------------------
class AblationCAM(ChannelWeightCAM):
    """Ablation-CAM (Desai & Ramaswamy, WACV 2020): weights from the score drop of ablations.

    For each sample and channel ``c``, the layer's output channel ``c`` is set to zero (the
    backend's ``patched_scores``, forward only) and ``w_c = (y - y_c) / y`` where ``y`` is the
    unablated target score and ``y_c`` the ablated one; the map is ``sum_c w_c A_c``, as
    pytorch-grad-cam computes it. Channels that are zero everywhere in a sample are not run:
    ablating them changes nothing, their weight is 0. Where ``y`` is 0 the raw drop
    ``y - y_c`` is used. Unlike pytorch-grad-cam, a layer with negative outputs is also
    ablated by zeroing (pytorch-grad-cam then writes ``min - 1e7`` instead).

    Parameters
    ----------
    batch_size : int
        Ablated copies per forward pass (pytorch-grad-cam's default, 32).
    ratio_channels_to_ablate : float
        In (0, 1]. Below 1, only the ``ceil(ratio * C)`` channels of largest mean absolute
        activation of each sample are ablated; the others get weight 0 (as pytorch-grad-cam,
        which picks its channels by an experimental Eigen-CAM overlap score instead). Cost
        falls in proportion.

    Raises
    ------
    NotImplementedError
        The backend lacks the ``"activation_patch"`` capability.
    """

    name = "ablationcam"
    requires = (ACTIVATION_PATCH,)
    needs = "forward per channel"
    instead = "use ScoreCAM or a gradient method"

    def __init__(self, model: Any, layer: Any = None, *, batch_size: int = 32,
                 ratio_channels_to_ablate: float = 1.0, **kwargs: Any) -> None:
        super().__init__(model, layer, **kwargs)
        self.batch_size = check_batch_size(batch_size)
        ratio = float(ratio_channels_to_ablate)
        if not 0.0 < ratio <= 1.0:
            raise ValueError(
                f"ratio_channels_to_ablate must be in (0, 1], got {ratio_channels_to_ablate!r}"
            )
        self.ratio = ratio

    def channel_weights(self, activations: np.ndarray, gradients: np.ndarray | None,
                        ctx: LayerContext) -> np.ndarray:
        """``(y - y_c) / y`` per sample and channel, ``(N, C)`` float32."""
        backend, model = ctx.backend, ctx.model
        x = np.asarray(backend.to_numpy(ctx.inputs))
        spec = fixed_targets(ctx.target, ctx.capture.targets)
        original = np.asarray(ctx.capture.scores, dtype=np.float64)
        n, c = activations.shape[0], activations.shape[-1]
        magnitude = np.abs(activations).reshape(n, -1, c).mean(axis=1)  # (N, C)
        if self.ratio < 1.0:
            k = max(1, math.ceil(self.ratio * c))
            chosen = np.argsort(-magnitude, axis=1, kind="stable")[:, :k]
        else:
            chosen = np.broadcast_to(np.arange(c), (n, c))
        ablated = np.repeat(original[:, None], c, axis=1)
        # Token layers and channels-last grids in torch: the channels are not on axis 1.
        axis = {} if ctx.native_channel_axis is None else {
            "channel_axis": ctx.native_channel_axis}
        for i in range(n):
            picked = np.sort(chosen[i][magnitude[i, chosen[i]] > 0])
            if picked.size == 0:
                continue
            masks = np.ones((picked.size, c), dtype=np.float32)
            masks[np.arange(picked.size), picked] = 0.0
            rows = backend.patched_scores(
                model, backend.from_numpy(x[i : i + 1], model), ctx.layer, masks,
                spec.take(np.array([i])), batch_size=self.batch_size, output=self.output,
                **axis,
            )
            ablated[i, picked] = np.asarray(rows, dtype=np.float64).reshape(picked.size)
        denom = np.where(original == 0, 1.0, original)[:, None]
        return ((original[:, None] - ablated) / denom).astype(np.float32)
