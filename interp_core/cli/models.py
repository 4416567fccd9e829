"""The model an ``interp`` command works on: :func:`interp_core.io.models.load_model`.

Kept so that ``from interp_core.cli.models import load_model`` works; the loading itself
(model files through the adapters' hooks, ``module:attribute``, ``trust``, ``weights``) lives in
:mod:`interp_core.io.models`, the one door every entry point uses. Its errors are
:class:`interp_core.io.ModelLoadError`, whose ``cli_message()`` names the command's flags.
"""

from __future__ import annotations

from interp_core.io.models import load_model

__all__ = ["load_model"]
