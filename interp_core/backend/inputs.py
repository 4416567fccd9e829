"""Framework-agnostic facts about a batch of native inputs, and how to walk it in chunks."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np


def first_input(inputs: Any) -> Any:
    """The first array of a multi-input batch (list, tuple or dict of them); else ``inputs``."""
    if isinstance(inputs, dict):
        return next(iter(inputs.values()))
    if isinstance(inputs, list | tuple):
        return inputs[0]
    return inputs


def batch_size_of(inputs: Any) -> int:
    """Number of samples of a framework tensor, NumPy array, or list/dict of them."""
    first = first_input(inputs)
    shape = getattr(first, "shape", None)
    if shape is None:
        shape = np.asarray(first).shape
    if len(shape) == 0:
        raise ValueError("inputs must have a batch axis, got a scalar")
    return int(shape[0])


def check_batch_size(batch_size: Any) -> int:
    """``batch_size`` as an int, or a ``ValueError`` unless it is a positive int."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer) \
            or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    return int(batch_size)


def chunks(n: int, batch_size: int) -> Iterator[slice]:
    """Consecutive slices of at most ``batch_size`` covering ``range(n)``."""
    for start in range(0, n, batch_size):
        yield slice(start, min(start + batch_size, n))


def take(inputs: Any, index: slice | np.ndarray) -> Any:
    """Samples ``index`` of a batch, keeping its structure (tensor, list/tuple or dict)."""
    if isinstance(inputs, dict):
        return {k: v[index] for k, v in inputs.items()}
    if isinstance(inputs, list | tuple):
        return type(inputs)(v[index] for v in inputs)
    return inputs[index]
