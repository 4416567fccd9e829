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


_FLOAT_PREFIXES = ("float", "bfloat", "half", "double", "complex")


def dtype_name(x: Any) -> str | None:
    """The dtype of a framework tensor or array as a plain name (``"uint8"``, ``"float32"``),
    or None when ``x`` has none. Reads the object only: imports no framework."""
    dtype = getattr(x, "dtype", None)
    if dtype is None:
        return None
    name = getattr(dtype, "name", None)  # NumPy, JAX and TensorFlow dtypes
    if not isinstance(name, str):
        name = str(dtype).rsplit(".", 1)[-1]  # torch: "torch.uint8"
    return name


def check_batch(inputs: Any) -> int:
    """Validate a batch of native inputs before any framework sees it; its sample count.

    Raises
    ------
    ValueError
        The batch is empty (0 samples): there is nothing to explain, and an empty result would
        hide a bug upstream (an empty data loader, a filter that dropped everything).
    TypeError
        A single array input of integer or boolean dtype (``uint8`` images straight from a
        decoder): models take floating-point inputs, normalised as in training. Models whose
        inputs really are integers (token ids) take them in a tuple or dict, which is not
        checked.
    """
    n = batch_size_of(inputs)
    if n == 0:
        shape = tuple(getattr(first_input(inputs), "shape", ()))
        raise ValueError(
            f"the batch is empty: inputs of shape {shape} have 0 samples; pass at least one "
            "sample (explanations of an empty batch are not defined)"
        )
    if not isinstance(inputs, list | tuple | dict):
        name = dtype_name(inputs)
        if name is not None and not name.startswith(_FLOAT_PREFIXES):
            raise TypeError(
                f"inputs have dtype {name}, but models explain floating-point inputs: convert "
                "to float and normalise as in training (e.g. x.float() / 255 for uint8 images, "
                "then the training mean and std)"
            )
    return n


def check_positive_int(value: Any, name: str) -> int:
    """``value`` as an int, or a ``ValueError`` naming ``name`` unless it is a positive int
    (bools refused)."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def check_batch_size(batch_size: Any) -> int:
    """``batch_size`` as an int, or a ``ValueError`` unless it is a positive int."""
    return check_positive_int(batch_size, "batch_size")


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
