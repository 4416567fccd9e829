"""Attention probabilities of ``keras.layers.MultiHeadAttention`` layers, and their gradients
(the ``"attention"`` capability: attention rollout, gradient-weighted rollout, LeGrad).

Reading: while the compiled pass traces, every attention layer's ``_compute_attention`` is
shadowed by a wrapper that asks for the attention scores (``return_attention_scores=True``,
with the layer's flash-attention switch off for the pass), so Keras takes its explicit path:
``softmax(q k^T / sqrt(Dh))`` (the layer's ``_masked_softmax``), then (identity in inference)
dropout, then the weighted sum of the values. A second wrapper, of ``_masked_softmax``,
records the probabilities as they are born, before anything consumes them, so they are the
very tensor the layer's output is computed from and a ``GradientTape`` that watches them
there differentiates the score with respect to them. Only global self-attention is read:
probabilities over all token axes with as many keys as queries (a cross-attention pooling
head is passed over); attention over a grid of tokens comes back flattened row-major.

Per-block gradients (LeGrad): each attention layer's block is the innermost layer above it
that holds a normalization and no other attention layer (the demo ViT's ``Block``, keras-hub's
``ViTEncoderBlock`` or ``TransformerEncoder``). While the pass traces, every block's input goes
through ``tf.stop_gradient`` (values unchanged) and the last block returns the outputs of all
blocks stacked along the batch, so the part of the model after it (final norm, pooling, head)
scores every block at once; the gradient reaching a block's attention then comes from that
block's own score only.

Every wrapper and switch is set as an instance attribute without Keras tracking and removed
in ``finally`` (:func:`interp_tensorflow.layers._set`), so the model is as before, also after
an error.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import math
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import keras
import numpy as np
import tensorflow as tf

from interp_core.backend.attention import no_attention_error
from interp_core.backend.inputs import chunks
from interp_core.backend.layers import first_leaf, layer_ran_twice_error, replace_first
from interp_core.backend.protocol import AttentionCapture
from interp_core.backend.scoring import target_scores
from interp_core.backend.target_spec import TargetSpec
from interp_tensorflow.compiled import Program, forward
from interp_tensorflow.layers import _restore, _set, walk

if TYPE_CHECKING:
    from interp_tensorflow.backend import TensorFlowBackend

#: The attention layers read (subclasses included, e.g. keras-hub's CachedMultiHeadAttention).
ATTENTION_LAYERS: tuple[type, ...] = (keras.layers.MultiHeadAttention,)

MODES = ("none", "output", "per_block")

#: Records one layer's probabilities as its softmax returns them: ``record(path, layer, probs)``.
Record = Callable[[str, Any, tf.Tensor], None]


# -- the model's attention layers and their blocks ----------------------------------------------
def attention_layers(model: Any) -> list[tuple[str, Any]]:
    """``(path, layer)`` of every attention layer of ``model``, each layer once, depth first.

    Raises
    ------
    NotImplementedError
        The model has none (:func:`~interp_core.backend.attention.no_attention_error`).
    """
    found, seen = [], set()
    for path, layer in walk(model):
        if isinstance(layer, ATTENTION_LAYERS) and id(layer) not in seen:
            seen.add(id(layer))
            found.append((path, layer))
    if not found:
        raise no_attention_error("tensorflow", model,
                                 seen=[type(layer).__name__ for _, layer in walk(model)])
    return found


def _is_norm(layer: Any) -> bool:
    return "Norm" in type(layer).__name__


def block_of(model: Any, path: str) -> tuple[str, Any]:
    """The residual block of the attention layer at ``path``: the innermost layer above it
    that holds a normalization layer and no other attention layer.

    Raises
    ------
    NotImplementedError
        No such layer: the attention sits directly in the model, or shares its innermost
        normalized container with another attention layer.
    """
    by_path = dict(walk(model))
    parts = path.split("/")
    for depth in range(len(parts) - 1, 0, -1):
        owner_path = "/".join(parts[:depth])
        owner = by_path[owner_path]
        inner = [layer for _, layer in walk(owner)]
        attentions = {id(layer) for layer in inner if isinstance(layer, ATTENTION_LAYERS)}
        if len(attentions) > 1:
            break
        if any(_is_norm(layer) for layer in inner):
            return owner_path, owner
    raise NotImplementedError(
        f"gradients='per_block' needs each attention layer inside its own block layer (a "
        f"layer holding the attention and its normalization, such as a transformer encoder "
        f"block), but attention layer {path!r} of model {model.name!r} has none: use "
        "gradients='output', or build each block as a layer"
    )


# -- reading the probabilities ------------------------------------------------------------------
def _token_dims(layer: Any, probs: tf.Tensor) -> tuple[int, int] | None:
    """``(queries, keys)`` of ``layer``'s softmax output ``probs`` where it is global
    self-attention (every token axis attended, as many keys as queries), else None."""
    axes = tuple(getattr(layer, "_attention_axes", None) or ())
    rank = probs.shape.rank
    if rank is None or rank != 2 + 2 * len(axes) or axes != tuple(range(1, len(axes) + 1)):
        return None  # attention along some token axes only (axial), or another layout
    dims = list(probs.shape)
    queries, keys = dims[2:2 + len(axes)], dims[2 + len(axes):]
    if None in queries or None in keys or math.prod(queries) != math.prod(keys):
        return None  # cross-attention (a pooling head's probe): not self-attention
    return math.prod(queries), math.prod(keys)


def square(layer: Any, t: tf.Tensor) -> tf.Tensor:
    """``layer``'s probabilities (or their gradient), global self-attention, as float32
    ``(N, heads, T, T)`` (attention over a grid of tokens flattened row-major)."""
    dims = _token_dims(layer, t)
    if dims is None:
        raise ValueError(f"attention of shape {tuple(t.shape)} is not global self-attention")
    if t.shape.rank != 4:
        t = tf.reshape(t, [-1, t.shape[1], *dims])
    return tf.cast(t, tf.float32)


def _explicit(path: str, layer: Any, compute: Callable[..., Any],
              seen: list[str]) -> Callable[..., Any]:
    """``compute`` (a layer's ``_compute_attention``) made to take Keras's explicit path (it
    asks for the scores); refuses a computation that never ran the layer's softmax."""
    signature = inspect.signature(compute)
    asks = "return_attention_scores" in signature.parameters

    def compute_explicitly(*args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(*args, **kwargs)
        if asks:
            bound.arguments["return_attention_scores"] = True
        before = len(seen)
        result = compute(*bound.args, **bound.kwargs)
        if len(seen) == before:
            raise NotImplementedError(
                f"attention layer {path!r} ({type(layer).__name__}) computes its attention "
                "without its _masked_softmax (a fused kernel or an override), so its "
                "probabilities cannot be read"
            )
        return result

    return compute_explicitly


def _recording(path: str, layer: Any, softmax: Callable[..., Any], seen: list[str],
               record: Record) -> Callable[..., Any]:
    """``softmax`` (a layer's ``_masked_softmax``) that hands its probabilities to
    ``record`` before anything consumes them (so a tape watching them sees every use)."""

    def softmax_and_record(*args: Any, **kwargs: Any) -> Any:
        probs = softmax(*args, **kwargs)
        seen.append(path)
        if _token_dims(layer, probs) is not None:
            record(path, layer, probs)
        return probs

    return softmax_and_record


@contextlib.contextmanager
def recording_attention(layers: Sequence[tuple[str, Any]], record: Record) -> Iterator[None]:
    """Within the block, each attention layer computes its probabilities explicitly (no
    fused or flash kernel) and passes them to ``record(path, layer, probs)`` as its softmax
    returns them (global self-attention only)."""
    undo: list[tuple[Any, str, Any]] = []
    seen: list[str] = []
    try:
        for path, layer in layers:
            if getattr(layer, "_flash_attention", False):
                undo.append((layer, "_flash_attention", _set(layer, "_flash_attention", False)))
            for attr, wrapped in (
                ("_compute_attention", _explicit(path, layer, layer._compute_attention, seen)),
                ("_masked_softmax", _recording(path, layer, layer._masked_softmax, seen,
                                               record)),
            ):
                undo.append((layer, attr, _set(layer, attr, wrapped)))
        yield
    finally:
        for obj, attr, previous in reversed(undo):
            _restore(obj, attr, previous)


# -- per-block scores ---------------------------------------------------------------------------
@dataclasses.dataclass
class BlockStack:
    """What :func:`stacking_blocks` saw: the blocks' outputs in run order, and whether the
    last block returned them stacked."""

    count: int
    outputs: list[tf.Tensor] = dataclasses.field(default_factory=list)
    ran: list[str] = dataclasses.field(default_factory=list)
    stacked: bool = False


def _cut(value: Any) -> Any:
    """A floating tensor's values without its gradient (its Keras mask kept); else as is."""
    if not (tf.is_tensor(value) and value.dtype.is_floating):
        return value
    cut = tf.stop_gradient(value)
    mask = getattr(value, "_keras_mask", None)
    if mask is not None:
        with contextlib.suppress(AttributeError):
            cut._keras_mask = mask
    return cut


@contextlib.contextmanager
def stacking_blocks(blocks: Sequence[tuple[str, Any]]) -> Iterator[BlockStack]:
    """Within the block, every block's tensor inputs are cut from the gradient, and the last
    block to run returns the outputs of all blocks concatenated along the batch axis."""
    stack = BlockStack(len(blocks))
    undo: list[tuple[Any, str, Any]] = []

    def wrap(path: str, call: Callable[..., Any]) -> Callable[..., Any]:
        def cut_and_stack(*args: Any, **kwargs: Any) -> Any:
            args, kwargs = tf.nest.map_structure(_cut, (args, kwargs))
            out = call(*args, **kwargs)
            z = first_leaf(out, tf.is_tensor)
            if path in stack.ran:
                raise layer_ran_twice_error(path)
            stack.ran.append(path)
            stack.outputs.append(z)
            if len(stack.outputs) < stack.count:
                return out
            stack.stacked = True
            return replace_first(out, tf.concat(stack.outputs, axis=0), tf.is_tensor)

        return cut_and_stack

    try:
        for path, block in blocks:
            undo.append((block, "call", _set(block, "call", wrap(path, block.call))))
        yield stack
    finally:
        for obj, attr, previous in reversed(undo):
            _restore(obj, attr, previous)


# -- the compiled pass --------------------------------------------------------------------------
@dataclasses.dataclass(eq=False)
class AttentionProgram(Program):
    """The compiled attention pass (mode ``"attention"``); ``attention`` is the gradients
    mode. ``blocks`` holds the attention layers' paths in run order after the first trace."""

    attention: str = "none"

    def __post_init__(self) -> None:
        super().__post_init__()
        self.blocks: list[str] = []

    def _attention(self, model: Any, spec: TargetSpec, x: Any, consts: Sequence[tf.Tensor]
                   ) -> dict[str, Any]:
        layers = attention_layers(model)
        per_block = self.attention == "per_block"
        blocks = _distinct_blocks(model, layers) if per_block else []
        tape = (tf.GradientTape(watch_accessed_variables=False) if self.attention != "none"
                else None)
        store: dict[str, tuple[Any, tf.Tensor]] = {}

        def record(path: str, layer: Any, probs: tf.Tensor) -> None:
            if path in store:
                raise layer_ran_twice_error(path)
            if tape is not None:
                tape.watch(probs)
            store[path] = (layer, probs)

        with tape if tape is not None else contextlib.nullcontext():
            with recording_attention(layers, record), (
                    stacking_blocks(blocks) if per_block
                    else contextlib.nullcontext()) as stack:
                out = forward(model, x, [], self.output)
            if not store:
                raise no_attention_error("tensorflow", model,
                                         seen=[type(layer).__name__ for _, layer in walk(model)])
            if per_block:
                scores, top1, total = self._block_scores(model, spec, x, out, stack, consts)
            else:
                scores, top1 = target_scores(out, spec, self._ops(consts))
                total = tf.reduce_sum(scores)
        paths = list(store)
        self.blocks = paths
        grads = None
        if tape is not None:
            raw = tape.gradient(total, [store[p][1] for p in paths])
            unconnected = [p for p, g in zip(paths, raw, strict=True) if g is None]
            if unconnected:
                raise ValueError(
                    f"the target score does not depend on the attention of layer(s) "
                    f"{unconnected}: they are not on the path to the explained output"
                )
            grads = [square(store[p][0], g) for p, g in zip(paths, raw, strict=True)]
        return {"probs": [square(*store[p]) for p in paths], "grads": grads,
                "scores": tf.cast(scores, tf.float32), "top1": top1}

    def _block_scores(self, model: Any, spec: TargetSpec, x: Any, out: tf.Tensor,
                      stack: BlockStack, consts: Sequence[tf.Tensor]
                      ) -> tuple[tf.Tensor, tf.Tensor | None, tf.Tensor]:
        """The model's scores (of the last ``N`` rows: the last block's own output) and the
        sum over blocks of each block's scores for the same targets."""
        n = int(tf.nest.flatten(x)[0].shape[0])
        count = len(stack.outputs)
        rows = out.shape[0]
        problem = (f"only {count} of its {stack.count} blocks ran" if not stack.stacked
                   else None if rows is None or rows == count * n
                   else f"its output has {rows} rows, not {count * n}")
        if problem is not None:
            raise ValueError(
                f"gradients='per_block' runs the part of model {model.name!r} after its last "
                f"block on the outputs of all its blocks stacked along the batch, but "
                f"{problem}: use gradients='output'"
            )
        scores, top1 = target_scores(out[-n:], spec, self._ops(consts))
        total = tf.constant(0.0, out.dtype)
        for i in range(count):
            part = out[i * n:(i + 1) * n]
            block_scores = (self._ops(consts).pick(part, top1) if spec.kind == "top1"
                            else target_scores(part, spec, self._ops(consts))[0])
            total += tf.reduce_sum(block_scores)
        return scores, top1, total


def _distinct_blocks(model: Any, layers: Sequence[tuple[str, Any]]) -> list[tuple[str, Any]]:
    blocks: dict[int, tuple[str, Any]] = {}
    for path, _ in layers:
        block_path, block = block_of(model, path)
        blocks.setdefault(id(block), (block_path, block))
    return list(blocks.values())


# -- the backend's entry point ------------------------------------------------------------------
def capture(backend: TensorFlowBackend, model: Any, x: Any, target: TargetSpec, *,
            gradients: str, output: Any, batch_size: int) -> AttentionCapture:
    """:meth:`TensorFlowBackend.attention` on prepared inputs ``x``, ``batch_size`` samples
    per compiled call."""
    if gradients not in MODES:
        raise ValueError(f"gradients={gradients!r}; expected one of {MODES}")
    attention_layers(model)  # the clear error before any trace
    n = int(tf.nest.flatten(x)[0].shape[0])
    probs: list[list[np.ndarray]] = []
    grads: list[list[np.ndarray]] = []
    scores, tops = [], []
    program: AttentionProgram | None = None
    for sl in chunks(n, batch_size):
        chunk = tf.nest.map_structure(lambda t, sl=sl: t[sl], x)
        spec = target.take(sl)
        program = backend._program(model, "attention", (), kind=spec.kind,
                                   fns=spec.fns if spec.kind == "fn" else None,
                                   output=output, factory=AttentionProgram, attention=gradients)
        result = backend._run(program, model, spec, chunk,
                              backend._constants(model, chunk, spec, output))
        probs.append([t.numpy() for t in result["probs"]])
        if result["grads"] is not None:
            grads.append([t.numpy() for t in result["grads"]])
        scores.append(result["scores"].numpy())
        tops.append(None if result["top1"] is None else result["top1"].numpy())
    if program is None:
        raise ValueError("attention needs at least one input sample")
    top = None if tops[0] is None else np.concatenate(tops)
    return AttentionCapture(
        blocks=list(program.blocks),
        attentions=[np.concatenate(layer) for layer in zip(*probs, strict=True)],
        gradients=([np.concatenate(layer) for layer in zip(*grads, strict=True)]
                   if gradients != "none" else None),
        scores=np.concatenate(scores),
        targets=target.resolved_indices(top),
    )

