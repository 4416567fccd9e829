"""The tensor operations the core's target scoring and adapter policy need, in TensorFlow.

The compiled path must not bake target values (class indices, masks, embeddings) into the
graph, or every new batch of targets would retrace. So the constants that ``target_scores``
asks for are recorded first by a NumPy dry run on a zero output of the right shape
(:func:`interp_core.backend.compiled.plan_targets`, which also validates the targets with the
core's own error messages), fed to the compiled function as arguments, and handed back in the
same order by :class:`interp_core.backend.compiled.ReplayOps` around :class:`TFOps`. The meaning
of every target kind stays defined once, in the core.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf


class TFOps:
    """The tensor operations of :class:`~interp_core.backend.scoring.TensorOps`, for Keras.

    Parameters
    ----------
    channel_axis : int
        Where a dense (segmentation) output keeps its classes: -1, or 1 for a
        ``data_format="channels_first"`` model.
    """

    def __init__(self, channel_axis: int = -1) -> None:
        self.channel_axis = channel_axis

    def const(self, array: np.ndarray, like: tf.Tensor) -> tf.Tensor:
        array = np.asarray(array)
        if np.issubdtype(array.dtype, np.floating):
            return tf.constant(array, dtype=like.dtype)
        return tf.constant(array, dtype=tf.int64)

    @staticmethod
    def cast_like(value: Any, like: tf.Tensor) -> tf.Tensor:
        value = tf.convert_to_tensor(value)
        if value.dtype.is_floating and value.dtype != like.dtype:
            return tf.cast(value, like.dtype)
        return value

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

    @staticmethod
    def channel_means(x: tf.Tensor, axis: int) -> tf.Tensor:
        rank = x.shape.rank
        axis %= rank
        if axis != rank - 1:
            x = tf.transpose(x, [0, *(i for i in range(1, rank) if i != axis), axis])
        return tf.reduce_mean(tf.reshape(x, [tf.shape(x)[0], -1, x.shape[-1]]), axis=1)

    @staticmethod
    def exp(x: tf.Tensor) -> tf.Tensor:
        return tf.exp(x)

    @staticmethod
    def argsort(x: tf.Tensor) -> tf.Tensor:
        return tf.cast(tf.argsort(tf.stop_gradient(x), axis=1, stable=True), tf.int64)

    @staticmethod
    def take(x: tf.Tensor, indices: tf.Tensor) -> tf.Tensor:
        return tf.gather(x, indices, axis=1, batch_dims=1)

    @staticmethod
    def one_hot(indices: tf.Tensor, like: tf.Tensor) -> tf.Tensor:
        return tf.one_hot(indices, int(like.shape[1]), dtype=like.dtype)
