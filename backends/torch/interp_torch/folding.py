"""BatchNorm folding for scoring many inputs (Score-CAM by default; opt-in elsewhere).

In eval mode a BatchNorm that reads a convolution's output is an affine map per channel, so
the pair is one convolution with weights ``W * s`` and bias ``(b - mean) * s + beta``
(``s = gamma / sqrt(var + eps)``): the same function, in the same precision (float32 stays
float32), without the BatchNorm's elementwise pass over every activation, forward and
backward (ResNet-50 on the CPU: BatchNorm is ~17-20% of a forward pass and ~22% of a forward
and input-gradient pass). The rounding differs from the unfolded model's at the level of
float32 reordering (~1e-7 relative), as channels-last convolutions do.

Inside :func:`folded_batchnorm` the torch adapter's forward-only scoring (``predict``:
Score-CAM's masked inputs, the metrics) and its input gradients of the scores
(``score_input_gradients``: Integrated Gradients, SmoothGrad, Saliency; not the guided ones)
run a folded stand-in of the model: a copy of its module tree that shares every parameter and
buffer with the model but the folded convolutions' weights and biases (new tensors, which do
not require gradients) and has an ``nn.Identity`` where each folded BatchNorm was. The model
itself is never modified. Pairs are found by one forward pass of one sample with temporary
hooks (a BatchNorm whose input is the very tensor a convolution just returned, each module
running once); the stand-in must then reproduce the model's output on that sample (else the
model is used as it is, e.g. where the convolution's output is also read elsewhere). Models
in training mode, or with hooks of their own, or with no such pair, are run as they are. The
stand-in lives until the block ends, and is rebuilt if a parameter or buffer changes
meanwhile.

Score-CAM opens such a block around its masked-input scoring (the adapter's
``scoring_session``; ``ScoreCAM(..., fast_scoring=False)`` turns it off), and so do the
model-based metrics (``interp_core.metrics``) around their perturbed inputs, so the stand-in's
copy of the folded weights lives only for that call. Elsewhere folding is opt-in: wrap the
calls in ``with folded_batchnorm():`` (Integrated Gradients, SmoothGrad).
"""

from __future__ import annotations

import contextlib
import contextvars
import copy
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from interp_core.backend.inputs import take

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
#: ``{id(model): (fingerprint, stand-in or None)}`` of the innermost block, None outside.
_BLOCK: contextvars.ContextVar[dict[int, tuple[Any, nn.Module | None]] | None] = \
    contextvars.ContextVar("interp_torch_folded_batchnorm", default=None)


@contextlib.contextmanager
def folded_batchnorm() -> Iterator[None]:
    """In this block the torch adapter's forward-only scoring (``predict``) and input
    gradients of the scores (``score_input_gradients``, not guided) run BatchNorm-folded
    stand-ins of the models (module docstring); nothing else changes.

    Examples
    --------
    >>> with folded_batchnorm():  # doctest: +SKIP
    ...     maps = ic.ScoreCAM(model, "layer4")(x)
    """
    token = _BLOCK.set({})
    try:
        yield
    finally:
        _BLOCK.reset(token)


def _fingerprint(model: nn.Module) -> tuple[Any, ...]:
    """Changes when a parameter or buffer is replaced or updated in place, or a module is
    added or removed."""
    tensors = (*model.parameters(), *model.buffers())
    return (tuple(id(m) for m in model.modules()),
            tuple((id(t), t.data_ptr(), t._version) for t in tensors))


def _has_hooks(model: nn.Module) -> bool:
    """Whether any module of ``model``, or every module (global hooks), has hooks: a
    stand-in would not run them as the model does."""
    from torch.nn.modules import module as module_globals

    if any(getattr(module_globals, name, None) for name in (
            "_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks")):
        return True
    return any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks
               or getattr(m, "_backward_pre_hooks", None) for m in model.modules())


