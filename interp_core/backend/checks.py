"""Input checks and non-finite values, shared by every adapter.

- Input gradients: :func:`channel_objective` (the objective of feature visualisation),
  :func:`check_channels` and :func:`check_channel_range`.
- Non-finite values: :func:`non_finite_rows` and :func:`warn_non_finite`.

Imports no framework: the adapter's ops are arguments.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from interp_core.backend.scoring import TensorOps


# -- input gradients --------------------------------------------------------------------------
def channel_objective(layer_output: Any, channels: Any, ops: TensorOps,
                      channel_axis: int) -> Any:
    """The objective of feature visualisation: the spatial mean of channel ``channels[n]`` of
    sample ``n``'s layer output, ``(N,)``, written with the adapter's ops
    (``ops.channel_means(x, axis) -> (N, C)`` and ``ops.pick``)."""
    return ops.pick(ops.channel_means(layer_output, channel_axis), channels)


def check_channels(channels: Any, n: int) -> np.ndarray:
    """``channels`` as int64 ``(n,)``, or a ``ValueError`` naming what is wrong."""
    idx = np.asarray(channels, dtype=np.int64).reshape(-1)
    if idx.shape != (n,):
        raise ValueError(f"channels has {idx.size} entries but the batch has {n} samples")
    if (idx < 0).any():
        raise ValueError(f"channel {int(idx.min())} is out of range: channels are >= 0")
    return idx


def check_channel_range(channels: np.ndarray, count: int, where: str = "the layer") -> None:
    """Raise when a channel index is not below ``count``, the channels ``where`` has."""
    if channels.size and int(channels.max()) >= count:
        raise ValueError(
            f"channel {int(channels.max())} is out of range: {where} has {count} channels "
            f"(valid: 0..{count - 1})"
        )


# -- non-finite values ------------------------------------------------------------------------
def non_finite_rows(*arrays: np.ndarray) -> np.ndarray:
    """bool ``(N,)``: samples with a NaN or infinity in any of ``arrays`` (each ``(N, ...)``)."""
    bad = np.zeros(len(arrays[0]), dtype=bool)
    for a in arrays:
        bad |= ~np.isfinite(np.asarray(a)).reshape(len(a), -1).all(axis=1)
    return bad


def warn_non_finite(what: str, *arrays: np.ndarray) -> np.ndarray:
    """Warn (``RuntimeWarning``) naming the samples of ``arrays`` that are not finite; returns
    the mask of :func:`non_finite_rows`."""
    bad = non_finite_rows(*arrays)
    if bad.any():
        warnings.warn(
            f"{what}: non-finite values for samples {np.flatnonzero(bad).tolist()}",
            RuntimeWarning, stacklevel=3,
        )
    return bad
