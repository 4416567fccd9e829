"""The model an ``interp`` command works on: a saved file or ``module:attribute``.

Files are loaded by the installed adapters (hook ``interp_core_load_model``), so the command
imports no framework itself.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from pathlib import Path
from typing import Any

from interp_core.backend.registry import KNOWN_FRAMEWORKS, backends, load_model_file
from interp_core.cli.errors import CLIError


def load_model(spec: str) -> Any:
    """A model from a file an installed adapter loads (``.keras``, ``torch.save``'d ``.pt``),
    or from ``module:attribute``.

    ``module:attribute`` names a model object or a zero-argument factory (function or class);
    ``module`` may be a dotted import path or a ``.py`` file.
    """
    path = Path(spec)
    if path.is_file():
        model = load_model_file(path)
        if model is not None:
            return model
        if ":" not in spec:
            raise CLIError(_no_loader_message(path))
    if ":" not in spec:
        raise CLIError(
            f"MODEL {spec!r} is neither a model file nor module:attribute"
            f"{'' if path.exists() else ' (no such file)'}"
        )
    return _load_attribute(spec)


def _no_loader_message(path: Path) -> str:
    suffix = path.suffix.lower()
    for known in KNOWN_FRAMEWORKS.values():
        if suffix in known.model_files:
            return (f"no installed backend loads {suffix} files such as {str(path)!r}: "
                    f"pip install {known.distribution}")
    return (f"no installed backend loads {str(path)!r} (installed: {backends()}); pass a "
            "model file an adapter saves (.keras, torch.save(model) .pt) or module:attribute")


def _load_attribute(spec: str) -> Any:
    module_name, _, attr = spec.rpartition(":")
    if module_name.endswith(".py"):
        file = Path(module_name)
        if not file.is_file():
            raise CLIError(f"no such file: {module_name}")
        loader_spec = importlib.util.spec_from_file_location(file.stem, file)
        if loader_spec is None or loader_spec.loader is None:
            raise CLIError(f"{module_name} cannot be imported as a Python module")
        module = importlib.util.module_from_spec(loader_spec)
        sys.modules[file.stem] = module
        loader_spec.loader.exec_module(module)
    else:
        sys.path.insert(0, str(Path.cwd()))
        module = importlib.import_module(module_name)
    try:
        obj = getattr(module, attr)
    except AttributeError:
        raise CLIError(f"{module_name} has no attribute {attr!r}") from None
    if inspect.isfunction(obj) or inspect.isclass(obj):
        obj = obj()
    return obj
