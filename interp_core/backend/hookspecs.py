"""What a backend plugin is: the pluggy hooks it implements, the :class:`BackendRegistration`
it returns, and hook implementations built from values, which first-party plugins are made of.

A backend plugin is a module (or any object) with ``@hookimpl`` functions, listed under the
entry point group ``interp_core.backends`` in its distribution's metadata::

    # pyproject.toml of "interp-mylib"
    [project.entry-points."interp_core.backends"]
    mylib = "interp_mylib.plugin"

The plugin module must be light: it imports no framework. The heavy adapter class is named by a
``"module:Class"`` string and imported only when a model of that framework is explained. How
interp-core finds plugins and asks them is :mod:`interp_core.backend.registry`.

The hooks are called through the plugin manager (``pm.hook.<name>(...)``), so pluggy's
ordering (last registered first, ``tryfirst``/``trylast``), wrappers and ``firstresult`` hold.
An implementation of :func:`interp_core_register_backends` or :func:`interp_core_claim_model`
that raises only warns (naming its plugin) and counts as "no answer";
:func:`interp_core_load_model` and :func:`interp_core_load_weights` errors reach the user, since
they are about the file.

An implementation may take fewer arguments than its hookspec names (pluggy passes only those it
asks for): a plugin written before :func:`interp_core_load_model` gained ``trust`` still works.
Nothing here imports a framework.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pluggy

PROJECT = "interp_core"
#: Entry point group that adapters register under.
ENTRY_POINT_GROUP = "interp_core.backends"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# -- the hooks -----------------------------------------------------------------------------
@hookspec
def interp_core_register_backends() -> list[Any]:
    """Return the :class:`~interp_core.backend.BackendRegistration` objects this plugin offers.

    This is the one hook a plugin needs. A model whose type comes from one of the
    registration's ``frameworks`` modules is claimed for it without further code (the way
    einops finds a tensor's backend from ``sys.modules``). Example plugin module
    (``interp_mylib/plugin.py``)::

        from interp_core.backend import BackendRegistration, hookimpl

        @hookimpl
        def interp_core_register_backends():
            return [BackendRegistration(
                name="mylib",
                factory="interp_mylib.backend:MyLibBackend",   # imported lazily
                frameworks=("mylib",),                         # claims mylib's model types
                install_hint="pip install mylib",              # when the factory cannot import
                distribution="interp-mylib",                   # what ships this plugin
            )]
    """


@hookspec(firstresult=True)
def interp_core_claim_model(model: Any) -> str | None:
    """Return a backend name if ``model`` is yours but not recognisable from its type alone.

    Only needed beyond the default claim from ``BackendRegistration.frameworks`` (the JAX
    adapter claims ``interp_core.Split`` here). The first non-None answer wins; the default
    claim runs last. Must be cheap and must not import a framework: read ``sys.modules`` and
    type names (:func:`defined_in`). Example::

        from interp_core.backend import hookimpl
        from interp_mylib.wrappers import MyWrapper    # light: no framework import

        @hookimpl
        def interp_core_claim_model(model):
            return "mylib" if isinstance(model, MyWrapper) else None
    """


@hookspec(firstresult=True)
def interp_core_load_model(path: Path, trust: bool) -> Any | None:
    """Load the model saved in the file ``path``, or return None if the file is not yours.

    Decide from the name first (``path.suffix``) and import the framework only for your own
    files. If the file is yours but holds no usable model (a state dict, a corrupt archive),
    raise an exception whose message says what is wrong and what would work: the ``interp``
    command shows it to the user (:class:`interp_core.io.ModelLoadError` carries a phrasing for
    the command line too).

    ``trust`` is the user's permission to run code that the file carries (a pickled module, a
    Keras ``Lambda``): ``trust=True`` in Python, ``--trust-model`` on the command line. Without
    it, load only what cannot run code, and refuse the rest with an error that names the file,
    the risk and the safe alternative. An implementation may leave ``trust`` out of its
    arguments (pluggy passes only the ones it names). Example::

        from interp_core.backend import hookimpl

        @hookimpl
        def interp_core_load_model(path, trust):
            if path.suffix != ".mylib":
                return None
            import mylib                               # the framework, only now

            return mylib.load(path, allow_code=trust)
    """


@hookspec(firstresult=True)
def interp_core_load_weights(model: Any, path: Path) -> Any | None:
    """Load the weights saved in ``path`` into ``model``; None if ``model`` is not yours.

    Used by :func:`interp_core.io.models.load_model` with ``weights=`` (``--weights FILE``):
    the model is built in code (``module:factory``) and only its weights come from a file, so
    no code from the file runs. Decide from the model's type without importing the framework
    (:func:`defined_in`), then return the model with its weights
    loaded (the same object, or one that replaces it). For your model but a file you cannot
    read (unknown suffix, missing or unexpected weights), raise an error that names the file
    and what would work. Example::

        from interp_core.backend import hookimpl
        from interp_core.backend import defined_in

        @hookimpl
        def interp_core_load_weights(model, path):
            if not defined_in(model, "mylib"):
                return None
            import mylib                               # the framework, only now

            model.set_weights(mylib.read_weights(path))
            return model
    """


# -- what a plugin offers ------------------------------------------------------------------
_NAME_RE = re.compile(r"^[a-z][a-z0-9_-]*$")
_SUFFIX_RE = re.compile(r"^\.[a-z0-9_-]+$")


@dataclass(frozen=True)
class BackendRegistration:
    """A backend a plugin offers, and the facts about its framework.

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
    demo_vit : str or callable, optional
        The same for the bundled demo vision transformer (:mod:`interp_core.datasets.demo_vit`).
    model_files : tuple[str, ...]
        Lower-case suffixes of the model files this backend's ``interp_core_load_model``
        loads (``(".pt", ".pth")``): give the same tuple to :func:`loads_files`, so that the
        plugin says them once.
    distribution : str
        The distribution that ships this plugin (``"interp-torch"``): what a user without it
        would ``pip install``.
    """

    name: str
    factory: str | Callable[[], Any]
    frameworks: tuple[str, ...] = ()
    install_hint: str = ""
    demo: str | Callable[[dict[str, Any]], Any] | None = None
    demo_vit: str | Callable[[dict[str, Any]], Any] | None = None
    model_files: tuple[str, ...] = ()
    distribution: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME_RE.match(self.name):
            raise ValueError(
                f"backend name {self.name!r} must be lower-case letters, digits, '-' or '_', "
                "starting with a letter"
            )
        for what, value in (("factory", self.factory), ("demo", self.demo),
                            ("demo_vit", self.demo_vit)):
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
        if isinstance(self.model_files, str) or not all(
            isinstance(s, str) and _SUFFIX_RE.match(s) for s in self.model_files
        ):
            raise ValueError(
                f"backend {self.name!r}: model_files={self.model_files!r} must be a tuple of "
                "lower-case file suffixes, e.g. ('.pt', '.pth')"
            )
        if not isinstance(self.distribution, str):
            raise ValueError(f"backend {self.name!r}: distribution={self.distribution!r} must "
                             "be a distribution name, e.g. 'interp-torch'")
        object.__setattr__(self, "frameworks", tuple(self.frameworks))
        object.__setattr__(self, "model_files", tuple(self.model_files))


@functools.lru_cache(maxsize=1024)
def _type_modules(cls: type) -> frozenset[str]:
    return frozenset(c.__module__.split(".")[0] for c in cls.__mro__ if c.__module__)


def defined_in(obj: Any, *top_level_modules: str) -> bool:
    """True if ``obj``'s class, or a base class, comes from one of these top-level modules.

    Reads type names only (cached per type), so it never imports a framework.
    """
    return not _type_modules(type(obj)).isdisjoint(top_level_modules)


# -- hook implementations for a plugin module ----------------------------------------------
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
        Lower-case file suffixes (``(".pt", ".pth")``, the registration's ``model_files``),
        matched in any case.
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
        Top-level modules (``("torch",)``, the registration's ``frameworks``): a model whose
        type, or a base, comes from one of them is yours (:func:`defined_in`; nothing is
        imported to tell).
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
