"""pluggy hook specifications: how an adapter tells interp-core that it exists.

A backend plugin is a module (or any object) with ``@hookimpl`` functions, listed under the
entry point group ``interp_core.backends`` in its distribution's metadata::

    # pyproject.toml of "interp-mylib"
    [project.entry-points."interp_core.backends"]
    mylib = "interp_mylib.plugin"

The plugin module must be light: it imports no framework. The heavy adapter class is named by a
``"module:Class"`` string and imported only when a model of that framework is explained.

The hooks are called through the plugin manager (``pm.hook.<name>(...)``), so pluggy's
ordering (last registered first, ``tryfirst``/``trylast``), wrappers and ``firstresult`` hold.
An implementation of :func:`interp_core_register_backends` or :func:`interp_core_claim_model`
that raises only warns (naming its plugin) and counts as "no answer";
:func:`interp_core_load_model` and :func:`interp_core_load_weights` errors reach the user, since
they are about the file.

An implementation may take fewer arguments than its hookspec names (pluggy passes only those it
asks for): a plugin written before :func:`interp_core_load_model` gained ``trust`` still works.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pluggy

PROJECT = "interp_core"
#: Entry point group that adapters register under.
ENTRY_POINT_GROUP = "interp_core.backends"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


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
                install_hint="pip install mylib",
            )]
    """


@hookspec(firstresult=True)
def interp_core_claim_model(model: Any) -> str | None:
    """Return a backend name if ``model`` is yours but not recognisable from its type alone.

    Only needed beyond the default claim from ``BackendRegistration.frameworks`` (the JAX
    adapter claims ``interp_core.Split`` here). The first non-None answer wins; the default
    claim runs last. Must be cheap and must not import a framework: read ``sys.modules`` and
    type names (:func:`interp_core.backend.registry.defined_in`). Example::

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
    (:func:`interp_core.backend.registry.defined_in`), then return the model with its weights
    loaded (the same object, or one that replaces it). For your model but a file you cannot
    read (unknown suffix, missing or unexpected weights), raise an error that names the file
    and what would work. Example::

        from interp_core.backend import hookimpl
        from interp_core.backend.registry import defined_in

        @hookimpl
        def interp_core_load_weights(model, path):
            if not defined_in(model, "mylib"):
                return None
            import mylib                               # the framework, only now

            model.set_weights(mylib.read_weights(path))
            return model
    """
