"""A layer's feature maps: one capture without gradients, on every backend; token layers and
channels-last grids read as grids over the input, as the CAM methods read them."""

from __future__ import annotations

from typing import Any

import numpy as np

from interp_core.backend.grids import as_grid
from interp_core.backend.inputs import check_batch
from interp_core.backend.layout import CHANNELS_FIRST, declared_layout
from interp_core.backend.registry import get_backend
from interp_core.backend.target_spec import resolve_targets


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
        :func:`~interp_core.tokens_to_grid`. Without it, a token layer ``(N, T, C)`` (ViT,
        DeiT, Swin in Hugging Face) becomes its patch grid on its own, as in
        :class:`~interp_core.GradCAM`: the grid comes from the input's size, and class,
        distillation and register tokens are dropped; a channels-last ``(N, H, W, C)`` output
        in torch (Swin, ConvNeXt blocks) keeps its channels as channels.

    Returns
    -------
    np.ndarray
        float32 ``(N, C, *spatial)``, whatever the framework's layout; ``(N, C)`` for a layer
        without spatial axes. Tokens whose count forms no grid of the input's aspect are left
        as the adapter gives them (torch: ``(N, T, C)``, the token axis in the channels'
        place): pass ``reshape=tokens_to_grid(...)`` for those.

    Raises
    ------
    ValueError
        The layer's output has no channels dimension (shape ``(N,)``), or the layer is unknown
        (the adapter's message lists close names).
    """
    impl = get_backend(backend if backend is not None else model)
    if isinstance(layer, list | tuple):
        raise TypeError(f"feature_maps takes one layer, got {len(layer)}: call it once per layer")
    acts = layer_output(impl, model, x, layer, output=output, reshape=reshape, grid=True)
    return np.ascontiguousarray(np.moveaxis(acts, -1, 1))


def layer_output(
    impl: Any, model: Any, x: Any, layer: Any, *, output: Any = None, reshape: Any = None,
    grid: bool = False,
) -> np.ndarray:
    """The canonical ``(N, *spatial, C)`` activations of one layer (one forward, no gradient).

    With ``grid=True`` (and no ``reshape``) token layers and channels-last grids are read as
    ``(N, *grid, C)`` over the input (:func:`interp_core.backend.grids.as_grid`); otherwise
    the adapter's canonical array is returned as it is.
    """
    capture = impl.capture(
        model, x, [layer], resolve_targets(None, check_batch(x)), gradients=False,
        output=output, native_layout=reshape is not None,
    )
    (captured,) = capture.layers.values()
    acts = captured.activations
    if reshape is not None:
        acts = reshape(acts)
    elif grid:
        native_first = declared_layout(impl, model) == CHANNELS_FIRST
        acts, _, _ = as_grid(np.asarray(acts, dtype=np.float32), None, capture.input_spatial,
                             native_channels_first=native_first)
    acts = np.asarray(acts, dtype=np.float32)
    if acts.ndim < 2:
        raise ValueError(
            f"layer {captured.name!r} has output shape {acts.shape} with no channels dimension; "
            "pick a layer whose output is (N, C) or (N, *spatial, C)"
        )
    return acts
