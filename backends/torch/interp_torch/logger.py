"""Training loggers for PyTorch: explanations of fixed samples after epochs, from any loop.

>>> from interp_core.sinks import FolderSink                                # doctest: +SKIP
>>> from interp_torch.logger import CAMLogger, FeatureMapLogger
>>> cam_log = CAMLogger(x_val[:8], layer="layer4", sink=FolderSink("runs/cam"))
>>> for epoch in range(epochs):
...     train_one_epoch(model, loader, optimizer)
...     cam_log.on_epoch_end(model, epoch)
>>> cam_log.close()

With PyTorch Lightning installed, :class:`LightningCallback` runs loggers from a ``Trainer``::

    trainer = lightning.Trainer(callbacks=[LightningCallback(cam_log)])

Behaviour matches the Keras callbacks of ``interp_tensorflow.callbacks``: the same
constructors, log after epochs ``n, 2n, ...`` (1-based) with ``step=epoch`` (0-based), tags
``"<method>/<layer>"`` and ``"features/<layer>"``, image names ``sample_000``..., and the same
sink ownership (the default ``FolderSink("interp_logs")`` is created on first use and closed by
:meth:`close`; a sink you pass is only flushed). Explanations use the model's current weights;
the model's training flags, weights, gradients (``.grad``), buffers, hooks, the optimizer and
torch's random-number state are left exactly as they were.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

import interp_core as ic
from interp_core.methods import method_class
from interp_core.methods.base import CAMMethod, batch_size_of
from interp_core.sinks import FolderSink, Sink
from interp_core.viz import overlay


def _frozen(samples: Any) -> Any:
    """A private copy of the samples, so that later changes by the caller do not leak in."""
    if torch.is_tensor(samples):
        return samples.detach().clone()
    if isinstance(samples, dict):
        return {k: _frozen(v) for k, v in samples.items()}
    if isinstance(samples, list | tuple):
        return type(samples)(_frozen(v) for v in samples)
    return np.array(samples, copy=True)


class _EpochLogger:
    """Shared plumbing: when to run, where images go, who closes the sink."""

    default_folder = "interp_logs"

    def __init__(self, samples: Any, layer: Any, *, every_n_epochs: int = 1,
                 sink: Sink | None = None, tag: str | None = None) -> None:
        if not isinstance(every_n_epochs, int) or every_n_epochs < 1:
            raise ValueError(f"every_n_epochs={every_n_epochs!r} must be an int >= 1")
        if not isinstance(sink, Sink | type(None)):
            raise TypeError(
                f"sink {sink!r} has no log_images(tag, images, step) and close(); use "
                "interp_core.sinks.FolderSink, TensorBoardSink or WandbSink"
            )
        self.samples = _frozen(samples)
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

    def on_epoch_end(self, model: nn.Module, epoch: int) -> dict[str, np.ndarray] | None:
        """Log after epoch ``epoch`` (0-based) if it is due; returns the images logged.

        Call it after each epoch's optimizer steps. Due after epochs ``n - 1, 2n - 1, ...``
        (``every_n_epochs = n``); the images go to the sink with ``step=epoch``.
        """
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if (int(epoch) + 1) % self.every_n_epochs:
            return None
        images = self.render(model)
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

    on_train_end = close

    def __enter__(self) -> _EpochLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def render(self, model: nn.Module) -> dict[str, np.ndarray]:
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
        return "auto" if layer is None else layer if isinstance(layer, str) else type(
            layer).__name__


class CAMLogger(_EpochLogger):
    """Log CAM overlays of fixed samples after every ``every_n_epochs`` epochs.

    Parameters
    ----------
    samples : torch.Tensor or np.ndarray (or a list/dict of them)
        The model's input for the samples to follow, ``(N, C, H, W)``; copied once here.
    layer : str, nn.Module, list of them, or None
        The layer(s) to explain (``"layer4"``, a ``named_modules()`` path).
    method : str or CAMMethod subclass
        ``"gradcam"`` (default) or any name of :func:`interp_core.methods`.
    every_n_epochs : int
        Log after epochs ``n, 2n, ...`` (1-based).
    sink : Sink, optional
        Where images go (:mod:`interp_core.sinks`); default ``FolderSink("interp_logs")``,
        which :meth:`close` closes (a sink you pass is only flushed).
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

    def explainer(self, model: nn.Module) -> CAMMethod:
        """The method object for ``model``, built once and rebuilt for another model."""
        if self._explainer is None or self._explainer.model is not model:
            self._explainer = self.method_cls(model, self.layer, **self.method_options)
        return self._explainer

    def render(self, model: nn.Module) -> dict[str, np.ndarray]:
        maps = self.explainer(model)(self.samples, self.targets)
        if maps.ndim != 3:
            raise ValueError(
                f"CAMLogger draws 2-D maps on images, but the maps have shape {maps.shape}"
            )
        display = self.images if self.images is not None else display_images(self.samples)
        return {f"sample_{i:03d}": overlay(display[i], maps[i], self.alpha, self.colormap)
                for i in range(len(maps))}

    def _tag(self) -> str:
        return self.tag or f"{self.method_cls.name}/{self._layer_label()}"


