"""Training loggers for PyTorch: explanations of fixed samples after epochs, from any loop.

>>> from interp_core.logging import FolderSink                              # doctest: +SKIP
>>> from interp_torch.training import CAMLogger, FeatureMapLogger
>>> cam_log = CAMLogger(x_val[:8], layer="layer4", sink=FolderSink("runs/cam"))
>>> for epoch in range(epochs):
...     train_one_epoch(model, loader, optimizer)
...     cam_log.on_epoch_end(model, epoch)
>>> cam_log.close()

With PyTorch Lightning installed, :class:`LightningCallback` runs loggers from a ``Trainer``::

    trainer = lightning.Trainer(callbacks=[LightningCallback(cam_log)])

Behaviour matches the Keras callbacks of ``interp_tensorflow.training``: the same
constructors, log after epochs ``n, 2n, ...`` (1-based) with ``step=epoch`` (0-based), tags
``"<method>/<layer>"`` and ``"features/<layer>"``, image names ``sample_000``..., and the same
sink ownership (the default ``FolderSink("interp_logs")`` is created on first use and closed by
:meth:`close`; a sink you pass is only flushed). Explanations use the model's current weights;
the model's training flags, weights, gradients (``.grad``), buffers, hooks, the optimizer and
torch's random-number state are left exactly as they were.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from interp_core import CAMMethod
from interp_core.backend import CHANNELS_FIRST
from interp_core.logging import CAMLog, FeatureMapLog, TrainingLog
from interp_core.logging import display_images as _display_images


def _copy_leaf(sample: Any) -> Any:
    """A private copy of one input, so that later changes by the caller do not leak in."""
    if torch.is_tensor(sample):
        return sample.detach().clone()
    return np.array(sample, copy=True)


def _numpy(x: Any) -> np.ndarray:
    if not torch.is_tensor(x):
        return np.asarray(x)
    x = x.detach().cpu()
    return (x.float() if x.is_floating_point() else x).numpy()


class _EpochLogger(TrainingLog):
    """The torch side of :class:`~interp_core.logging.training.TrainingLog`: a plain object
    that runs the torch backend on a private copy of the samples."""

    backend = "torch"
    copy_leaf = staticmethod(_copy_leaf)

    def on_epoch_end(self, model: nn.Module, epoch: int) -> dict[str, np.ndarray] | None:
        """Log after epoch ``epoch`` (0-based) if it is due; returns the images logged.

        Call it after each epoch's optimizer steps. Due after epochs ``n - 1, 2n - 1, ...``
        (``every_n_epochs = n``); the images go to the sink with ``step=epoch``.
        """
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        return self.log(model, epoch)

    def on_train_end(self) -> None:
        """End of training: close the default sink, flush one that was passed in."""
        self.close()

    def render(self, model: nn.Module) -> dict[str, np.ndarray]:
        """Name -> uint8 ``(H, W, 3)`` image per sample, with the model's current weights."""
        return self._render(model)


class CAMLogger(_EpochLogger, CAMLog):
    """Log CAM overlays of fixed samples after every ``every_n_epochs`` epochs.

    Parameters
    ----------
    samples : torch.Tensor or np.ndarray (or a list/dict of them)
        The model's input for the samples to follow, ``(N, C, H, W)``; copied once here.
    layer : str, nn.Module, list of them, or None
        The layer(s) to explain (``"layer4"``, a ``named_modules()`` path).
    method, every_n_epochs, sink, targets, images, alpha, colormap, tag, **method_options
        As for :class:`interp_core.logging.training.CAMLog`; :meth:`close` closes the default
        sink.
    """

    def explainer(self, model: nn.Module) -> CAMMethod:
        """The method object for ``model``, built once and rebuilt for another model."""
        return self.explainer_for(model)

    def to_numpy(self, x: Any, model: Any) -> np.ndarray:
        return _numpy(x)


class FeatureMapLogger(_EpochLogger, FeatureMapLog):
    """Log a grid of one layer's feature maps per sample after every ``every_n_epochs`` epochs.

    Parameters
    ----------
    samples : torch.Tensor or np.ndarray
        The model's input for the samples to follow; copied once here.
    layer : str or nn.Module
        A layer with a 2-D spatial output.
    every_n_epochs, sink, channels, max_channels, colormap, tag
        As for :class:`interp_core.logging.training.FeatureMapLog`.
    """


def display_images(samples: Any) -> np.ndarray:
    """The samples as displayable images ``(N, H, W, C)`` in [0, 1] (or uint8 as given).

    Takes the first 4-D ``(N, C, H, W)`` input of a multi-input batch, moves channels last, and
    min-max scales float images per sample unless they already lie in [0, 1].
    """
    return _display_images(samples, _numpy, CHANNELS_FIRST)


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
