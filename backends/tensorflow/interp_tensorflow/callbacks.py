"""Keras training callbacks that log explanations of a fixed set of samples after epochs.

>>> from interp_core.sinks import FolderSink                       # doctest: +SKIP
>>> from interp_tensorflow.callbacks import CAMLogger, FeatureMapLogger
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

import math
from collections.abc import Mapping, Sequence
from typing import Any

import keras
import numpy as np

import interp_core as ic
from interp_core.methods import method_class
from interp_core.methods.base import CAMMethod, batch_size_of
from interp_core.sinks import FolderSink, Sink
from interp_core.targets import resolve_targets
from interp_core.viz import apply_colormap, overlay
from interp_tensorflow.layers import model_data_format


class _EpochLogger(keras.callbacks.Callback):
    """Shared plumbing: when to run, where images go, who closes the sink."""

    default_folder = "interp_logs"

    def __init__(self, samples: Any, layer: Any, *, every_n_epochs: int = 1,
                 sink: Sink | None = None, tag: str | None = None) -> None:
        super().__init__()
        if not isinstance(every_n_epochs, int) or every_n_epochs < 1:
            raise ValueError(f"every_n_epochs={every_n_epochs!r} must be an int >= 1")
        if not isinstance(sink, Sink | type(None)):
            raise TypeError(
                f"sink {sink!r} has no log_images(tag, images, step) and close(); use "
                "interp_core.sinks.FolderSink, TensorBoardSink or WandbSink"
            )
        self.samples = samples
        self.layer = layer
        self.every_n_epochs = every_n_epochs
        self._owns_sink = sink is None
        self._sink = sink
        self.tag = tag
        self.n = batch_size_of(samples)

    @property
    def sink(self) -> Sink:
        """The sink; the default folder is created on first use, not at construction."""
        if self._sink is None:
            self._sink = FolderSink(self.default_folder)
        return self._sink

    def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        if (epoch + 1) % self.every_n_epochs:
            return
        self.sink.log_images(self._tag(), self.render(), step=int(epoch))

    def on_train_end(self, logs: Mapping[str, Any] | None = None) -> None:
        if self._sink is None:
            return
        if self._owns_sink:
            self._sink.close()
        elif hasattr(self._sink, "flush"):
            self._sink.flush()

    def render(self) -> dict[str, np.ndarray]:
        """Name -> uint8 ``(H, W, 3)`` image per sample, with the model's current weights."""
        raise NotImplementedError

    def _tag(self) -> str:
        raise NotImplementedError

    def _layer_label(self) -> str:
        layer = self.layer
        if isinstance(layer, list | tuple):
            return "+".join(self._one_label(item) for item in layer)
        return self._one_label(layer)

    @staticmethod
    def _one_label(layer: Any) -> str:
        return "auto" if layer is None else layer if isinstance(layer, str) else layer.name


class CAMLogger(_EpochLogger):
    """Log CAM overlays of fixed samples after every ``every_n_epochs`` epochs.

    Parameters
    ----------
    samples : np.ndarray, tf.Tensor, or a list/dict of them
        The model's input for the samples to follow, ``(N, H, W, C)`` (or the model's layout).
    layer : str, layer object, list of them, or None
        The layer(s) to explain (``"base/block5_conv3"`` for nested models).
    method : str or CAMMethod subclass
        ``"gradcam"`` (default) or any name of :func:`interp_core.methods`.
    every_n_epochs : int
        Log after epochs ``n, 2n, ...`` (1-based).
    sink : Sink, optional
        Where images go (:mod:`interp_core.sinks`); default ``FolderSink("interp_logs")``,
        which this callback closes when training ends (a sink you pass is only flushed).
    targets : optional
        As for ``cam(x, targets)``: None explains each sample's current top-1 class.
    images : np.ndarray, optional
        ``(N, H, W, 3|1)`` or ``(N, H, W)`` images to draw the maps on (float in [0, 1] or
        uint8). Default: the samples, min-max scaled per sample for display.
    alpha, colormap : float, str
        Overlay options (:func:`interp_core.overlay`).
    tag : str, optional
        Default ``"<method>/<layer>"``.
    **method_options
        Passed to the method (``output="logits"``, ``relu=False``, ...).
    """

    def __init__(self, samples: Any, layer: Any = None, method: str | type[CAMMethod] = "gradcam",
                 every_n_epochs: int = 1, sink: Sink | None = None, *, targets: Any = None,
                 images: np.ndarray | None = None, alpha: float = 0.5, colormap: str = "jet",
                 tag: str | None = None, **method_options: Any) -> None:
        super().__init__(samples, layer, every_n_epochs=every_n_epochs, sink=sink, tag=tag)
        self.method_cls = method if isinstance(method, type) else method_class(method)
        self.targets = targets
        self.images = None if images is None else np.asarray(images)
        if self.images is not None and len(self.images) != self.n:
            raise ValueError(f"images has {len(self.images)} entries but samples has {self.n}")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha={alpha} must be in [0, 1]")
        self.alpha = alpha
        self.colormap = colormap
        self.method_options = method_options
        self._explainer: CAMMethod | None = None

    def set_model(self, model: Any) -> None:
        super().set_model(model)
        self._explainer = None  # a new model needs its own explainer (and compiled pass)

    def explainer(self) -> CAMMethod:
        """The method object, built once per model so its compiled pass is reused."""
        if self._explainer is None:
            self._explainer = self.method_cls(self.model, self.layer, **self.method_options)
        return self._explainer

    def render(self) -> dict[str, np.ndarray]:
        maps = self.explainer()(self.samples, self.targets)
        if maps.ndim != 3:
            raise ValueError(
                f"CAMLogger draws 2-D maps on images, but the maps have shape {maps.shape}"
            )
        display = self.images if self.images is not None else display_images(
            self.samples, model_data_format(self.model))
        return {f"sample_{i:03d}": overlay(display[i], maps[i], self.alpha, self.colormap)
                for i in range(len(maps))}

    def _tag(self) -> str:
        return self.tag or f"{self.method_cls.name}/{self._layer_label()}"


