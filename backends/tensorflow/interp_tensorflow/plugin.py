"""Registration of the TensorFlow backend (light: never imports TensorFlow or Keras)."""

from __future__ import annotations

import sys
from typing import Any

from interp_core import BackendRegistration, hookimpl
from interp_core.backend.registry import defined_in

_MODULES = ("keras", "tensorflow", "tf_keras")


@hookimpl
def interp_core_register_backends() -> list[BackendRegistration]:
    return [
        BackendRegistration(
            name="tensorflow",
            factory="interp_tensorflow.backend:TensorFlowBackend",
            frameworks=("tensorflow", "keras"),
            install_hint="pip install tensorflow",
            demo="interp_tensorflow.demo:build",
        )
    ]


@hookimpl
def interp_core_claim_model(model: Any) -> str | None:
    # A Keras/TF model can only exist once one of these modules is imported.
    if ("keras" in sys.modules or "tensorflow" in sys.modules) and defined_in(model, *_MODULES):
        return "tensorflow"
    return None
