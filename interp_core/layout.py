"""Where a backend's image inputs keep their channels, and conversions to and from it."""

from __future__ import annotations

from typing import Any

import numpy as np

CHANNELS_FIRST = "channels_first"
CHANNELS_LAST = "channels_last"


LAYOUTS = (CHANNELS_FIRST, CHANNELS_LAST)


def declared_layout(backend: Any, model: Any = None) -> str | None:
    """What the backend declares, or None.

    A backend may have an ``input_layout`` attribute: a string, or a method
    ``input_layout(model) -> str`` where it depends on the model (Keras ``data_format``).
    """
    declared = getattr(backend, "input_layout", None)
    if callable(declared):
        declared = declared(model)
    if declared is not None and declared not in LAYOUTS:
        raise ValueError(
            f"backend {getattr(backend, 'name', backend)!r} declares input_layout="
            f"{declared!r}; expected {CHANNELS_FIRST!r} or {CHANNELS_LAST!r}"
        )
    return declared


def input_layout(backend: Any, model: Any = None, layout: str | None = None) -> str:
    """``"channels_first"`` (``(N, C, *S)``) or ``"channels_last"`` (``(N, *S, C)``).

    ``layout`` when given; else what the backend declares (:func:`declared_layout`); else
    channels-first for torch and channels-last for every other backend.
    """
    chosen = layout or declared_layout(backend, model) or (
        CHANNELS_FIRST if getattr(backend, "name", "") == "torch" else CHANNELS_LAST)
    if chosen not in LAYOUTS:
        raise ValueError(f"layout {chosen!r} must be one of {LAYOUTS}")
    return chosen


def to_backend_layout(images: np.ndarray, backend: Any, model: Any = None) -> np.ndarray:
    """Channels-last images ``(N, *S, C)`` in the backend's input layout (a NumPy array)."""
    if input_layout(backend, model) == CHANNELS_FIRST:
        return np.ascontiguousarray(np.moveaxis(images, -1, 1))
    return np.ascontiguousarray(images)


def from_backend_layout(images: np.ndarray, backend: Any, model: Any = None) -> np.ndarray:
    """Images in the backend's input layout as channels-last ``(N, *S, C)``."""
    if input_layout(backend, model) == CHANNELS_FIRST:
        return np.ascontiguousarray(np.moveaxis(images, 1, -1))
    return np.ascontiguousarray(images)
