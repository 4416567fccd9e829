"""Attention probabilities of ``nnx.MultiHeadAttention`` layers and their gradients, jitted.

The user's module is never touched: as everywhere in this adapter, the traced pass runs on the
eval-mode copy that :meth:`~interp_jax.nnx_model.NNXStructure.rebuild` makes from the model's
arrays. On that copy every attention layer's ``attention_fn`` is replaced by
:func:`_recording_attention`, which computes the softmax probabilities explicitly (Flax's
``dot_product_attention_weights``), records them, and adds a zero *probe*: the gradient with
respect to the probe is the gradient with respect to the probabilities, so one
``jax.value_and_grad`` over the probes gives every layer's gradient (no parameter gradient).

``"per_block"`` gradients (LeGrad): on the copy, each block (the residual unit that holds an
attention layer) gets ``jax.lax.stop_gradient`` on its inputs and records its output; the last
block hands on all blocks' outputs stacked along the batch, so the part of the model after it
scores every block at once, with the targets tiled. Since block inputs are cut, the gradient
that reaches a layer's probabilities comes from its own block's scores only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from flax.nnx.nn.attention import dot_product_attention_weights

from interp_core.backend.attention import no_attention_error
from interp_core.backend.compiled import TargetPlan
from interp_core.backend.layers import layer_ran_twice_error
from interp_core.backend.protocol import AttentionCapture
from interp_core.backend.target_spec import TargetSpec, fixed_targets, select_output
from interp_jax import split_model
from interp_jax.layers import AdapterError, apply_handler, call_traced, check_ran, is_array
from interp_jax.nnx_model import NNXStructure, PathParts, navigate, path_name, set_eval_mode
from interp_jax.ops import JaxOps

GRADIENTS = ("none", "output", "per_block")

_BLOCK_ATTR = "_interp_jax_block_handler"
_CUTTING: dict[type, type] = {}


@dataclass(frozen=True)
class AttentionLayout:
    """Where a model's attention layers are, found once per model structure and input shape.

    Attributes
    ----------
    layers : tuple[str, ...]
        The ``nnx.MultiHeadAttention`` submodules' names, in the order they run.
    blocks : tuple[str, ...]
        Per layer, the name of its block (the residual unit that holds it); ``""`` where it
        has none (then ``"per_block"`` is refused).
    """

    layers: tuple[str, ...]
    blocks: tuple[str, ...]

    @property
    def block_order(self) -> tuple[str, ...]:
        """The distinct blocks, in the order they run."""
        return tuple(dict.fromkeys(self.blocks))


# -- finding the attention layers ----------------------------------------------------------
def attention_modules(backend_name: str, model: Any, structure: Any) -> list[str]:
    """The names of ``model``'s ``nnx.MultiHeadAttention`` submodules, in definition order.

    Raises
    ------
    NotImplementedError
        ``model`` is not an NNX module (an :class:`interp_core.Split`), has no
        ``nnx.MultiHeadAttention``, or one whose ``attention_fn`` is not Flax's
        ``dot_product_attention`` (its probabilities could not be read faithfully).
    """
    if not isinstance(structure, NNXStructure):
        raise no_attention_error(backend_name, model)
    modules = {name: navigate(model, parts) for name, parts in structure.paths.items()}
    names = [name for name, m in modules.items() if isinstance(m, nnx.MultiHeadAttention)]
    if not names:
        raise no_attention_error(backend_name, model,
                                 seen={type(m).__name__ for m in modules.values()})
    for name in names:
        fn = modules[name].attention_fn
        if fn is not nnx.dot_product_attention:
            raise NotImplementedError(
                f"attention layer {name!r} computes attention with {fn!r}, not "
                "flax.nnx.dot_product_attention, so the jax backend cannot read its "
                "probabilities; use the default attention_fn, or token Grad-CAM (GradCAM on a "
                "token layer)"
            )
    return names


def block_of(parts: PathParts) -> str:
    """The block of the attention layer at ``parts``: the nearest enclosing item of a list
    (``blocks.3`` for ``blocks.3.attn``), else the module whose attribute the layer is;
    ``""`` for a layer that the model itself holds, or that is itself an item of a list."""
    for end in range(len(parts) - 1, 0, -1):
        if isinstance(parts[end - 1], int):
            return path_name(parts[:end])
    return "" if isinstance(parts[-1], int) else path_name(parts[:-1])


def find_layout(structure: NNXStructure, arrays: Any, x: Any, names: Sequence[str],
                output: Any) -> AttentionLayout:
    """The attention layers among ``names`` that run on ``x``, in run order (one abstract
    pass, ``jax.eval_shape``), with their blocks."""
    store: dict[str, Any] = {}
    jax.eval_shape(lambda a, xx: run_model(structure, a, xx, names, None, store, output=output),
                   arrays, x)
    ran = tuple(store)
    return AttentionLayout(ran, tuple(block_of(structure.paths[n]) for n in ran))


# -- the traced pass -----------------------------------------------------------------------
def _recording_attention(name: str, store: dict[str, Any],
                         probe: jax.Array | None) -> Callable[..., jax.Array]:
    """An ``attention_fn`` for ``nnx.MultiHeadAttention``: ``nnx.dot_product_attention`` with
    the probabilities computed explicitly, stored in ``store[name]`` and offset by ``probe``
    (zeros). Dropout is off (the copy is in eval mode): probabilities are before dropout."""

    def attend(query: jax.Array, key: jax.Array, value: jax.Array, bias: Any = None,
               mask: Any = None, *, dtype: Any = None, precision: Any = None,
               module: Any = None, is_causal: bool = False, **_: Any) -> jax.Array:
        if name in store:
            raise AdapterError(str(layer_ran_twice_error(name)))
        probs = dot_product_attention_weights(
            query, key, bias, mask, deterministic=True, dtype=dtype, precision=precision,
            module=module, is_causal=is_causal)
        if probs.shape[-1] != probs.shape[-2]:
            raise AdapterError(
                f"attention layer {name!r} attends from {probs.shape[-2]} queries to "
                f"{probs.shape[-1]} keys (cross-attention); attention methods read global "
                "self-attention, whose probabilities are square"
            )
        store[name] = probs
        if probe is not None:
            probs = probs + probe
        value = value.astype(probs.dtype)
        heads, kv_heads = probs.shape[-3], value.shape[-2]
        if heads == kv_heads:
            return jnp.einsum("...hqk,...khd->...qhd", probs, value, precision=precision)
        # Grouped-query attention: each value head serves heads // kv_heads query heads.
        grouped = probs.reshape((*probs.shape[:-3], kv_heads, heads // kv_heads,
                                 *probs.shape[-2:]))
        out = jnp.einsum("...hgqk,...khd->...qhgd", grouped, value, precision=precision)
        return out.reshape((*out.shape[:-3], heads, out.shape[-1]))

    return attend


def _cutting_class(cls: type) -> type:
    """``cls`` whose calls stop the gradient at their array arguments and pass their output
    through the handler the instance holds."""
    sub = _CUTTING.get(cls)
    if sub is None:
        def __call__(self: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N807
            cut = jax.lax.stop_gradient
            args = tuple(cut(a) if is_array(a) else a for a in args)
            kwargs = {k: cut(v) if is_array(v) else v for k, v in kwargs.items()}
            return self.__dict__[_BLOCK_ATTR](cls.__call__(self, *args, **kwargs))

        namespace = {"__call__": __call__, "__module__": cls.__module__,
                     "__qualname__": cls.__qualname__}
        sub = _CUTTING[cls] = type(cls.__name__, (cls,), namespace)
    return sub


def _stacking_handlers(blocks: Sequence[str]
                       ) -> tuple[dict[str, Callable[[jax.Array], jax.Array]], dict[str, Any]]:
    """Block output handlers, and the outputs they record: each records its block's output;
    the last block's hands on all of them concatenated along the batch axis (in ``blocks``
    order)."""
    outputs: dict[str, jax.Array] = {}

    def handler(name: str) -> Callable[[jax.Array], jax.Array]:
        def handle(z: jax.Array) -> jax.Array:
            if name in outputs:
                raise AdapterError(str(layer_ran_twice_error(name)))
            outputs[name] = z
            if name != blocks[-1]:
                return z
            missing = [b for b in blocks if b not in outputs]
            shapes = {tuple(outputs[b].shape) for b in blocks if b in outputs}
            if missing or len(shapes) != 1:
                raise AdapterError(
                    f"per-block attention gradients need blocks that run one after another "
                    f"and emit outputs of one shape; block {name!r} ran last, but "
                    + (f"{missing} had not run" if missing else f"their outputs have shapes "
                       f"{sorted(shapes)}")
                )
            return jnp.concatenate([outputs[b] for b in blocks])
        return handle

    return {name: handler(name) for name in blocks}, outputs


def run_model(structure: NNXStructure, arrays: Any, x: Any, layers: Sequence[str],
              probes: Sequence[jax.Array] | None, store: dict[str, Any], *,
              blocks: Sequence[str] = (), output: Any = None) -> Any:
    """Run an eval-mode copy of the model whose attention layers ``layers`` record their
    probabilities in ``store`` (plus ``probes``); ``blocks`` (per-block gradients): their
    inputs cut, their outputs stacked after the last one. Traced only."""
    model = structure.rebuild(arrays)
    set_eval_mode(model)
    for i, name in enumerate(layers):
        attention = navigate(model, structure.paths[name])
        object.__setattr__(attention, "attention_fn", _recording_attention(
            name, store, None if probes is None else probes[i]))
    handlers, outputs = _stacking_handlers(blocks)
    for name, handle in handlers.items():
        block = navigate(model, structure.paths[name])
        object.__setattr__(block, "__class__", _cutting_class(type(block)))
        object.__setattr__(block, _BLOCK_ATTR,
                           lambda out, handle=handle, name=name: apply_handler(out, handle, name))
    raw = call_traced(model, x, what=f"the model {type(model).__name__}", layers=list(layers))
    if blocks and blocks[-1] not in outputs:
        raise AdapterError(
            f"per-block attention gradients: block {blocks[-1]!r}, which holds "
            "an attention layer, was never called; the blocks must be submodules the model "
            "calls (such as blocks.0 for blocks.0.attn)"
        )
    return select_output(raw, output)


def attention_program(backend: Any, structure: NNXStructure, layout: AttentionLayout,
                      plan: TargetPlan, gradients: str, top1: bool,
                      output: Any) -> Callable[..., dict[str, Any]]:
    """The function to jit: ``(arrays, x, consts) -> {"scores", "top1", "probs", "grads"}``.

    ``top1`` (per-block only): ``plan`` scores class targets whose indices are the argmax of
    the model's own output (the last block's rows), not ``consts``.
    """
    ops = JaxOps(backend.channel_axis)
    layers = layout.layers
    blocks = layout.block_order if gradients == "per_block" else ()

    def scored(arrays: Any, x: Any, consts: Any, probes: Any) -> tuple[Any, Any]:
        store: dict[str, Any] = {}
        out = run_model(structure, arrays, x, layers, probes, store, blocks=blocks,
                        output=output)
        check_ran(store, layers)
        classes = None
        if blocks:
            n = jax.tree_util.tree_leaves(x)[0].shape[0]
            if top1:
                classes = ops.argmax(out[-n:])
                consts = (jnp.tile(classes, len(blocks)),)
            scores = plan.score(out, consts, ops)[0]
        else:
            scores, classes = plan.score(out, consts, ops)
        return scores.sum(), (scores, classes, tuple(store[name] for name in layers))

    def run(arrays: Any, x: Any, consts: Any) -> dict[str, Any]:
        backend.trace_count += 1
        if gradients == "none":
            _, (scores, classes, probs) = scored(arrays, x, consts, None)
            return {"scores": scores, "top1": classes, "probs": probs, "grads": None}
        shapes = jax.eval_shape(lambda a, xx: scored(a, xx, consts, None)[1][2], arrays, x)
        zeros = tuple(jnp.zeros(s.shape, s.dtype) for s in shapes)
        (_, (scores, classes, probs)), grads = jax.value_and_grad(
            lambda p: scored(arrays, x, consts, p), has_aux=True)(zeros)
        return {"scores": scores, "top1": classes, "probs": probs, "grads": grads}

    return run


# -- the backend's method --------------------------------------------------------------------
def capture_attention(backend: Any, model: Any, inputs: Any, target: TargetSpec, *,
                      gradients: str = "none", output: Any = None,
                      batch_size: int = 32) -> AttentionCapture:
    """:meth:`JaxBackend.attention` (see
    :meth:`interp_core.backend.protocol.AttentionBackend.attention`), in chunks of
    ``batch_size`` samples, one compiled function per chunk shape."""
    if gradients not in GRADIENTS:
        raise ValueError(f"gradients={gradients!r}; use one of {list(GRADIENTS)}")
    structure, arrays = backend._program(model)
    names = attention_modules(backend.name, model, structure)
    x = backend._inputs(structure, arrays, inputs)
    n = int(jax.tree_util.tree_leaves(x)[0].shape[0])
    size = max(1, min(batch_size, n))
    parts: list[dict[str, Any]] = []
    for start in range(0, n, size):
        # The last chunk repeats its final sample so every chunk has one shape.
        index = np.minimum(np.arange(start, start + size), n - 1)
        chunk = jax.tree_util.tree_map(lambda a, index=index: a[index], x)
        layout = backend._output_shapes.get_or_make(
            ("attention-layout", structure.key, _signature(chunk), split_model.Static(output)),
            lambda chunk=chunk: find_layout(structure, arrays, chunk, names, output))
        if not layout.layers:
            raise no_attention_error(backend.name, model)
        if gradients == "per_block" and "" in layout.blocks:
            raise ValueError(
                f"per-block attention gradients need each attention layer inside a block (a "
                f"submodule that holds it, such as blocks.0 for blocks.0.attn); the model "
                f"holds {[a for a, b in zip(layout.layers, layout.blocks, strict=True) if not b]}"
                " itself: use gradients='output'"
            )
        result = _run_chunk(backend, structure, arrays, chunk, target.take(index), layout,
                            gradients, output)
        parts.append(_cut(result, n - start))
    top1 = None if parts[0]["top1"] is None else np.concatenate([p["top1"] for p in parts])

    def joined(key: str) -> list[np.ndarray]:
        return [np.concatenate([p[key][i] for p in parts]).astype(np.float32, copy=False)
                for i in range(len(parts[0][key]))]

    return AttentionCapture(
        blocks=list(parts[0]["layers"]), attentions=joined("probs"),
        gradients=None if gradients == "none" else joined("grads"),
        scores=np.concatenate([p["scores"] for p in parts]).astype(np.float32, copy=False),
        targets=target.resolved_indices(top1),
    )


def _cut(result: dict[str, Any], keep: int) -> dict[str, Any]:
    """A chunk's results as NumPy, the first ``keep`` samples (the rest repeat the last)."""
    def head(a: Any) -> np.ndarray:
        return np.asarray(a)[:keep]

    return {
        "layers": result["layers"], "scores": head(result["scores"]),
        "top1": None if result["top1"] is None else head(result["top1"]),
        "probs": [head(p) for p in result["probs"]],
        "grads": None if result["grads"] is None else [head(g) for g in result["grads"]],
    }


