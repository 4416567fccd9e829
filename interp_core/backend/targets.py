"""Deprecated: moved to :mod:`interp_core.backend.target_spec` (the adapters' batch-level
``TargetSpec``, which a reader took for the user's targets in :mod:`interp_core.targets`);
this module goes in the next release."""

from interp_core.backend.moved import moved_module

__getattr__ = moved_module(__name__, "interp_core.backend.target_spec")
