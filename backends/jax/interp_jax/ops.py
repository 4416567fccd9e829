"""The tensor operations the core's target scoring and adapter policy need, in ``jax.numpy``.

Under ``jax.jit`` the target constants (class indices, masks, embeddings) are arguments of the
compiled function, recorded by :func:`interp_core.backend.compiled.plan_targets` and handed back
by :class:`interp_core.backend.compiled.ReplayOps` around these ops, so new target values of the
same shapes do not recompile.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from interp_core.backend.scoring import NumpyApiOps


class JaxOps(NumpyApiOps):
    """The tensor operations of :class:`~interp_core.backend.scoring.TensorOps`, in jnp: the
    NumPy-API ops of the core on ``jax.numpy``, with ``stop_gradient`` before ``argmax``.

    Parameters
    ----------
    channel_axis : int
        Where a dense (segmentation) output keeps its classes: -1 (Flax) or 1.
    """

    xp = jnp
    int_dtype = jnp.int32

    @staticmethod
    def stop_gradient(x: jax.Array) -> jax.Array:
        return jax.lax.stop_gradient(x)
