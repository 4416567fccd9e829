"""The demo vision transformer (:mod:`interp_core.datasets.demo_vit`) as a Flax NNX module.

Attention is ``nnx.MultiHeadAttention``, whose query/key/value kernels ``(D, H, Dh)`` and out
kernel ``(H, Dh, D)`` are the weights format's own, so the weights go in as they are. Input
``(N, H, W, C)`` (channels last, as Flax takes it).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from interp_core.datasets.demo_vit import LN_EPS, ViTConfig


class Mlp(nnx.Module):
    """Dense ``D -> M``, exact (erf) GELU, dense ``M -> D``."""

    def __init__(self, dim: int, hidden: int, *, rngs: nnx.Rngs) -> None:
        self.fc1 = nnx.Linear(dim, hidden, rngs=rngs)
        self.fc2 = nnx.Linear(hidden, dim, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        # nnx.gelu defaults to the tanh approximation; the architecture is the exact one.
        return self.fc2(jax.nn.gelu(self.fc1(x), approximate=False))


class Block(nnx.Module):
    """``z + attn(norm1(z))``, then ``+ mlp(norm2(z))``: input and output ``(N, T, D)``."""

    def __init__(self, cfg: ViTConfig, *, rngs: nnx.Rngs) -> None:
        self.norm1 = nnx.LayerNorm(cfg.dim, epsilon=LN_EPS, use_fast_variance=False, rngs=rngs)
        self.attn = nnx.MultiHeadAttention(
            num_heads=cfg.heads, in_features=cfg.dim, qkv_features=cfg.dim,
            out_features=cfg.dim, decode=False, rngs=rngs)
        self.norm2 = nnx.LayerNorm(cfg.dim, epsilon=LN_EPS, use_fast_variance=False, rngs=rngs)
        self.mlp = Mlp(cfg.dim, cfg.mlp, rngs=rngs)

    def __call__(self, z: jax.Array) -> jax.Array:
        z = z + self.attn(self.norm1(z))
        return z + self.mlp(self.norm2(z))


class DemoViT(nnx.Module):
    """Input ``(N, H, W, C)`` in [0, 1]; logits ``(N, classes)``. Names as in the core doc:
    ``patch_embed``, ``blocks.{i}`` (``norm1``, ``attn``, ``norm2``, ``mlp``), ``norm``,
    ``head``."""

    def __init__(self, config: ViTConfig | None = None, *, rngs: nnx.Rngs | None = None) -> None:
        cfg = self.config = config or ViTConfig()
        rngs = rngs or nnx.Rngs(0)
        self.patch_embed = nnx.Conv(cfg.channels, cfg.dim, (cfg.patch, cfg.patch),
                                    strides=(cfg.patch, cfg.patch), padding="VALID", rngs=rngs)
        self.cls_token = (nnx.Param(jnp.zeros((1, 1, cfg.dim))) if cfg.class_token
                          else nnx.data(None))
        self.registers = (nnx.Param(jnp.zeros((1, cfg.registers, cfg.dim))) if cfg.registers
                          else nnx.data(None))
        self.pos_embed = nnx.Param(jnp.zeros((1, cfg.grid[0] * cfg.grid[1], cfg.dim)))
        self.blocks = nnx.List([Block(cfg, rngs=rngs) for _ in range(cfg.blocks)])
        self.norm = nnx.LayerNorm(cfg.dim, epsilon=LN_EPS, use_fast_variance=False, rngs=rngs)
        self.head = nnx.Linear(cfg.dim, cfg.classes, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        n = x.shape[0]
        patches = self.patch_embed(x)
        patches = patches.reshape(n, -1, patches.shape[-1]) + self.pos_embed[...]
        prefix = [jnp.broadcast_to(t[...], (n, *t.shape[1:]))
                  for t in (self.cls_token, self.registers) if t is not None]
        z = jnp.concatenate([*prefix, patches], axis=1)
        for block in self.blocks:
            z = block(z)
        z = self.norm(z)
        pooled = z[:, 0] if self.cls_token is not None else z[:, self.config.prefix:].mean(1)
        return self.head(pooled)


def _set(variable: nnx.Variable, value: np.ndarray) -> None:
    if tuple(variable.shape) != tuple(np.shape(value)):
        raise ValueError(f"weight of shape {np.shape(value)} does not fit a parameter of shape "
                         f"{tuple(variable.shape)}")
    variable.set_value(jnp.asarray(np.asarray(value, dtype=np.float32)))


def build(weights: dict[str, np.ndarray], config: ViTConfig | None = None) -> DemoViT:
    """A :class:`DemoViT` holding ``weights`` (sizes from ``config``, else read from the
    weights: pass ``config`` for a non-square patch grid)."""
    cfg = config or ViTConfig.of(weights)
    model = DemoViT(cfg)
    _set(model.patch_embed.kernel, weights["patch_embed/kernel"])
    _set(model.patch_embed.bias, weights["patch_embed/bias"])
    _set(model.pos_embed, weights["pos_embed"])
    if model.cls_token is not None:
        _set(model.cls_token, weights["cls_token"])
    if model.registers is not None:
        _set(model.registers, weights["registers"])
    for i, block in enumerate(model.blocks):
        p = f"blocks/{i}/"
        for norm in ("norm1", "norm2"):
            _set(getattr(block, norm).scale, weights[p + f"{norm}/scale"])
            _set(getattr(block, norm).bias, weights[p + f"{norm}/bias"])
        for proj in ("query", "key", "value", "out"):
            _set(getattr(block.attn, proj).kernel, weights[p + f"attn/{proj}/kernel"])
            _set(getattr(block.attn, proj).bias, weights[p + f"attn/{proj}/bias"])
        for fc in ("fc1", "fc2"):
            _set(getattr(block.mlp, fc).kernel, weights[p + f"mlp/{fc}/kernel"])
            _set(getattr(block.mlp, fc).bias, weights[p + f"mlp/{fc}/bias"])
    _set(model.norm.scale, weights["norm/scale"])
    _set(model.norm.bias, weights["norm/bias"])
    _set(model.head.kernel, weights["head/kernel"])
    _set(model.head.bias, weights["head/bias"])
    return model
