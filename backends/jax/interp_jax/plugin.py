"""Registration of the JAX backend (light: never imports jax, flax or equinox).

Flax and Equinox models are claimed from ``frameworks`` by interp-core's default claim; this
plugin claims :class:`interp_core.Split` models itself, since their type says nothing about
the framework.
"""

from __future__ import annotations

from interp_core.backend.hookspecs import BackendRegistration, claims, registers
from interp_core.split import Split

#: Everything interp-core knows of this adapter, said once (``KNOWN_FRAMEWORKS`` copies the
#: facts for install hints; ``tests/test_registry.py`` checks the copy).
REGISTRATION = BackendRegistration(
    name="jax",
    factory="interp_jax.backend:JaxBackend",
    frameworks=("flax", "jax", "equinox"),
    install_hint="pip install jax flax",
    demo="interp_jax.demo:build",
    demo_vit="interp_jax.demo_vit:build",
    distribution="interp-jax",
)

interp_core_register_backends = registers(REGISTRATION)
interp_core_claim_model = claims(REGISTRATION.name, lambda model: isinstance(model, Split))
