"""Framework-agnostic part of the training loggers: explanations of fixed samples after epochs.

The PyTorch loggers (``interp_torch.training``) and the Keras callbacks
(``interp_tensorflow.training``) are thin adapters over the classes here, which hold the
samples, layer, method and options, and the sink, and know:

* the schedule: log after epochs ``n, 2n, ...`` (1-based) with ``step=epoch`` (0-based);
* sink ownership: the default ``FolderSink("interp_logs")`` is created on first use and closed
  by :meth:`TrainingLog.close`; a sink passed in is only flushed;
* tags ``"<method>/<layer>"`` and ``"features/<layer>"``, image names ``sample_000``...;
* rendering: CAM overlays (:func:`~interp_core.viz.overlay`) and feature-map grids
  (:func:`~interp_core.feature_grid`).

What stays in an adapter: how to copy the samples (``copy_leaf``), how a tensor becomes NumPy
(``to_numpy``), how a layer object is named (``layer_name``), and the framework's own hooks.
The input layout of the display images comes from the backend (:mod:`interp_core.backend.layout`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from interp_core.backend.inputs import batch_size_of
from interp_core.backend.layout import CHANNELS_FIRST, CHANNELS_LAST, input_layout
from interp_core.backend.registry import get_backend
from interp_core.features import feature_maps
from interp_core.features.grids import feature_grid
from interp_core.logging.sinks import FolderSink, Sink
from interp_core.methods import method_class
from interp_core.methods.method import Method
from interp_core.viz import overlay

__all__ = ["CAMLog", "FeatureMapLog", "TrainingLog", "display_images", "frozen"]


def frozen(samples: Any, copy_leaf: Callable[[Any], Any]) -> Any:
    """``samples`` with each leaf of its dicts, lists and tuples replaced by ``copy_leaf(leaf)``."""
    if isinstance(samples, dict):
        return {k: frozen(v, copy_leaf) for k, v in samples.items()}
    if isinstance(samples, list | tuple):
        return type(samples)(frozen(v, copy_leaf) for v in samples)
    return copy_leaf(samples)


def display_images(samples: Any, to_numpy: Callable[[Any], np.ndarray] = np.asarray,
                   layout: str = CHANNELS_LAST) -> np.ndarray:
    """The samples as displayable images ``(N, H, W, C)`` in [0, 1] (or uint8 as given).

    Takes the first 4-D input of a multi-input batch (each leaf made NumPy by ``to_numpy``),
    moves channels last when ``layout`` is channels-first, and min-max scales float images per
    sample unless they already lie in [0, 1].
    """
    leaves = list(samples.values()) if isinstance(samples, dict) else (
        list(samples) if isinstance(samples, list | tuple) else [samples])
    arrays = [np.asarray(to_numpy(leaf)) for leaf in leaves]
    images = next((a for a in arrays if a.ndim == 4), None)
    if images is None:
        shape = "(N, C, H, W)" if layout == CHANNELS_FIRST else "(N, H, W, C)"
        raise ValueError(
            f"CAMLogger needs images to draw on: the samples have no 4-D {shape} input; "
            "pass images=..."
        )
    if layout == CHANNELS_FIRST:
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


class TrainingLog:
    """Shared plumbing: when to run, where images go, who closes the sink, the tag.

    Parameters
    ----------
    samples : any
        The model's input for the samples to follow.
    layer : any
        The layer(s) to explain or show.
    every_n_epochs : int
        Log after epochs ``n, 2n, ...`` (1-based).
    sink : Sink, optional
        Default ``FolderSink("interp_logs")``, created on first use and closed by :meth:`close`.
    tag : str, optional
        Overrides the default tag.

    Attributes
    ----------
    backend : str or None
        Class attribute: the backend an adapter's loggers force (``"torch"``); None (default):
        detected from the model.
    copy_leaf : callable or None
        Class attribute: copies one sample leaf once at construction, so later changes by the
        caller do not leak in; None (default): the samples are kept as given.
    """

    default_folder = "interp_logs"
    backend: str | None = None
    copy_leaf: Callable[[Any], Any] | None = None

    def __init__(self, samples: Any, layer: Any, *, every_n_epochs: int = 1,
                 sink: Sink | None = None, tag: str | None = None) -> None:
        if not isinstance(every_n_epochs, int) or every_n_epochs < 1:
            raise ValueError(f"every_n_epochs={every_n_epochs!r} must be an int >= 1")
        if not isinstance(sink, Sink | type(None)):
            raise TypeError(
                f"sink {sink!r} has no log_images(tag, images, step) and close(); use "
                "interp_core.logging.sinks.FolderSink, TensorBoardSink or WandbSink"
            )
        self.samples = samples if self.copy_leaf is None else frozen(samples, self.copy_leaf)
        self.layer = layer
        self.every_n_epochs = every_n_epochs
        self.tag = tag
        self.n = batch_size_of(self.samples)
        self._owns_sink = sink is None
        self._sink = sink

    @property
    def sink(self) -> Sink:
        """The sink; the default folder is created on first use, not at construction."""
        if self._sink is None:
            self._sink = FolderSink(self.default_folder)
        return self._sink

    def due(self, epoch: int) -> bool:
        """Whether epoch ``epoch`` (0-based) is one to log after."""
        return not (int(epoch) + 1) % self.every_n_epochs

    def log(self, model: Any, epoch: int) -> dict[str, np.ndarray] | None:
        """Render and send the images if epoch ``epoch`` is due; returns the images logged."""
        if not self.due(epoch):
            return None
        images = self._render(model)
        self.sink.log_images(self._tag(), images, step=int(epoch))
        return images

    def close(self) -> None:
        """End of training: close the default sink, flush one that was passed in."""
        if self._sink is None:
            return
        if self._owns_sink:
            self._sink.close()
        elif hasattr(self._sink, "flush"):
            self._sink.flush()

    def __enter__(self) -> TrainingLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _render(self, model: Any) -> dict[str, np.ndarray]:
        """Name -> uint8 ``(H, W, 3)`` image per sample, with the model's current weights."""
        raise NotImplementedError

    def _tag(self) -> str:
        raise NotImplementedError

    def _layer_label(self) -> str:
        layer = self.layer
        if isinstance(layer, list | tuple):
            return "+".join(self._one_label(item) for item in layer)
        return self._one_label(layer)

    def _one_label(self, layer: Any) -> str:
        return "auto" if layer is None else layer if isinstance(layer, str) else self.layer_name(
            layer)

    @staticmethod
    def layer_name(layer: Any) -> str:
        """The label of a layer object in tags (adapters override: Keras uses ``layer.name``)."""
        return type(layer).__name__

    def _backend_impl(self, model: Any) -> Any:
        return get_backend(self.backend if self.backend is not None else model)


