"""Deprecated: this module was split along its topics, and it goes in the next release:
:mod:`interp_core.backend.layers` (structured layer outputs, layer requests and errors),
:mod:`~interp_core.backend.compiled` (target constants for compiled functions),
:mod:`~interp_core.backend.patching` (patched scores and their fallback),
:mod:`~interp_core.backend.checks` (input-gradient checks, non-finite values) and
:mod:`~interp_core.backend.threads` (the per-model lock)."""

from interp_core.backend.moved import moved_module

__getattr__ = moved_module(
    __name__, "interp_core.backend.layers", "interp_core.backend.compiled",
    "interp_core.backend.patching", "interp_core.backend.checks", "interp_core.backend.threads")
