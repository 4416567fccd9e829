"""pluggy hook specifications: how an adapter tells interp-core that it exists.

A backend plugin is a module (or any object) with ``@hookimpl`` functions, listed under the
entry point group ``interp_core.backends`` in its distribution's metadata::

    # pyproject.toml of "interp-mylib"
    [project.entry-points."interp_core.backends"]
    mylib = "interp_mylib.plugin"

The plugin module must be light: it imports no framework. The heavy adapter class is named by a
``"module:Class"`` string and imported only when a model of that framework is explained.
"""

from __future__ import annotations

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

    Example plugin module (``interp_mylib/plugin.py``)::

        from interp_core import BackendRegistration, hookimpl

        @hookimpl
        def interp_core_register_backends():
            return [BackendRegistration(
                name="mylib",
                factory="interp_mylib.backend:MyLibBackend",   # imported lazily
                frameworks=("mylib",),
                install_hint="pip install mylib",
            )]
    """


@hookspec(firstresult=True)
def interp_core_claim_model(model: Any) -> str | None:
    """Return your backend's name if ``model`` belongs to your framework, else None.

    Must be cheap and must not import a framework: read ``sys.modules`` and type names.
    :func:`interp_core.backend.registry.defined_in` does the usual check. Example::

        import sys
        from interp_core import hookimpl
        from interp_core.backend.registry import defined_in

        @hookimpl
        def interp_core_claim_model(model):
            if "mylib" in sys.modules and defined_in(model, "mylib"):
                return "mylib"
            return None
    """
