"""Training-time logging: where images go (sinks) and what is logged after epochs.

- :mod:`interp_core.logging.sinks`: :class:`FolderSink`, :class:`TensorBoardSink`,
  :class:`WandbSink`, and the :class:`Sink` protocol for your own.
- :mod:`interp_core.logging.training`: the framework-agnostic epoch logs that the torch logger
  (``interp_torch.logger``) and the Keras callbacks (``interp_tensorflow.callbacks``) wrap.
"""

from interp_core.logging.sinks import FolderSink, Sink, TensorBoardSink, WandbSink

__all__ = ["FolderSink", "Sink", "TensorBoardSink", "WandbSink"]
