"""Hessian-vector products of the target score at layers (capability ``"hvp"``), compiled.

:class:`HvpProgram` is the :class:`~interp_tensorflow.compiled.Program` with one more mode,
``"capture_hvp"``: the backend builds it through ``Backend._program(..., factory=HvpProgram)``
and caches it per model and key like every other pass, so a second call on the same shapes
traces nothing. It runs compiled rather than eagerly because it is a capture with one more
backward pass: eagerly, every op of the three passes would be a Python dispatch on every call.

Reverse over reverse, in the traced graph: ``G = dS/dA`` by symbolic ``tf.gradients`` (the
graph of that backward pass is itself differentiable), then, one layer at a time,
``tf.gradients(G_l, A_l, grad_ys=A_l)``, that is ``d(G_l . A_l)/dA_l`` with ``A_l`` held as the
vector: ``H_l A_l`` (Pearlmutter 1994), the layer's own block of the Hessian.

Why not nested ``GradientTape``s: ``tf.nn.moments``, which Keras' ``LayerNormalization`` (and
``GroupNormalization``) use, computes the variance around ``stop_gradient(mean)``. That leaves
first derivatives exact (the variance's derivative with respect to the mean is zero) but drops
terms of the second; the Hessian-vector product of the demo ViT's final norm was off by 0.3%.
While the forward pass is traced, :func:`exact_moments` gives those ``StopGradient`` ops (and
only those: the ones inside a ``moments`` name scope) an identity gradient, an override of the
graph that symbolic ``tf.gradients`` honours and a tape does not.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import tensorflow as tf

from interp_core.backend.layers import missing_layers_error
from interp_core.backend.scoring import target_scores
from interp_core.backend.target_spec import TargetSpec
from interp_tensorflow.compiled import (
    Program,
    check_connected,
    forward,
    mark_non_finite,
    recording_hooks,
)

#: The gradient the ``StopGradient`` ops of a traced forward pass get in :func:`exact_moments`.
MOMENTS_STOP_GRADIENT = "InterpCoreMomentsStopGradient"


def _moments_stop_gradient(op: Any, grad: tf.Tensor) -> tf.Tensor | None:
    """Identity inside ``tf.nn.moments`` (the mean its variance is centred on), none
    elsewhere (a ``stop_gradient`` the model means)."""
    scopes = op.name.split("/")[:-1]
    return grad if any(s == "moments" or s.startswith("moments_") for s in scopes) else None


with contextlib.suppress(KeyError):  # registered by an earlier import of this module
    tf.RegisterGradient(MOMENTS_STOP_GRADIENT)(_moments_stop_gradient)


def exact_moments() -> contextlib.AbstractContextManager[Any]:
    """A context manager: the ``StopGradient`` ops that ``tf.nn.moments`` traces inside it
    into the current (``tf.function``) graph pass gradients, so that second derivatives
    through layer and group normalisation are exact; first derivatives do not change."""
    graph = tf.compat.v1.get_default_graph()
    return graph.gradient_override_map({"StopGradient": MOMENTS_STOP_GRADIENT})


class HvpProgram(Program):
    """A :class:`~interp_tensorflow.compiled.Program` that also runs ``mode="capture_hvp"``."""

    def _capture_hvp(self, model: Any, spec: TargetSpec, x: Any, consts: Sequence[tf.Tensor]
                     ) -> dict[str, Any]:
        """Activations, gradients, ``H A`` per layer, scores and top-1 classes."""
        layers = self._layers(model)
        store: dict[str, tf.Tensor] = {}
        hooks = recording_hooks(layers, store)
        with exact_moments():
            out = forward(model, x, hooks, self.output)
        missing = [p for p, _, _ in layers if p not in store]
        if missing:
            raise missing_layers_error(missing, "the model's call() uses")
        scores, top1 = target_scores(out, spec, self._ops(consts))
        acts = [store[p] for p, _, _ in layers]
        grads = tf.gradients(tf.reduce_sum(scores), acts)
        check_connected([p for p, _, _ in layers], grads)
        products = []
        for a, g in zip(acts, grads, strict=True):
            (h,) = tf.gradients(g, [a], grad_ys=[a],
                                unconnected_gradients=tf.UnconnectedGradients.ZERO)
            products.append(h)
        fmts = [fmt for _, _, fmt in layers]
        result = {
            "acts": [self._layout(a, f) for a, f in zip(acts, fmts, strict=True)],
            "grads": [self._layout(g, f) for g, f in zip(grads, fmts, strict=True)],
            "hvp": [self._layout(h, f) for h, f in zip(products, fmts, strict=True)],
            "scores": tf.cast(scores, tf.float32),
            "top1": top1,
        }
        return mark_non_finite(result, x, ("acts", "grads", "hvp"))
