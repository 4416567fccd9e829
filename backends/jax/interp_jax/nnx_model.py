"""Flax NNX modules: layer paths, eval-mode copies, and interception of a submodule's call.

The adapter never touches the user's module. It splits it into a static structure (a pytree
treedef, or an ``nnx.split`` graph definition: the compile-cache key) and its arrays (passed to
the jitted function as an argument, so new weights never recompile). Inside the traced function
:meth:`NNXStructure.forward` rebuilds a fresh copy, switches the copy to eval mode
(``deterministic=True``, ``use_running_average=True``) and intercepts the requested submodules
by giving the copy's instances a subclass whose ``__call__`` passes the output through a
handler. Whatever the copy mutates (batch statistics, RNG counters) is discarded with it.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
from flax import nnx

from interp_core.backend.layers import resolve_layer_paths, unknown_layer_error
from interp_core.backend.protocol import InputSpec, LayerProbe
from interp_core.backend.target_spec import select_output
from interp_jax.layers import Handler, apply_handler, call_traced, layer_outputs

PathParts = tuple[str | int, ...]

_HANDLER_ATTR = "_interp_jax_handler"
_INTERCEPTING: dict[type, type] = {}


# -- layer paths ---------------------------------------------------------------------------
@functools.lru_cache(maxsize=1024)
def _kind(cls: type) -> str:
    """How the walker treats instances of ``cls``: module, sequence, mapping or leaf."""
    if issubclass(cls, str | bytes):
        return "leaf"
    if issubclass(cls, Sequence):
        return "sequence"
    if issubclass(cls, Mapping):
        return "mapping"
    if issubclass(cls, nnx.Module):
        return "module"
    return "leaf"


def _walk(model: Any) -> list[tuple[PathParts, Any]]:
    """``(path, submodule)`` in definition order, depth first; a shared module once."""
    found: list[tuple[PathParts, Any]] = []
    seen = {id(model)}

    def visit(node: Any, prefix: PathParts, kind: str) -> None:
        if kind == "sequence":
            items: Any = enumerate(node)
        elif kind == "mapping":
            items = node.items()
        else:
            items = vars(node).items()
        for key, child in items:
            child_kind = _kind(type(child))
            if child_kind == "leaf" or (kind == "module" and key.startswith("_pytree__")):
                continue
            path = (*prefix, key)
            if isinstance(child, nnx.Module):
                if id(child) in seen:
                    continue
                seen.add(id(child))
                found.append((path, child))
            visit(child, path, child_kind)

    visit(model, (), _kind(type(model)))
    return found


def path_name(parts: PathParts) -> str:
    """``("blocks", 2, "conv")`` -> ``"blocks.2.conv"``."""
    return ".".join(str(p) for p in parts)


def module_paths(model: nnx.Module) -> dict[str, PathParts]:
    """Name -> attribute path of every submodule, in definition order (shared ones once)."""
    return {path_name(p): p for p, _ in _walk(model)}


def navigate(model: Any, parts: PathParts) -> Any:
    """The submodule of ``model`` at ``parts``."""
    node = model
    for part in parts:
        if isinstance(node, Sequence | Mapping) and not isinstance(node, str):
            node = node[part]
        else:
            node = getattr(node, str(part))
    return node


def resolve_layers(model: nnx.Module, layers: Sequence[Any],
                   paths: Mapping[str, PathParts]) -> list[str]:
    """Layer names (attribute paths) for names or submodule objects.

    Raises
    ------
    ValueError
        An unknown path (the message lists the closest submodule paths) or a module that is
        not a submodule of ``model``.
    TypeError
        Neither a string nor an ``nnx.Module``.
    """

    def path_of_name(name: str) -> str:
        if name not in paths:
            raise unknown_layer_error(
                name, list(paths), "interp_core.get_backend('jax').layer_names(model)",
                detail="submodules")
        return name

    return resolve_layer_paths(
        layers, nnx.Module, lambda: {id(m): path_name(p) for p, m in _walk(model)},
        path_of_name,
        foreign_layer=lambda layer: (
            f"layer {type(layer).__name__} is not a submodule of the model; pass a submodule of "
            "this model or its attribute path such as 'blocks.2.conv'"),
        expected="an attribute path such as 'blocks.2.conv' or an nnx.Module of the model",
    )


# -- eval mode and interception --------------------------------------------------------------
def set_eval_mode(module: nnx.Module) -> None:
    """Dropout off, BatchNorm on running averages, on ``module`` (a copy) and its children."""
    module.set_attributes(
        deterministic=True, use_running_average=True, raise_if_not_found=False
    )


def _intercepting_class(cls: type) -> type:
    sub = _INTERCEPTING.get(cls)
    if sub is None:
        def __call__(self: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N807
            out = cls.__call__(self, *args, **kwargs)
            handler = self.__dict__.get(_HANDLER_ATTR)
            return out if handler is None else handler(out)

        namespace = {"__call__": __call__, "__module__": cls.__module__,
                     "__qualname__": cls.__qualname__}
        sub = type(cls.__name__, (cls,), namespace)
        _INTERCEPTING[cls] = sub
    return sub


def intercept(module: nnx.Module, name: str, handler: Handler) -> None:
    """Route ``module``'s outputs through ``handler`` (``module`` is a throw-away copy)."""
    if not callable(module):
        raise ValueError(
            f"layer {name!r} is a {type(module).__name__}, which is never called; pick a "
            "submodule that computes an output"
        )
    object.__setattr__(module, "__class__", _intercepting_class(type(module)))
    object.__setattr__(module, _HANDLER_ATTR, lambda out: apply_handler(out, handler, name))


