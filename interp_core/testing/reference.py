"""The reference models: fixed NumPy weights, a closed-form NumPy forward and backward.

Every adapter builds the same models in its framework from these weights
(``interp_<fw>.testing.reference_model(weights, variant)``). Three variants share one spatial
layer and differ in the head after it::

    "features": Conv 3x3, 3 -> 8, valid padding, bias, then ReLU       -> A (N, H-2, W-2, 8)

    variant         input (H, W, 3)   head                                   output
    "gap"           (10, 10, 3)       global average pool, "fc" Dense 8 -> K  (N, K)
    "flatten"       (9, 12, 3)        flatten (h, w, c order), "fc" Dense    (N, K)
                                      7*10*8 -> K
    "segmentation"  (9, 12, 3)        "fc": 1x1 convolution 8 -> K          (N, 7, 10, K)

Shapes are channels last here; torch takes ``(N, 3, H, W)``, and its flatten runs in ``(c, h, w)``
order, so its dense weight is this one with the columns permuted. ``K`` is 5 unless the weights
say otherwise (a single logit for binary targets).

Closed forms of ``dScore_k/dA``:

- ``"gap"``: ``W_fc[k] / (8 * 8)`` at every position, so Grad-CAM equals CAM and an adapter that
  averaged gradients over space, or swapped H and W, would still agree with it;
- ``"flatten"``: ``W_fc[k]`` reshaped to ``(7, 10, 8)``: a gradient that varies over space and
  channels on a non-square map, on which Grad-CAM, HiResCAM, LayerCAM and XGrad-CAM all differ;
- ``"segmentation"``: ``mask[h, w] * W_fc[k]``, for :class:`~interp_core.SegmentationTarget`.

:class:`ReferenceBackend` computes captures of :class:`ReferenceModel` in pure NumPy; it is the
oracle the conformance suite compares adapters with, and the in-test "toy" third-party adapter.
Its Hessian-vector products (:meth:`ReferenceBackend.capture_hvp`) are closed forms too: the head
is affine, so ``H A`` is zero for targets linear in the output and nonzero for similarity
targets (cosine similarity), on which the suite checks the ``"hvp"`` capability.

The reference *transformer* (the demo ViT architecture at a tiny size, its attention and the
gradients of it, in NumPy) is :mod:`interp_core.testing.reference_transformer`;
:data:`REFERENCE_VIT` is its configuration in the conformance suite: a non-square 3x4 patch
grid, so that swapped grid axes show.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from interp_core.backend import patching
from interp_core.backend.protocol import (
    ACTIVATION_PATCH,
    GRADIENTS,
    HVP,
    LINEAR_WEIGHTS,
    Capture,
    LayerCapture,
    LayerProbe,
)
from interp_core.backend.scoring import NumpyApiOps, target_scores
from interp_core.backend.target_spec import TargetSpec
from interp_core.datasets.demo_vit import ViTConfig

Variant = Literal["gap", "flatten", "segmentation"]
#: Every reference model, and the input (H, W, C_in) each takes (channels last).
INPUT_SHAPES: dict[str, tuple[int, int, int]] = {
    "gap": (10, 10, 3),
    "flatten": (9, 12, 3),
    "segmentation": (9, 12, 3),
}
VARIANTS: tuple[str, ...] = tuple(INPUT_SHAPES)
INPUT_SHAPE = INPUT_SHAPES["gap"]  # (H, W, C_in) of the "gap" model
KERNEL = 3
CHANNELS = 8
CLASSES = 5
LAYER = "features"
FC = "fc"

#: The reference transformer's sizes (:mod:`interp_core.testing.reference_transformer`):
#: 12x16 inputs in 4-pixel patches, a 3x4 grid, 2 blocks of 2 heads.
REFERENCE_VIT = ViTConfig(patch=4, grid=(3, 4), dim=8, heads=2, blocks=2, mlp=16, classes=3)


def check_variant(variant: str) -> str:
    """``variant`` if it names a reference model, else a ValueError listing the names."""
    if variant not in INPUT_SHAPES:
        raise ValueError(f"unknown reference variant {variant!r}; the variants are {VARIANTS}")
    return variant


def input_shape(variant: str = "gap") -> tuple[int, int, int]:
    """The input ``(H, W, 3)`` of a variant, channels last."""
    return INPUT_SHAPES[check_variant(variant)]


def feature_shape(variant: str = "gap") -> tuple[int, int, int]:
    """The activations of ``"features"`` for one sample: ``(H - 2, W - 2, 8)``."""
    h, w, _ = input_shape(variant)
    return (h - KERNEL + 1, w - KERNEL + 1, CHANNELS)


@dataclass(frozen=True)
class ReferenceWeights:
    """Weights of a reference model, float32.

    Attributes
    ----------
    conv_kernel : np.ndarray
        ``(3, 3, C_in=3, C_out=8)`` (Keras/Flax layout; torch wants ``(8, 3, 3, 3)``).
    conv_bias : np.ndarray
        ``(8,)``.
    fc_weight : np.ndarray
        ``(K, 8)`` for ``"gap"`` and ``"segmentation"`` (torch layout; Keras/Flax kernels are
        its transpose); ``(K, 7 * 10 * 8)`` for ``"flatten"``, columns in ``(h, w, c)`` order.
    fc_bias : np.ndarray
        ``(K,)``.
    """

    conv_kernel: np.ndarray
    conv_bias: np.ndarray
    fc_weight: np.ndarray
    fc_bias: np.ndarray

    @property
    def classes(self) -> int:
        """``K``, the number of outputs."""
        return int(self.fc_weight.shape[0])


def reference_weights(seed: int = 0, variant: str = "gap", classes: int = CLASSES
                      ) -> ReferenceWeights:
    """The fixed weights of ``variant`` (same seed, same numbers on every machine).

    The convolution is the same in every variant; ``classes=1`` gives a single-logit model.
    """
    rng = np.random.default_rng(seed)
    conv_kernel = rng.normal(0, 0.4, (KERNEL, KERNEL, 3, CHANNELS)).astype(np.float32)
    conv_bias = rng.normal(0, 0.1, CHANNELS).astype(np.float32)
    if check_variant(variant) == "flatten":
        inputs = int(np.prod(feature_shape(variant)))
        fc_weight = rng.normal(0, 0.5 / np.sqrt(inputs / CHANNELS), (classes, inputs))
    else:
        fc_weight = rng.normal(0, 0.5, (classes, CHANNELS))
    fc_bias = rng.normal(0, 0.1, classes)
    return ReferenceWeights(conv_kernel, conv_bias, fc_weight.astype(np.float32),
                            fc_bias.astype(np.float32))


def reference_inputs(n: int = 4, seed: int = 1, variant: str = "gap") -> np.ndarray:
    """A batch ``(n, H, W, 3)`` float32, channels last."""
    return np.random.default_rng(seed).normal(0, 1, (n, *input_shape(variant))).astype(np.float32)


def conv_valid(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """2-D valid cross-correlation, channels last: ``(N,H,W,Ci)`` * ``(k,k,Ci,Co)``."""
    k = kernel.shape[0]
    h, w = x.shape[1] - k + 1, x.shape[2] - k + 1
    out = np.zeros((x.shape[0], h, w, kernel.shape[3]), dtype=np.float64)
    for i in range(k):
        for j in range(k):
            out += np.einsum("nhwc,cd->nhwd", x[:, i : i + h, j : j + w, :], kernel[i, j])
    return (out + bias).astype(np.float32)


def conv_valid_input_gradient(upstream: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """The backward of :func:`conv_valid` with respect to its input, float64.

    ``upstream`` ``(N, h, w, Co)`` is d(objective)/d(output); returns ``(N, h+k-1, w+k-1, Ci)``.
    """
    k = kernel.shape[0]
    n, h, w, _ = upstream.shape
    grads = np.zeros((n, h + k - 1, w + k - 1, kernel.shape[2]), dtype=np.float64)
    for i in range(k):
        for j in range(k):
            grads[:, i : i + h, j : j + w, :] += np.einsum(
                "nhwd,cd->nhwc", upstream, kernel[i, j].astype(np.float64))
    return grads


class ReferenceModel:
    """A reference model in NumPy: ``model(x)`` gives logits ``(N, K)`` (``(N, h, w, K)`` for
    ``"segmentation"``)."""

    def __init__(self, weights: ReferenceWeights | None = None, variant: str = "gap") -> None:
        self.variant = check_variant(variant)
        self.weights = weights if weights is not None else reference_weights(variant=variant)
        expected = int(np.prod(feature_shape(variant))) if variant == "flatten" else CHANNELS
        if self.weights.fc_weight.shape[1] != expected:
            raise ValueError(
                f"fc_weight has shape {self.weights.fc_weight.shape}, but the {variant!r} "
                f"reference model needs (K, {expected}): use reference_weights(variant="
                f"{variant!r})"
            )

    def features(self, x: np.ndarray) -> np.ndarray:
        """Activations of ``"features"``: ``(N, H-2, W-2, 8)``."""
        w = self.weights
        return np.maximum(conv_valid(np.asarray(x, np.float32), w.conv_kernel, w.conv_bias), 0)

    def head(self, activations: np.ndarray) -> np.ndarray:
        """Everything after ``"features"``: ``(N, h, w, 8)`` -> the model output."""
        w = self.weights
        a = np.asarray(activations)
        if self.variant == "gap":
            inputs = a.mean(axis=(1, 2))
        elif self.variant == "flatten":
            inputs = a.reshape(len(a), -1)
        else:
            inputs = a
        return (inputs @ w.fc_weight.T + w.fc_bias).astype(np.float32)

    def head_gradient(self, activations_shape: tuple[int, ...], output_gradient: np.ndarray
                      ) -> np.ndarray:
        """Closed-form backward of :meth:`head`: d(objective)/d(output) -> d(objective)/dA.

        ``output_gradient`` has the output's shape; the result ``activations_shape``, float64.
        """
        g = np.asarray(output_gradient, dtype=np.float64) @ self.weights.fc_weight.astype(
            np.float64)
        if self.variant == "gap":
            h, w = activations_shape[1:3]
            return np.broadcast_to(g[:, None, None, :] / (h * w), activations_shape).copy()
        return g.reshape(activations_shape)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.head(self.features(x))


def structured_output(logits: Any, kind: str) -> Any:
    """What the conformance suite's ``structured_output_model`` returns: ``(logits, -logits)``
    for ``kind="tuple"``, ``{"aux": -logits, "logits": logits}`` for ``"dict"``; ``logits`` is
    any tensor that negates."""
    if kind == "tuple":
        return logits, -logits
    if kind == "dict":
        return {"aux": -logits, "logits": logits}
    raise ValueError(f"kind must be 'tuple' or 'dict', got {kind!r}")


def structured_output_hook(wrapper: Callable[[Any, str], Any]
                           ) -> Callable[[Any, str], tuple[Any, str]]:
    """The suite's ``structured_output_model`` hook for a framework whose layers are addressed
    by dotted attribute paths (torch, Flax NNX).

    ``wrapper(model, kind)`` must keep ``model`` as its attribute ``net`` and return
    :func:`structured_output` of its logits; the hook returns the wrapped model and the path
    ``"net.features"`` of its ``"features"`` layer.
    """

    def structured_output_model(model: Any, kind: str) -> tuple[Any, str]:
        return wrapper(model, kind), f"net.{LAYER}"

    return structured_output_model


# -- closed forms of the target scores ------------------------------------------------------
class NumpyOps(NumpyApiOps):
    """:class:`~interp_core.backend.scoring.TensorOps` in NumPy (channels last)."""


NUMPY_OPS = NumpyOps()


def score_gradient(output: np.ndarray, spec: TargetSpec, top1: np.ndarray | None = None
                   ) -> np.ndarray:
    """d(sum of target scores)/d(output), float64, the output's shape.

    Closed forms for class, top-1, binary, segmentation and similarity targets. An
    :class:`~interp_core.OutputTarget` is any function, so it gets central differences in
    float64, exact up to rounding for the linear functions the conformance suite uses.
    """
    out = np.asarray(output, dtype=np.float64)
    n = len(out)
    if spec.kind in ("class", "top1"):
        classes = top1 if spec.kind == "top1" else spec.indices
        grad = np.zeros_like(out)
        grad[np.arange(n), classes] = 1.0
        return grad
    if spec.kind == "binary":
        return np.broadcast_to(spec.signs.reshape((n,) + (1,) * (out.ndim - 1)), out.shape) * 1.0
    if spec.kind == "segmentation":
        onehot = np.eye(out.shape[-1])[spec.indices]  # (N, K)
        return spec.masks[..., None].astype(np.float64) * onehot.reshape(
            (n,) + (1,) * (out.ndim - 2) + (out.shape[-1],))
    flat = out.reshape(n, -1)
    if spec.kind == "similarity":
        emb = spec.embeddings.astype(np.float64)
        norm = np.sqrt((flat * flat).sum(axis=1, keepdims=True) + 1e-12)
        dot = (flat * emb).sum(axis=1, keepdims=True)
        return (emb / norm - dot * flat / norm**3).reshape(out.shape)
    step = 1e-3
    grad = np.zeros_like(flat)
    for j in range(flat.shape[1]):
        up, down = flat.copy(), flat.copy()
        up[:, j] += step
        down[:, j] -= step
        scores_up, _ = target_scores(up.reshape(out.shape), spec, NUMPY_OPS)
        scores_down, _ = target_scores(down.reshape(out.shape), spec, NUMPY_OPS)
        grad[:, j] = (np.asarray(scores_up) - np.asarray(scores_down)) / (2 * step)
    return grad.reshape(out.shape)


def score_hessian_product(output: np.ndarray, spec: TargetSpec, vector: np.ndarray,
                          top1: np.ndarray | None = None) -> np.ndarray:
    """``H v``, the Hessian of the summed target scores with respect to the output applied to
    ``vector``, float64, the output's shape.

    Zero for the targets linear in the output (class, top-1, binary, segmentation); closed
    form for similarity targets (cosine similarity); central differences of
    :func:`score_gradient` along ``vector`` for an :class:`~interp_core.OutputTarget`.
    """
    out = np.asarray(output, dtype=np.float64)
    v = np.asarray(vector, dtype=np.float64)
    n = len(out)
    if spec.kind in ("class", "top1", "binary", "segmentation"):
        return np.zeros_like(out)
    if spec.kind == "similarity":
        o, u = out.reshape(n, -1), v.reshape(n, -1)
        emb = spec.embeddings.astype(np.float64)
        r = np.sqrt((o * o).sum(axis=1, keepdims=True) + 1e-12)
        oe, ov = (o * emb).sum(axis=1, keepdims=True), (o * u).sum(axis=1, keepdims=True)
        ve = (u * emb).sum(axis=1, keepdims=True)
        hv = (-emb * ov - ve * o - oe * u) / r**3 + 3 * oe * ov * o / r**5
        return hv.reshape(out.shape)
    step = 1e-3 / max(float(np.abs(v).max()), 1e-12)
    up = score_gradient(out + step * v, spec, top1)
    down = score_gradient(out - step * v, spec, top1)
    return (up - down) / (2 * step)


def input_gradients(model: ReferenceModel, inputs: np.ndarray, layer: str | None,
                    channels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Closed-form ``Backend.input_gradients`` of a reference model, float64.

    The objective of sample ``n`` is the spatial mean of channel ``channels[n]`` of ``layer``'s
    output (``None``: of the model output).

    Returns
    -------
    values : np.ndarray
        ``(N,)`` float64 objectives.
    gradients : np.ndarray
        ``(N, H, W, 3)`` float64, d(sum of objectives)/d(input), channels last.
    """
    w = model.weights
    x = np.asarray(inputs, dtype=np.float64)
    idx = np.asarray(channels, dtype=np.int64)
    pre = conv_valid(x, w.conv_kernel.astype(np.float64), w.conv_bias).astype(np.float64)
    acts = np.maximum(pre, 0)
    rows = np.arange(len(x))
    if layer == LAYER:
        values = acts.mean(axis=(1, 2))[rows, idx]
        upstream = np.zeros_like(acts)
        upstream[rows, :, :, idx] = 1.0 / np.prod(acts.shape[1:3])
    elif layer is None:
        out = model.head(acts).astype(np.float64)
        per_channel = out.reshape(len(out), -1, out.shape[-1]).mean(axis=1)
        values = per_channel[rows, idx]
        out_grad = np.zeros_like(out)
        out_grad[rows, ..., idx] = 1.0 / (out[0, ..., 0].size)
        upstream = model.head_gradient(acts.shape, out_grad)
    else:
        raise ValueError(f"unknown layer {layer!r}; the reference model's layer is {LAYER!r}")
    return values, conv_valid_input_gradient(upstream * (pre > 0), w.conv_kernel)


