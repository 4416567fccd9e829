"""Layers of an ``nn.Module``: names, resolution, forward hooks that are always removed."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from interp_core.backend.layers import first_leaf, replace_first, unknown_layer_error
from interp_core.backend.protocol import LayerOutput

LISTING = "interp_core.get_backend('torch').layer_names(model)"


def first_tensor(out: Any) -> torch.Tensor | None:
    """A layer output's tensor (:func:`~interp_core.backend.layers.first_leaf`), else None."""
    return first_leaf(out, torch.is_tensor)


def replace_first_tensor(out: Any, new: torch.Tensor) -> Any:
    """``out`` with its tensor replaced by ``new`` (keeps the tuple/list around it)."""
    return replace_first(out, new, torch.is_tensor)


def layer_names(model: nn.Module) -> list[str]:
    """Every ``named_modules()`` path of ``model`` but the root's empty one."""
    return [name for name, _ in model.named_modules() if name]


def resolve(model: nn.Module, layers: Sequence[Any]) -> list[tuple[str, nn.Module]]:
    """``(path, module)`` for each requested layer: a ``named_modules()`` path or a module.

    A model wrapped in ``nn.DataParallel`` / ``DistributedDataParallel`` takes its layers'
    paths with or without the wrapper's ``module.`` prefix; an unwrapped model also takes paths
    that carry one (names copied from training code that wrapped it).

    Raises
    ------
    ValueError
        An unknown path (the message lists the closest names), a module of another model, or a
        ``torch.compile``'d module (:func:`refuse_compiled`).
    TypeError
        Neither a path nor a module.
    """
    refuse_compiled(model)
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
            path = _wrapper_alias(model, layer, modules)
            if path is None:
                raise unknown_layer_error(layer, layer_names(model), LISTING)
            resolved.append((path, modules[path]))
        else:
            raise TypeError(f"layer {layer!r} must be a named_modules() path or an nn.Module")
    return resolved


#: Wrappers whose wrapped model is ``.module`` and whose layer paths start with ``module.``.
_PARALLEL_WRAPPERS = ("DataParallel", "DistributedDataParallel")
_WRAPPER_PREFIX = "module."


def _wrapper_alias(model: nn.Module, name: str, modules: dict[str, nn.Module]) -> str | None:
    """The path ``name`` means in ``model``: itself, or with the parallel wrapper's ``module.``
    prefix added (wrapped model) or dropped (plain model); None when none exists."""
    if not name:
        return None
    if name in modules:
        return name
    wrapped = type(model).__name__ in _PARALLEL_WRAPPERS and isinstance(
        getattr(model, "module", None), nn.Module)
    alias = _WRAPPER_PREFIX + name if wrapped else name.removeprefix(_WRAPPER_PREFIX)
    return alias if alias in modules and alias != name else None


def refuse_compiled(model: nn.Module) -> None:
    """Raise a clear error for a ``torch.compile``'d module.

    A compiled graph does not call forward hooks registered after it was compiled, so its
    layers cannot be captured; the original module behind it (``model._orig_mod``) shares its
    weights and explains the same function.
    """
    if hasattr(model, "_orig_mod") and type(model).__name__ == "OptimizedModule":
        raise ValueError(
            "the model is a torch.compile'd module (OptimizedModule): compiled graphs do not run "
            "the forward hooks that capture layers. Explain the original module it wraps, which "
            "shares its weights: interp_core.GradCAM(model._orig_mod, layer=...) with its own "
            "layer names (without '_orig_mod.')"
        )


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


def canonical_shape(t: torch.Tensor) -> tuple[int, ...]:
    """The shape the core sees for ``t``: ``(N, C, *S)`` becomes ``(N, *S, C)``."""
    shape = tuple(int(d) for d in t.shape)
    return (shape[0], *shape[2:], shape[1]) if len(shape) >= 3 else shape


def layer_outputs(model: nn.Module, run: Callable[[], Any]) -> list[LayerOutput]:
    """What every submodule emitted during ``run()`` (one forward pass of ``model``), in the
    order the outputs were produced (a module that ran several times: its last run)."""
    refuse_compiled(model)
    seen: dict[str, LayerOutput] = {}

    def make_hook(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: Any, out: Any) -> None:
            # A module that returns a mapping (a Hugging Face ModelOutput) hands on what one
            # of its children computed: that child is the default, not the wrapper. Named
            # explicitly (layer=), a mapping is read by its first value.
            t = None if isinstance(out, Mapping) else first_tensor(out)
            calls = seen.pop(name).calls + 1 if name in seen else 1
            shape = canonical_shape(t) if t is not None and t.ndim >= 1 else ()
            seen[name] = LayerOutput(name, shape, type(module).__name__, calls)
        return hook

    with hooked([(n, m) for n, m in model.named_modules() if n], make_hook):
        run()
    return list(seen.values())


