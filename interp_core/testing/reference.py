"""The reference model: fixed NumPy weights, a closed-form NumPy forward and backward.

Architecture (every adapter's test builds the same one in its framework from these weights)::

    x (N, 10, 10, 3)                    channels last here; torch takes (N, 3, 10, 10)
    "features": Conv 3x3, 3 -> 8, valid padding, bias, then ReLU      -> A (N, 8, 8, 8)
    global average pooling                                             -> (N, 8)
    "fc": Dense 8 -> 5, bias                                           -> logits (N, 5)

Closed forms: ``dScore_k/dA = W_fc[k] / (8 * 8)`` at every position, so Grad-CAM equals CAM.

:class:`ReferenceBackend` computes captures of :class:`ReferenceModel` in pure NumPy; it is the
oracle the conformance suite compares adapters with, and the in-test "toy" third-party adapter.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from interp_core.backend.protocol import (
    ACTIVATION_PATCH,
    GRADIENTS,
    LINEAR_WEIGHTS,
    Capture,
    LayerCapture,
)
from interp_core.backend.targets import TargetSpec, check_class_range

INPUT_SHAPE = (10, 10, 3)  # (H, W, C_in), channels last
KERNEL = 3
CHANNELS = 8
CLASSES = 5
LAYER = "features"
FC = "fc"


@dataclass(frozen=True)
class ReferenceWeights:
    """Weights of the reference model, float32.

    Attributes
    ----------
    conv_kernel : np.ndarray
        ``(3, 3, C_in=3, C_out=8)`` (Keras/Flax layout; torch wants ``(8, 3, 3, 3)``).
    conv_bias : np.ndarray
        ``(8,)``.
    fc_weight : np.ndarray
        ``(classes=5, channels=8)`` (torch layout; Keras/Flax kernels are its transpose).
    fc_bias : np.ndarray
        ``(5,)``.
    """

    conv_kernel: np.ndarray
    conv_bias: np.ndarray
    fc_weight: np.ndarray
    fc_bias: np.ndarray


def reference_weights(seed: int = 0) -> ReferenceWeights:
    """The fixed weights (same seed, same numbers on every machine)."""
    rng = np.random.default_rng(seed)
    return ReferenceWeights(
        conv_kernel=rng.normal(0, 0.4, (KERNEL, KERNEL, INPUT_SHAPE[2], CHANNELS)).astype(
            np.float32
        ),
        conv_bias=rng.normal(0, 0.1, CHANNELS).astype(np.float32),
        fc_weight=rng.normal(0, 0.5, (CLASSES, CHANNELS)).astype(np.float32),
        fc_bias=rng.normal(0, 0.1, CLASSES).astype(np.float32),
    )


def reference_inputs(n: int = 4, seed: int = 1) -> np.ndarray:
    """A batch ``(n, 10, 10, 3)`` float32, channels last."""
    return np.random.default_rng(seed).normal(0, 1, (n, *INPUT_SHAPE)).astype(np.float32)


def conv_valid(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """2-D valid cross-correlation, channels last: ``(N,H,W,Ci)`` * ``(k,k,Ci,Co)``."""
    k = kernel.shape[0]
    h, w = x.shape[1] - k + 1, x.shape[2] - k + 1
    out = np.zeros((x.shape[0], h, w, kernel.shape[3]), dtype=np.float64)
    for i in range(k):
        for j in range(k):
            out += np.einsum("nhwc,cd->nhwd", x[:, i : i + h, j : j + w, :], kernel[i, j])
    return (out + bias).astype(np.float32)


class ReferenceModel:
    """The reference model in NumPy: ``model(x)`` gives logits ``(N, 5)``."""

    def __init__(self, weights: ReferenceWeights | None = None) -> None:
        self.weights = weights or reference_weights()

    def features(self, x: np.ndarray) -> np.ndarray:
        """Activations of ``"features"``: ``(N, 8, 8, 8)``."""
        w = self.weights
        return np.maximum(conv_valid(np.asarray(x, np.float32), w.conv_kernel, w.conv_bias), 0)

    def head(self, activations: np.ndarray) -> np.ndarray:
        """Global average pooling then the dense layer: ``(N, 8, 8, 8)`` -> ``(N, 5)``."""
        pooled = activations.mean(axis=(1, 2))
        return (pooled @ self.weights.fc_weight.T + self.weights.fc_bias).astype(np.float32)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.head(self.features(x))


class ReferenceBackend:
    """A complete adapter for :class:`ReferenceModel`, in NumPy with closed-form gradients.

    Supports class and top-1 targets (what the closed form covers).
    """

    name = "reference"
    capabilities = frozenset({GRADIENTS, LINEAR_WEIGHTS, ACTIVATION_PATCH})

    def layer_names(self, model: ReferenceModel) -> list[str]:
        return [LAYER, FC]

    def default_layer(self, model: ReferenceModel, inputs: Any) -> str:
        return LAYER

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
        logits = model.head(acts)
        classes = self._classes(target, logits)
        scores = logits[np.arange(len(x)), classes]
        grads = None
        if gradients:
            h, w = acts.shape[1:3]
            per_sample = model.weights.fc_weight[classes] / (h * w)
            grads = np.broadcast_to(per_sample[:, None, None, :], acts.shape).astype(np.float32)
        return Capture(
            layers={LAYER: LayerCapture(LAYER, acts, grads)},
            scores=scores.astype(np.float32), targets=classes, input_spatial=x.shape[1:3],
            outputs=logits,
        )

    def _classes(self, target: TargetSpec, logits: np.ndarray) -> np.ndarray:
        if target.kind == "top1":
            return logits.argmax(axis=1).astype(np.int64)
        if target.kind != "class":
            raise ValueError(f"the reference backend scores class targets, not {target.kind!r}")
        check_class_range(target, logits.shape[1])
        return target.indices

    def predict(self, model: ReferenceModel, inputs: Any, target: TargetSpec, *,
                batch_size: int = 32, output: Any = None) -> np.ndarray:
        logits = model(np.asarray(inputs, dtype=np.float32))
        return logits[np.arange(len(logits)), self._classes(target, logits)].astype(np.float32)

    def patched_scores(self, model: ReferenceModel, inputs: Any, layer: Any,
                       channel_masks: np.ndarray, target: TargetSpec, *, batch_size: int = 32,
                       output: Any = None) -> np.ndarray:
        """Closed form: the head is linear in the pooled activations, so a channel mask
        multiplies the pooled vector: ``logits[m, n] = (pooled[n] * mask[m]) @ W.T + b``."""
        self._check_layers([layer])
        masks = np.asarray(channel_masks, dtype=np.float32)
        if masks.ndim != 2 or masks.shape[1] != CHANNELS:
            raise ValueError(
                f"channel_masks must be (M, {CHANNELS}) for layer {LAYER!r}, got {masks.shape}"
            )
        pooled = model.features(np.asarray(inputs, dtype=np.float32)).mean(axis=(1, 2))
        w = model.weights
        logits = (masks[:, None, :] * pooled[None]) @ w.fc_weight.T + w.fc_bias  # (M, N, K)
        n = pooled.shape[0]
        rows = [logits[m, np.arange(n), self._classes(target, logits[m])]
                for m in range(len(masks))]
        return np.asarray(rows, dtype=np.float32).reshape(len(masks), n)

    def linear_weights(self, model: ReferenceModel, fc: Any = None) -> np.ndarray:
        return model.weights.fc_weight

    def to_numpy(self, x: Any) -> np.ndarray:
        return np.asarray(x)

    def from_numpy(self, x: np.ndarray, model: Any) -> np.ndarray:
        return np.asarray(x, dtype=np.float32)
