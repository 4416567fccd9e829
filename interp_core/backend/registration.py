"""What a backend registration is, the hook implementations a plugin module is made of, and
the first-party adapters known for install hints.

Reads type names only: nothing here imports a framework.
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from interp_core.backend.hookspecs import hookimpl

_NAME_RE = re.compile(r"^[a-z][a-z0-9_-]*$")


@dataclass(frozen=True)
class KnownAdapter:
    """A first-party adapter, described for install hints when it is *not* installed.

    Attributes
    ----------
    distribution : str
        What to ``pip install`` (``"interp-torch"``).
    modules : tuple[str, ...]
        Top-level modules whose types mark a model as this framework's.
    model_types : tuple[str, ...]
        Other model types it runs, as ``"module.QualName"`` (the JAX adapter runs
        ``interp_core.split.Split``).
    model_files : tuple[str, ...]
        File suffixes it loads (``".pt"``), for the ``interp`` command's hint.
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


#: Adapters interp-core knows of, by backend name: only for hints when none is installed.
KNOWN_FRAMEWORKS: dict[str, KnownAdapter] = {
    "torch": KnownAdapter("interp-torch", ("torch",),
                          model_files=(".pt", ".pth", ".pt2", ".ts", ".jit")),
    "tensorflow": KnownAdapter("interp-tensorflow", ("keras", "tensorflow", "tf_keras"),
                               model_files=(".keras", ".h5", ".hdf5")),
    "jax": KnownAdapter("interp-jax", ("jax", "jaxlib", "flax", "equinox"),
                        model_types=("interp_core.split.Split",)),
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
        Top-level modules whose model types this backend runs (``("torch",)``). A model whose
        class, or a base class, comes from one of them is claimed for this backend once that
        module is imported; no ``interp_core_claim_model`` hook is needed for it.
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
        if isinstance(self.frameworks, str) or not all(
            isinstance(m, str) and m and "." not in m for m in self.frameworks
        ):
            raise ValueError(
                f"backend {self.name!r}: frameworks={self.frameworks!r} must be a tuple of "
                "top-level module names, e.g. ('torch',)"
            )
        object.__setattr__(self, "frameworks", tuple(self.frameworks))


# -- hook implementations for a plugin module --------------------------------------------------
def registers(*offered: BackendRegistration) -> Callable[[], list[BackendRegistration]]:
    """An ``interp_core_register_backends`` implementation that offers ``offered``.

    A plugin module needs no more than::

        interp_core_register_backends = registers(BackendRegistration(name="mylib", ...))
    """

    def interp_core_register_backends() -> list[BackendRegistration]:
        return list(offered)

    return hookimpl(interp_core_register_backends)


def claims(name: str, test: Callable[[Any], bool]) -> Callable[[Any], str | None]:
    """An ``interp_core_claim_model`` implementation: ``name`` for the models ``test(model)``
    accepts, None (no answer) for the others. ``test`` must be cheap and import no
    framework."""

    def interp_core_claim_model(model: Any) -> str | None:
        return name if test(model) else None

    return hookimpl(interp_core_claim_model)


def loads_files(suffixes: tuple[str, ...], loader: str) -> Callable[[Path, bool], Any | None]:
    """An ``interp_core_load_model`` implementation for files named ``*<suffix>``.

    Parameters
    ----------
    suffixes : tuple of str
        Lower-case file suffixes (``(".pt", ".pth")``), matched in any case.
    loader : str
        ``"package.module:function"``, imported only when a file is yours; ``function(path)``
        or ``function(path, *, trust)`` returns the model or raises an error that says what is
        wrong with the file. ``trust`` (the user's permission to run code the file carries) is
        passed when the function has a parameter of that name.
    """
    function = _lazy_function(loader)

    def interp_core_load_model(path: Path, trust: bool) -> Any | None:
        if path.suffix.lower() not in suffixes:
            return None
        load = function()
        return load(path, trust=trust) if _takes(load, "trust") else load(path)

    return hookimpl(interp_core_load_model)


def loads_weights(frameworks: tuple[str, ...],
                  loader: str) -> Callable[[Any, Path], Any | None]:
    """An ``interp_core_load_weights`` implementation for models of ``frameworks``.

    Parameters
    ----------
    frameworks : tuple of str
        Top-level modules (``("torch",)``): a model whose type, or a base, comes from one of
        them is yours (:func:`defined_in`; nothing is imported to tell).
    loader : str
        ``"package.module:function"``, imported only for your models; ``function(model,
        path)`` loads the weights in ``path`` into ``model`` and returns the model, or raises
        an error that names the file and what would work (an unknown suffix, mismatched
        weights).
    """
    function = _lazy_function(loader)
    tops = tuple(frameworks)

    def interp_core_load_weights(model: Any, path: Path) -> Any | None:
        if not defined_in(model, *tops):
            return None
        return function()(model, path)

    return hookimpl(interp_core_load_weights)


def _lazy_function(loader: str) -> Callable[[], Callable[..., Any]]:
    """``"package.module:function"`` checked now and imported on the first call."""
    if not isinstance(loader, str) or ":" not in loader:
        raise ValueError(f"loader {loader!r} must look like 'package.module:function'")
    module_name, _, name = loader.partition(":")
    return lambda: getattr(importlib.import_module(module_name), name)


def _takes(function: Callable[..., Any], name: str) -> bool:
    """Whether ``function`` accepts a keyword argument ``name`` (or any keyword)."""
    try:
        params = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature
        return False
    return any((p.name == name and p.kind is not p.POSITIONAL_ONLY) or p.kind is p.VAR_KEYWORD
               for p in params)


@lru_cache(maxsize=1024)
def _type_modules(cls: type) -> frozenset[str]:
    return frozenset(c.__module__.split(".")[0] for c in cls.__mro__ if c.__module__)


@lru_cache(maxsize=1024)
def _type_names(cls: type) -> frozenset[str]:
    return frozenset(f"{c.__module__}.{c.__qualname__}" for c in cls.__mro__)


def defined_in(obj: Any, *top_level_modules: str) -> bool:
    """True if ``obj``'s class, or a base class, comes from one of these top-level modules.

    Reads type names only (cached per type), so it never imports a framework.
    """
    return not _type_modules(type(obj)).isdisjoint(top_level_modules)
