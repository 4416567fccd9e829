"""One way to keep the old import path of a moved module working for a release.

An old module becomes three lines: its docstring, this import, and its ``__getattr__``::

    from interp_core.backend.moved import moved_module

    __getattr__ = moved_module(__name__, "interp_core.backend.grids")

A name used from the old path (``from old.path import name``, ``old_module.name``) is looked
up in the new homes, in order, and returned with a ``DeprecationWarning`` that names its new
home and points at the line that used it. Nothing warns at import time, so only code that
still uses an old name hears of it.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable
from types import ModuleType
from typing import Any


def moved_module(old: str, *homes: str) -> Callable[[str], Any]:
    """A module ``__getattr__`` for the old module ``old``, whose names moved to ``homes``.

    Parameters
    ----------
    old : str
        The old module's name (``__name__``).
    homes : str
        The modules that hold its names now, searched in order (imported when first used).

    Returns
    -------
    callable
        ``__getattr__(name)``: the name from its new home, with a ``DeprecationWarning``;
        ``AttributeError`` for a name no home has.
    """

    def lookup(name: str) -> Any:
        if not name.startswith("__"):
            for home in homes:
                module = importlib.import_module(home)
                if _exports(module, name):
                    warnings.warn(f"{old} is deprecated and goes in the next release: import "
                                  f"{name} from {home}", DeprecationWarning, stacklevel=2)
                    return getattr(module, name)
        raise AttributeError(f"module {old!r} has no attribute {name!r}")

    return lookup


def _exports(module: ModuleType, name: str) -> bool:
    """Whether ``module`` offers ``name``: in its ``__all__`` where it has one; otherwise any
    attribute but the modules it imported (``np``)."""
    names = getattr(module, "__all__", None)
    if names is not None:
        return name in names
    return hasattr(module, name) and not isinstance(getattr(module, name), ModuleType)