class CAMLog(TrainingLog):
    """CAM overlays of fixed samples: what the adapters' ``CAMLogger`` classes share.

    Parameters
    ----------
    samples, layer
        The model's input for the samples to follow, and the layer(s) to explain (a name, a
        layer object, a list of them, or None for the default layer), as the adapter takes them.
    method : str or Method subclass
        ``"gradcam"`` (default) or any name of :func:`interp_core.methods`.
    every_n_epochs : int
        Log after epochs ``n, 2n, ...`` (1-based).
    sink : Sink, optional
        Where images go (:mod:`interp_core.logging.sinks`); default ``FolderSink("interp_logs")``,
        which the logger closes when training ends (a sink you pass is only flushed).
    targets : optional
        As for ``cam(x, targets)``: None explains each sample's current top-1 class.
    images : np.ndarray, optional
        ``(N, H, W, 3|1)`` or ``(N, H, W)`` images to draw the maps on (float in [0, 1] or
        uint8). Default: the samples, channels moved last, min-max scaled per sample for
        display unless they already lie in [0, 1].
    alpha, colormap : float, str
        Overlay options (:func:`interp_core.overlay`).
    tag : str, optional
        Default ``"<method>/<layer>"``.
    **method_options
        Passed to the method (``output="logits"``, ``relu=False``, ...).
    """

    def __init__(self, samples: Any, layer: Any = None, method: str | type[Method] = "gradcam",
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
        self._explainer: Method | None = None

    def explainer_for(self, model: Any) -> Method:
        """The method object for ``model``, built once and rebuilt for another model."""
        if self._explainer is None or self._explainer.model is not model:
            self._explainer = self.method_cls(model, self.layer, **self.method_options)
        return self._explainer

    def to_numpy(self, x: Any, model: Any) -> np.ndarray:
        """One sample leaf as NumPy, for the display images (default: the backend's)."""
        return self._backend_impl(model).to_numpy(x)

    def display_images_for(self, model: Any) -> np.ndarray:
        """The images the maps are drawn on: ``images=`` or the samples, channels last."""
        if self.images is not None:
            return self.images
        layout = input_layout(self._backend_impl(model), model)
        return display_images(self.samples, lambda x: self.to_numpy(x, model), layout)

    def render_cam(self, model: Any) -> dict[str, np.ndarray]:
        """Name -> uint8 ``(H, W, 3)`` overlay per sample, with the model's current weights."""
        maps = self.explainer_for(model)(self.samples, self.targets)
        if maps.ndim != 3:
            raise ValueError(
                f"CAMLogger draws 2-D maps on images, but the maps have shape {maps.shape}"
            )
        display = self.display_images_for(model)
        return {f"sample_{i:03d}": overlay(display[i], maps[i], self.alpha, self.colormap)
                for i in range(len(maps))}

    _render = render_cam

    def _tag(self) -> str:
        return self.tag or f"{self.method_cls.name}/{self._layer_label()}"


class FeatureMapLog(TrainingLog):
    """A grid of one layer's feature maps per sample: what the adapters' ``FeatureMapLogger``
    classes share. The grid is :func:`interp_core.feature_grid`'s.

    Parameters
    ----------
    samples, layer
        The model's input for the samples to follow, and a layer with a 2-D spatial output.
    every_n_epochs, sink
        As for :class:`CAMLog`.
    channels : sequence of int, optional
        The channels to show; default the first ``max_channels`` (a fixed choice, so the grid
        of one sample is comparable from epoch to epoch).
    max_channels : int
        How many channels the default shows.
    colormap : str
        Colormap of the maps; each map is min-max scaled on its own.
    tag : str, optional
        Default ``"features/<layer>"``.

    Attributes
    ----------
    border : bool
        Class attribute: False drops the grid's outer 1-pixel frame (the Keras callback's
        images), leaving only the gaps between tiles.
    """

    min_tile = 32
    border = True

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

    def render_features(self, model: Any) -> dict[str, np.ndarray]:
        """Name -> uint8 grid image per sample, with the model's current weights."""
        maps = feature_maps(model, self.samples, self.layer, backend=self.backend)
        if maps.ndim != 4:
            raise ValueError(
                f"FeatureMapLogger shows 2-D feature maps, but layer {self._layer_label()!r} "
                f"has output shape {maps.shape} (as (N, C, *spatial))"
            )
        count = maps.shape[1]
        chosen = self.channels if self.channels is not None else list(
            range(min(count, self.max_channels)))
        bad = [c for c in chosen if not 0 <= c < count]
        if bad:
            raise ValueError(f"channels {bad} are out of range: layer {self._layer_label()!r} "
                             f"has {count} channels")
        h, w = maps.shape[2:]
        scale = max(1, math.ceil(self.min_tile / max(h, w)))  # tiles of at least 32 pixels
        ncols = math.ceil(math.sqrt(len(chosen)))
        grids = {f"sample_{i:03d}": feature_grid(maps[i][chosen], ncols=ncols,
                                                 colormap=self.colormap, scale=scale)
                 for i in range(len(maps))}
        if not self.border:
            grids = {k: np.ascontiguousarray(g[1:-1, 1:-1]) for k, g in grids.items()}
        return grids

    _render = render_features

    def _tag(self) -> str:
        return self.tag or f"features/{self._layer_label()}"
