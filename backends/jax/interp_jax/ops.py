"""Target scoring under ``jax.jit`` without recompiling when the target values change.

:func:`interp_core.backend.scoring.target_scores` turns the NumPy arrays of a
:class:`~interp_core.backend.targets.TargetSpec` (class indices, masks, embeddings) into constants
through ``ops.const``. Baked into a jitted function they would force a new compilation for
every new list of classes. So the adapter scores twice:

1. :func:`plan_targets` runs ``target_scores`` in NumPy on a zero output of the model's output
   shape. That validates the spec with the core's own error messages (class out of range, mask
   shape, ...) and records every constant ``target_scores`` asks for, in order.
2. Inside the jitted function, :class:`ReplayOps` hands back those constants, now traced
   arguments of the function, in the same order.

The order and shapes of the constants depend only on the target kind and shapes, which are part
of the compile-cache key (:attr:`TargetPlan.key`); their values are not.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from interp_core.backend.scoring import target_constants, target_scores
from interp_core.backend.targets import TargetSpec


def _is_float(dtype: Any) -> bool:
    return bool(jnp.issubdtype(dtype, jnp.floating))


class JaxOps:
    """The six tensor operations :func:`~interp_core.backend.scoring.target_scores` needs, in jnp.

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


class ReplayOps(JaxOps):
    """:class:`JaxOps` whose ``const`` returns the recorded constants (traced), in order."""

    def __init__(self, consts: Sequence[jax.Array], channel_axis: int = -1) -> None:
        super().__init__(channel_axis)
        self._consts = list(consts)
        self._next = 0

    def const(self, array: np.ndarray, like: jax.Array) -> jax.Array:
        if self._next >= len(self._consts):  # pragma: no cover - a core change would cause it
            raise RuntimeError(
                "interp-jax: target_scores asked for more constants than were recorded; the "
                "scoring of this target kind depends on more than its shapes"
            )
        value = self._consts[self._next]
        self._next += 1
        return value.astype(like.dtype) if _is_float(value.dtype) else value


@dataclass(frozen=True, eq=False)
class TargetPlan:
    """How a jitted function scores one batch's targets.

    Attributes
    ----------
    key : tuple
        Hashable; equal keys mean the same traced scoring (kind, batch size, constant shapes,
        and for ``OutputTarget`` the callables themselves).
    consts : tuple of np.ndarray
        The constants to pass to the jitted function (int32 or float32).
    spec : TargetSpec
        The spec itself (scored at trace time by the first call with this key).
    replay : bool
        Whether the traced function must score with :class:`ReplayOps` (else constants are
        baked, which is right for ``OutputTarget`` where the key holds the callables).
    """

    key: tuple[Any, ...]
    consts: tuple[np.ndarray, ...]
    spec: TargetSpec
    replay: bool

    def ops(self, consts: Sequence[jax.Array], channel_axis: int) -> JaxOps:
        """The ops to score with inside the traced function."""
        return ReplayOps(consts, channel_axis) if self.replay else JaxOps(channel_axis)

    def score(self, output: jax.Array, consts: Sequence[jax.Array],
              channel_axis: int) -> tuple[jax.Array, jax.Array | None]:
        """``target_scores`` of ``output`` inside the traced function."""
        return target_scores(output, self.spec, self.ops(consts, channel_axis))


def needs_output_shape(spec: TargetSpec) -> bool:
    """Whether :func:`plan_targets` needs the model's output shape for ``spec``."""
    return spec.kind not in ("top1", "fn")


def plan_targets(spec: TargetSpec, output_shape: tuple[int, ...] | None,
                 channel_axis: int) -> TargetPlan:
    """Validate ``spec`` against the output shape and record its constants.

    Parameters
    ----------
    spec : TargetSpec
        The batch's resolved targets.
    output_shape : tuple of int or None
        Shape of the selected model output for this batch; only read when
        :func:`needs_output_shape` says so.
    channel_axis : int
        Class axis of dense outputs.

    Raises
    ------
    ValueError
        The core's messages: class out of range, BinaryTarget on a multi-logit model, mask of
        the wrong shape, embedding of the wrong length.
    """
    if spec.kind == "top1":
        return TargetPlan(("top1", spec.n), (), spec, replay=True)
    if spec.kind == "fn":
        return TargetPlan(("fn", spec.n, spec.fns), (), spec, replay=False)
    if output_shape is None:
        raise ValueError(f"targets of kind {spec.kind!r} need the model's output shape")
    consts = tuple(target_constants(spec, tuple(output_shape), channel_axis, np.int32))
    key = (spec.kind, spec.n, tuple((c.shape, c.dtype.str) for c in consts))
    return TargetPlan(key, consts, spec, replay=True)
