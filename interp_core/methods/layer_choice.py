"""Deprecated: moved to :mod:`interp_core.backend.layer_choice` (the default layer's choice);
this module goes in the next release."""

from interp_core.backend.moved import moved_module

__getattr__ = moved_module(__name__, "interp_core.backend.layer_choice")
