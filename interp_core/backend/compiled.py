"""Target constants for compiled adapters (``tf.function``, ``jax.jit``).

:func:`plan_targets` records the constants that
:func:`~interp_core.backend.scoring.target_scores` asks for, and :class:`ReplayOps` hands them
back inside the compiled function, so new target values never recompile.

Imports no framework: the adapter's :class:`~interp_core.backend.scoring.TensorOps` are
arguments.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from interp_core.backend.scoring import TensorOps, target_constants, target_scores
from interp_core.backend.target_spec import TargetSpec


@dataclass(frozen=True, eq=False)
class TargetPlan:
    """How a compiled function scores one batch's targets.

    Attributes
    ----------
    key : tuple
        Hashable; equal keys mean the same traced scoring (kind, batch size, constant shapes,
        and for ``OutputTarget`` the callables themselves).
    consts : tuple of np.ndarray
        The constants to pass to the compiled function (integers as ``int_dtype``, float32).
    spec : TargetSpec
        The spec itself (scored at trace time by the first call with this key).
    replay : bool
        Whether the traced function scores with :class:`ReplayOps` (else constants are baked,
        which is right for ``OutputTarget``, whose key holds the callables).
    """

    key: tuple[Any, ...]
    consts: tuple[np.ndarray, ...]
    spec: TargetSpec
    replay: bool

    def score(self, output: Any, consts: Sequence[Any], ops: TensorOps) -> tuple[Any, Any]:
        """:func:`target_scores` of ``output`` inside the traced function."""
        return target_scores(output, self.spec, ReplayOps(ops, consts) if self.replay else ops)


def needs_output_shape(spec: TargetSpec) -> bool:
    """Whether :func:`plan_targets` needs the model's output shape for ``spec``."""
    return spec.kind not in ("top1", "fn", "none")


def plan_targets(spec: TargetSpec, output_shape: Sequence[int] | None, channel_axis: int = -1,
                 int_dtype: type = np.int64) -> TargetPlan:
    """Validate ``spec`` against the output shape and record its constants.

    Parameters
    ----------
    spec : TargetSpec
        The batch's resolved targets.
    output_shape : sequence of int or None
        Shape of the selected model output, batch axis included; only read when
        :func:`needs_output_shape` says so.
    channel_axis : int
        Class axis of dense (segmentation) outputs.
    int_dtype : type
        dtype of integer constants (``np.int32`` for JAX without x64).

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
    if spec.kind == "none":  # one constant, the zero scores; any output
        return TargetPlan(("none", spec.n), (np.zeros(spec.n or 0, np.float32),), spec,
                          replay=True)
    if output_shape is None:
        raise ValueError(f"targets of kind {spec.kind!r} need the model's output shape")
    consts = tuple(target_constants(spec, tuple(output_shape), channel_axis, int_dtype))
    key = (spec.kind, spec.n, tuple((c.shape, c.dtype.str) for c in consts))
    return TargetPlan(key, consts, spec, replay=True)


class ReplayOps:
    """An adapter's :class:`TensorOps` whose ``const`` hands back recorded constants, in order.

    Inside a compiled function the constants are traced arguments, so new target values of
    the same shapes reuse the compiled function. Float constants take the dtype of the tensor
    they meet (``ops.cast_like``).
    """

    def __init__(self, ops: TensorOps, consts: Sequence[Any]) -> None:
        self.ops = ops
        self.channel_axis = ops.channel_axis
        self._consts = list(consts)
        self._next = 0

    def const(self, array: np.ndarray, like: Any) -> Any:
        if self._next >= len(self._consts):
            raise RuntimeError(
                "interp-core: target_scores asked for more constants than plan_targets "
                "recorded; the scoring of this target kind depends on more than its shapes"
            )
        value = self._consts[self._next]
        self._next += 1
        return self.ops.cast_like(value, like)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.ops, name)  # flatten, row_sum, argmax, pick, sqrt, ...
