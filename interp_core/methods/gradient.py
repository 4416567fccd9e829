"""Deprecated: the Grad-CAM family moved to :mod:`interp_core.methods.grad_cam`, Grad-CAM on
guided gradients to :mod:`interp_core.methods.guided`; this module goes in the next release."""

from interp_core.backend.moved import moved_module

__getattr__ = moved_module(__name__, "interp_core.methods.grad_cam",
                           "interp_core.methods.guided", "interp_core.methods.base")
