"""Deprecated: the PyTorch training loggers moved to :mod:`interp_torch.training` (the same
role has the same module name in every adapter); this module goes in the next release."""

from interp_core.backend.moved import moved_module

__getattr__ = moved_module(__name__, "interp_torch.training")
