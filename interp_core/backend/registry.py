"""Backend discovery: a cached pluggy manager, tolerant entry-point loading, lazy factories.

Nothing here imports a framework. A backend's heavy module is imported the first time
:func:`get_backend` asks for it; until then a registration is a name and a string.
"""

from __future__ import annotations

import importlib
import re
import sys
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata
from types import SimpleNamespace
from typing import Any

import pluggy

from interp_core.backend import hookspecs
from interp_core.backend.hookspecs import ENTRY_POINT_GROUP, PROJECT, hookimpl

_NAME_RE = re.compile(r"^[a-z][a-z0-9_-]*$")

#: Frameworks interp-core knows the adapters of, for install hints when none is installed:
#: backend name -> (top-level modules of model types, adapter distribution).
KNOWN_FRAMEWORKS: dict[str, tuple[tuple[str, ...], str]] = {
    "torch": (("torch",), "interp-torch"),
    "tensorflow": (("keras", "tensorflow", "tf_keras"), "interp-tensorflow"),
    "jax": (("jax", "jaxlib", "flax", "equinox"), "interp-jax"),
}


@dataclass(frozen=True)
class BackendRegistration:
    """A backend a plugin offers.

    Attributes
    ----------
    name : str
        Unique, lower-case (``"torch"``).
    factory : str or callable
        ``"package.module:Class"`` (imported lazily) or a zero-argument callable returning the
        backend instance.
    frameworks : tuple[str, ...]
        Top-level modules the backend needs (``("torch",)``), for error messages.
    install_hint : str
        What to run when the factory cannot import (``"pip install torch"``).
    demo : str or callable, optional
        ``"package.module:function"`` (imported lazily) or a callable ``build(weights)`` that
        builds the bundled demo model (:mod:`interp_core.datasets.demo`) in this framework from a
        dict of NumPy weights.
    """

    name: str
    factory: str | Callable[[], Any]
    frameworks: tuple[str, ...] = ()
    install_hint: str = ""
    demo: str | Callable[[dict[str, Any]], Any] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME_RE.match(self.name):
            raise ValueError(
                f"backend name {self.name!r} must be lower-case letters, digits, '-' or '_', "
                "starting with a letter"
            )
        for what, value in (("factory", self.factory), ("demo", self.demo)):
            if isinstance(value, str) and ":" not in value:
                raise ValueError(
                    f"backend {self.name!r}: {what} {value!r} must look like "
                    "'package.module:attribute'"
                )


@lru_cache(maxsize=1024)
def _type_modules(cls: type) -> frozenset[str]:
    return frozenset(c.__module__.split(".")[0] for c in cls.__mro__ if c.__module__)


def defined_in(obj: Any, *top_level_modules: str) -> bool:
    """True if ``obj``'s class, or a base class, comes from one of these top-level modules.

    Reads type names only (cached per type), so it never imports a framework.
    """
    return not _type_modules(type(obj)).isdisjoint(top_level_modules)


class _Registry:
    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.pm: pluggy.PluginManager | None = None
        self.instances: dict[str, Any] = {}
        self.registrations: dict[str, BackendRegistration] | None = None

    def manager(self) -> pluggy.PluginManager:
        with self.lock:
            if self.pm is None:
                pm = pluggy.PluginManager(PROJECT)
                pm.add_hookspecs(hookspecs)
                _load_entry_points(pm)
                self.pm = pm
            return self.pm

    def reset(self) -> None:
        with self.lock:
            self.pm = None
            self.instances.clear()
            self.registrations = None


_REGISTRY = _Registry()


def _load_entry_points(pm: pluggy.PluginManager) -> None:
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        if pm.get_plugin(ep.name) is not None:
            continue
        try:
            plugin = ep.load()
            pm.register(plugin, name=ep.name)
        except Exception as exc:  # a broken plugin must not break the host
            warnings.warn(
                f"interp-core: backend plugin {ep.name!r} ({ep.value}) failed to load and is "
                f"skipped: {type(exc).__name__}: {exc}",
                RuntimeWarning, stacklevel=4,
            )


def _call_each(hook_name: str, **kwargs: Any) -> list[tuple[str, Any]]:
    """Call every implementation of a hook on its own, so one broken plugin only warns."""
    pm = _REGISTRY.manager()
    results = []
    for impl in reversed(getattr(pm.hook, hook_name).get_hookimpls()):
        try:
            results.append((impl.plugin_name, impl.function(**kwargs)))
        except Exception as exc:
            warnings.warn(
                f"interp-core: plugin {impl.plugin_name!r} raised in {hook_name}: "
                f"{type(exc).__name__}: {exc}",
                RuntimeWarning, stacklevel=3,
            )
    return results


