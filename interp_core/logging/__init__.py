"""Training-time logging: where images go (sinks) and what is logged after epochs.

- :mod:`interp_core.logging.sinks`: :class:`FolderSink`, :class:`TensorBoardSink`,
  :class:`WandbSink`, and the :class:`Sink` protocol for your own.
- :mod:`interp_core.logging.training`: the framework-agnostic epoch logs (:class:`TrainingLog`,
  :class:`CAMLog`, :class:`FeatureMapLog`, :func:`display_images`) that the adapters' training
  hooks wrap: the PyTorch loggers (``interp_torch.training``) and the Keras callbacks
  (``interp_tensorflow.training``).

The names here are the public API the adapters' ``training.py`` modules build on; they import
nothing else of ``interp_core.logging``.
"""

from interp_core.logging.sinks import FolderSink, Sink, TensorBoardSink, WandbSink
from interp_core.logging.training import (
    CAMLog,
    FeatureMapLog,
    TrainingLog,
    display_images,
    frozen,
)

__all__ = [
    "CAMLog", "FeatureMapLog", "FolderSink", "Sink", "TensorBoardSink", "TrainingLog",
    "WandbSink", "display_images", "frozen",
]
