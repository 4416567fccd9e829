"""Test helpers for the JAX adapter: the reference models in Flax NNX, and state snapshots.

Imported only by tests (it imports jax and flax). A third-party JAX-based adapter can run the
conformance suite on these with ``helpers = interp_jax.testing`` in a subclass of
:class:`interp_core.testing.conformance.ConformanceFromModule`.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from interp_core.testing import reference as ref
from interp_jax import demo_vit


def _set(variable: nnx.Variable, value: np.ndarray) -> None:
    variable.set_value(jnp.asarray(value))


class ConvReLU(nnx.Module):
    """A 3x3 convolution followed by ReLU (the reference model's ``"features"``)."""

    def __init__(self, cin: int, cout: int, *, padding: str | int = "VALID",
                 rngs: nnx.Rngs) -> None:
        self.conv = nnx.Conv(cin, cout, (3, 3), padding=padding, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return nnx.relu(self.conv(x))


class ReferenceNNX(nnx.Module):
    """A reference model of :mod:`interp_core.testing.reference` in Flax NNX (NHWC input).

    Submodules ``features`` (:class:`ConvReLU`) and ``fc`` (``nnx.Linear``; a 1x1 ``nnx.Conv``
    for ``"segmentation"``); pooling and flattening happen in ``__call__``.
    """

    def __init__(self, w: ref.ReferenceWeights | None = None, variant: str = "gap") -> None:
        w = ref.ReferenceModel(w, variant).weights  # checks the weights fit the variant
        self.variant = variant
        rngs = nnx.Rngs(0)
        self.features = ConvReLU(3, ref.CHANNELS, rngs=rngs)
        _set(self.features.conv.kernel, w.conv_kernel)
        _set(self.features.conv.bias, w.conv_bias)
        if variant == "segmentation":
            self.fc = nnx.Conv(ref.CHANNELS, w.classes, (1, 1), rngs=rngs)
            _set(self.fc.kernel, w.fc_weight.T[None, None])
        else:
            self.fc = nnx.Linear(w.fc_weight.shape[1], w.classes, rngs=rngs)
            _set(self.fc.kernel, w.fc_weight.T)
        _set(self.fc.bias, w.fc_bias)

    def __call__(self, x: jax.Array) -> jax.Array:
        a = self.features(x)
        if self.variant == "gap":
            return self.fc(a.mean(axis=(1, 2)))
        if self.variant == "flatten":
            return self.fc(a.reshape(a.shape[0], -1))
        return self.fc(a)


def reference_model(weights: ref.ReferenceWeights | None = None, variant: str = "gap"
                    ) -> ReferenceNNX:
    """The reference model ``variant`` in Flax NNX, from NumPy ``weights``."""
    return ReferenceNNX(weights, variant)


def reference_transformer(weights: dict[str, np.ndarray],
                          config: demo_vit.ViTConfig | None = None) -> nnx.Module:
    """The reference transformer (:mod:`interp_core.testing.reference_transformer`) in Flax NNX:
    the demo ViT architecture holding ``weights`` (:func:`interp_jax.demo_vit.build`)."""
    return demo_vit.build(weights, config)


def to_input(x: np.ndarray) -> jax.Array:
    """NumPy ``(N, H, W, C)`` -> a ``jax.Array`` (channels last, as Flax takes it)."""
    return jnp.asarray(x)


class Wrapped(nnx.Module):
    """``net`` with a structured output (:func:`interp_core.testing.reference.structured_output`
    of its logits, ``kind`` ``"tuple"`` or ``"dict"``)."""

    def __init__(self, net: nnx.Module, kind: str) -> None:
        self.net, self.kind = net, kind

    def __call__(self, x: jax.Array) -> Any:
        return ref.structured_output(self.net(x), self.kind)


#: ``wrap(model, kind) -> (Wrapped(model, kind), "net.features")``: the suite's hook.
structured_output_model = ref.structured_output_hook(Wrapped)


def model_state(model: nnx.Module) -> dict[str, Any]:
    """The suite's ``model_state`` snapshot of an NNX module: every leaf of ``nnx.state``
    (parameters, batch statistics, RNG keys and counters) and each submodule's
    ``deterministic`` / ``use_running_average`` flags."""
    leaves = jax.tree_util.tree_leaves_with_path(nnx.state(model))
    values = [
        (jax.tree_util.keystr(path),
         np.asarray(jax.random.key_data(a) if jnp.issubdtype(a.dtype, jax.dtypes.prng_key)
                    else a).copy())
        for path, a in leaves
    ]
    flags = [(path, getattr(m, "deterministic", None), getattr(m, "use_running_average", None))
             for path, m in nnx.iter_modules(model)]
    return {"state": values, "flags": flags}
