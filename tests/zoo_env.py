"""The zoo environment's policy: tests that need torchvision, timm, transformers,
pytorch-grad-cam or ultralytics (``requirements-zoo.txt`` and ``requirements-zoo-nodeps.txt``,
the venv ``make test-zoo`` builds) skip where those are missing, unless ``INTERP_TEST_ZOO=1``
(set by ``make test-zoo``, so by CI), which makes a missing package a failure instead of a
silent skip."""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import pytest

INSTALL = ("python3 -m venv .venv-zoo && .venv-zoo/bin/pip install -r requirements-zoo.txt && "
           ".venv-zoo/bin/pip install --no-deps -r requirements-zoo-nodeps.txt "
           "(or: make test-zoo)")


def require(module: str, *, module_level: bool = False) -> ModuleType:
    """Import ``module`` of the zoo environment, or skip (fail with ``INTERP_TEST_ZOO=1``).

    Parameters
    ----------
    module : str
        A dotted module name, e.g. ``"torchvision.models.detection"``.
    module_level : bool
        Skip the whole test module (call at import time) rather than one test.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        if os.environ.get("INTERP_TEST_ZOO") == "1":
            raise RuntimeError(f"INTERP_TEST_ZOO=1 but the zoo environment is incomplete: "
                               f"{exc} (create it with: {INSTALL})") from exc
        pytest.skip(f"{module} is not installed (the zoo environment: {INSTALL})",
                    allow_module_level=module_level)
        raise  # unreachable: pytest.skip raises
