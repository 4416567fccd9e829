"""Deprecated: the PyTorch training loggers moved to :mod:`interp_torch.training`.

Kept for one release so that ``from interp_torch.logger import CAMLogger`` still works;
importing it warns. Import from :mod:`interp_torch.training` instead (the same role has the
same module name in every adapter: ``interp_tensorflow.training`` holds the Keras callbacks).
"""

import warnings

from interp_torch.training import *  # noqa: F403
from interp_torch.training import __all__, _EpochLogger, _lightning_base  # noqa: F401

warnings.warn(
    "interp_torch.logger moved to interp_torch.training; import the loggers from there "
    "(the old path goes away in the next release)",
    DeprecationWarning, stacklevel=2)
