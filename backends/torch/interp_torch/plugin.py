"""Registration of the torch backend (light: never imports torch).

Models are claimed from ``frameworks=("torch",)`` by interp-core's default claim; model files
saved with ``torch.save`` are loaded by :mod:`interp_torch.loading` (imported only for them).
"""

from __future__ import annotations

from interp_core.backend import BackendRegistration
from interp_core.backend.registration import loads_files, registers

#: File suffixes this adapter loads (``torch.save(model, path)``, ``torch.export.save`` programs
#: as ``.pt2``; TorchScript gets an error).
MODEL_FILES = (".pt", ".pth", ".ts", ".jit", ".pt2")

interp_core_register_backends = registers(BackendRegistration(
    name="torch",
    factory="interp_torch.backend:TorchBackend",
    frameworks=("torch",),
    install_hint="pip install torch",
    demo="interp_torch.demo:build",
))
interp_core_load_model = loads_files(MODEL_FILES, "interp_torch.loading:load_saved_module")
