"""Registration of the JAX backend (light: never imports jax, flax or equinox).

Flax and Equinox models are claimed from ``frameworks`` by interp-core's default claim; this
plugin claims :class:`interp_core.Split` models itself, since their type says nothing about
the framework.
"""

from __future__ import annotations

from typing import Any

from interp_core.backend import BackendRegistration, hookimpl
from interp_core.split import Split


@hookimpl
def interp_core_register_backends() -> list[BackendRegistration]:
    return [
        BackendRegistration(
            name="jax",
            factory="interp_jax.backend:JaxBackend",
            frameworks=("flax", "jax", "equinox"),
            install_hint="pip install jax flax",
            demo="interp_jax.demo:build",
        )
    ]


@hookimpl
def interp_core_claim_model(model: Any) -> str | None:
    return "jax" if isinstance(model, Split) else None