def intercept_probe(module: nnx.Module, handler: Handler) -> None:
    """Route outputs through ``handler`` without checks (the default-layer dry run)."""
    if callable(module):
        object.__setattr__(module, "__class__", _intercepting_class(type(module)))
        object.__setattr__(module, _HANDLER_ATTR, handler)


# -- the structure a jitted function closes over ---------------------------------------------
class HashedKey:
    """A cache key that computes the (costly) hash of an NNX graph definition once."""

    __slots__ = ("_hash", "value")

    def __init__(self, value: Any) -> None:
        self.value = value
        self._hash = hash(value)

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        return isinstance(other, HashedKey) and self._hash == other._hash and (
            self.value == other.value)


class NNXStructure:
    """The static part of an NNX module: how to rebuild it from its arrays, and its paths; the
    :class:`~interp_jax.structure.ModelStructure` of NNX modules, every submodule a layer.

    Current Flax modules are pytrees: ``jax.tree_util.tree_flatten`` splits them in a few
    milliseconds and the treedef hashes in microseconds, so that is the fast path. Modules
    that are not pytrees (``pytree=False``, older Flax) go through ``nnx.split``/``nnx.merge``.

    Parameters
    ----------
    treedef : PyTreeDef or None
        The module's pytree structure (fast path).
    graphdef : nnx.GraphDef or None
        From ``nnx.split`` (fallback).
    paths : dict[str, tuple]
        :func:`module_paths` of the model.
    """

    def __init__(self, treedef: Any, graphdef: Any, paths: Mapping[str, PathParts]) -> None:
        self.treedef = treedef
        self.graphdef = graphdef
        self.paths = paths
        self.key = ("nnx-tree", treedef) if treedef is not None else (
            "nnx-graph", HashedKey(graphdef))

    def layer_names(self) -> list[str]:
        return list(self.paths)

    def rebuild(self, arrays: Any) -> nnx.Module:
        """A new module from (traced) ``arrays``, the user's module untouched."""
        if self.treedef is not None:
            return jax.tree_util.tree_unflatten(self.treedef, arrays)
        return nnx.merge(self.graphdef, arrays)

    def forward(self, arrays: Any, inputs: Any, handlers: Mapping[str, Handler], *,
                probe: bool = False, output: Any = None) -> Any:
        """Run an eval-mode copy of the model with ``handlers`` on the named submodules.

        Traced only (inside ``jax.jit`` or ``jax.eval_shape``). ``probe`` installs the handlers
        without checks; ``output`` selects the output to return.
        """
        model = self.rebuild(arrays)
        set_eval_mode(model)
        for name, handler in handlers.items():
            module = navigate(model, self.paths[name])
            if probe:
                intercept_probe(module, handler)
            else:
                intercept(module, name, handler)
        raw = call_traced(model, inputs, what=f"the model {type(model).__name__}",
                          layers=[] if probe else list(handlers))
        return select_output(raw, output)

    def resolve(self, model: nnx.Module, layers: Sequence[Any]) -> list[str]:
        """Layer names, submodules of ``model`` or paths, as names (:func:`resolve_layers`)."""
        return resolve_layers(model, layers, self.paths)

    def input_dtype(self, arrays: Any) -> Any:
        """Floating-point inputs take the dtype of the model's state."""
        return float_dtype(arrays)

    def input_spec(self, model: nnx.Module, layout: str) -> InputSpec | None:
        """The ``in_features`` and spatial rank (``len(kernel_size)``) of the first
        ``nnx.Conv`` in definition order; None where a dense layer or an embedding comes
        first (:func:`first_convolution`)."""
        conv = first_convolution(model)
        if conv is None:
            return None
        return InputSpec(int(conv.in_features), len(conv.kernel_size), layout)

    def layer_probe(self, model: nnx.Module, arrays: Any, inputs: Any, *,
                    channels_first: bool) -> LayerProbe:
        """One abstract pass (``jax.eval_shape``) recording every submodule's output shape."""
        types = {name: type(navigate(model, parts)).__name__
                 for name, parts in self.paths.items()}
        seen = layer_outputs(self, arrays, inputs, channels_first=channels_first,
                             type_names=types)
        leaf = jax.tree_util.tree_leaves(inputs)[0]
        spatial = leaf.shape[2:] if channels_first else leaf.shape[1:-1]
        return LayerProbe(seen, tuple(int(d) for d in spatial), int(leaf.shape[0]),
                          native_channels_first=channels_first,
                          sample=jax.tree_util.tree_map(lambda a: a[:1], inputs))

    def bias_modules(self, model: nnx.Module) -> list[tuple[str, np.ndarray]]:
        """Every biased layer's effective bias (:func:`bias_modules`)."""
        return bias_modules(model)

    def linear_weights(self, model: nnx.Module, fc: Any) -> np.ndarray:
        """The kernel of ``fc`` (the last ``nnx.Linear`` if None) as float32
        ``(outputs, inputs)``; a 1x1 convolution's kernel is accepted."""
        if fc is None:
            dense = dense_modules(model)
            if not dense:
                raise ValueError("the model has no nnx.Linear layer; pass fc= explicitly")
            name, module = dense[-1]
        else:
            (name,) = self.resolve(model, [fc])
            module = navigate(model, self.paths[name])
        kernel = getattr(module, "kernel", None)
        shape = () if kernel is None else tuple(variable_value(kernel).shape)
        if len(shape) < 2 or int(np.prod(shape[:-2])) != 1:
            raise ValueError(
                f"fc layer {name!r} ({type(module).__name__}) has no (inputs, outputs) kernel, "
                f"got kernel shape {shape}; pass the nnx.Linear (or 1x1 convolution) after the "
                "global pooling"
            )
        w = np.asarray(variable_value(kernel)).astype(np.float32, copy=False)
        return np.ascontiguousarray(w.reshape(shape[-2], shape[-1]).T)


