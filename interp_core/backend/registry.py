"""How interp-core finds backend plugins and asks them: the plugin manager, entry-point
discovery, :func:`get_backend`, model and weights files, and install hints for adapters that
are not installed.

What a plugin implements and returns (the hooks, :class:`BackendRegistration`, the hook
implementations a ``plugin.py`` is made of) is :mod:`interp_core.backend.hookspecs`. Nothing
here imports a framework. A backend's heavy module is imported the first time
:func:`get_backend` asks for it; until then a registration is a name and a string.

Hooks are called through the plugin manager, so pluggy's ordering, wrappers and
``firstresult`` mean what they say. A broken plugin never breaks the host: one that fails to
import is skipped with a warning, and each implementation of a discovery hook
(``interp_core_register_backends``, ``interp_core_claim_model``) is wrapped when it is
registered, so that an exception warns, names the plugin and counts as "no answer".
"""

from __future__ import annotations

import functools
import importlib
import sys
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pluggy

from interp_core.backend import hookspecs
from interp_core.backend.hookspecs import (
    ENTRY_POINT_GROUP,
    PROJECT,
    BackendRegistration,
    claims,
    defined_in,
    hookimpl,
    registers,
)
from interp_core.backend.protocol import Backend

__all__ = [
    "KNOWN_FRAMEWORKS", "BackendRegistration", "KnownAdapter", "TolerantPluginManager",
    "backends", "claimed_by", "defined_in", "get_backend", "load_attribute", "load_model_file",
    "load_weights_file", "register_backend", "registrations", "reset_registry",
]


# -- adapters that are not installed -------------------------------------------------------
@functools.lru_cache(maxsize=1024)
def _type_names(cls: type) -> frozenset[str]:
    return frozenset(f"{c.__module__}.{c.__qualname__}" for c in cls.__mro__)


@dataclass(frozen=True)
class KnownAdapter:
    """A first-party adapter, described for install hints when it is *not* installed.

    Attributes
    ----------
    distribution : str
        What to ``pip install`` (``"interp-torch"``): its registration's ``distribution``.
    modules : tuple[str, ...]
        Top-level modules whose types mark a model as this framework's: its registration's
        ``frameworks``.
    model_types : tuple[str, ...]
        Other model types its plugin claims, as ``"module.QualName"`` (the JAX plugin claims
        ``interp_core.split.Split`` in its ``interp_core_claim_model``).
    model_files : tuple[str, ...]
        File suffixes it loads (``".pt"``): its registration's ``model_files``.
    """

    distribution: str
    modules: tuple[str, ...]
    model_types: tuple[str, ...] = ()
    model_files: tuple[str, ...] = ()

    def recognises(self, model: Any) -> bool:
        """Whether ``model``'s type (or a base) is one of this adapter's; imports nothing."""
        return defined_in(model, *self.modules) or not _type_names(type(model)).isdisjoint(
            self.model_types
        )


#: The first-party adapters by backend name, for hints when one is not installed (an adapter
#: that is not installed cannot be asked). Each entry repeats what that adapter's ``plugin.py``
#: declares in its ``REGISTRATION``, and ``tests/test_registry.py`` checks that it does.
KNOWN_FRAMEWORKS: dict[str, KnownAdapter] = {
    "torch": KnownAdapter("interp-torch", ("torch",),
                          model_files=(".pt", ".pth", ".ts", ".jit", ".pt2")),
    "tensorflow": KnownAdapter("interp-tensorflow", ("keras", "tensorflow", "tf_keras"),
                               model_files=(".keras", ".h5", ".hdf5")),
    "jax": KnownAdapter("interp-jax", ("flax", "jax", "equinox"),
                        model_types=("interp_core.split.Split",)),
}


# -- the plugin manager --------------------------------------------------------------------
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
    """A pluggy manager whose plugins' discovery hooks warn instead of raising.

    Each implementation of ``interp_core_register_backends`` and ``interp_core_claim_model``
    is wrapped when its plugin is registered: an exception (or a wrong return type) warns,
    names the plugin and counts as "no answer". Hook wrappers and the loading hooks (whose
    errors are about the user's file) are left as they are.
    """

    def get_canonical_name(self, plugin: Any) -> str:
        """A module's name; for other objects the class name (readable in warnings) made
        unique by the object's id."""
        name = getattr(plugin, "__name__", None)
        return name if isinstance(name, str) else f"{type(plugin).__name__}@{id(plugin):x}"

    def register(self, plugin: Any, name: str | None = None) -> str | None:
        name = name or self.get_canonical_name(plugin)
        return super().register(_GuardedPlugin(plugin, name, self), name=name)


# -- discovery -----------------------------------------------------------------------------
class _ClaimFromFrameworks:
    """The default claim: the backend whose declared ``frameworks`` a model's type comes
    from. Runs after every plugin's own claim (``trylast``)."""

    @hookimpl(trylast=True)
    def interp_core_claim_model(self, model: Any) -> str | None:
        for reg in registrations().values():
            if any(m in sys.modules for m in reg.frameworks) and defined_in(
                model, *reg.frameworks
            ):
                return reg.name
        return None


