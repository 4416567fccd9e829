"""Guided backpropagation in TensorFlow: inside :func:`guided_relus`, every ``Relu`` op a
graph-mode trace creates gets a gradient that passes back only positive gradients where the
op's output was positive (Springenberg et al. 2015). The override applies to symbolic
``tf.gradients`` in the compiled passes (:mod:`interp_tensorflow.compiled`)."""

from __future__ import annotations

import contextlib
from typing import Any

import tensorflow as tf

#: The gradient that guided backpropagation gives every ``Relu`` op of a compiled pass.
GUIDED_RELU = "InterpCoreGuidedRelu"


def _guided_relu_gradient(op: Any, grad: tf.Tensor) -> tf.Tensor:
    """Guided backpropagation through ReLU: ``g * (y > 0) * (g > 0)``."""
    return tf.where((op.outputs[0] > 0) & (grad > 0), grad, tf.zeros_like(grad))


with contextlib.suppress(KeyError):  # registered by an earlier import of this module
    tf.RegisterGradient(GUIDED_RELU)(_guided_relu_gradient)


def guided_relus() -> contextlib.AbstractContextManager[Any]:
    """A context manager: every ``Relu`` op traced inside it into the current (``tf.function``)
    graph has the guided gradient (a ``gradient_override_map`` of that graph)."""
    graph = tf.compat.v1.get_default_graph()
    return graph.gradient_override_map({"Relu": GUIDED_RELU})