class FeatureMapLogger(_EpochLogger):
    """Log a grid of one layer's feature maps per sample after every ``every_n_epochs`` epochs.

    Parameters
    ----------
    samples : torch.Tensor or np.ndarray
        The model's input for the samples to follow; copied once here.
    layer : str or nn.Module
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

    def render(self, model: nn.Module) -> dict[str, np.ndarray]:
        maps = ic.feature_maps(model, self.samples, self.layer, backend="torch")
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
        scale = max(1, math.ceil(32 / max(h, w)))  # tiles of at least 32 pixels
        ncols = math.ceil(math.sqrt(len(chosen)))
        return {f"sample_{i:03d}": ic.feature_grid(maps[i][chosen], ncols=ncols,
                                                   colormap=self.colormap, scale=scale)
                for i in range(len(maps))}

    def _tag(self) -> str:
        return self.tag or f"features/{self._layer_label()}"


def display_images(samples: Any) -> np.ndarray:
    """The samples as displayable images ``(N, H, W, C)`` in [0, 1] (or uint8 as given).

    Takes the first 4-D ``(N, C, H, W)`` input of a multi-input batch, moves channels last, and
    min-max scales float images per sample unless they already lie in [0, 1].
    """
    leaves = list(samples.values()) if isinstance(samples, dict) else (
        list(samples) if isinstance(samples, list | tuple) else [samples])
    arrays = [_numpy(leaf) for leaf in leaves]
    images = next((a for a in arrays if a.ndim == 4), None)
    if images is None:
        raise ValueError(
            "CAMLogger needs images to draw on: the samples have no 4-D (N, C, H, W) input; "
            "pass images=..."
        )
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


def _numpy(x: Any) -> np.ndarray:
    if not torch.is_tensor(x):
        return np.asarray(x)
    x = x.detach().cpu()
    return (x.float() if x.is_floating_point() else x).numpy()


def _lightning_base() -> type | None:
    """Lightning's Callback class, from ``lightning`` or ``pytorch_lightning``, if installed."""
    try:
        from lightning.pytorch import Callback
    except ImportError:
        try:
            from pytorch_lightning import Callback
        except ImportError:
            return None
    return Callback


_LightningBase = _lightning_base()

if _LightningBase is not None:

    class LightningCallback(_LightningBase):  # type: ignore[misc, valid-type]
        """Run interp-core loggers from a PyTorch Lightning ``Trainer``.

        After each training epoch (on the global-zero process only) every logger's
        :meth:`~_EpochLogger.on_epoch_end` runs on the LightningModule with
        ``trainer.current_epoch``; when fitting ends the loggers are closed.

        Parameters
        ----------
        *loggers : CAMLogger or FeatureMapLogger
            The loggers to run.
        """

        def __init__(self, *loggers: _EpochLogger) -> None:
            super().__init__()
            if not loggers:
                raise ValueError("LightningCallback needs at least one logger")
            for lg in loggers:
                if not isinstance(lg, _EpochLogger):
                    raise TypeError(f"{lg!r} is not a CAMLogger or FeatureMapLogger")
            self.loggers = loggers

        def on_train_epoch_end(self, trainer: Any, pl_module: nn.Module) -> None:
            if not trainer.is_global_zero or getattr(trainer, "sanity_checking", False):
                return
            for lg in self.loggers:
                lg.on_epoch_end(pl_module, trainer.current_epoch)

        def on_fit_end(self, trainer: Any, pl_module: nn.Module) -> None:
            if trainer.is_global_zero:
                for lg in self.loggers:
                    lg.close()

    __all__ = ["CAMLogger", "FeatureMapLogger", "LightningCallback", "display_images"]
else:
    __all__ = ["CAMLogger", "FeatureMapLogger", "display_images"]
