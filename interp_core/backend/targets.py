"""Deprecated: this module moved to :mod:`interp_core.backend.target_spec`, and it goes in the
next release.

It held the adapters' batch-level :class:`~interp_core.backend.target_spec.TargetSpec`, which
a reader took for the user's targets (:mod:`interp_core.targets`). A name imported from here
still works, with a ``DeprecationWarning`` that names its new home.
"""

from __future__ import annotations

import warnings
from typing import Any

from interp_core.backend import target_spec


def __getattr__(name: str) -> Any:
    if name.startswith("__") or not hasattr(target_spec, name):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    warnings.warn(
        f"{__name__} is deprecated and goes in the next release: import {name} from "
        f"{target_spec.__name__}", DeprecationWarning, stacklevel=2,
    )
    return getattr(target_spec, name)
