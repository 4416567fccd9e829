"""Tensor operations for :func:`interp_core.backend.scoring.target_scores`, in TensorFlow and NumPy.

The compiled path must not bake target values (class indices, masks, embeddings) into the
graph, or every new batch of targets would retrace. So the constants that ``target_scores``
asks for are computed first by a NumPy dry run on a zero output of the right shape
(:func:`interp_core.backend.scoring.target_constants`, which also validates the targets with the
core's own error messages), and then fed to the compiled function as arguments, where
:class:`FedOps` hands them out in the same order. The meaning of every target kind stays
defined once, in the core.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from interp_core.backend.scoring import target_constants as core_target_constants
from interp_core.backend.targets import TargetSpec


class TFOps:
    """The six tensor operations ``target_scores`` needs, for Keras outputs (classes last)."""

    channel_axis = -1

    def const(self, array: np.ndarray, like: tf.Tensor) -> tf.Tensor:
        array = np.asarray(array)
        if np.issubdtype(array.dtype, np.floating):
            return tf.constant(array, dtype=like.dtype)
        return tf.constant(array, dtype=tf.int64)

    @staticmethod
    def flatten(x: tf.Tensor) -> tf.Tensor:
        return tf.reshape(x, (x.shape[0] if x.shape[0] is not None else -1, -1))

    @staticmethod
    def row_sum(x: tf.Tensor) -> tf.Tensor:
        return tf.reduce_sum(x, axis=1)

    @staticmethod
    def argmax(x: tf.Tensor) -> tf.Tensor:
        return tf.argmax(tf.stop_gradient(x), axis=1, output_type=tf.int64)

    @staticmethod
    def pick(x: tf.Tensor, indices: tf.Tensor) -> tf.Tensor:
        return tf.gather(x, indices, axis=1, batch_dims=1)

    @staticmethod
    def sqrt(x: tf.Tensor) -> tf.Tensor:
        return tf.sqrt(x)


class FedOps(TFOps):
    """:class:`TFOps` whose constants are the compiled function's arguments, in call order."""

    def __init__(self, fed: Sequence[tf.Tensor]) -> None:
        self.fed = list(fed)
        self.used = 0

    def const(self, array: np.ndarray, like: tf.Tensor) -> tf.Tensor:
        if self.used >= len(self.fed):
            raise RuntimeError(
                "interp-tensorflow: target_scores asked for more constants than the dry run "
                "recorded; this is a bug, please report it"
            )
        value = self.fed[self.used]
        self.used += 1
        if value.dtype.is_floating and value.dtype != like.dtype:
            value = tf.cast(value, like.dtype)
        return value


def target_constants(spec: TargetSpec, output_shape: Sequence[int]) -> list[np.ndarray]:
    """Validate ``spec`` against an output of ``output_shape`` and return its constants.

    Parameters
    ----------
    spec : TargetSpec
        Resolved targets of the batch (any kind but ``"fn"``).
    output_shape : sequence of int
        Shape of the selected model output, batch axis included.

    Returns
    -------
    list of np.ndarray
        What ``target_scores`` passes to ``ops.const``, in order (float32 or int64).

    Raises
    ------
    ValueError
        The core's messages: a class out of range, a mask of the wrong shape, ...
    """
    return core_target_constants(spec, tuple(output_shape), channel_axis=-1, int_dtype=np.int64)
