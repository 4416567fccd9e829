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
:func:`interp_core_load_model` errors reach the user, since they are about the file.
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
def interp_core_load_model(path: Path) -> Any | None:
    """Load the model saved in the file ``path``, or return None if the file is not yours.

    Decide from the name first (``path.suffix``) and import the framework only for your own
    files. If the file is yours but holds no usable model (a state dict, a corrupt archive),
    raise an exception whose message says what is wrong and what would work: the ``interp``
    command shows it to the user. Example::

        from interp_core.backend import hookimpl

        @hookimpl
        def interp_core_load_model(path):
            if path.suffix != ".mylib":
                return None
            import mylib                               # the framework, only now

            return mylib.load(path)
    """
