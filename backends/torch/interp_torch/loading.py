"""Loading a model file saved with ``torch.save(model, path)``: the one place torch is
imported for it, on demand (see :func:`interp_torch.plugin.interp_core_load_model`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def load_saved_module(path: Path) -> Any:
    """The ``torch.nn.Module`` in ``path``, on the CPU.

    Raises
    ------
    ValueError
        The file holds a TorchScript module (PyTorch runs no Python hooks inside TorchScript,
        so layers cannot be captured) or something other than a module (a state dict).
    """
    import torch

    # weights_only=False unpickles arbitrary objects: the user named this file as their model.
    model = torch.load(path, weights_only=False, map_location="cpu")
    if isinstance(model, torch.jit.ScriptModule):
        raise ValueError(
            f"{path} is a TorchScript module: PyTorch does not run Python hooks inside "
            "TorchScript, so its layers cannot be captured; save the eager module with "
            "torch.save(model, path) or pass module:attribute"
        )
    if not isinstance(model, torch.nn.Module):
        raise ValueError(
            f"{path} holds a {type(model).__name__}, not a model (a state dict?): save "
            "the whole module with torch.save(model, path) or pass module:attribute"
        )
    return model
