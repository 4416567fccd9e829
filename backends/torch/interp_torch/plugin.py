"""Registration of the torch backend (light: never imports torch)."""

from __future__ import annotations

import sys
from typing import Any

from interp_core import BackendRegistration, hookimpl
from interp_core.backend.registry import defined_in


@hookimpl
def interp_core_register_backends() -> list[BackendRegistration]:
    return [
        BackendRegistration(
            name="torch",
            factory="interp_torch.backend:TorchBackend",
            frameworks=("torch",),
            install_hint="pip install torch",
            demo="interp_torch.demo:build",
        )
    ]


@hookimpl
def interp_core_claim_model(model: Any) -> str | None:
    if "torch" in sys.modules and defined_in(model, "torch"):
        return "torch"
    return None