class _Registry:
    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.pm: pluggy.PluginManager | None = None
        self.instances: dict[str, Any] = {}
        self.registrations: dict[str, BackendRegistration] | None = None

    def manager(self) -> pluggy.PluginManager:
        with self.lock:
            if self.pm is None:
                pm = TolerantPluginManager(PROJECT)
                pm.add_hookspecs(hookspecs)
                pm.register(_ClaimFromFrameworks(), name="interp_core.claim_from_frameworks")
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
            pm.register(ep.load(), name=ep.name)
        except Exception as exc:  # a broken plugin must not break the host
            warnings.warn(
                f"interp-core: backend plugin {ep.name!r} ({ep.value}) failed to load and is "
                f"skipped: {type(exc).__name__}: {exc}",
                RuntimeWarning, stacklevel=4,
            )


def _call(hook_name: str, **kwargs: Any) -> Any:
    """``pm.hook.<hook_name>(**kwargs)``; an exception (only a hook wrapper can still raise
    one) warns and gives None."""
    try:
        return getattr(_REGISTRY.manager().hook, hook_name)(**kwargs)
    except Exception as exc:
        warnings.warn(
            f"interp-core: a plugin's hook wrapper raised in {hook_name}: "
            f"{type(exc).__name__}: {exc}",
            RuntimeWarning, stacklevel=3,
        )
        return None


def registrations() -> dict[str, BackendRegistration]:
    """Name -> registration of every installed backend (cached).

    The order is pluggy's call order (the plugin registered last first); a name offered twice
    keeps the first and warns.
    """
    with _REGISTRY.lock:
        if _REGISTRY.registrations is None:
            found: dict[str, BackendRegistration] = {}
            for regs in _call("interp_core_register_backends") or []:
                for reg in regs or []:
                    if not isinstance(reg, BackendRegistration):  # from a hook wrapper
                        warnings.warn(f"interp-core: {reg!r} is not a BackendRegistration; "
                                      "skipped", RuntimeWarning, stacklevel=2)
                    elif reg.name in found:
                        warnings.warn(
                            f"interp-core: backend name {reg.name!r} is already taken (factory "
                            f"{found[reg.name].factory!r}); the registration with factory "
                            f"{reg.factory!r} is skipped", RuntimeWarning, stacklevel=2,
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
        A registration, or a plugin with ``@hookimpl`` functions. Registered after the
        installed plugins, so its hooks are called first.
    claim : callable, optional
        ``claim(model) -> bool``: whether this backend handles ``model``, for models that
        ``registration.frameworks`` does not already recognise.
    """
    pm = _REGISTRY.manager()
    if isinstance(registration, BackendRegistration):
        reg = registration
        plugin = SimpleNamespace(interp_core_register_backends=registers(reg))
        if claim is not None:
            plugin.interp_core_claim_model = claims(reg.name, claim)
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


def _backend_by_name(name: str) -> Backend:
    key = name.lower()
    with _REGISTRY.lock:
        if key in _REGISTRY.instances:
            return _REGISTRY.instances[key]
        regs = registrations()
        if key not in regs:
            hint = ""
            if key in KNOWN_FRAMEWORKS:
                hint = f": pip install {KNOWN_FRAMEWORKS[key].distribution}"
            raise ValueError(
                f"backend {name!r} is not installed{hint}; installed backends: {backends()}"
            )
        instance = _instantiate(regs[key])
        _REGISTRY.instances[key] = instance
        return instance


def claimed_by(model: Any) -> str | None:
    """The name of the backend that claims ``model`` (``interp_core_claim_model``), or None."""
    return _call("interp_core_claim_model", model=model)


def get_backend(name_or_model: Any) -> Backend:
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
    claimed = claimed_by(model)
    if claimed is not None:
        return _backend_by_name(claimed)
    kind = type(model).__module__ + "." + type(model).__qualname__
    for backend_name, known in KNOWN_FRAMEWORKS.items():
        if known.recognises(model):
            raise ValueError(
                f"model of type {kind} looks like a {backend_name} model but "
                f"{known.distribution} is not installed: pip install {known.distribution}"
            )
    raise ValueError(
        f"no installed backend handles a model of type {kind}; installed backends: "
        f"{backends()}. Pass backend= to force one, or install the adapter for its framework"
    )


def load_model_file(path: str | Path, *, trust: bool = False) -> Any | None:
    """The model saved in ``path``, loaded by the first backend whose
    ``interp_core_load_model`` claims the file; None when no installed backend does.

    ``trust=True`` lets the adapter run code the file carries (unpickle a whole torch module,
    deserialise a Keras ``Lambda``); without it such files are refused with an error that says
    so. Errors from the backend that claimed the file (a state dict, a corrupt archive, a file
    that needs trust) propagate. :func:`interp_core.io.models.load_model` is the user-facing
    door (``module:attribute`` specs, weights, errors naming the spec).
    """
    return _REGISTRY.manager().hook.interp_core_load_model(path=Path(path), trust=bool(trust))


def load_weights_file(model: Any, path: str | Path) -> Any | None:
    """``model`` with the weights saved in ``path`` loaded into it, by the first backend whose
    ``interp_core_load_weights`` takes the model; None when no installed backend does.

    Errors from that backend (an unknown suffix, missing or unexpected weights) propagate.
    """
    return _REGISTRY.manager().hook.interp_core_load_weights(model=model, path=Path(path))
