"""Registration of the JAX backend (light: never imports jax, flax or equinox)."""

from __future__ import annotations

import sys
from typing import Any

from interp_core import BackendRegistration, hookimpl
from interp_core.backend.registry import defined_in
from interp_core.split import Split

#: Top-level modules whose types mark a model as a JAX model.
FRAMEWORKS = ("flax", "jax", "equinox")


@hookimpl
def interp_core_register_backends() -> list[BackendRegistration]:
    return [
        BackendRegistration(
            name="jax",
            factory="interp_jax.backend:JaxBackend",
            frameworks=("jax", "flax"),
            install_hint="pip install jax flax",
            demo="interp_jax.demo:build",
        )
    ]


@hookimpl
def interp_core_claim_model(model: Any) -> str | None:
    if isinstance(model, Split):
        return "jax"
    if any(name in sys.modules for name in FRAMEWORKS) and defined_in(model, *FRAMEWORKS):
        return "jax"
    return None
