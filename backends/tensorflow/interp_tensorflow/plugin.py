"""Registration of the TensorFlow backend (light: never imports TensorFlow or Keras).

Models are claimed from ``frameworks`` by interp-core's default claim; ``.keras`` / ``.h5``
files are loaded by :mod:`interp_tensorflow.loading` (imported only for them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from interp_core.backend import BackendRegistration, hookimpl

#: File suffixes this adapter loads with ``keras.models.load_model``.
MODEL_FILES = (".keras", ".h5")


@hookimpl
def interp_core_register_backends() -> list[BackendRegistration]:
    return [
        BackendRegistration(
            name="tensorflow",
            factory="interp_tensorflow.backend:TensorFlowBackend",
            frameworks=("keras", "tensorflow", "tf_keras"),
            install_hint="pip install tensorflow",
            demo="interp_tensorflow.demo:build",
        )
    ]


@hookimpl
def interp_core_load_model(path: Path) -> Any | None:
    if path.suffix.lower() not in MODEL_FILES:
        return None
    from interp_tensorflow.loading import load_keras_model

    return load_keras_model(path)
