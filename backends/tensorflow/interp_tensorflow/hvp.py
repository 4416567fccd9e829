"""Hessian-vector products of the target score at layers (capability ``"hvp"``), compiled.

:class:`HvpProgram` is the :class:`~interp_tensorflow.compiled.Program` with one more mode,
``"capture_hvp"``: the backend builds it through ``Backend._program(..., factory=HvpProgram)``
and caches it per model and key like every other pass, so a second call on the same shapes
traces nothing. It runs as a compiled ``tf.function`` rather than eagerly because it is a
capture with one more backward pass: eager nested tapes on a Keras model cost one Python
dispatch per op, three times over, on every call.

Nested tapes: both watch the captured layer outputs only (``watch_accessed_variables=False``).
The inner tape records the forward pass and the score; its gradient ``G = dS/dA`` is taken
*inside* the outer tape, which so records the backward pass as well; the outer tape's gradient
of ``sum(G * stop_gradient(A))`` with respect to ``A`` is ``H A`` (Pearlmutter 1994), one layer
at a time so that each layer gets its own ``H_l A_l``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import tensorflow as tf

from interp_core.backend.layers import layer_ran_twice_error, missing_layers_error
from interp_core.backend.scoring import target_scores
from interp_core.backend.target_spec import TargetSpec
from interp_tensorflow.compiled import Program, forward, mark_samples, non_finite_samples
from interp_tensorflow.layers import Hook


class HvpProgram(Program):
    """A :class:`~interp_tensorflow.compiled.Program` that also runs ``mode="capture_hvp"``."""

    def _capture_hvp(self, model: Any, spec: TargetSpec, x: Any, consts: Sequence[tf.Tensor]
                     ) -> dict[str, Any]:
        """Activations, gradients, ``H A`` per layer, scores and top-1 classes."""
        layers = self._layers(model)
        store: dict[str, tf.Tensor] = {}
        outer = tf.GradientTape(watch_accessed_variables=False, persistent=True)
        inner = tf.GradientTape(watch_accessed_variables=False)

        def make_hook(path: str) -> Hook:
            def hook(t: tf.Tensor) -> tf.Tensor:
                if path in store:
                    raise layer_ran_twice_error(path)
                outer.watch(t)
                inner.watch(t)
                store[path] = t
                return t
            return hook

        hooks = [(p, layer, make_hook(p)) for p, layer, _ in layers]
        with outer:
            with inner:
                out = forward(model, x, hooks, self.output)
                missing = [p for p, _, _ in layers if p not in store]
                if missing:
                    raise missing_layers_error(missing, "the model's call() uses")
                scores, top1 = target_scores(out, spec, self._ops(consts))
                total = tf.reduce_sum(scores)
            acts = [store[p] for p, _, _ in layers]
            grads = inner.gradient(total, acts)
            unconnected = [p for (p, _, _), g in zip(layers, grads, strict=True) if g is None]
            if unconnected:
                raise ValueError(
                    f"layer(s) {unconnected} are not connected to the explained output: the "
                    "target score does not depend on them. Pick a layer on the path to the "
                    "output (or choose the output with output=)"
                )
            dots = [tf.reduce_sum(g * tf.stop_gradient(a)) for g, a in zip(grads, acts,
                                                                             strict=True)]
        products = [outer.gradient(d, a, unconnected_gradients=tf.UnconnectedGradients.ZERO)
                    for d, a in zip(dots, acts, strict=True)]
        del outer
        fmts = [fmt for _, _, fmt in layers]
        result = {
            "acts": [self._layout(a, f) for a, f in zip(acts, fmts, strict=True)],
            "grads": [self._layout(g, f) for g, f in zip(grads, fmts, strict=True)],
            "hvp": [self._layout(h, f) for h, f in zip(products, fmts, strict=True)],
            "scores": tf.cast(scores, tf.float32),
            "top1": top1,
        }
        bad = non_finite_samples(x)
        if bad is not None:
            for key in ("acts", "grads", "hvp"):
                result[key] = [mark_samples(t, bad) for t in result[key]]
            result["scores"] = mark_samples(result["scores"], bad)
        return result
