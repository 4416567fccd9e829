"""Deprecated: this module's names moved, and it goes in the next release.

:class:`~interp_core.backend.registry.TolerantPluginManager` is in
:mod:`interp_core.backend.registry`. A name imported from here still works, with a
``DeprecationWarning`` that names its new home.
"""

from __future__ import annotations

import warnings
from typing import Any

from interp_core.backend import registry


def __getattr__(name: str) -> Any:
    if name.startswith("__") or not hasattr(registry, name):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    warnings.warn(
        f"{__name__} is deprecated and goes in the next release: import {name} from "
        f"{registry.__name__}", DeprecationWarning, stacklevel=2,
    )
    return getattr(registry, name)
