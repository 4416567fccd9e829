"""Layers of an ``nn.Module``: names, resolution, forward hooks that are always removed."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import nn

from interp_core.backend.policy import first_leaf, replace_first, unknown_layer_error

LISTING = "interp_core.get_backend('torch').layer_names(model)"


def first_tensor(out: Any) -> torch.Tensor | None:
    """A layer output's tensor: itself, or the first element of a tuple/list, else None."""
    return first_leaf(out, torch.is_tensor)


def replace_first_tensor(out: Any, new: torch.Tensor) -> Any:
    """``out`` with its tensor replaced by ``new`` (keeps the tuple/list around it)."""
    return replace_first(out, new, torch.is_tensor)


def layer_names(model: nn.Module) -> list[str]:
    """Every ``named_modules()`` path of ``model`` but the root's empty one."""
    return [name for name, _ in model.named_modules() if name]


def resolve(model: nn.Module, layers: Sequence[Any]) -> list[tuple[str, nn.Module]]:
    """``(path, module)`` for each requested layer: a ``named_modules()`` path or a module.

    Raises
    ------
    ValueError
        An unknown path (the message lists the closest names) or a module of another model.
    TypeError
        Neither a path nor a module.
    """
    modules = dict(model.named_modules())
    by_id = {id(m): n for n, m in modules.items()}
    resolved = []
    for layer in layers:
        if isinstance(layer, nn.Module):
            if id(layer) not in by_id:
                raise ValueError(
                    f"layer {type(layer).__name__} is not a submodule of the model; pass a "
                    "module of this model or its named_modules() path"
                )
            resolved.append((by_id[id(layer)] or "<model>", layer))
        elif isinstance(layer, str):
            if layer not in modules or not layer:
                raise unknown_layer_error(layer, layer_names(model), LISTING)
            resolved.append((layer, modules[layer]))
        else:
            raise TypeError(f"layer {layer!r} must be a named_modules() path or an nn.Module")
    return resolved


@contextlib.contextmanager
def hooked(modules: Sequence[tuple[str, nn.Module]],
           make_hook: Callable[[str], Callable[..., Any]]) -> Iterator[None]:
    """Forward hooks ``make_hook(path)`` on ``modules`` for the block, removed afterwards,
    also when an exception flies."""
    handles = []
    try:
        for name, module in modules:
            handles.append(module.register_forward_hook(make_hook(name)))
        yield
    finally:
        for handle in handles:
            handle.remove()