def _run_chunk(backend: Any, structure: NNXStructure, arrays: Any, x: Any, spec: TargetSpec,
               layout: AttentionLayout, gradients: str, output: Any) -> dict[str, Any]:
    """One compiled pass over chunk ``x``; per-block scores cut back to the model's own
    (the last block's rows)."""
    top1 = gradients == "per_block" and spec.kind == "top1"
    n = int(jax.tree_util.tree_leaves(x)[0].shape[0])
    scored_x = x
    if gradients == "per_block":
        times = len(layout.block_order)
        spec = (fixed_targets(spec, np.zeros(n, np.int64)) if top1 else spec).tile(times)
        scored_x = jax.eval_shape(lambda a: jax.tree_util.tree_map(
            lambda v: jnp.concatenate([v] * times), a), x)
    plan = backend._plan(structure, arrays, scored_x, spec, output)
    key = ("attention", structure.key, layout, plan.key, gradients, top1,
           split_model.Static(output))
    fn = backend._jitted(key, lambda: attention_program(backend, structure, layout, plan,
                                                        gradients, top1, output))
    result = dict(jax.device_get(fn(arrays, x, plan.consts)))
    if gradients == "per_block":
        result["scores"] = np.asarray(result["scores"])[-n:]
    result["layers"] = layout.layers
    return result


def _signature(x: Any) -> tuple[Any, ...]:
    leaves, treedef = jax.tree_util.tree_flatten(x)
    return treedef, tuple((tuple(a.shape), str(a.dtype)) for a in leaves)
