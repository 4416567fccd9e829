"""JAX adapter for interp-core: Flax NNX modules and ``interp_core.Split(features, head)``.

Importing this package does not import jax; the adapter lives in :mod:`interp_jax.backend`.
"""

__version__ = "0.1.0"
