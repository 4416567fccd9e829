"""The demo shapes classifier (:mod:`interp_core.datasets.demo`) as a Flax NNX module (NHWC)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


class ConvReLU(nnx.Module):
    """Conv 3x3, padding 1, then ReLU; its output (the layer to explain) is post-ReLU."""

    def __init__(self, cin: int, cout: int, *, rngs: nnx.Rngs) -> None:
        self.conv = nnx.Conv(cin, cout, (3, 3), padding=1, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return nnx.relu(self.conv(x))


class MaxPool(nnx.Module):
    """Max pooling 2x2, stride 2."""

    def __call__(self, x: jax.Array) -> jax.Array:
        return nnx.max_pool(x, window_shape=(2, 2), strides=(2, 2))


class GlobalAvgPool(nnx.Module):
    """Mean over the spatial axes: ``(N, H, W, C) -> (N, C)``."""

    def __call__(self, x: jax.Array) -> jax.Array:
        return x.mean(axis=(1, 2))


class DemoNet(nnx.Module):
    """Input ``(N, 64, 64, 3)`` in [0, 1]; logits ``(N, 5)``. Layer names as in the core doc."""

    def __init__(self, classes: int = 5, *, rngs: nnx.Rngs) -> None:
        self.block1 = ConvReLU(3, 16, rngs=rngs)
        self.pool1 = MaxPool()
        self.block2 = ConvReLU(16, 32, rngs=rngs)
        self.pool2 = MaxPool()
        self.block3 = ConvReLU(32, 64, rngs=rngs)
        self.gap = GlobalAvgPool()
        self.fc = nnx.Linear(64, classes, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.pool1(self.block1(x))
        x = self.pool2(self.block2(x))
        return self.fc(self.gap(self.block3(x)))


def _set(variable: nnx.Variable, value: np.ndarray) -> None:
    value = jnp.asarray(np.asarray(value, dtype=np.float32))
    setter = getattr(variable, "set_value", None)
    if setter is not None:
        setter(value)
    else:  # flax < 0.12
        variable.value = value


def build(weights: dict[str, np.ndarray]) -> DemoNet:
    """A :class:`DemoNet` holding ``weights`` (channels-last conventions of the core doc)."""
    model = DemoNet(classes=weights["fc/bias"].shape[0], rngs=nnx.Rngs(0))
    for i in (1, 2, 3):
        conv = getattr(model, f"block{i}").conv
        _set(conv.kernel, weights[f"block{i}/kernel"])
        _set(conv.bias, weights[f"block{i}/bias"])
    _set(model.fc.kernel, weights["fc/kernel"])
    _set(model.fc.bias, weights["fc/bias"])
    return model