def registrations() -> dict[str, BackendRegistration]:
    """Name -> registration of every installed backend (cached)."""
    with _REGISTRY.lock:
        if _REGISTRY.registrations is None:
            found: dict[str, BackendRegistration] = {}
            for plugin_name, regs in _call_each("interp_core_register_backends"):
                for reg in regs or []:
                    if not isinstance(reg, BackendRegistration):
                        warnings.warn(
                            f"interp-core: plugin {plugin_name!r} returned {reg!r}, not a "
                            "BackendRegistration; skipped", RuntimeWarning, stacklevel=2,
                        )
                    elif reg.name in found:
                        warnings.warn(
                            f"interp-core: backend name {reg.name!r} from plugin "
                            f"{plugin_name!r} is already taken; skipped",
                            RuntimeWarning, stacklevel=2,
                        )
                    else:
                        found[reg.name] = reg
            _REGISTRY.registrations = found
        return _REGISTRY.registrations


def backends() -> list[str]:
    """Names of the installed backends, sorted. Imports no framework."""
    return sorted(registrations())


def register_backend(
    registration: BackendRegistration | Any, claim: Callable[[Any], bool] | None = None
) -> None:
    """Register a backend in this process (no entry point needed).

    Parameters
    ----------
    registration : BackendRegistration or pluggy plugin object
        A registration (optionally with ``claim``), or a plugin with ``@hookimpl`` functions.
    claim : callable, optional
        ``claim(model) -> bool``: whether this backend handles ``model``.
    """
    pm = _REGISTRY.manager()
    if isinstance(registration, BackendRegistration):
        reg = registration

        def register_backends() -> list[BackendRegistration]:
            return [reg]

        def claim_model(model: Any) -> str | None:
            return reg.name if claim is not None and claim(model) else None

        plugin = SimpleNamespace(
            interp_core_register_backends=hookimpl(register_backends),
            interp_core_claim_model=hookimpl(claim_model),
        )
        name = f"inprocess-{reg.name}"
        if pm.get_plugin(name) is not None:
            pm.unregister(name=name)
        pm.register(plugin, name=name)
    else:
        pm.register(registration)
    with _REGISTRY.lock:
        _REGISTRY.registrations = None
        _REGISTRY.instances.clear()


def reset_registry() -> None:
    """Forget loaded plugins and backend instances (tests; after installing an adapter)."""
    _REGISTRY.reset()


def load_attribute(reg: BackendRegistration, target: str | Callable[..., Any]) -> Any:
    """Import ``"module:attribute"`` for a registration; framework import errors get its hint."""
    if not isinstance(target, str):
        return target
    module_name, _, attr = target.partition(":")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except ImportError as exc:
        hint = f": {reg.install_hint}" if reg.install_hint else ""
        raise ImportError(
            f"backend {reg.name!r} is installed but could not import its framework "
            f"({exc}){hint}"
        ) from exc


def _instantiate(reg: BackendRegistration) -> Any:
    return load_attribute(reg, reg.factory)()


def _backend_by_name(name: str) -> Any:
    key = name.lower()
    with _REGISTRY.lock:
        if key in _REGISTRY.instances:
            return _REGISTRY.instances[key]
        regs = registrations()
        if key not in regs:
            hint = ""
            if key in KNOWN_FRAMEWORKS:
                hint = f": pip install {KNOWN_FRAMEWORKS[key][1]}"
            raise ValueError(
                f"backend {name!r} is not installed{hint}; installed backends: {backends()}"
            )
        instance = _instantiate(regs[key])
        _REGISTRY.instances[key] = instance
        return instance


def _claim(model: Any) -> str | None:
    for _, name in _call_each("interp_core_claim_model", model=model):
        if name:
            return name
    return None


def get_backend(name_or_model: Any) -> Any:
    """The backend for a name (``"torch"``) or for a model (detected from its type).

    Raises
    ------
    ValueError
        No installed backend claims the model (the message names the adapter to install when
        the model's framework is known) or the name is not installed.
    """
    if isinstance(name_or_model, str):
        return _backend_by_name(name_or_model)
    if hasattr(name_or_model, "capture") and hasattr(name_or_model, "capabilities"):
        return name_or_model  # already a backend
    model = name_or_model
    claimed = _claim(model)
    if claimed is not None:
        return _backend_by_name(claimed)
    kind = type(model).__module__ + "." + type(model).__qualname__
    for backend_name, (modules, dist) in KNOWN_FRAMEWORKS.items():
        if defined_in(model, *modules) or (
            backend_name == "jax" and type(model).__name__ == "Split"
            and type(model).__module__.startswith("interp_core")
        ):
            raise ValueError(
                f"model of type {kind} looks like a {backend_name} model but {dist} is not "
                f"installed: pip install {dist}"
            )
    raise ValueError(
        f"no installed backend handles a model of type {kind}; installed backends: "
        f"{backends()}. Pass backend= to force one, or install the adapter for its framework"
    )


def loaded_frameworks() -> list[str]:
    """Top-level framework modules already imported in this process (for diagnostics)."""
    names = {m for mods, _ in KNOWN_FRAMEWORKS.values() for m in mods}
    return sorted(n for n in names if n in sys.modules)
