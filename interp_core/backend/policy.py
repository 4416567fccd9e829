"""Deprecated: this module's names moved, and it goes in the next release.

- :mod:`interp_core.backend.layers`: ``first_leaf``, ``replace_first``, ``not_a_tensor_error``,
  ``resolve_layer_paths``, ``UnknownLayerError``, ``unknown_layer_error``,
  ``missing_layers_error``, ``layer_ran_twice_error``.
- :mod:`interp_core.backend.compiled`: ``TargetPlan``, ``plan_targets``, ``needs_output_shape``,
  ``ReplayOps``.
- :mod:`interp_core.backend.patching`: ``mask_chunks``, ``ExpansionRefusedError``,
  ``expanded_patch_rows``, ``refuse_channel_axis`` (and the new ``patch_with_fallback``).
- :mod:`interp_core.backend.checks`: ``channel_objective``, ``check_channels``,
  ``check_channel_range``, ``non_finite_rows``, ``warn_non_finite``.
- :mod:`interp_core.backend.threads`: ``model_lock``.

A name imported from here still works, with a ``DeprecationWarning`` that names its new home.
"""

from __future__ import annotations

import warnings
from types import ModuleType
from typing import Any

from interp_core.backend import checks, compiled, layers, patching, threads

_MOVED: dict[str, ModuleType] = {
    **dict.fromkeys(("first_leaf", "replace_first", "not_a_tensor_error", "resolve_layer_paths",
                     "UnknownLayerError", "unknown_layer_error", "missing_layers_error",
                     "layer_ran_twice_error"), layers),
    **dict.fromkeys(("TargetPlan", "plan_targets", "needs_output_shape", "ReplayOps"), compiled),
    **dict.fromkeys(("mask_chunks", "ExpansionRefusedError", "expanded_patch_rows",
                     "refuse_channel_axis"), patching),
    **dict.fromkeys(("channel_objective", "check_channels", "check_channel_range",
                     "non_finite_rows", "warn_non_finite"), checks),
    "model_lock": threads,
}


def __getattr__(name: str) -> Any:
    home = _MOVED.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    warnings.warn(
        f"{__name__} is deprecated and goes in the next release: import {name} from "
        f"{home.__name__}", DeprecationWarning, stacklevel=2,
    )
    return getattr(home, name)
