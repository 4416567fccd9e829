"""Deprecated: the input-gradient attributions moved to
:mod:`interp_core.methods.input_gradients` (their base is now ``InputGradientMethod``;
``InputAttribution`` is another name for it); this module goes in the next release."""

from interp_core.backend.moved import moved_module

__getattr__ = moved_module(
    __name__, "interp_core.methods.input_gradients", "interp_core.methods.method")