def structure_of(model: nnx.Module, paths: bool = False) -> tuple[NNXStructure, Any]:
    """``(structure, arrays)`` of ``model``; the module itself is left as it is.

    ``paths``: also walk the submodule paths (layer addressing).
    """
    found = module_paths(model) if paths else {}
    leaves, treedef = jax.tree_util.tree_flatten(model)
    if not (len(leaves) == 1 and leaves[0] is model):
        return NNXStructure(treedef, None, found), leaves
    graphdef, state = nnx.split(model)
    return NNXStructure(None, graphdef, found), state


def split_model(model: nnx.Module) -> tuple[NNXStructure, Any]:
    """``(structure, arrays)`` of a model to explain, with its submodule paths."""
    return structure_of(model, paths=True)


def float_dtype(state: Any) -> Any:
    """The dtype of the first floating-point array of ``state`` (None if there is none)."""
    for leaf in jax.tree_util.tree_leaves(state):
        dtype = getattr(leaf, "dtype", None)
        if dtype is not None and jax.numpy.issubdtype(dtype, jax.numpy.floating):
            return dtype
    return None


def variable_value(variable: Any) -> Any:
    """A Variable's array (``get_value`` on current Flax, ``.value`` on older)."""
    getter = getattr(variable, "get_value", None)
    return getter() if getter is not None else variable.value


def dense_modules(model: nnx.Module) -> list[tuple[str, nnx.Module]]:
    """``(name, module)`` of every ``nnx.Linear`` of ``model``, in definition order."""
    return [(path_name(p), m) for p, m in _walk(model)
            if isinstance(m, nnx.Linear)]


#: Modules that see an input before any convolution and say it is not a grid of channels.
_NOT_A_GRID = tuple(getattr(nnx, name) for name in ("Linear", "LinearGeneral", "Embed", "Einsum")
                    if hasattr(nnx, name))


def first_convolution(model: nnx.Module) -> nnx.Module | None:
    """The first ``nnx.Conv`` or ``nnx.ConvTranspose`` of ``model`` in definition order (the
    model itself if it is one); None when there is none or a dense layer, an embedding or an
    einsum comes first."""
    for _, module in [((), model), *_walk(model)]:
        if isinstance(module, nnx.Conv | nnx.ConvTranspose):
            return module
        if isinstance(module, _NOT_A_GRID):
            return None
    return None


def bias_modules(model: nnx.Module) -> list[tuple[str, np.ndarray]]:
    """``(name, effective bias)`` of every ``nnx.Conv`` with a bias and every ``nnx.BatchNorm``
    (``bias - mean * scale / sqrt(var + epsilon)``, the bias it adds in inference mode), in
    definition order; biases float32 ``(C,)``. What FullGrad's bias gradients multiply."""
    found = []
    for parts, module in _walk(model):
        if isinstance(module, nnx.Conv) and getattr(module, "bias", None) is not None:
            bias = np.asarray(variable_value(module.bias), dtype=np.float64)
        elif isinstance(module, nnx.BatchNorm):
            mean = np.asarray(variable_value(module.mean), dtype=np.float64)
            var = np.asarray(variable_value(module.var), dtype=np.float64)
            scale = (np.ones_like(mean) if module.scale is None
                     else np.asarray(variable_value(module.scale), dtype=np.float64))
            shift = (np.zeros_like(mean) if module.bias is None
                     else np.asarray(variable_value(module.bias), dtype=np.float64))
            bias = shift - mean * scale / np.sqrt(var + module.epsilon)
        else:
            continue
        found.append((path_name(parts), bias.reshape(-1).astype(np.float32)))
    return found
