"""A pluggy manager whose plugins' discovery hooks warn instead of raising.

Each implementation of ``interp_core_register_backends`` and ``interp_core_claim_model`` is
wrapped when its plugin is registered: an exception (or a wrong return type) warns, names the
plugin and counts as "no answer", so one broken plugin never breaks the host. Hook wrappers and
``interp_core_load_model`` (whose errors are about the user's file) are left as they are.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any

import pluggy

from interp_core.backend.hookspecs import PROJECT
from interp_core.backend.registration import BackendRegistration

#: Hooks whose implementations only warn when they raise.
_GUARDED_HOOKS = frozenset({"interp_core_register_backends", "interp_core_claim_model"})


def _guard(function: Callable[..., Any], plugin_name: str, hook_name: str) -> Callable[..., Any]:
    """``function`` made to warn and answer None instead of raising."""

    @functools.wraps(function)  # pluggy reads the argument names through __wrapped__
    def guarded(*args: Any, **kwargs: Any) -> Any:
        try:
            result = function(*args, **kwargs)
        except Exception as exc:
            warnings.warn(
                f"interp-core: plugin {plugin_name!r} raised in {hook_name}; its answer is "
                f"ignored: {type(exc).__name__}: {exc}",
                RuntimeWarning, stacklevel=2,
            )
            return None
        if hook_name == "interp_core_register_backends":
            return _valid_registrations(result, plugin_name)
        return result

    return guarded


def _valid_registrations(result: Any, plugin_name: str) -> list[BackendRegistration] | None:
    if result is None:
        return None
    items = list(result) if isinstance(result, list | tuple) else [result]
    valid = [r for r in items if isinstance(r, BackendRegistration)]
    for bad in (r for r in items if not isinstance(r, BackendRegistration)):
        warnings.warn(
            f"interp-core: plugin {plugin_name!r} returned {bad!r} from "
            "interp_core_register_backends, not a BackendRegistration; skipped",
            RuntimeWarning, stacklevel=3,
        )
    return valid


class _GuardedPlugin:
    """A plugin as the manager sees it: the same hook implementations and options, with
    the discovery hooks (not wrappers) guarded by :func:`_guard`."""

    def __init__(self, plugin: Any, plugin_name: str, pm: pluggy.PluginManager) -> None:
        self.plugin = plugin
        for attr in dir(plugin):
            opts = pm.parse_hookimpl_opts(plugin, attr)
            if opts is None:
                continue
            function = getattr(plugin, attr)
            hook_name = opts.get("specname") or attr
            if hook_name in _GUARDED_HOOKS and not (opts.get("wrapper") or
                                                    opts.get("hookwrapper")):
                function = _guard(function, plugin_name, hook_name)
                setattr(function, f"{PROJECT}_impl", opts)
            setattr(self, attr, function)


class TolerantPluginManager(pluggy.PluginManager):
    """A pluggy manager whose plugins' discovery hooks warn instead of raising."""

    def get_canonical_name(self, plugin: Any) -> str:
        """A module's name; for other objects the class name (readable in warnings) made
        unique by the object's id."""
        name = getattr(plugin, "__name__", None)
        return name if isinstance(name, str) else f"{type(plugin).__name__}@{id(plugin):x}"

    def register(self, plugin: Any, name: str | None = None) -> str | None:
        name = name or self.get_canonical_name(plugin)
        return super().register(_GuardedPlugin(plugin, name, self), name=name)