class FeatureMapLogger(_EpochLogger):
    """Log a grid of one layer's feature maps per sample after every ``every_n_epochs`` epochs.

    Parameters
    ----------
    samples : np.ndarray, tf.Tensor, or a list/dict of them
        The model's input for the samples to follow.
    layer : str or layer object
        A layer with a 2-D spatial output.
    every_n_epochs, sink, tag
        As for :class:`CAMLogger` (tag default ``"features/<layer>"``).
    channels : sequence of int, optional
        The channels to show; default the first ``max_channels`` (a fixed choice, so the grid
        of one sample is comparable from epoch to epoch).
    max_channels : int
        How many channels the default shows.
    colormap : str
        Colormap of the maps; each map is min-max scaled on its own.
    """

    def __init__(self, samples: Any, layer: Any, every_n_epochs: int = 1,
                 sink: Sink | None = None, *, channels: Sequence[int] | None = None,
                 max_channels: int = 16, colormap: str = "viridis", tag: str | None = None
                 ) -> None:
        super().__init__(samples, layer, every_n_epochs=every_n_epochs, sink=sink, tag=tag)
        if max_channels < 1:
            raise ValueError(f"max_channels={max_channels} must be >= 1")
        self.channels = None if channels is None else [int(c) for c in channels]
        self.max_channels = max_channels
        self.colormap = colormap

    def render(self) -> dict[str, np.ndarray]:
        backend = ic.get_backend(self.model)
        capture = backend.capture(self.model, self.samples, [self.layer],
                                  resolve_targets(None, self.n), gradients=False)
        (acts,) = (c.activations for c in capture.layers.values())
        if acts.ndim != 4:
            raise ValueError(
                f"FeatureMapLogger shows 2-D feature maps, but layer {self._layer_label()!r} "
                f"has output shape {acts.shape} (canonical (N, H, W, C))"
            )
        count = acts.shape[-1]
        chosen = self.channels if self.channels is not None else list(
            range(min(count, self.max_channels)))
        bad = [c for c in chosen if not 0 <= c < count]
        if bad:
            raise ValueError(f"channels {bad} are out of range: layer {self._layer_label()!r} "
                             f"has {count} channels")
        return {f"sample_{i:03d}": feature_map_grid(acts[i][..., chosen], self.colormap)
                for i in range(len(acts))}

    def _tag(self) -> str:
        return self.tag or f"features/{self._layer_label()}"


def feature_map_grid(maps: np.ndarray, colormap: str = "viridis", min_tile: int = 32,
                     gap: int = 1) -> np.ndarray:
    """Tile ``(H, W, K)`` feature maps into one image, each map min-max scaled on its own.

    Returns
    -------
    np.ndarray
        uint8 ``(rows * (H*s + gap) - gap, cols * (W*s + gap) - gap, 3)``, where ``s`` scales
        tiles up (nearest) to at least ``min_tile`` pixels and the grid is near square; gaps
        are white.
    """
    maps = np.asarray(maps, dtype=np.float32)
    h, w, k = maps.shape
    flat = maps.reshape(-1, k)
    lo, hi = flat.min(axis=0), flat.max(axis=0)
    span = np.where(hi - lo > 1e-12, hi - lo, 1.0)
    scaled = np.clip((maps - lo) / span, 0.0, 1.0)
    scale = max(1, math.ceil(min_tile / max(h, w)))
    tiles = apply_colormap(np.moveaxis(scaled, -1, 0), colormap)  # (K, H, W, 3)
    tiles = tiles.repeat(scale, axis=1).repeat(scale, axis=2)
    th, tw = h * scale, w * scale
    cols = math.ceil(math.sqrt(k))
    rows = math.ceil(k / cols)
    canvas = np.full((rows * (th + gap) - gap, cols * (tw + gap) - gap, 3), 255, np.uint8)
    for i in range(k):
        r, c = divmod(i, cols)
        top, left = r * (th + gap), c * (tw + gap)
        canvas[top : top + th, left : left + tw] = tiles[i]
    return canvas


def display_images(samples: Any, data_format: str = "channels_last") -> np.ndarray:
    """The samples as displayable images ``(N, H, W, C)`` in [0, 1] (or uint8 as given).

    Takes the first 4-D input of a multi-input batch, moves channels last, and min-max scales
    float images per sample unless they already lie in [0, 1].
    """
    leaves = list(samples.values()) if isinstance(samples, dict) else (
        list(samples) if isinstance(samples, list | tuple) else [samples])
    arrays = [np.asarray(keras.ops.convert_to_numpy(leaf)) for leaf in leaves]
    images = next((a for a in arrays if a.ndim == 4), None)
    if images is None:
        raise ValueError(
            "CAMLogger needs images to draw on: the samples have no 4-D (N, H, W, C) input; "
            "pass images=..."
        )
    if data_format == "channels_first":
        images = np.moveaxis(images, 1, -1)
    if images.dtype == np.uint8:
        return images
    images = images.astype(np.float32)
    flat = images.reshape(len(images), -1)
    lo, hi = flat.min(axis=1), flat.max(axis=1)
    if lo.min() >= 0.0 and hi.max() <= 1.0:
        return images
    span = np.where(hi - lo > 1e-12, hi - lo, 1.0)
    return (images - lo[:, None, None, None]) / span[:, None, None, None]
