"""Deprecated: the Keras training callbacks moved to :mod:`interp_tensorflow.training`.

Kept for one release so that ``from interp_tensorflow.callbacks import CAMLogger`` still works;
importing it warns. Import from :mod:`interp_tensorflow.training` instead (the same role has
the same module name in every adapter: ``interp_torch.training`` holds the PyTorch loggers).
"""

import warnings

from interp_tensorflow.training import *  # noqa: F403
from interp_tensorflow.training import __all__, _EpochLogger  # noqa: F401

warnings.warn(
    "interp_tensorflow.callbacks moved to interp_tensorflow.training; import the callbacks "
    "from there (the old path goes away in the next release)",
    DeprecationWarning, stacklevel=2)