def _pairs(model: nn.Module, sample: Any, run: Callable[[nn.Module, Any], Any]
           ) -> tuple[list[tuple[str, str]], Any]:
    """``(conv path, BatchNorm path)`` pairs seen in one pass of ``sample``, and its output."""
    names = {id(m): n for n, m in model.named_modules()}
    calls: dict[str, int] = {}
    produced: dict[int, tuple[str, torch.Tensor]] = {}
    fed: dict[str, str] = {}

    def conv_hook(module: nn.Module, args: Any, out: Any) -> None:
        name = names[id(module)]
        calls[name] = calls.get(name, 0) + 1
        if torch.is_tensor(out):
            produced[id(out)] = (name, out)

    def norm_pre_hook(module: nn.Module, args: Any) -> None:
        name = names[id(module)]
        calls[name] = calls.get(name, 0) + 1
        source = produced.get(id(args[0])) if args else None
        if source is not None and source[1] is args[0]:
            fed[name] = source[0]

    handles = []
    try:
        for module in model.modules():
            if isinstance(module, _CONVS):
                handles.append(module.register_forward_hook(conv_hook))
            elif isinstance(module, _NORMS) and module.track_running_stats:
                handles.append(module.register_forward_pre_hook(norm_pre_hook))
        with torch.no_grad():
            out = run(model, sample)
    finally:
        for handle in handles:
            handle.remove()
    pairs = [(conv, norm) for norm, conv in fed.items()
             if calls.get(conv) == 1 and calls.get(norm) == 1]
    convs = [conv for conv, _ in pairs]
    return [p for p in pairs if convs.count(p[0]) == 1], out


def _fold(conv: nn.Module, norm: nn.Module) -> None:
    """Make ``conv`` (a module of the stand-in) compute ``norm(conv(x))`` of eval mode: new
    weight and bias tensors, the shared ones left as they are."""
    with torch.no_grad():
        var, mean = norm.running_var, norm.running_mean
        scale = (norm.weight if norm.affine else torch.ones_like(var)) / torch.sqrt(
            var + norm.eps)
        shift = norm.bias if norm.affine else torch.zeros_like(mean)
        bias = conv.bias if conv.bias is not None else torch.zeros_like(mean)
        dtype = conv.weight.dtype
        shape = (-1,) + (1,) * (conv.weight.ndim - 1)
        conv.weight = nn.Parameter(conv.weight * scale.reshape(shape).to(dtype),
                                   requires_grad=False)
        conv.bias = nn.Parameter(((bias - mean) * scale + shift).to(dtype), requires_grad=False)


def _stand_in(model: nn.Module, pairs: list[tuple[str, str]]) -> nn.Module:
    """``model`` with each pair folded: a copy of the module tree that shares every tensor
    but the folded convolutions' weights and biases."""
    memo = {id(t): t for t in (*model.parameters(), *model.buffers())}
    clone = copy.deepcopy(model, memo)
    for conv_name, norm_name in pairs:
        _fold(clone.get_submodule(conv_name), clone.get_submodule(norm_name))
        parent, _, attr = norm_name.rpartition(".")
        setattr(clone.get_submodule(parent), attr, nn.Identity())
    return clone.eval()


def _close(a: Any, b: Any) -> bool:
    """Outputs equal to float32 reordering (nested tuples, lists and dicts of tensors)."""
    if torch.is_tensor(a):
        if not (torch.is_tensor(b) and a.shape == b.shape and a.dtype == b.dtype):
            return False
        if not a.is_floating_point():
            return bool(torch.equal(a, b))
        size = float(a.abs().max()) if a.numel() else 0.0
        return bool(torch.allclose(a, b, rtol=1e-4, atol=1e-5 * max(1.0, size)))
    if isinstance(a, tuple | list):
        return isinstance(b, tuple | list) and len(a) == len(b) and all(
            _close(u, v) for u, v in zip(a, b, strict=True))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(
            _close(a[k], b[k]) for k in a)
    return bool(a == b)


def scoring_model(model: nn.Module, inputs: Any, run: Callable[[nn.Module, Any], Any]
                  ) -> nn.Module:
    """The module to run for the scores (forward only, or with input gradients) of
    ``model``: inside :func:`folded_batchnorm` its folded stand-in where one applies, else
    ``model``.

    ``run(module, inputs)`` runs a module (eval mode: the caller's); a sample of ``inputs`` is
    run (without gradients) to find and check the pairs when the stand-in is (re)built. The
    stand-in's folded weights do not require gradients; gradients with respect to the inputs
    go through it as through the model.
    """
    block = _BLOCK.get()
    if block is None or model.training:
        return model
    fingerprint = _fingerprint(model)
    cached = block.get(id(model))
    if cached is not None and cached[0] == fingerprint:
        return model if cached[1] is None else cached[1]
    stand_in = None
    if not _has_hooks(model):
        try:
            sample = take(inputs, slice(0, 1))
            pairs, want = _pairs(model, sample, run)
            if pairs:
                candidate = _stand_in(model, pairs)
                with torch.no_grad():
                    got = run(candidate, sample)
                if _close(want, got):
                    stand_in = candidate
        except (RuntimeError, ValueError, TypeError, AttributeError, copy.Error):
            stand_in = None
    block[id(model)] = (fingerprint, stand_in)
    return model if stand_in is None else stand_in
