"""Registration of the JAX backend (light: never imports jax, flax or equinox).

Flax and Equinox models are claimed from ``frameworks`` by interp-core's default claim; this
plugin claims :class:`interp_core.Split` models itself, since their type says nothing about
the framework.
"""

from __future__ import annotations

from interp_core.backend import BackendRegistration
from interp_core.backend.registration import claims, registers
from interp_core.split import Split

interp_core_register_backends = registers(BackendRegistration(
    name="jax",
    factory="interp_jax.backend:JaxBackend",
    frameworks=("flax", "jax", "equinox"),
    install_hint="pip install jax flax",
    demo="interp_jax.demo:build",
))
interp_core_claim_model = claims("jax", lambda model: isinstance(model, Split))
