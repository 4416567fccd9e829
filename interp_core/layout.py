"""Where a backend's image inputs keep their channels, and conversions to and from it."""

from __future__ import annotations

from typing import Any

import numpy as np

CHANNELS_FIRST = "channels_first"
CHANNELS_LAST = "channels_last"


def input_layout(backend: Any) -> str:
    """``"channels_first"`` (torch, ``(N, C, *S)``) or ``"channels_last"`` (Keras, Flax).

    Read from the backend's optional ``input_layout`` attribute; without it, torch is
    channels-first and every other backend channels-last.
    """
    layout = getattr(backend, "input_layout", None)
    if layout is None:
        layout = CHANNELS_FIRST if getattr(backend, "name", "") == "torch" else CHANNELS_LAST
    if layout not in (CHANNELS_FIRST, CHANNELS_LAST):
        raise ValueError(f"input_layout {layout!r} is not {CHANNELS_FIRST!r} or {CHANNELS_LAST!r}")
    return layout


def to_backend_layout(images: np.ndarray, backend: Any) -> np.ndarray:
    """Channels-last images ``(N, *S, C)`` in the backend's input layout (a NumPy array)."""
    if input_layout(backend) == CHANNELS_FIRST:
        return np.ascontiguousarray(np.moveaxis(images, -1, 1))
    return np.ascontiguousarray(images)


def from_backend_layout(images: np.ndarray, backend: Any) -> np.ndarray:
    """Images in the backend's input layout as channels-last ``(N, *S, C)``."""
    if input_layout(backend) == CHANNELS_FIRST:
        return np.ascontiguousarray(np.moveaxis(images, 1, -1))
    return np.ascontiguousarray(images)
