"""Loading a model file saved with ``torch.save(model, path)`` or ``torch.export.save`` (``.pt2``):
the one place torch is imported for it, on demand (see
:func:`interp_torch.plugin.interp_core_load_model`)."""

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

    if path.suffix.lower() == ".pt2":
        return load_exported_program(path)
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


def load_exported_program(path: Path) -> Any:
    """The module of a ``torch.export`` program saved with ``torch.export.save``, unflattened.

    ``torch.export.unflatten`` rebuilds the original module hierarchy (``layer4``,
    ``blocks.11.norm1``) as modules that forward hooks see, so layers are named and captured as
    in the eager model. The program runs at the input shapes it was exported for (unless it was
    exported with dynamic shapes).

    Raises
    ------
    ValueError
        The file holds no exported program, or its program cannot be unflattened.
    """
    import torch

    try:
        program = torch.export.load(path)
    except Exception as exc:
        raise ValueError(
            f"{path} is not a torch.export program (torch.export.save(torch.export.export("
            f"model, (x,)), path)): {type(exc).__name__}: {exc}"
        ) from exc
    try:
        return torch.export.unflatten(program)
    except Exception as exc:
        raise ValueError(
            f"the torch.export program in {path} cannot be unflattened into its modules, so its "
            "layers cannot be hooked; export it with torch.export.export(model, args, "
            "preserve_module_call_signature=...) or save the eager module with torch.save: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
