"""A layer's feature maps: one capture without gradients, on every backend."""

from __future__ import annotations

from typing import Any

import numpy as np

from interp_core.backend.inputs import check_batch
from interp_core.backend.registry import get_backend
from interp_core.backend.targets import resolve_targets


def feature_maps(
    model: Any, x: Any, layer: Any, *, backend: str | None = None, output: Any = None,
    reshape: Any = None,
) -> np.ndarray:
    """A layer's activations for a batch, as NumPy in the layout ``(N, C, *spatial)``.

    Parameters
    ----------
    model : framework model
        torch ``nn.Module``, Keras model, Flax NNX module or :class:`~interp_core.Split`.
    x : framework tensor or np.ndarray
        The model's native input (torch ``(N, C, H, W)``, Keras ``(N, H, W, C)``).
    layer : str or layer object
        The layer whose output to return (names as in :class:`~interp_core.GradCAM`).
    backend : str, optional
        Force an adapter; default: detected from the model's type.
    output : None, str, int or callable
        Which model output the forward pass scores (only matters for tuple/dict outputs).
    reshape : callable, optional
        Turns a token layer's native activations into ``(N, *spatial, C)``, e.g.
        :func:`~interp_core.tokens_to_grid`.

    Returns
    -------
    np.ndarray
        float32 ``(N, C, *spatial)``, whatever the framework's layout; ``(N, C)`` for a layer
        without spatial axes.

    Raises
    ------
    ValueError
        The layer's output has no channels dimension (shape ``(N,)``), or the layer is unknown
        (the adapter's message lists close names).
    """
    impl = get_backend(backend if backend is not None else model)
    if isinstance(layer, list | tuple):
        raise TypeError(f"feature_maps takes one layer, got {len(layer)}: call it once per layer")
    acts = layer_output(impl, model, x, layer, output=output, reshape=reshape)
    return np.ascontiguousarray(np.moveaxis(acts, -1, 1))


def layer_output(
    impl: Any, model: Any, x: Any, layer: Any, *, output: Any = None, reshape: Any = None,
) -> np.ndarray:
    """The canonical ``(N, *spatial, C)`` activations of one layer (one forward, no gradient)."""
    capture = impl.capture(
        model, x, [layer], resolve_targets(None, check_batch(x)), gradients=False,
        output=output, native_layout=reshape is not None,
    )
    (captured,) = capture.layers.values()
    acts = captured.activations
    if reshape is not None:
        acts = reshape(acts)
    acts = np.asarray(acts, dtype=np.float32)
    if acts.ndim < 2:
        raise ValueError(
            f"layer {captured.name!r} has output shape {acts.shape} with no channels dimension; "
            "pick a layer whose output is (N, C) or (N, *spatial, C)"
        )
    return acts
