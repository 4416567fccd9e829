"""Registration of the torch backend (light: never imports torch).

Models are claimed from ``frameworks=("torch",)`` by interp-core's default claim; model files
(``torch.export.save`` programs, ``torch.save``'d modules with trust) and weights
(``.safetensors``, state dicts) are loaded by :mod:`interp_torch.loading`, imported only for them.
"""

from __future__ import annotations

from interp_core.backend.hookspecs import (
    BackendRegistration,
    loads_files,
    loads_weights,
    registers,
)

#: Everything interp-core knows of this adapter, said once (``KNOWN_FRAMEWORKS`` copies the
#: facts for install hints; ``tests/test_registry.py`` checks the copy).
REGISTRATION = BackendRegistration(
    name="torch",
    factory="interp_torch.backend:TorchBackend",
    frameworks=("torch",),
    install_hint="pip install torch",
    demo="interp_torch.demo:build",
    demo_vit="interp_torch.demo_vit:build",
    # torch.save(model, path) with trust, torch.export.save programs as .pt2; TorchScript
    # files get an error that says so.
    model_files=(".pt", ".pth", ".ts", ".jit", ".pt2"),
    distribution="interp-torch",
)

interp_core_register_backends = registers(REGISTRATION)
interp_core_load_model = loads_files(REGISTRATION.model_files,
                                     "interp_torch.loading:load_saved_module")
interp_core_load_weights = loads_weights(REGISTRATION.frameworks,
                                         "interp_torch.loading:load_weights")
