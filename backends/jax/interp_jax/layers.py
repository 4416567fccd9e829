"""Layers under ``jax.jit``: calling user code, layer handlers, clear errors.

A *handler* is what the adapter does to a layer's output inside the traced forward pass:
record it, add the zero perturbation whose gradient is the activation gradient, or multiply it
by channel masks. Model structures (:mod:`interp_jax.nnx_model`, :mod:`interp_jax.split_model`)
apply handlers; this module holds what both share.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np

from interp_core.backend.layers import (
    first_leaf,
    layer_ran_twice_error,
    missing_layers_error,
    not_a_tensor_error,
    replace_first,
)
from interp_core.backend.protocol import LayerOutput

#: ``handler(activation) -> activation``, applied to a layer's output in the forward pass.
Handler = Callable[[jax.Array], jax.Array]

_TRACER_ERRORS = (
    jax.errors.ConcretizationTypeError,
    jax.errors.NonConcreteBooleanIndexError,
    jax.errors.TracerArrayConversionError,
    jax.errors.TracerBoolConversionError,
    jax.errors.TracerIntegerConversionError,
)


class ModelTraceError(RuntimeError):
    """The model raised while ``jax.jit`` traced it; the message names the layers and input."""


class AdapterError(ValueError):
    """A bad request found inside the traced forward pass (passes through unchanged)."""


def describe(tree: Any) -> str:
    """Shapes and dtypes of the arrays of ``tree``: ``"(4, 10, 10, 3) float32"``."""
    leaves = jax.tree_util.tree_leaves(tree)
    parts = [f"{tuple(np.shape(a))} {getattr(a, 'dtype', type(a).__name__)}" for a in leaves]
    return parts[0] if len(parts) == 1 else "[" + ", ".join(parts) + "]"


def run_callable(fn: Callable[..., Any], inputs: Any) -> Any:
    """``fn(*inputs)`` for a tuple/list, ``fn(**inputs)`` for a dict, else ``fn(inputs)``."""
    if isinstance(inputs, tuple | list):
        return fn(*inputs)
    if isinstance(inputs, dict):
        return fn(**inputs)
    return fn(inputs)


def trace_error(exc: Exception, what: str, layers: Sequence[str], inputs: Any) -> ModelTraceError:
    """A :class:`ModelTraceError` for ``exc`` raised by ``what`` while traced."""
    hint = ""
    if isinstance(exc, _TRACER_ERRORS):
        hint = (
            " (interp-jax compiles the model with jax.jit, so Python control flow on array "
            "values fails: use jnp.where / jax.lax.cond, or make the value static)"
        )
    purpose = f" to explain layer(s) {list(layers)}" if layers else ""
    return ModelTraceError(
        f"{what} raised while jax traced it{purpose} on input {describe(inputs)}{hint}: "
        f"{type(exc).__name__}: {exc}"
    )


def call_traced(fn: Callable[..., Any], inputs: Any, *, what: str,
                layers: Sequence[str]) -> Any:
    """Call user code on ``inputs``; its exceptions come back as :class:`ModelTraceError`."""
    try:
        return run_callable(fn, inputs)
    except AdapterError:
        raise
    except Exception as exc:
        raise trace_error(exc, what, layers, inputs) from exc


def is_array(x: Any) -> bool:
    """Whether ``x`` is a jax array (traced or concrete)."""
    return isinstance(x, jax.Array)


def first_array(out: Any) -> jax.Array | None:
    """The array a layer output is explained through (see :func:`first_leaf`)."""
    return first_leaf(out, is_array)


def apply_handler(out: Any, handler: Handler, name: str) -> Any:
    """``out`` with ``handler`` applied to its array (the one :func:`first_array` reads)."""
    first = first_array(out)
    if first is None:
        raise AdapterError(str(not_a_tensor_error(name, out)))
    return replace_first(out, handler(first), is_array)


def check_ran(seen: Mapping[str, Any], names: Sequence[str]) -> None:
    """Raise when a requested layer never produced an output in the forward pass."""
    missing = [n for n in names if n not in seen]
    if missing:
        raise AdapterError(str(missing_layers_error(
            missing, "interp-jax intercepts a submodule's __call__")))


def recorder(name: str, store: dict[str, jax.Array],
             delta: jax.Array | None = None) -> Handler:
    """A handler that stores the layer's output in ``store[name]`` and adds ``delta``.

    ``delta`` is a zero array whose gradient is d(sum of scores)/d(activation); a layer that
    runs twice in one pass (a shared module) is refused, as its gradient would be ambiguous.
    """
    def handle(a: jax.Array) -> jax.Array:
        if name in store:
            raise AdapterError(str(layer_ran_twice_error(name)))
        store[name] = a
        return a if delta is None else a + delta
    return handle


def layer_outputs(structure: Any, arrays: Any, inputs: Any, *, channels_first: bool,
                  type_names: Mapping[str, str]) -> list[LayerOutput]:
    """What every layer of ``structure`` emitted in one abstract pass (``jax.eval_shape``, no
    compute), in the order the outputs were produced, shapes in the core's channels-last
    layout (a layer that ran several times: its last run)."""
    seen: dict[str, LayerOutput] = {}

    def probe(name: str) -> Handler:
        def handle(out: Any) -> Any:
            # A module that returns a mapping hands on what a child computed: the child is
            # the default, not the wrapper (named explicitly, a mapping reads its first value).
            a = None if isinstance(out, Mapping) else first_array(out)
            shape = tuple(int(d) for d in a.shape) if a is not None else ()
            if channels_first and len(shape) >= 3:
                shape = (shape[0], *shape[2:], shape[1])
            calls = seen.pop(name).calls + 1 if name in seen else 1
            seen[name] = LayerOutput(name, shape, type_names.get(name, ""), calls)
            return out
        return handle

    handlers = {name: probe(name) for name in structure.layer_names()}
    jax.eval_shape(lambda a, xx: structure.forward(a, xx, handlers, probe=True), arrays, inputs)
    return list(seen.values())
