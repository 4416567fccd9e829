"""Guided backpropagation in JAX: :func:`guided_relus` re-evaluates a function's jaxpr with
every ReLU replaced by :func:`guided_relu`, whose backward pass keeps only positive gradients
where the input was positive (Springenberg et al. 2015)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from jax.extend import core as jex_core


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
