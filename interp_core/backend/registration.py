"""Deprecated: this module's names moved, and it goes in the next release.

:class:`~interp_core.backend.hookspecs.BackendRegistration`, ``defined_in`` and the hook
implementations ``registers``, ``claims``, ``loads_files``, ``loads_weights`` are in
:mod:`interp_core.backend.hookspecs`; ``KNOWN_FRAMEWORKS`` and ``KnownAdapter`` in
:mod:`interp_core.backend.registry`. A name imported from here still works, with a
``DeprecationWarning`` that names its new home.
"""

from __future__ import annotations

import warnings
from types import ModuleType
from typing import Any

from interp_core.backend import hookspecs, registry


def __getattr__(name: str) -> Any:
    home: ModuleType | None = next(
        (m for m in (hookspecs, registry) if hasattr(m, name) and not name.startswith("__")),
        None,
    )
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    warnings.warn(
        f"{__name__} is deprecated and goes in the next release: import {name} from "
        f"{home.__name__}", DeprecationWarning, stacklevel=2,
    )
    return getattr(home, name)
