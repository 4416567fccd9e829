"""Deprecated: moved to :mod:`interp_core.backend.grids` (layer outputs read as grids); this
module goes in the next release."""

from interp_core.backend.moved import moved_module

__getattr__ = moved_module(__name__, "interp_core.backend.grids")
