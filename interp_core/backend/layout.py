"""Where a backend's inputs keep their channels, and conversions to and from it.

A backend declares ``input_layout``: a string, or a method ``input_layout(model) -> str`` where
it depends on the model (Keras ``data_format``). The core never guesses from a backend's name.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

CHANNELS_FIRST = "channels_first"
CHANNELS_LAST = "channels_last"
NO_CHANNELS = "none"  # (N, *spatial): no channel axis at all

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
    channels-last, the canonical layout.
    """
    chosen = layout or declared_layout(backend, model) or CHANNELS_LAST
    if chosen not in LAYOUTS:
        raise ValueError(f"layout {chosen!r} must be one of {LAYOUTS}")
    return chosen


def to_backend_layout(images: np.ndarray, backend: Any, model: Any = None) -> np.ndarray:
    """Channels-last images ``(N, *S, C)`` in the backend's input layout (a NumPy array)."""
    if input_layout(backend, model) == CHANNELS_FIRST:
        return np.ascontiguousarray(np.moveaxis(images, -1, 1))
    return np.ascontiguousarray(images)


def infer_layout(x: np.ndarray, spatial: Sequence[int], backend: Any = None,
                 model: Any = None) -> str:
    """Where the channel axis of a batch of native inputs is.

    A backend may declare ``input_layout = "channels_first"`` (torch) or ``"channels_last"``
    (Keras, Flax); otherwise the layout is found by matching ``x.shape`` against ``spatial``.

    Parameters
    ----------
    x : np.ndarray
        The native input as NumPy, ``(N, C, *spatial)``, ``(N, *spatial, C)`` or ``(N, *spatial)``.
    spatial : sequence of int
        The input's spatial shape (``Capture.input_spatial``, or a map's shape).
    backend : Backend, optional
        Read for a declared layout (:func:`declared_layout`).
    model : optional
        Passed to a backend whose ``input_layout`` is a method of the model.

    Returns
    -------
    str
        ``"channels_first"``, ``"channels_last"`` or ``"none"`` (no channel axis).

    Raises
    ------
    ValueError
        The shape matches no layout, or matches both channel layouts (e.g. ``(N, 8, 8, 8)``)
        and the backend declares none.
    """
    spatial = tuple(int(s) for s in spatial)
    k = len(spatial)
    shape = tuple(x.shape)
    fits = {
        CHANNELS_FIRST: len(shape) == k + 2 and shape[2:] == spatial,
        CHANNELS_LAST: len(shape) == k + 2 and shape[1:-1] == spatial,
        NO_CHANNELS: len(shape) == k + 1 and shape[1:] == spatial,
    }
    declared = None if backend is None else declared_layout(backend, model)
    if declared is not None and (fits[declared] or fits[NO_CHANNELS]):
        return NO_CHANNELS if fits[NO_CHANNELS] else declared
    matches = [name for name, ok in fits.items() if ok]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise ValueError(
            f"input of shape {shape} does not have the spatial shape {spatial} as "
            "(N, C, *spatial), (N, *spatial, C) or (N, *spatial); perturbation methods and "
            "metrics need a single array input whose spatial axes the maps cover"
        )
    raise ValueError(
        f"input of shape {shape} is ambiguous: both (N, C, *spatial) and (N, *spatial, C) fit "
        f"spatial shape {spatial}; give the backend an attribute input_layout = "
        "'channels_first' or 'channels_last'"
    )
