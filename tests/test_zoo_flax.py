"""Two Flax NNX models in the sweep: a residual CNN and a ViT with a class token, random weights.

Each runs Grad-CAM with the default layer and with a named layer against a reference that splits
the model at the layer by hand (``lower(x)`` up to the layer, ``upper(a)`` from it, holding the
residual stream fixed) and takes the gradient with ``jax.vjp``. The ViT's default must be the
last block's first norm, reshaped from tokens without being told the grid.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable

import numpy as np
import pytest
import zoo_common
from conftest import require_framework

jax = require_framework("jax", "jax")
nnx = require_framework("jax", "flax.nnx")
import jax.numpy as jnp  # noqa: E402

import interp_core as ic  # noqa: E402
from interp_core.datasets.shapes import make_shapes  # noqa: E402

ATOL = 2e-3


class ResBlock(nnx.Module):
    def __init__(self, channels: int, *, rngs: nnx.Rngs) -> None:
        self.conv = nnx.Conv(channels, channels, (3, 3), padding=1, rngs=rngs)
        self.bn = nnx.BatchNorm(channels, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return jax.nn.relu(x + self.bn(self.conv(x)))


class ResNetNNX(nnx.Module):
    """conv stem (stride 2) -> two residual blocks -> global average pool -> dense."""

    def __init__(self, classes: int = 10, seed: int = 0) -> None:
        rngs = nnx.Rngs(seed)
        self.stem = nnx.Conv(3, 16, (3, 3), strides=2, padding=1, rngs=rngs)
        self.blocks = nnx.List([ResBlock(16, rngs=rngs) for _ in range(2)])
        self.head = nnx.Linear(16, classes, rngs=rngs)

    def trunk(self, x: jax.Array, upto: int) -> jax.Array:
        x = jax.nn.relu(self.stem(x))
        for block in list(self.blocks)[: upto + 1]:
            x = block(x)
        return x

    def rest(self, a: jax.Array, after: int) -> jax.Array:
        for block in list(self.blocks)[after + 1 :]:
            a = block(a)
        return self.head(a.mean(axis=(1, 2)))

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.rest(self.trunk(x, len(self.blocks) - 1), len(self.blocks) - 1)

    def split(self, layer: str) -> tuple[Callable, Callable]:
        k = {"blocks.0": 0, "blocks.1": 1}[layer]
        return (lambda x: self.trunk(x, k)), (lambda a, x: self.rest(a, k))


class Block(nnx.Module):
    def __init__(self, dim: int, *, rngs: nnx.Rngs) -> None:
        self.norm1 = nnx.LayerNorm(dim, rngs=rngs)
        self.attn = nnx.MultiHeadAttention(num_heads=2, in_features=dim, decode=False,
                                           rngs=rngs)
        self.norm2 = nnx.LayerNorm(dim, rngs=rngs)
        self.fc1 = nnx.Linear(dim, 2 * dim, rngs=rngs)
        self.fc2 = nnx.Linear(2 * dim, dim, rngs=rngs)

    def after_norm1(self, x: jax.Array, h: jax.Array) -> jax.Array:
        x = x + self.attn(h)
        return x + self.fc2(jax.nn.gelu(self.fc1(self.norm2(x))))

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.after_norm1(x, self.norm1(x))


class ViTNNX(nnx.Module):
    """4x4 patches, a class token, two blocks, a final norm, a head on the class token."""

    def __init__(self, classes: int = 10, dim: int = 32, seed: int = 0) -> None:
        rngs = nnx.Rngs(seed)
        self.patch = nnx.Conv(3, dim, (4, 4), strides=4, rngs=rngs)
        self.cls = nnx.Param(jax.random.normal(jax.random.key(seed), (1, 1, dim)) * 0.02)
        self.blocks = nnx.List([Block(dim, rngs=rngs) for _ in range(2)])
        self.norm = nnx.LayerNorm(dim, rngs=rngs)
        self.head = nnx.Linear(dim, classes, rngs=rngs)

    def tokens(self, x: jax.Array) -> jax.Array:
        p = self.patch(x)
        p = p.reshape(p.shape[0], -1, p.shape[-1])
        return jnp.concatenate([jnp.broadcast_to(self.cls[...], (len(p), 1, p.shape[-1])), p],
                               axis=1)

    def stream(self, x: jax.Array, upto: int) -> jax.Array:
        t = self.tokens(x)
        for block in list(self.blocks)[:upto]:
            t = block(t)
        return t

    def finish(self, t: jax.Array, after: int) -> jax.Array:
        for block in list(self.blocks)[after + 1 :]:
            t = block(t)
        return self.head(self.norm(t)[:, 0])

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.finish(self.stream(x, len(self.blocks)), len(self.blocks))

    def split(self, layer: str) -> tuple[Callable, Callable]:
        k = {"blocks.0.norm1": 0, "blocks.1.norm1": 1}[layer]
        block = self.blocks[k]

        def lower(x: jax.Array) -> jax.Array:
            return block.norm1(self.stream(x, k))

        def upper(h: jax.Array, x: jax.Array) -> jax.Array:
            return self.finish(block.after_norm1(self.stream(x, k), h), k)

        return lower, upper


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[], nnx.Module]
    size: int
    layer: str
    default: str
    prefix: int

    @property
    def id(self) -> str:
        return f"flax.nnx/{self.name}"


CASES = [
    Case("ResNetNNX", ResNetNNX, 32, "blocks.0", "blocks.1", 0),
    Case("ViTNNX", ViTNNX, 32, "blocks.0.norm1", "blocks.1.norm1", 1),
]


def _minmax(m: jax.Array) -> jax.Array:
    lo = m.min(axis=(1, 2), keepdims=True)
    hi = m.max(axis=(1, 2), keepdims=True)
    span = hi - lo
    flat = span <= 1e-6 * jnp.maximum(jnp.abs(hi), jnp.abs(lo))
    return jnp.where(flat, 0.0, (m - lo) / jnp.where(flat, 1.0, span))


def reference_gradcam(model: nnx.Module, x: np.ndarray, layer: str, prefix: int, *,
                      relu: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Grad-CAM of the top-1 class at ``layer``: ``jax.vjp`` of the upper part at the lower
    part's output; maps ``(N, H, W)`` and the raw map at layer resolution."""
    lower, upper = model.split(layer)
    a = lower(x)
    logits, pullback = jax.vjp(lambda act: upper(act, x), a)
    onehot = jax.nn.one_hot(logits.argmax(axis=1), logits.shape[1])
    (grad,) = pullback(onehot)
    if a.ndim == 3:  # tokens (N, 1 + h*w, C) -> (N, h, w, C)
        side = math.isqrt(a.shape[1] - prefix)
        a = a[:, prefix:].reshape(len(a), side, side, -1)
        grad = grad[:, prefix:].reshape(len(grad), side, side, -1)
    raw = (grad.mean(axis=(1, 2), keepdims=True) * a).sum(-1)
    cam = _minmax(jax.nn.relu(raw) if relu else raw)
    up = jax.image.resize(cam, (len(cam), *x.shape[1:3]), method="bilinear", antialias=False)
    return np.asarray(_minmax(up)), np.asarray(raw)


