"""Shared test helpers: backend availability policy (DESIGN.md section 6)."""

from __future__ import annotations

import importlib
import os
from collections.abc import Sequence
from types import ModuleType

import pytest

import interp_core as ic


def installed_frameworks(names: Sequence[str]) -> list[str]:
    """The backends of ``names`` that are installed, in that order; a run whose
    ``INTERP_TEST_BACKENDS`` names one that is not installed fails."""
    wanted = {b for b in os.environ.get("INTERP_TEST_BACKENDS", "").split(",") if b}
    installed = ic.backends()
    missing = [b for b in wanted if b in names and b not in installed]
    if missing:
        raise RuntimeError(f"INTERP_TEST_BACKENDS names {missing} but they are not installed")
    return [b for b in names if b in installed]


def require_framework(backend: str, module: str) -> ModuleType:
    """Import ``module`` for ``backend``'s tests.

    Where ``INTERP_TEST_BACKENDS`` (comma-separated) names the backend, a failed import fails
    the run; elsewhere the tests skip.
    """
    wanted = {b.strip() for b in os.environ.get("INTERP_TEST_BACKENDS", "").split(",") if b}
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        if backend in wanted:
            raise RuntimeError(
                f"INTERP_TEST_BACKENDS names {backend!r} but {module} does not import: {exc}"
            ) from exc
        pytest.skip(f"{module} is not installed", allow_module_level=True)
        raise  # unreachable


def require_ray() -> ModuleType:
    """Import Ray (with Ray Data) for the audit's Ray tests.

    Where ``INTERP_TEST_RAY`` is set, a failed import fails the run; elsewhere the tests skip.
    """
    try:
        importlib.import_module("ray.data")
        return importlib.import_module("ray")
    except ImportError as exc:
        if os.environ.get("INTERP_TEST_RAY"):
            raise RuntimeError(
                f"INTERP_TEST_RAY is set but Ray Data does not import: {exc}"
            ) from exc
        pytest.skip(
            f"Ray Data is not installed ({exc}); pip install 'interp-core[ray]'",
            allow_module_level=True,
        )
        raise  # unreachable
