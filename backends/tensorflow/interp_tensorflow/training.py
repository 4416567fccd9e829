"""Keras training callbacks that log explanations of a fixed set of samples after epochs.

>>> from interp_core.logging import FolderSink                              # doctest: +SKIP
>>> from interp_tensorflow.training import CAMLogger, FeatureMapLogger
>>> model.fit(ds, epochs=10, callbacks=[
...     CAMLogger(x_val[:8], layer="base/block5_conv3", sink=FolderSink("runs/cam")),
...     FeatureMapLogger(x_val[:2], layer="base/block3_conv3", sink=FolderSink("runs/fm")),
... ])

Both only implement ``on_epoch_end`` (Keras skips batch-level callback dispatch when no
callback defines batch hooks), so an epoch is slowed by the explanation work and nothing else.
The explanations run through the adapter's compiled pass, traced once and reused each epoch with
the current weights; the model runs with ``training=False`` and its weights, trainable flags,
optimizer and random-generator state are never touched.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import keras
import numpy as np

from interp_core import CAMMethod
from interp_core.logging import CAMLog, FeatureMapLog, Sink
from interp_core.logging import display_images as _display_images


class _EpochLogger(keras.callbacks.Callback):
    """The Keras side of :class:`~interp_core.logging.training.TrainingLog`: epoch and end hooks.

    Only ``on_epoch_end`` and ``on_train_end`` are defined (no batch hooks).
    """

    def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        self.log(self.model, epoch)

    def on_train_end(self, logs: Mapping[str, Any] | None = None) -> None:
        self.close()

    def render(self) -> dict[str, np.ndarray]:
        """Name -> uint8 ``(H, W, 3)`` image per sample, with the model's current weights."""
        return self._render(self.model)

    @staticmethod
    def layer_name(layer: Any) -> str:
        return layer.name


class CAMLogger(_EpochLogger, CAMLog):
    """Log CAM overlays of fixed samples after every ``every_n_epochs`` epochs.

    Parameters
    ----------
    samples : np.ndarray, tf.Tensor, or a list/dict of them
        The model's input for the samples to follow, ``(N, H, W, C)`` (or the model's layout).
    layer : str, layer object, list of them, or None
        The layer(s) to explain (``"base/block5_conv3"`` for nested models).
    method, every_n_epochs, sink, targets, images, alpha, colormap, tag, **method_options
        As for :class:`interp_core.logging.training.CAMLog`; the default sink is closed when
        training ends.
    """

    def __init__(self, samples: Any, layer: Any = None, method: str | type[CAMMethod] = "gradcam",
                 every_n_epochs: int = 1, sink: Sink | None = None, *, targets: Any = None,
                 images: np.ndarray | None = None, alpha: float = 0.5, colormap: str = "jet",
                 tag: str | None = None, **method_options: Any) -> None:
        keras.callbacks.Callback.__init__(self)
        CAMLog.__init__(self, samples, layer, method, every_n_epochs, sink, targets=targets,
                        images=images, alpha=alpha, colormap=colormap, tag=tag,
                        **method_options)

    def set_model(self, model: Any) -> None:
        super().set_model(model)
        self._explainer = None  # a new model needs its own explainer (and compiled pass)

    def explainer(self) -> CAMMethod:
        """The method object, built once per model so its compiled pass is reused."""
        return self.explainer_for(self.model)

    def to_numpy(self, x: Any, model: Any) -> np.ndarray:
        return np.asarray(keras.ops.convert_to_numpy(x))


class FeatureMapLogger(_EpochLogger, FeatureMapLog):
    """Log a grid of one layer's feature maps per sample after every ``every_n_epochs`` epochs.

    The grid is drawn as for the PyTorch logger, without the outer 1-pixel frame.

    Parameters
    ----------
    samples : np.ndarray, tf.Tensor, or a list/dict of them
        The model's input for the samples to follow.
    layer : str or layer object
        A layer with a 2-D spatial output.
    every_n_epochs, sink, channels, max_channels, colormap, tag
        As for :class:`interp_core.logging.training.FeatureMapLog`.
    """

    border = False

    def __init__(self, samples: Any, layer: Any, every_n_epochs: int = 1,
                 sink: Sink | None = None, *, channels: Sequence[int] | None = None,
                 max_channels: int = 16, colormap: str = "viridis", tag: str | None = None
                 ) -> None:
        keras.callbacks.Callback.__init__(self)
        FeatureMapLog.__init__(self, samples, layer, every_n_epochs, sink, channels=channels,
                               max_channels=max_channels, colormap=colormap, tag=tag)


def display_images(samples: Any, data_format: str = "channels_last") -> np.ndarray:
    """The samples as displayable images ``(N, H, W, C)`` in [0, 1] (or uint8 as given).

    Takes the first 4-D input of a multi-input batch, moves channels last, and min-max scales
    float images per sample unless they already lie in [0, 1].
    """
    return _display_images(samples, keras.ops.convert_to_numpy, data_format)


__all__ = ["CAMLogger", "FeatureMapLogger", "display_images"]