#: Modules that add a per-channel bias to a spatial output (FullGrad's bias terms).
_CONVOLUTIONS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def effective_bias(module: nn.Module) -> torch.Tensor | None:
    """The per-channel bias ``module`` adds in eval mode, or None.

    Convolutions: their ``bias``. Batch norm with running statistics:
    ``beta - mean * gamma / sqrt(var + eps)`` (FullGrad's, from the paper's code). Batch norm
    without running statistics normalises with the batch's own, so it has no fixed bias.
    """
    if isinstance(module, _CONVOLUTIONS):
        return None if module.bias is None else module.bias.detach()
    if isinstance(module, _BATCH_NORMS) and module.running_mean is not None:
        mean, var = module.running_mean.detach(), module.running_var.detach()
        weight = torch.ones_like(mean) if module.weight is None else module.weight.detach()
        shift = torch.zeros_like(mean) if module.bias is None else module.bias.detach()
        return shift - mean * weight / torch.sqrt(var + module.eps)
    return None


def bias_layers(model: nn.Module) -> list[tuple[str, nn.Module, torch.Tensor]]:
    """``(path, module, effective bias)`` of every convolution with a bias and every batch norm
    with running statistics, in ``named_modules()`` order."""
    found = []
    for name, module in model.named_modules():
        bias = effective_bias(module) if name else None
        if bias is not None:
            found.append((name, module, bias))
    return found


# -- running a model from one layer on ---------------------------------------------------------
def _clone_output(out: Any) -> Any:
    """A copy of a module output (a tensor, or a tuple/list/dict holding tensors)."""
    if torch.is_tensor(out):
        return out.clone()
    if isinstance(out, tuple | list):
        return type(out)(_clone_output(o) for o in out)
    if isinstance(out, dict):
        return {k: _clone_output(v) for k, v in out.items()}
    return out


class BelowLayerReplay:
    """Replays what the modules below a layer produced, so that repeated forward passes on the
    same input run only the layer's output onwards.

    Made by :func:`replaying_below`. The modules that may run before the layer are the
    children of the layer's ancestors (the model, its containers) that are neither ancestors
    nor the layer; each gets an instance ``forward`` that, until the layer starts in a pass,
    records its outputs (:meth:`record`) or hands back copies of the recorded ones in call
    order (:meth:`replay`), and after that runs as usual (a module used both below and above
    the layer, such as a shared ReLU, is replayed only below). The layer's own output is
    recorded and replayed too. Code in the ancestors' own ``forward`` still runs; it sees the
    same values, so the pass computes what a full pass would.
    """

    def __init__(self, layer: nn.Module, below: Sequence[nn.Module]) -> None:
        self.layer = layer
        self.below = list(below)
        self.outputs: dict[int, list[Any]] = {}
        self.counts: dict[int, int] = {}
        self.recording = True
        self.before_layer = True

    def record(self) -> None:
        """The next pass runs every module and records the outputs below the layer."""
        self.outputs = {id(m): [] for m in (*self.below, self.layer)}
        self.recording, self.before_layer = True, True

    def replay(self) -> None:
        """The next pass hands back the recorded outputs instead of running below the layer."""
        self.counts = {id(m): 0 for m in (*self.below, self.layer)}
        self.recording, self.before_layer = False, True

    def wrap(self, module: nn.Module, is_layer: bool) -> Callable[..., Any]:
        original = module.forward

        def forward(*args: Any, **kwargs: Any) -> Any:
            if not (self.before_layer or is_layer):
                return original(*args, **kwargs)
            key = id(module)
            if self.recording:
                out = original(*args, **kwargs)
                self.outputs[key].append(_clone_output(out))
                return out
            index = self.counts[key]
            self.counts[key] = index + 1
            return _clone_output(self.outputs[key][index])

        return forward


@contextlib.contextmanager
def replaying_below(model: nn.Module, layer: nn.Module) -> Iterator[BelowLayerReplay]:
    """A :class:`BelowLayerReplay` of ``layer`` for the block; every instance ``forward`` and
    the pre-hook it adds are removed afterwards, also when an exception flies."""
    parents = {id(child): module for module in model.modules() for child in module.children()}
    ancestors, node = [], layer
    while id(node) in parents:
        node = parents[id(node)]
        ancestors.append(node)
    if not ancestors or ancestors[-1] is not model:
        raise ValueError("the layer is not a submodule of the model")
    skip = {id(a) for a in ancestors} | {id(layer)}
    below = list({id(c): c for a in ancestors for c in a.children()
                  if id(c) not in skip}.values())
    replay = BelowLayerReplay(layer, below)
    undo: list[tuple[nn.Module, Any]] = []
    handle = layer.register_forward_pre_hook(
        lambda mod, args: setattr(replay, "before_layer", False))
    try:
        for module in (*below, layer):
            undo.append((module, own_forward(module)))
            module.forward = replay.wrap(module, module is layer)
        yield replay
    finally:
        handle.remove()
        for module, previous in reversed(undo):
            restore_forward(module, previous)


#: What :func:`own_forward` gives for a module whose ``forward`` is its class's.
_UNSET = object()


def own_forward(module: nn.Module) -> Any:
    """The ``forward`` set on the instance itself (``_UNSET`` where it is the class's), to be
    put back by :func:`restore_forward` after replacing it for a call."""
    return module.__dict__.get("forward", _UNSET)


def restore_forward(module: nn.Module, previous: Any) -> None:
    """Put back what :func:`own_forward` saw: the instance's own ``forward``, or none."""
    if previous is _UNSET:
        module.__dict__.pop("forward", None)
    else:
        module.forward = previous
