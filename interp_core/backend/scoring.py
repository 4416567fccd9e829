"""Target scores from a model output, written once for every framework.

Each adapter supplies a tiny :class:`TensorOps` (one-line methods in its framework) and
calls :func:`target_scores` on the selected model output inside its forward pass, so the
meaning of every target kind is defined here and nowhere else.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from interp_core.backend.detection import detection_scores, is_detection_output
from interp_core.backend.target_spec import TargetSpec, check_binary_output, check_class_range


class TensorOps(Protocol):
    """The framework operations :func:`target_scores` (and the adapter policy) need.

    ``channel_axis`` is where a dense-prediction (segmentation) output keeps its classes:
    1 for torch, -1 for Keras/Flax.
    """

    channel_axis: int

    def const(self, array: np.ndarray, like: Any) -> Any:
        """``array`` as a constant on the device of ``like``.

        Float arrays take ``like``'s dtype; integer arrays stay integer.
        """
        ...

    def flatten(self, x: Any) -> Any:
        """``x`` reshaped to ``(N, -1)``."""
        ...

    def row_sum(self, x: Any) -> Any:
        """Sum of a ``(N, M)`` tensor over axis 1 -> ``(N,)``."""
        ...

    def argmax(self, x: Any) -> Any:
        """Row-wise argmax of ``(N, M)`` without gradient -> integer ``(N,)``."""
        ...

    def pick(self, x: Any, indices: Any) -> Any:
        """``x[arange(N), indices]`` for ``x`` ``(N, M)`` -> ``(N,)``."""
        ...

    def sqrt(self, x: Any) -> Any:
        """Element-wise square root."""
        ...

    def cast_like(self, value: Any, like: Any) -> Any:
        """``value`` in ``like``'s dtype if it is floating point, else unchanged (compiled
        adapters: :class:`~interp_core.backend.compiled.ReplayOps`)."""
        ...

    def channel_means(self, x: Any, axis: int) -> Any:
        """Spatial mean of each channel: ``(N, ...)`` with channels on ``axis`` -> ``(N, C)``
        (input gradients: :func:`~interp_core.backend.checks.channel_objective`)."""
        ...


def _any_tensor(output: Any) -> Any:
    """A tensor of ``output`` for :meth:`TensorOps.const` to take its device and dtype from:
    the output itself, or the first tensor of a per-image mapping (detections)."""
    if hasattr(output, "shape"):
        return output
    if isinstance(output, list | tuple) and output:
        first = output[0]
        values = first.values() if isinstance(first, dict) else [first]
        for value in values:
            if hasattr(value, "shape"):
                return value
    raise TypeError(f"the model output of type {type(output).__name__} holds no tensor to score")


def target_scores(output: Any, spec: TargetSpec, ops: TensorOps) -> tuple[Any, Any | None]:
    """Score each sample of ``output`` as ``spec`` says.

    Parameters
    ----------
    output : framework tensor, or a list of per-image detection mappings
        The selected model output, ``(N, K)`` for classifiers, ``(N, 1)`` or ``(N,)`` for a
        single logit, ``(N, K, *S)``/``(N, *S, K)`` for segmentation; for detection models,
        one mapping of ``"boxes"``, ``"labels"``, ``"scores"`` per image
        (:mod:`interp_core.backend.detection`).
    spec : TargetSpec
        Resolved targets of the batch.
    ops : TensorOps
        The adapter's framework operations.

    Returns
    -------
    scores : tensor ``(N,)``
        Differentiable target scores (their sum is what gradients are taken of).
    top1 : tensor ``(N,)`` or None
        The argmax classes when ``spec.kind == "top1"``, else None.
    """
    if spec.kind == "none":
        # No target: zeros, whatever the output is (no shape check). Target-free methods
        # capture without gradients, so nothing is differentiated through them.
        return ops.const(np.zeros(spec.n or 0, dtype=np.float32), _any_tensor(output)), None
    if spec.kind == "fn":
        return _fn_scores(output, spec, ops), None
    if is_detection_output(output):
        return detection_scores(output, spec, ops)
    if spec.kind == "detection":
        raise ValueError(
            f"DetectionTarget needs a detection output (a list of per-image mappings with "
            f"'boxes', 'labels', 'scores'), got {type(output).__name__}; pick it with output="
        )
    shape = tuple(int(d) for d in output.shape)
    if spec.kind in ("top1", "class"):
        if len(shape) != 2:
            raise ValueError(
                f"class targets need a (N, num_classes) output, got shape {shape}: use "
                "SegmentationTarget for dense outputs or output= to pick a tensor"
            )
        check_class_range(spec, shape[1])
        if spec.kind == "top1":
            top1 = ops.argmax(output)
            return ops.pick(output, top1), top1
        return ops.pick(output, ops.const(spec.indices, output)), None
    flat = ops.flatten(output)
    if spec.kind == "binary":
        check_binary_output(int(np.prod(shape[1:])))
        return ops.row_sum(flat * ops.const(spec.signs[:, None], output)), None
    if spec.kind == "segmentation":
        return ops.row_sum(flat * ops.const(_segmentation_weights(spec, shape, ops), output)), None
    if spec.kind == "similarity":
        emb = spec.embeddings
        if emb.shape[1] != int(np.prod(shape[1:])):
            raise ValueError(
                f"SimilarityTarget embedding has {emb.shape[1]} values but the model output "
                f"has {int(np.prod(shape[1:]))} per sample"
            )
        dot = ops.row_sum(flat * ops.const(emb, output))
        return dot / ops.sqrt(ops.row_sum(flat * flat) + 1e-12), None
    raise ValueError(f"unknown target kind {spec.kind!r}")


class NumpyApiOps:
    """:class:`TensorOps` for an array library with NumPy's API: NumPy itself, ``jax.numpy``.

    Parameters
    ----------
    channel_axis : int
        Where a dense (segmentation) output keeps its classes.

    Notes
    -----
    A subclass names its namespace ``xp`` and integer dtype ``int_dtype`` and overrides
    :meth:`stop_gradient` where its library has gradients; everything else is written once here.
    """

    xp: Any = np
    int_dtype: Any = np.int64

    def __init__(self, channel_axis: int = -1) -> None:
        self.channel_axis = channel_axis

    def const(self, array: np.ndarray, like: Any) -> Any:
        array = np.asarray(array)
        if np.issubdtype(array.dtype, np.floating):
            return self.xp.asarray(array, dtype=self.xp.asarray(like).dtype)
        return self.xp.asarray(array.astype(self.int_dtype))

    def cast_like(self, value: Any, like: Any) -> Any:
        value = self.xp.asarray(value)
        floating = self.xp.issubdtype(value.dtype, self.xp.floating)
        return value.astype(self.xp.asarray(like).dtype) if floating else value

    @staticmethod
    def stop_gradient(x: Any) -> Any:
        """``x`` cut off from gradients (NumPy has none: ``x`` itself)."""
        return x

    def flatten(self, x: Any) -> Any:
        return self.xp.reshape(x, (x.shape[0], -1))

    def row_sum(self, x: Any) -> Any:
        return self.xp.sum(x, axis=1)

    def argmax(self, x: Any) -> Any:
        return self.xp.argmax(self.stop_gradient(x), axis=1)

    def pick(self, x: Any, indices: Any) -> Any:
        rows = self.xp.asarray(indices).astype(self.int_dtype)[:, None]
        return self.xp.take_along_axis(x, rows, axis=1)[:, 0]

    def sqrt(self, x: Any) -> Any:
        return self.xp.sqrt(x)

    def channel_means(self, x: Any, axis: int) -> Any:
        moved = self.xp.moveaxis(x, axis, -1)
        return self.xp.mean(self.xp.reshape(moved, (moved.shape[0], -1, moved.shape[-1])), axis=1)


class _RecordingOps(NumpyApiOps):
    """NumPy ops that record every constant :func:`target_scores` asks for."""

    def __init__(self, channel_axis: int, int_dtype: type) -> None:
        super().__init__(channel_axis)
        self.int_dtype = int_dtype
        self.recorded: list[np.ndarray] = []

    def const(self, array: np.ndarray, like: Any) -> np.ndarray:
        array = np.asarray(array)
        integer = np.issubdtype(array.dtype, np.integer)
        stored = array.astype(self.int_dtype if integer else np.float32)
        self.recorded.append(np.ascontiguousarray(stored))
        return array


def target_constants(spec: TargetSpec, output_shape: tuple[int, ...], channel_axis: int = -1,
                     int_dtype: type = np.int64) -> list[np.ndarray]:
    """Validate ``spec`` against an output shape; return the constants scoring will use.

    For compiled adapters (``tf.function``, ``jax.jit``): scoring a zero output in NumPy runs
    every check of :func:`target_scores` with its messages and records, in order, each array it
    passes to ``ops.const``. Feeding those as arguments to the compiled function (whose ops hand
    them back in the same order) means new targets of the same shapes never retrace.

    Returns
    -------
    list of np.ndarray
        float32 arrays, and integer arrays as ``int_dtype``.
    """
    ops = _RecordingOps(channel_axis, int_dtype)
    target_scores(np.zeros(tuple(output_shape), dtype=np.float32), spec, ops)
    return ops.recorded


def _segmentation_weights(spec: TargetSpec, shape: tuple[int, ...], ops: TensorOps) -> np.ndarray:
    n = shape[0]
    axis = ops.channel_axis % len(shape)
    num_classes = shape[axis]
    check_class_range(spec, num_classes)
    spatial = tuple(d for i, d in enumerate(shape) if i not in (0, axis))
    masks = spec.masks
    if masks.shape[1:] != spatial:
        raise ValueError(
            f"SegmentationTarget mask has shape {masks.shape[1:]}, but the output's spatial "
            f"shape is {spatial}"
        )
    onehot = np.zeros((n, num_classes), dtype=np.float32)
    onehot[np.arange(n), spec.indices] = 1.0
    weights = onehot.reshape((n, num_classes) + (1,) * len(spatial)) * masks[:, None]
    return np.moveaxis(weights, 1, axis).reshape(n, -1)


def _fn_scores(output: Any, spec: TargetSpec, ops: TensorOps) -> Any:
    fns = spec.fns
    distinct = list(dict.fromkeys(fns))
    if len(distinct) == 1:
        return distinct[0](output)
    total = None
    for fn in distinct:
        chosen = np.array([f is fn for f in fns], dtype=np.float32)
        part = fn(output) * ops.const(chosen, output)
        total = part if total is None else total + part
    return total
