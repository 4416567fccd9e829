"""Attention probabilities of torch vision transformers, and their gradients.

Three kinds of global self-attention are read, each for the call only:

- ``nn.MultiheadAttention`` (torchvision's ``VisionTransformer``, the demo ViT): the instance's
  ``forward`` is replaced by :func:`multihead_self_attention`, the same math written out, so
  the probabilities are the tensor its output is computed from (torch's own returns a view of
  that tensor, which autograd cannot differentiate with respect to). Cross-attention calls run
  the original.
- timm's ``Attention`` (ViT, DeiT, DINOv2, EVA: a module with a ``fused_attn`` switch and an
  ``attn_drop`` dropout): the switch is turned off and ``attn_drop``'s input, the softmax
  probabilities, is recorded by a forward hook that returns it unchanged.
- Hugging Face transformers (ViT, DeiT, DINOv2, CLIP, ...: the classes a model declares under
  ``"attentions"`` in ``_can_record_outputs``): every config in the model takes the eager
  attention implementation, whose modules return ``(output, probabilities)``.

Windowed attention (Swin) and models with none of these raise
:func:`~interp_core.backend.attention.no_attention_error`. Everything changed is put back when
the call ends, also when an exception flies.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.functional import linear

from interp_core.backend.attention import WINDOWED_ATTENTION, no_attention_error
from interp_core.backend.inputs import check_batch_size, chunks, first_input, take
from interp_core.backend.layers import layer_ran_twice_error
from interp_core.backend.protocol import AttentionCapture
from interp_core.backend.scoring import target_scores
from interp_core.backend.target_spec import TargetSpec, fixed_targets, select_output
from interp_torch.layers import (
    first_tensor,
    own_forward,
    refuse_compiled,
    replace_first_tensor,
    restore_forward,
)
from interp_torch.ops import OPS, to_numpy

GRADIENT_MODES = ("none", "output", "per_block")


@dataclass(frozen=True)
class AttentionLayer:
    """A global self-attention module found in a model: its ``named_modules`` path and kind
    (``"mha"``, ``"timm"`` or ``"hf"``)."""

    name: str
    module: nn.Module
    kind: str


def _hf_attention_classes(model: nn.Module) -> tuple[type, ...]:
    """The module classes that Hugging Face models inside ``model`` declare as giving their
    attention probabilities (``_can_record_outputs["attentions"]``, second output)."""
    found: list[type] = []
    for module in model.modules():
        declared = getattr(type(module), "_can_record_outputs", None)
        specs = declared.get("attentions") if isinstance(declared, dict) else None
        for spec in specs if isinstance(specs, list | tuple) else [specs]:
            if isinstance(spec, type):
                found.append(spec)
            elif (isinstance(getattr(spec, "target_class", None), type)
                  and getattr(spec, "index", None) == 1
                  and getattr(spec, "layer_name", None) is None):
                found.append(spec.target_class)
    return tuple(dict.fromkeys(found))


def _is_timm_attention(module: nn.Module) -> bool:
    return (isinstance(getattr(module, "fused_attn", None), bool)
            and isinstance(getattr(module, "attn_drop", None), nn.Module))


def attention_layers(model: nn.Module, backend: str = "torch") -> list[AttentionLayer]:
    """Every global self-attention module of ``model`` that can be read, in module order.

    Raises
    ------
    NotImplementedError
        The model has windowed attention (Swin), or no attention module of a known kind.
    """
    refuse_compiled(model)
    seen = {type(m).__name__ for m in model.modules()}
    if seen & set(WINDOWED_ATTENTION):
        raise no_attention_error(backend, model, seen)
    hf = _hf_attention_classes(model)
    found = []
    for name, module in model.named_modules():
        if isinstance(module, nn.MultiheadAttention):
            found.append(AttentionLayer(name, module, "mha"))
        elif _is_timm_attention(module):
            found.append(AttentionLayer(name, module, "timm"))
        elif hf and isinstance(module, hf):
            found.append(AttentionLayer(name, module, "hf"))
    if not found:
        raise no_attention_error(backend, model, seen)
    return found


# -- nn.MultiheadAttention, written out ------------------------------------------------------
def _additive_mask(mask: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor | None:
    """A boolean mask (True: not attended) as ``-inf``/0 in ``like``'s dtype; a float mask
    as it is."""
    if mask is None or mask.is_floating_point():
        return mask
    zeros = torch.zeros(mask.shape, dtype=like.dtype, device=like.device)
    return zeros.masked_fill(mask.to(torch.bool), float("-inf"))


def multihead_self_attention(
    mha: nn.MultiheadAttention, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
    key_padding_mask: torch.Tensor | None, attn_mask: torch.Tensor | None, is_causal: bool,
    record: Callable[[torch.Tensor], torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor]:
    """What ``nn.MultiheadAttention`` computes in eval mode, with the probabilities
    ``(N, heads, T, S)`` passed through ``record`` (which returns the tensor to go on with).

    Returns the attention output in the module's layout (``batch_first`` or not) and the
    probabilities.
    """
    if mha.bias_k is not None or mha.add_zero_attn:
        raise NotImplementedError(
            "nn.MultiheadAttention with add_bias_kv=True or add_zero_attn=True attends to extra "
            "key tokens, so its attention is not (N, heads, T, T) over the image's tokens"
        )
    if query.dim() != 3:
        raise NotImplementedError(
            f"nn.MultiheadAttention called on an unbatched query of shape "
            f"{tuple(query.shape)}: attention methods read batched calls only"
        )
    if not mha.batch_first:
        query, key, value = (t.transpose(0, 1) for t in (query, key, value))
    n, t, e = query.shape
    s, heads, dh = key.shape[1], mha.num_heads, mha.head_dim
    if mha._qkv_same_embed_dim:
        wq, wk, wv = mha.in_proj_weight.chunk(3)
    else:
        wq, wk, wv = mha.q_proj_weight, mha.k_proj_weight, mha.v_proj_weight
    bq, bk, bv = (None, None, None) if mha.in_proj_bias is None else mha.in_proj_bias.chunk(3)

    def heads_of(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
        return linear(x, w, b).view(n, x.shape[1], heads, dh).transpose(1, 2)

    q, k, v = heads_of(query, wq, bq), heads_of(key, wk, bk), heads_of(value, wv, bv)
    logits = (q * math.sqrt(1.0 / dh)) @ k.transpose(-2, -1)
    if is_causal and attn_mask is None:
        raise RuntimeError("Need attn_mask if specifying the is_causal hint (as torch says)")
    mask = _additive_mask(attn_mask, logits)
    if mask is not None:
        logits = logits + (mask.view(n, heads, t, s) if mask.dim() == 3 else mask)
    padding = _additive_mask(key_padding_mask, logits)
    if padding is not None:
        logits = logits + padding.view(n, 1, 1, s)
    probs = record(logits.softmax(-1))
    out = linear((probs @ v).transpose(1, 2).reshape(n, t, e),
                   mha.out_proj.weight, mha.out_proj.bias)
    return (out if mha.batch_first else out.transpose(0, 1)), probs


def _mha_forward(mha: nn.MultiheadAttention, original: Callable[..., Any],
                 record: Callable[[torch.Tensor], torch.Tensor]) -> Callable[..., Any]:
    """A ``forward`` for ``mha`` that reads self-attention calls and hands cross-attention
    calls to ``original``; it answers in the form the caller asked for (``need_weights``,
    ``average_attn_weights``)."""
    def forward(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                key_padding_mask: torch.Tensor | None = None, need_weights: bool = True,
                attn_mask: torch.Tensor | None = None, average_attn_weights: bool = True,
                is_causal: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        if not (query is key is value or query.shape == key.shape == value.shape):
            return original(query, key, value, key_padding_mask, need_weights, attn_mask,
                            average_attn_weights, is_causal)
        out, probs = multihead_self_attention(mha, query, key, value, key_padding_mask,
                                              attn_mask, is_causal, record)
        if not need_weights:
            return out, None
        return out, probs.mean(1) if average_attn_weights else probs
    return forward


# -- making every kind hand over its probabilities -------------------------------------------
class Recorder:
    """The probabilities of one forward pass, per layer name in run order."""

    def __init__(self) -> None:
        self.probs: dict[str, torch.Tensor] = {}

    def record(self, name: str) -> Callable[[torch.Tensor], torch.Tensor]:
        def keep(probs: torch.Tensor) -> torch.Tensor:
            if name in self.probs:
                raise layer_ran_twice_error(name)
            self.probs[name] = probs
            return probs
        return keep


def _first_input(args: tuple[Any, ...], kwargs: dict[str, Any],
                 change: Callable[[torch.Tensor], torch.Tensor]
                 ) -> tuple[tuple[Any, ...], dict[str, Any]] | None:
    """``args``/``kwargs`` with their first tensor (positional first) passed through
    ``change``, everywhere it is passed (self-attention's ``x, x, x``); None where there is
    no tensor."""
    first = next((a for a in (*args, *kwargs.values()) if torch.is_tensor(a)), None)
    if first is None:
        return None
    new = change(first)
    return (tuple(new if a is first else a for a in args),
            {k: new if a is first else a for k, a in kwargs.items()})


def _rooted(t: torch.Tensor) -> torch.Tensor:
    """``t`` itself where autograd tracks it; else a leaf that requires grad (nothing below
    is tracked, so nothing is cut): the probabilities computed from it are differentiable
    even in a model whose parameters are frozen."""
    return t if t.requires_grad or not t.is_floating_point() else t.detach().requires_grad_(True)


@contextlib.contextmanager
def _hf_eager(model: nn.Module) -> Iterator[None]:
    """Every Hugging Face config in ``model`` set to the eager attention implementation (the
    one that returns probabilities), restored afterwards."""
    saved = []
    try:
        for module in model.modules():
            config = getattr(module, "config", None)
            if config is None or any(c is config for c, _, _ in saved):
                continue
            attr = ("_attn_implementation_internal"
                    if hasattr(config, "_attn_implementation_internal")
                    else "_attn_implementation")
            if hasattr(config, attr):
                saved.append((config, attr, getattr(config, attr)))
                setattr(config, attr, "eager")
        yield
    finally:
        for config, attr, value in reversed(saved):
            setattr(config, attr, value)


@contextlib.contextmanager
def reading(model: nn.Module, layers: Sequence[AttentionLayer], recorder: Recorder,
            gradients: bool) -> Iterator[None]:
    """For the block: every layer of ``layers`` hands its probabilities to ``recorder``; with
    ``gradients``, every attention module's input is made differentiable where it is not
    (:func:`_rooted`). Hooks, replaced ``forward`` methods, ``fused_attn`` switches and configs
    are put back afterwards, also when an exception flies."""
    handles: list[torch.utils.hooks.RemovableHandle] = []
    forwards: list[tuple[nn.Module, Any]] = []
    switches: list[tuple[nn.Module, bool]] = []
    with contextlib.ExitStack() as stack:
        try:
            if any(layer.kind == "hf" for layer in layers):
                stack.enter_context(_hf_eager(model))
            for layer in layers:
                module, keep = layer.module, recorder.record(layer.name)
                if gradients:
                    handles.append(module.register_forward_pre_hook(
                        lambda _m, args, kwargs: _first_input(args, kwargs, _rooted),
                        with_kwargs=True))
                if layer.kind == "mha":
                    forwards.append((module, own_forward(module)))
                    module.forward = _mha_forward(module, module.forward, keep)
                elif layer.kind == "timm":
                    switches.append((module, module.fused_attn))
                    module.fused_attn = False
                    handles.append(module.attn_drop.register_forward_hook(
                        lambda _m, args, _out, keep=keep: keep(args[0])))
                else:
                    handles.append(module.register_forward_hook(
                        lambda _m, _args, out, keep=keep, name=layer.name: _hf_probs(
                            name, out, keep)))
            yield
        finally:
            for handle in reversed(handles):
                handle.remove()
            for module, forward in reversed(forwards):
                restore_forward(module, forward)
            for module, flag in reversed(switches):
                module.fused_attn = flag


def _hf_probs(name: str, out: Any, keep: Callable[[torch.Tensor], torch.Tensor]) -> None:
    """Record the probabilities a Hugging Face attention module returns second."""
    probs = out[1] if isinstance(out, tuple | list) and len(out) > 1 else None
    if not torch.is_tensor(probs):
        raise NotImplementedError(
            f"the Hugging Face attention layer {name!r} returned no attention probabilities "
            f"with the eager implementation (its output: {type(out).__name__} of "
            f"{len(out) if isinstance(out, tuple | list) else 1}); attention methods need "
            "them"
        )
    keep(probs)


# -- per-block gradients ----------------------------------------------------------------------
def blocks_of(model: nn.Module, names: Sequence[str]) -> list[str]:
    """The block of each attention layer: its nearest ancestor that is an item of an
    ``nn.ModuleList`` or ``nn.Sequential`` (timm's ``blocks.3``, torchvision's
    ``encoder.layers.encoder_layer_3``, Hugging Face's ``vit.layers.3``), one per layer."""
    modules = dict(model.named_modules())
    found = []
    for name in names:
        parts = name.split(".")
        block = next((".".join(parts[:k]) for k in range(len(parts) - 1, 0, -1)
                      if isinstance(modules[".".join(parts[:k - 1])],
                                    nn.ModuleList | nn.Sequential)), None)
        if block is None:
            raise NotImplementedError(
                f"per-block attention gradients need every attention layer inside a block "
                f"(an item of an nn.ModuleList or nn.Sequential); layer {name!r} is in none"
            )
        found.append(block)
    if len(set(found)) != len(found):
        raise NotImplementedError(
            f"per-block attention gradients need one attention layer per block; layers "
            f"{list(names)} are in blocks {found}"
        )
    return found


@contextlib.contextmanager
def stacked_blocks(model: nn.Module, blocks: Sequence[str]) -> Iterator[None]:
    """For the block: every block's input detached (gradients stop there, values unchanged),
    and the last block's output replaced by every block's output stacked along the batch
    (``L * N`` samples), so the rest of the model reads each block's output at once."""
    modules = dict(model.named_modules())
    outputs: dict[str, torch.Tensor] = {}
    handles = []

    def cut(_m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return _first_input(args, kwargs, torch.Tensor.detach)

    def make_hook(name: str) -> Callable[..., Any]:
        def hook(_m: nn.Module, _args: Any, out: Any) -> Any:
            t = first_tensor(out)
            if t is None:
                raise NotImplementedError(f"block {name!r} returned no tensor")
            if name in outputs:
                raise layer_ran_twice_error(name)
            outputs[name] = t
            if name != blocks[-1]:
                return None
            stacked = [outputs.get(b) for b in blocks]
            if any(o is None or o.shape != t.shape for o in stacked):
                raise LayerOrderError(
                    f"the blocks {list(blocks)} did not all run before the last one, or gave "
                    "outputs of different shapes, so their outputs cannot be read at once")
            return replace_first_tensor(out, torch.cat(stacked))
        return hook

    try:
        for name in blocks:
            handles.append(modules[name].register_forward_pre_hook(cut, with_kwargs=True))
            handles.append(modules[name].register_forward_hook(make_hook(name)))
        yield
    finally:
        for handle in reversed(handles):
            handle.remove()


# -- the capture ------------------------------------------------------------------------------
def _check_shapes(recorder: Recorder, n: int, model: nn.Module) -> None:
    """Every layer gave ``(n, heads, T, T)`` probabilities, with one ``T`` for all."""
    tokens: dict[int, str] = {}
    for name, probs in recorder.probs.items():
        if probs.dim() != 4 or probs.shape[0] != n or probs.shape[2] != probs.shape[3]:
            raise NotImplementedError(
                f"attention layer {name!r} of {type(model).__name__} gave probabilities of "
                f"shape {tuple(probs.shape)}, not (N={n}, heads, T, T): it is not global "
                "self-attention over the input's tokens (windowed, pooled or class "
                "attention), which attention methods need"
            )
        tokens.setdefault(int(probs.shape[-1]), name)
    if len(tokens) > 1:
        raise NotImplementedError(
            f"the attention layers of {type(model).__name__} attend over different token "
            f"counts ({', '.join(f'{t} in {name!r}' for t, name in tokens.items())}): "
            "attention methods need every layer over the same tokens (a plain ViT)"
        )


def _scores(out: Any, target: TargetSpec, n: int, times: int) -> tuple[Any, np.ndarray]:
    """Target scores of an output of ``times * n`` samples (the model's own last), and the
    class each is of. Top-1 targets are the model output's argmax for every copy."""
    if times == 1:
        scores, top1 = target_scores(out, target, OPS)
        return scores, target.resolved_indices(None if top1 is None else top1.cpu().numpy())
    _, top1 = target_scores(out[(times - 1) * n:], target, OPS)
    spec = target
    if top1 is not None:
        spec = fixed_targets(target, top1.cpu().numpy())
    scores, _ = target_scores(out, spec.tile(times), OPS)
    return scores, spec.resolved_indices(None if top1 is None else top1.cpu().numpy())


def capture_attention(
    model: nn.Module, x: Any, target: TargetSpec, run: Callable[[Any], Any], *,
    gradients: str = "none", output: Any = None, batch_size: int = 32, backend: str = "torch",
) -> AttentionCapture:
    """The attention capture of ``model`` on prepared inputs ``x`` (``run(batch)`` calls the
    model), in chunks of ``batch_size``; see
    :meth:`interp_core.backend.protocol.AttentionBackend.attention`. The caller sets eval
    mode, grad mode and the model's lock."""
    if gradients not in GRADIENT_MODES:
        raise ValueError(f"gradients={gradients!r} must be one of {GRADIENT_MODES}")
    batch_size = check_batch_size(batch_size)
    layers = attention_layers(model, backend)
    if gradients != "per_block":
        return _capture(model, layers, x, target, run, gradients, output, batch_size, backend)
    # The blocks' hooks go on before the pass. Where every attention layer sits in a block of
    # its own, they run in module order (a plain ViT): try that first; where another order
    # (or fewer layers) ran, a pass on one sample tells which run, in which order.
    static = [layer.name for layer in layers]
    try:
        blocks = blocks_of(model, static)
    except NotImplementedError:
        blocks = []
    if blocks:
        try:
            return _capture(model, layers, x, target, run, gradients, output, batch_size,
                            backend, static, blocks)
        except Exception:  # the careful way below raises what is really wrong
            pass
    names = _ran_layers(model, layers, x, run, backend)
    return _capture(model, layers, x, target, run, gradients, output, batch_size, backend,
                    names, blocks_of(model, names))


class LayerOrderError(RuntimeError):
    """Other attention layers ran, or in another order, than the pass before (or than the
    module order a per-block capture assumed)."""


def _capture(model: nn.Module, layers: Sequence[AttentionLayer], x: Any, target: TargetSpec,
             run: Callable[[Any], Any], gradients: str, output: Any, batch_size: int,
             backend: str, names: list[str] | None = None,
             blocks: Sequence[str] = ()) -> AttentionCapture:
    """:func:`capture_attention` with the layers (and, per block, their blocks) known."""
    n_total = int(first_input(x).shape[0])
    probs: list[list[np.ndarray]] = []
    grads: list[list[np.ndarray]] = []
    scores: list[np.ndarray] = []
    targets: list[np.ndarray] = []
    times = max(len(blocks), 1)
    for sl in chunks(n_total, batch_size):
        batch, spec = take(x, sl), target.take(sl)
        n = int(first_input(batch).shape[0])
        recorder = Recorder()
        with contextlib.ExitStack() as stack:
            stack.enter_context(reading(model, layers, recorder, gradients != "none"))
            if blocks:
                stack.enter_context(stacked_blocks(model, blocks))
            out = select_output(run(batch), output)
            names = _ran(recorder, names, n, model, backend)
            s, t = _scores(out, spec, n, times)
            tensors = [recorder.probs[k] for k in names]
            if gradients != "none":
                if not s.requires_grad:
                    raise ValueError("the target score does not depend on the attention "
                                     "probabilities (a non-differentiable path)")
                found = torch.autograd.grad(s.sum(), tensors, allow_unused=True)
                grads.append([to_numpy(torch.zeros_like(p) if g is None else g, False)
                              for p, g in zip(tensors, found, strict=True)])
        probs.append([to_numpy(p, False) for p in tensors])
        scores.append(to_numpy(s[(times - 1) * n:], False))
        targets.append(t)
    assert names is not None  # at least one chunk: inputs have a sample
    count = len(names)
    return AttentionCapture(
        blocks=names,
        attentions=[np.concatenate([c[i] for c in probs]) for i in range(count)],
        gradients=None if gradients == "none" else
        [np.concatenate([c[i] for c in grads]) for i in range(count)],
        scores=np.concatenate(scores).astype(np.float32),
        targets=np.concatenate(targets).astype(np.int64),
    )


def _ran(recorder: Recorder, expected: list[str] | None, n: int, model: nn.Module,
         backend: str) -> list[str]:
    """The layers that ran in one pass, in run order, checked: some ran, each gave
    ``(n, heads, T, T)`` probabilities, and the same ran as in the pass before."""
    order = list(recorder.probs)
    if not order:
        raise no_attention_error(backend, model, {type(m).__name__ for m in model.modules()})
    _check_shapes(recorder, n, model)
    if expected is not None and order != expected:
        raise LayerOrderError(
            f"the attention layers {order} ran, where the pass before ran {expected}: "
            "attention methods need the same layers for every input"
        )
    return order


def _ran_layers(model: nn.Module, layers: Sequence[AttentionLayer], x: Any,
                run: Callable[[Any], Any], backend: str) -> list[str]:
    """The attention layers that run, in run order: one pass on the first sample of ``x``,
    without gradients."""
    recorder = Recorder()
    with torch.no_grad(), reading(model, layers, recorder, False):
        run(take(x, slice(0, 1)))
    return _ran(recorder, None, 1, model, backend)