# -- the NumPy adapter ----------------------------------------------------------------------
class ReferenceBackend:
    """A complete adapter for :class:`ReferenceModel`, in NumPy with closed-form gradients.

    Scores every target kind through :func:`~interp_core.backend.scoring.target_scores`, so it
    means what every adapter means by a target.
    """

    name = "reference"
    capabilities = frozenset({GRADIENTS, LINEAR_WEIGHTS, ACTIVATION_PATCH, HVP})

    def layer_names(self, model: ReferenceModel) -> list[str]:
        return [LAYER, FC]

    def layer_outputs(self, model: ReferenceModel, inputs: Any) -> LayerProbe:
        """The reference model explains one layer, ``"features"``: it is the default."""
        x = np.asarray(inputs)
        return LayerProbe((), tuple(x.shape[1:-1]), len(x), native_channels_first=False,
                          only=LAYER)

    def _check_layers(self, layers: Sequence[Any]) -> None:
        for layer in layers:
            if layer != LAYER:
                raise ValueError(
                    f"unknown layer {layer!r}; the reference model's spatial layer is {LAYER!r}"
                )

    def capture(
        self, model: ReferenceModel, inputs: Any, layers: Sequence[Any], target: TargetSpec,
        *, gradients: bool = True, output: Any = None, native_layout: bool = False,
    ) -> Capture:
        self._check_layers(layers)
        x = np.asarray(inputs, dtype=np.float32)
        acts = model.features(x)
        out = model.head(acts)
        scores, top1 = target_scores(out, target, NUMPY_OPS)
        grads = None
        if gradients:
            out_grad = score_gradient(out, target, top1)
            grads = model.head_gradient(acts.shape, out_grad).astype(np.float32)
        return Capture(
            layers={LAYER: LayerCapture(LAYER, acts, grads)} if layers else {},
            scores=np.asarray(scores, np.float32), targets=target.resolved_indices(top1),
            input_spatial=x.shape[1:3],
        )

    def capture_hvp(
        self, model: ReferenceModel, inputs: Any, layers: Sequence[Any], target: TargetSpec,
        *, output: Any = None, native_layout: bool = False,
    ) -> Capture:
        """:meth:`capture` with ``hvp``: the head is affine, ``out = J A + b``, so the
        Hessian at ``A`` is ``J^T H_out J`` and ``H A = J^T H_out (out - b)``
        (:func:`score_hessian_product`, then the head's closed-form backward)."""
        cap = self.capture(model, inputs, layers, target, gradients=True)
        if not cap.layers:
            return cap
        acts = cap.layers[LAYER].activations
        out = model.head(acts).astype(np.float64)
        linear = out - model.weights.fc_bias.astype(np.float64)  # J A
        top1 = None if target.kind != "top1" else cap.targets
        h_out = score_hessian_product(out, target, linear, top1)
        hvp = model.head_gradient(acts.shape, h_out).astype(np.float32)
        layer = LayerCapture(LAYER, acts, cap.layers[LAYER].gradients, hvp)
        return Capture(layers={LAYER: layer}, scores=cap.scores, targets=cap.targets,
                       input_spatial=cap.input_spatial)

    def predict(self, model: ReferenceModel, inputs: Any, target: TargetSpec, *,
                batch_size: int = 32, output: Any = None) -> np.ndarray:
        x = np.asarray(inputs, dtype=np.float32)
        parts = [target_scores(model(x[i : i + batch_size]), target.take(slice(i, i + batch_size)),
                               NUMPY_OPS)[0] for i in range(0, len(x), batch_size)]
        return np.concatenate(parts).astype(np.float32) if parts else np.zeros(0, np.float32)

    def patched_scores(self, model: ReferenceModel, inputs: Any, layer: Any,
                       channel_masks: np.ndarray, target: TargetSpec, *, batch_size: int = 32,
                       output: Any = None, channel_axis: int | None = None) -> np.ndarray:
        """Scores of ``model.head(A * mask)`` for each mask: ``(M, N)``."""
        masks = patching.channel_masks(channel_masks, channel_axis, usual_axis_only=self.name)
        self._check_layers([layer])
        if masks.shape[1] != CHANNELS:
            raise ValueError(
                f"channel_masks must be (M, {CHANNELS}) for layer {LAYER!r} with {CHANNELS} "
                f"channels, got {masks.shape}"
            )
        acts = model.features(np.asarray(inputs, dtype=np.float32))
        rows = [target_scores(model.head(acts * mask), target, NUMPY_OPS)[0] for mask in masks]
        return np.asarray(rows, dtype=np.float32).reshape(len(masks), len(acts))

    def linear_weights(self, model: ReferenceModel, fc: Any = None) -> np.ndarray:
        if fc not in (None, FC):
            raise ValueError(f"fc layer {fc!r} has no (outputs, inputs) weight; use {FC!r}")
        return model.weights.fc_weight

    def to_numpy(self, x: Any) -> np.ndarray:
        return np.asarray(x)

    def from_numpy(self, x: np.ndarray, model: Any) -> np.ndarray:
        return np.asarray(x, dtype=np.float32)
