"""Deprecated: this module's names moved to :mod:`interp_core.backend.hookspecs`
(``BackendRegistration``, ``defined_in``, ``registers``, ``claims``, ``loads_files``,
``loads_weights``) and :mod:`interp_core.backend.registry` (``KNOWN_FRAMEWORKS``,
``KnownAdapter``); it goes in the next release."""

from interp_core.backend.moved import moved_module

__getattr__ = moved_module(
    __name__, "interp_core.backend.hookspecs", "interp_core.backend.registry")
