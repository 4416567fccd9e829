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
from jax.extend import core as jex_core

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
            a = first_array(out)
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


# -- guided backpropagation ------------------------------------------------------------------
@jax.custom_vjp
def guided_relu(x: jax.Array) -> jax.Array:
    """``max(x, 0)`` whose backward pass is guided: ``g * (x > 0) * (g > 0)``."""
    return jax.numpy.maximum(x, jax.numpy.zeros((), x.dtype))


def _guided_relu_fwd(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    y = guided_relu(x)
    return y, y


def _guided_relu_bwd(y: jax.Array, g: jax.Array) -> tuple[jax.Array]:
    return (jax.numpy.where((y > 0) & (g > 0), g, jax.numpy.zeros_like(g)),)


guided_relu.defvjp(_guided_relu_fwd, _guided_relu_bwd)

#: Call primitives whose inner jaxpr the guided interpreter walks into.
_CALLS = ("jit", "pjit", "closed_call", "core_call")


def _is_zero(v: Any) -> bool:
    if not isinstance(v, jex_core.Literal):
        return False
    value = np.asarray(v.val)
    return value.ndim == 0 and bool(value == 0)


def _relu_operand(eqn: Any) -> int | None:
    """For ``max(x, 0)`` / ``max(0, x)``, the index of ``x``; else None."""
    if eqn.primitive.name != "max" or len(eqn.invars) != 2:
        return None
    if _is_zero(eqn.invars[1]) and not _is_zero(eqn.invars[0]):
        return 0
    if _is_zero(eqn.invars[0]) and not _is_zero(eqn.invars[1]):
        return 1
    return None


def _inner(eqn: Any) -> Any:
    """The closed jaxpr of a call or custom-jvp equation."""
    return eqn.params.get("jaxpr", eqn.params.get("call_jaxpr"))


def _is_relu_jaxpr(closed: Any) -> bool:
    """Whether a (closed) jaxpr computes ``max(x, 0)`` of its one input, through nested jits."""
    jaxpr = getattr(closed, "jaxpr", closed)
    if len(jaxpr.eqns) != 1 or len(jaxpr.invars) != 1 or len(jaxpr.outvars) != 1:
        return False
    eqn = jaxpr.eqns[0]
    if eqn.outvars[0] is not jaxpr.outvars[0]:
        return False
    index = _relu_operand(eqn)
    if index is not None:
        return eqn.invars[index] is jaxpr.invars[0]
    if eqn.primitive.name in _CALLS and eqn.invars == [jaxpr.invars[0]]:
        return _is_relu_jaxpr(_inner(eqn))
    return False


def _bind(eqn: Any, invals: list[Any]) -> Any:
    got = eqn.primitive.get_bind_params(eqn.params)
    subfuns, params = got if isinstance(got, tuple) else ((), got)
    return eqn.primitive.bind(*subfuns, *invals, **params)


def _eval_guided(jaxpr: Any, consts: Sequence[Any], args: Sequence[Any]) -> list[Any]:
    """Evaluate ``jaxpr`` with every ReLU replaced by :func:`guided_relu`.

    A ReLU is ``max(x, 0)`` with a literal zero, or ``jax.nn.relu`` (a custom-jvp call of
    that); calls (``jit``) are walked into. Other higher-order primitives (``scan``,
    ``cond``, ``remat``, other custom-jvp/vjp functions) run as they are: a ReLU inside them
    keeps its ordinary gradient.
    """
    env: dict[Any, Any] = {}

    def read(v: Any) -> Any:
        return v.val if isinstance(v, jex_core.Literal) else env[v]

    for var, value in zip(jaxpr.constvars, consts, strict=True):
        env[var] = value
    for var, value in zip(jaxpr.invars, args, strict=True):
        env[var] = value
    for eqn in jaxpr.eqns:
        invals = [read(v) for v in eqn.invars]
        name = eqn.primitive.name
        index = _relu_operand(eqn)
        if index is not None:
            outs: Any = [guided_relu(invals[index])]
        elif name == "custom_jvp_call" and len(invals) == 1 and _is_relu_jaxpr(_inner(eqn)):
            outs = [guided_relu(invals[0])]
        elif name in _CALLS and _inner(eqn) is not None:
            closed = _inner(eqn)
            outs = _eval_guided(closed.jaxpr, closed.consts, invals)
        else:
            with eqn.ctx.manager:
                result = _bind(eqn, invals)
            outs = result if eqn.primitive.multiple_results else [result]
        for var, value in zip(eqn.outvars, outs, strict=True):
            env[var] = value
    return [read(v) for v in jaxpr.outvars]


def guided_relus(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` with the backward pass of every ReLU it computes guided (Springenberg et al.
    2015): the forward values are unchanged; traced once into a jaxpr and re-evaluated with
    :func:`guided_relu` in place of each ReLU (:func:`_eval_guided`)."""
    def guided(*args: Any) -> Any:
        closed, shape = jax.make_jaxpr(fn, return_shape=True)(*args)
        flat = jax.tree_util.tree_leaves(args)
        outs = _eval_guided(closed.jaxpr, closed.consts, flat)
        return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(shape), outs)
    return guided
