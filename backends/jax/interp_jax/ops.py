"""The tensor operations the core's target scoring and adapter policy need, in ``jax.numpy``.

Under ``jax.jit`` the target constants (class indices, masks, embeddings) are arguments of the
compiled function, recorded by :func:`interp_core.backend.policy.plan_targets` and handed back
by :class:`interp_core.backend.policy.ReplayOps` around these ops, so new target values of the
same shapes do not recompile.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


class JaxOps:
    """The tensor operations of :class:`~interp_core.backend.scoring.TensorOps`, in jnp.

    Parameters
    ----------
    channel_axis : int
        Where a dense (segmentation) output keeps its classes: -1 (Flax) or 1.
    """

    def __init__(self, channel_axis: int = -1) -> None:
        self.channel_axis = channel_axis

    def const(self, array: np.ndarray, like: jax.Array) -> jax.Array:
        array = np.asarray(array)
        if np.issubdtype(array.dtype, np.floating):
            return jnp.asarray(array, dtype=like.dtype)
        return jnp.asarray(array.astype(np.int32))

    @staticmethod
    def cast_like(value: Any, like: jax.Array) -> jax.Array:
        value = jnp.asarray(value)
        return value.astype(like.dtype) if jnp.issubdtype(value.dtype, jnp.floating) else value

    @staticmethod
    def flatten(x: jax.Array) -> jax.Array:
        return x.reshape(x.shape[0], -1)

    @staticmethod
    def row_sum(x: jax.Array) -> jax.Array:
        return x.sum(axis=1)

    @staticmethod
    def argmax(x: jax.Array) -> jax.Array:
        return jnp.argmax(jax.lax.stop_gradient(x), axis=1)

    @staticmethod
    def pick(x: jax.Array, indices: jax.Array) -> jax.Array:
        return jnp.take_along_axis(x, indices.astype(jnp.int32)[:, None], axis=1)[:, 0]

    @staticmethod
    def sqrt(x: jax.Array) -> jax.Array:
        return jnp.sqrt(x)

    @staticmethod
    def channel_means(x: jax.Array, axis: int) -> jax.Array:
        moved = jnp.moveaxis(x, axis, -1)
        return moved.reshape(moved.shape[0], -1, moved.shape[-1]).mean(axis=1)
