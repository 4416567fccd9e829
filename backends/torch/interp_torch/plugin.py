"""Registration of the torch backend (light: never imports torch).

Models are claimed from ``frameworks=("torch",)`` by interp-core's default claim; model files
saved with ``torch.save`` are loaded by :mod:`interp_torch.loading` (imported only for them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from interp_core.backend import BackendRegistration, hookimpl

#: File suffixes this adapter loads (``torch.save(model, path)``, ``torch.export.save`` programs
#: as ``.pt2``; TorchScript gets an error).
MODEL_FILES = (".pt", ".pth", ".ts", ".jit", ".pt2")


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
def interp_core_load_model(path: Path) -> Any | None:
    if path.suffix.lower() not in MODEL_FILES:
        return None
    from interp_torch.loading import load_saved_module

    return load_saved_module(path)
