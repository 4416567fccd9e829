"""Registration of the torch backend (light: never imports torch).

Models are claimed from ``frameworks=("torch",)`` by interp-core's default claim; model files
(``torch.export.save`` programs, ``torch.save``'d modules with trust) and weights
(``.safetensors``, state dicts) are loaded by :mod:`interp_torch.loading`, imported only for them.
"""

from __future__ import annotations

from interp_core.backend import BackendRegistration
from interp_core.backend.registration import loads_files, loads_weights, registers

#: File suffixes this adapter loads (``torch.save(model, path)`` with trust, ``torch.export.save``
#: programs as ``.pt2``; TorchScript gets an error).
MODEL_FILES = (".pt", ".pth", ".ts", ".jit", ".pt2")

interp_core_register_backends = registers(BackendRegistration(
    name="torch",
    factory="interp_torch.backend:TorchBackend",
    frameworks=("torch",),
    install_hint="pip install torch",
    demo="interp_torch.demo:build",
))
interp_core_load_model = loads_files(MODEL_FILES, "interp_torch.loading:load_saved_module")
interp_core_load_weights = loads_weights(("torch",), "interp_torch.loading:load_weights")