def make_input(size: int) -> np.ndarray:
    return (make_shapes(2, size=size, seed=3).images * 2.0 - 1.0).astype(np.float32)


def _check(exp: ic.Explanation, model: nnx.Module, x: np.ndarray, layer: str,
           prefix: int) -> None:
    expected, raw = reference_gradcam(model, x, layer, prefix)
    scale = float(np.abs(raw).max())
    assert scale > 0
    np.testing.assert_allclose(exp.raw[layer], raw, atol=ATOL * scale)
    maps = exp.maps
    if not zoo_common.informative(expected):  # ReLU left nothing: compare the maps without it
        expected, _ = reference_gradcam(model, x, layer, prefix, relu=False)
        maps = ic.GradCAM(model, layer, relu=False)(x)
    assert zoo_common.informative(expected)
    np.testing.assert_allclose(maps, expected, atol=ATOL * 5)


def _record(case: Case, exp: ic.Explanation, seconds: tuple[float, float],
            error: str = "") -> None:
    (default_layer,) = exp.layers
    grid = "x".join(str(d) for d in exp.raw[default_layer].shape[1:])
    zoo_common.record(zoo_common.Result(
        case.id, case.name.removesuffix("NNX"), "flax.nnx", default_layer=default_layer,
        reshape=f"tokens: {case.prefix} prefix + {grid}" if case.prefix else "",
        named_layer=case.layer, default_ok=not error, named_ok=not error, error=error,
        seconds=round(seconds[0], 2), cpu_seconds=round(seconds[1], 2)), "flax")


def _elapsed(start: float, cpu: float) -> tuple[float, float]:
    return time.perf_counter() - start, time.process_time() - cpu


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_gradcam_default_and_named_layer_match_the_reference(case: Case) -> None:
    start, cpu = time.perf_counter(), time.process_time()
    model = case.build()
    model.eval()  # the reference calls the model itself: BatchNorm on its running averages
    x = make_input(case.size)
    exp = ic.GradCAM(model).explain(x)
    try:
        assert exp.layers == [case.default]
        _check(exp, model, x, case.default, case.prefix)
        _check(ic.GradCAM(model, case.layer).explain(x), model, x, case.layer, case.prefix)
    except AssertionError as exc:
        _record(case, exp, _elapsed(start, cpu), str(exc).splitlines()[0])
        raise
    _record(case, exp, _elapsed(start, cpu))
