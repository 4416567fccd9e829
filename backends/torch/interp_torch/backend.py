"""The PyTorch adapter: activations and gradients of ``nn.Module`` layers via forward hooks.

Gradients are taken with ``torch.autograd.grad`` with respect to the captured activations only.
The forward pass runs with gradient tracking off until the first hooked layer fires; that layer's
output is re-rooted as a leaf, so nothing below it is recorded and no parameter gradient is ever
computed. The model runs in eval mode during the call; every module's training flag, the global
grad mode and the hook dictionaries are restored afterwards, also when an exception flies.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from interp_core.backend import patching, protocol
from interp_core.backend.checks import channel_objective, check_channel_range, check_channels
from interp_core.backend.inputs import chunks, first_input, take
from interp_core.backend.layer_choice import deprecated_default_layer
from interp_core.backend.layers import (
    layer_ran_twice_error,
    missing_layers_error,
    not_a_tensor_error,
)
from interp_core.backend.scoring import target_scores
from interp_core.backend.target_spec import TargetSpec, select_output
from interp_core.backend.threads import model_lock
from interp_torch.attention import capture_attention
from interp_torch.guided import guided_relus
from interp_torch.layers import (
    bias_layers,
    first_tensor,
    hooked,
    layer_names,
    layer_outputs,
    replace_first_tensor,
    replaying_below,
    resolve,
)
from interp_torch.ops import OPS, channels_last, to_numpy


@contextlib.contextmanager
def _explaining(model: nn.Module, grad_enabled: bool = False) -> Iterator[None]:
    """Eval mode and a chosen grad mode for the call; restore both exactly afterwards.

    Holds the model's lock (:func:`~interp_core.backend.threads.model_lock`) for the call:
    forward hooks and training flags live on the shared module, so calls on one model from
    several threads run one at a time (calls on different models still run in parallel).
    Grad mode is thread-local in torch.
    """
    with model_lock(model):
        flags = [(m, m.training) for m in model.modules()]
        grad_mode = torch.is_grad_enabled()
        try:
            model.eval()
            torch.set_grad_enabled(grad_enabled)
            yield
        finally:
            torch.set_grad_enabled(grad_mode)
            for module, flag in flags:
                module.training = flag


def _refuse_inference_mode() -> None:
    """Gradients cannot be taken under ``torch.inference_mode()``: say so, not "the score does
    not depend on the layer". (An outer ``torch.no_grad()`` is fine: the call turns grad mode on
    for itself and restores it.)"""
    if torch.is_inference_mode_enabled():
        raise RuntimeError(
            "this explanation needs gradients, which torch.inference_mode() disables for "
            "everything run inside it: call it outside the inference_mode block (an outer "
            "torch.no_grad() is fine)"
        )


def _describe(x: Any) -> str:
    """``"of shape (2, 4, 64, 64) float32"`` for a tensor, the same per input for several."""
    if torch.is_tensor(x):
        return f"of shape {tuple(x.shape)} {str(x.dtype).removeprefix('torch.')}"
    parts = x.values() if isinstance(x, dict) else x
    return "[" + ", ".join(_describe(t) if torch.is_tensor(t) else type(t).__name__
                           for t in parts) + "]"


#: Convolutions and their number of spatial axes: the layer that tells what input a model takes.
_CONVOLUTIONS: dict[type, int] = {
    nn.Conv1d: 1, nn.Conv2d: 2, nn.Conv3d: 3,
    nn.ConvTranspose1d: 1, nn.ConvTranspose2d: 2, nn.ConvTranspose3d: 3,
}
_CONVOLUTION_TYPES = tuple(_CONVOLUTIONS)
#: Layers that keep the channel count, passed over on the way to the first convolution.
_CHANNEL_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm)


def _input_layer(model: nn.Module) -> tuple[str, nn.Module] | None:
    """The layer that first sees the input as far as the module tree tells, in
    ``named_modules`` order: the first convolution, unless a leaf module with parameters of
    another kind comes before it (a ``Linear``, an ``Embedding``: returned instead).
    Normalisation layers that keep the channel count (batch, instance and group norm) are
    passed over; so are the parameters of containers (a ViT's position embedding)."""
    for name, module in model.named_modules():
        if isinstance(module, _CONVOLUTION_TYPES):
            return name, module
        if isinstance(module, _CHANNEL_NORMS):
            continue
        if next(module.children(), None) is None and next(
                module.parameters(recurse=False), None) is not None:
            return name, module
    return None


def _expected_input(model: nn.Module, x: Any = None) -> str:
    """What the model's first convolution or dense layer takes, where one exists; for an input
    ``x`` with those channels, that its size is what to look at."""
    found = _input_layer(model)
    if found is None:
        return ""
    name, module = found
    if isinstance(module, _CONVOLUTION_TYPES):
        channels = module.in_channels
        if channels < 1:  # a lazy convolution that has not run yet
            return ""
        first = first_input(x) if x is not None else None
        if torch.is_tensor(first) and first.dim() >= 3 and int(first.shape[1]) == channels:
            return (f"; it has the {channels} channels that the first convolution {name!r} "
                    f"takes, so look at its size {tuple(int(d) for d in first.shape[2:])}: a "
                    "model with a fixed positional embedding or a dense layer after flattening "
                    "takes only the size it was built for")
        return (f"; its first convolution {name!r} takes {channels} input channels, so the "
                f"input should be (N, {channels}, *spatial)")
    features = getattr(module, "in_features", None)
    if isinstance(features, int):
        return f"; its first dense layer {name!r} takes {features} input features"
    return ""


def _exported_input(model: nn.Module) -> tuple[Any, ...] | None:
    """The input shape a ``torch.export`` program (unflattened) was exported for, if any
    (a dimension exported as dynamic is a symbol, not an int)."""
    placeholders = getattr(model, "input_placeholders", None)
    if not isinstance(model, torch.export.UnflattenedModule) or not placeholders:
        return None
    value = getattr(placeholders[0], "meta", {}).get("val")
    shape = getattr(value, "shape", None)
    return None if shape is None else tuple(shape)


def _refuse_meta(model: nn.Module) -> None:
    """A model whose weights are on the ``meta`` device (built under ``torch.device("meta")``
    to skip allocation) has shapes but no values: say so and how to fix it, instead of
    torch's error from deep inside the call."""
    meta = [name for name, t in (*model.named_parameters(), *model.named_buffers()) if t.is_meta]
    if meta:
        raise ValueError(
            f"the model's weights are on the meta device ({len(meta)} tensors, e.g. "
            f"{meta[0]!r}), which holds shapes but no values, so the model cannot run: "
            "materialise it first, model.to_empty(device='cpu') and then "
            "model.load_state_dict(weights), or model.load_state_dict(weights, assign=True) "
            "(interp_core.io.models.load_model('module:factory', weights=FILE) does the latter)"
        )


#: Why a layer may not have run: hooks only see modules that forward() calls.
_HOOK_HINT = "hooks see the modules that forward() calls"

#: Models that refuse channels-last inputs.
_CHANNELS_LAST_REFUSED: weakref.WeakSet[nn.Module] = weakref.WeakSet()


def _twice_differentiable(on: bool) -> contextlib.AbstractContextManager[Any]:
    """Where ``on``, a block whose ``scaled_dot_product_attention`` calls run its math kernel:
    the fused (flash, memory-efficient) kernels have no second derivative, so Hessian-vector
    products through attention would fail. The math kernel computes the same function to
    float32 rounding; torch restores its kernel choice when the block ends."""
    if not on:
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.MATH])


def _hessian_products(activations: Sequence[torch.Tensor],
                      gradients: Sequence[torch.Tensor | None]) -> list[torch.Tensor]:
    """Per layer, ``H A = d(G . A)/dA`` with ``A`` held constant as the vector, from
    gradients ``G`` taken with ``create_graph=True``; zeros where ``G`` does not depend on
    ``A`` (a piecewise-linear network above the layer, or a layer the score ignores)."""
    products = []
    for act, grad in zip(activations, gradients, strict=True):
        product = None
        if grad is not None and grad.requires_grad:
            (product,) = torch.autograd.grad(grad, act, grad_outputs=act.detach(),
                                             retain_graph=True, allow_unused=True)
        products.append(torch.zeros_like(act) if product is None else product.detach())
    return products


class TorchBackend:
    """interp-core backend for ``torch.nn.Module`` models (inputs ``(N, C, *spatial)``)."""

    name = "torch"
    input_layout = "channels_first"
    capabilities = protocol.ALL_CAPABILITIES

    # -- conversions ----------------------------------------------------------------------
    def to_numpy(self, x: Any) -> np.ndarray:
        if torch.is_tensor(x):
            return x.detach().cpu().numpy()
        return np.asarray(x)

    def from_numpy(self, x: np.ndarray, model: nn.Module) -> torch.Tensor:
        return self._prepare(np.asarray(x), model)

    @staticmethod
    def _placement(model: nn.Module) -> tuple[torch.device | None, torch.dtype | None]:
        """Where the model's floating-point weights live, and their dtype: what every call's
        inputs are prepared for (:meth:`_prepare`), so a model that cannot run (weights on the
        ``meta`` device) is refused here, before any work."""
        _refuse_meta(model)
        for tensor in (*model.parameters(), *model.buffers()):
            if tensor.is_floating_point():
                return tensor.device, tensor.dtype
        return None, None

    def _prepare(self, inputs: Any, model: nn.Module) -> Any:
        """Inputs as tensors on the model's device; floats take the model's dtype."""
        if isinstance(inputs, tuple | list):
            return type(inputs)(self._prepare(i, model) for i in inputs)
        if isinstance(inputs, dict):
            return {k: self._prepare(v, model) for k, v in inputs.items()}
        device, dtype = self._placement(model)
        t = inputs if torch.is_tensor(inputs) else torch.as_tensor(np.asarray(inputs))
        if t.is_inference() and not torch.is_inference_mode_enabled():
            t = t.clone()  # made under inference_mode: a normal copy can enter autograd
        if t.is_floating_point() and dtype is not None and t.dtype != dtype:
            t = t.to(dtype)
        if device is not None and t.device != device:
            t = t.to(device)
        return t

    @staticmethod
    def _run(model: nn.Module, x: Any) -> Any:
        """``model(x)`` (``*x`` for a tuple/list, ``**x`` for a dict); the model's own errors on
        inputs it cannot take come back as a ``ValueError`` that shows the input's shape."""
        try:
            if isinstance(x, tuple | list):
                return model(*x)
            if isinstance(x, dict):
                return model(**x)
            return model(x)
        except torch.OutOfMemoryError:
            raise
        except RuntimeError as exc:
            raise ValueError(
                f"the model raised on input {_describe(x)}{_expected_input(model, x)}: "
                f"{type(exc).__name__}: {str(exc).strip().splitlines()[0]}"
            ) from exc

    @staticmethod
    def _input_spatial(x: Any) -> tuple[int, ...]:
        return tuple(int(d) for d in first_input(x).shape[2:])

    def input_spec(self, model: nn.Module) -> protocol.InputSpec | None:
        """What ``model`` takes: the channel count and spatial rank of its first convolution
        (``Conv1d/2d/3d`` or transposed, in ``named_modules`` order), or of the input shape a
        ``torch.export`` program was exported for; None when a dense layer or an embedding
        comes first, or nothing tells."""
        if not isinstance(model, nn.Module):
            return None
        shape = _exported_input(model)
        if shape is not None:
            if len(shape) < 3:
                return None
            channels = shape[1] if isinstance(shape[1], int) else None  # dynamic: a symbol
            return protocol.InputSpec(channels, len(shape) - 2, self.input_layout)
        found = _input_layer(model)
        if found is None or not isinstance(found[1], _CONVOLUTION_TYPES):
            return None
        module = found[1]
        dims = next(d for cls, d in _CONVOLUTIONS.items() if isinstance(module, cls))
        channels = module.in_channels if module.in_channels > 0 else None  # lazy: not yet known
        return protocol.InputSpec(channels, dims, self.input_layout)

    # -- layers ---------------------------------------------------------------------------
    def layer_names(self, model: nn.Module) -> list[str]:
        return layer_names(model)

    def layer_outputs(self, model: nn.Module, inputs: Any) -> protocol.LayerProbe:
        """One dry run (eval mode, no gradients) with a forward hook on every module: each
        one's output shape, class and call count, for the core's choice of the default layer
        (:func:`~interp_core.backend.layer_choice.default_layer`)."""
        x = self._prepare(inputs, model)
        with _explaining(model):
            seen = layer_outputs(model, lambda: self._run(model, x))
        return protocol.LayerProbe(seen, self._input_spatial(x), int(first_input(x).shape[0]),
                                   native_channels_first=True, sample=take(x, slice(0, 1)))

    def default_layer(self, model: nn.Module, inputs: Any) -> str:
        """Deprecated: :func:`interp_core.backend.layer_choice.default_layer` chooses."""
        return deprecated_default_layer(self, model, inputs)

    # -- capture --------------------------------------------------------------------------
    def capture(
        self, model: nn.Module, inputs: Any, layers: Sequence[Any], target: TargetSpec, *,
        gradients: bool = True, output: Any = None, native_layout: bool = False,
    ) -> protocol.Capture:
        return self._capture(model, inputs, layers, target, gradients=gradients, hvp=False,
                             output=output, native_layout=native_layout)

    def capture_hvp(
        self, model: nn.Module, inputs: Any, layers: Sequence[Any], target: TargetSpec, *,
        output: Any = None, native_layout: bool = False,
    ) -> protocol.Capture:
        """:meth:`capture` with each layer's Hessian-vector product ``H A`` (capability
        ``"hvp"``, :class:`~interp_core.backend.protocol.HvpBackend`).

        Double backward: the gradients ``G`` of the summed scores are taken with
        ``create_graph=True``, so their own graph is recorded; then, per layer,
        ``autograd.grad(G, A, grad_outputs=A.detach())`` is ``d(G . A)/dA`` with ``A`` held as
        the vector, that is ``H A`` of that layer alone (one call per layer: a single call
        over all layers would add the cross terms ``H_lm A_m``). Both passes stop at the
        captured layers, as :meth:`capture`'s does.
        """
        return self._capture(model, inputs, layers, target, gradients=True, hvp=True,
                             output=output, native_layout=native_layout)

    def _capture(
        self, model: nn.Module, inputs: Any, layers: Sequence[Any], target: TargetSpec, *,
        gradients: bool, hvp: bool, output: Any, native_layout: bool,
    ) -> protocol.Capture:
        if gradients:
            _refuse_inference_mode()
        named = resolve(model, layers)
        x = self._prepare(inputs, model)
        store: dict[str, torch.Tensor] = {}

        def make_hook(name: str) -> Callable[..., Any]:
            def hook(module: nn.Module, args: Any, out: Any) -> Any:
                t = first_tensor(out)
                if t is None:
                    raise not_a_tensor_error(name, out)
                if name in store:
                    raise layer_ran_twice_error(name)
                if not gradients:
                    store[name] = t.detach()
                    return None
                if not t.requires_grad:
                    # Re-root here: nothing below this layer is recorded for backward.
                    t = t.detach().requires_grad_(True)
                    torch.set_grad_enabled(True)
                store[name] = t
                # A clone shields the captured tensor from in-place ops downstream (ReLU(inplace)).
                return replace_first_tensor(out, t.clone())
            return hook

        with _explaining(model), hooked(named, make_hook), _twice_differentiable(hvp):
            model_output = select_output(self._run(model, x), output)
            missing = [n for n, _ in named if n not in store]
            if missing:
                raise missing_layers_error(missing, _HOOK_HINT)
            scores, top1 = target_scores(model_output, target, OPS)
            grads: Sequence[torch.Tensor | None] = [None] * len(named)
            products: Sequence[torch.Tensor | None] = [None] * len(named)
            if gradients:
                if not scores.requires_grad:
                    raise ValueError(
                        f"the target score does not depend on layer(s) {[n for n, _ in named]}"
                    )
                tensors = [store[n] for n, _ in named]
                grads = torch.autograd.grad(scores.sum(), tensors, allow_unused=True,
                                            create_graph=hvp)
                if hvp:
                    products = _hessian_products(tensors, grads)
        channels_last = not native_layout
        captured = {}
        for (name, _), grad, product in zip(named, grads, products, strict=True):
            act = store[name]
            if gradients and grad is None:
                grad = torch.zeros_like(act)
            captured[name] = protocol.LayerCapture(
                name, to_numpy(act, channels_last),
                None if grad is None else to_numpy(grad.detach(), channels_last),
                None if product is None else to_numpy(product, channels_last),
            )
        classes = target.resolved_indices(None if top1 is None else top1.cpu().numpy())
        return protocol.Capture(
            layers=captured, scores=to_numpy(scores, False), targets=classes,
            input_spatial=self._input_spatial(x),
        )

    # -- forward-only work ----------------------------------------------------------------
    def predict(
        self, model: nn.Module, inputs: Any, target: TargetSpec, *, batch_size: int = 32,
        output: Any = None,
    ) -> np.ndarray:
        from interp_torch.folding import scoring_model  # BatchNorm folding in a block

        x = self._prepare(inputs, model)
        parts = []
        with _explaining(model):
            runner = scoring_model(model, x, self._run)
            for sl in chunks(int(first_input(x).shape[0]), batch_size):
                out = select_output(self._run_fast(runner, take(x, sl)), output)
                scores, _ = target_scores(out, target.take(sl), OPS)
                parts.append(to_numpy(scores, False))
        return np.concatenate(parts) if parts else np.zeros(0, np.float32)

    @staticmethod
    def scoring_session(model: nn.Module) -> contextlib.AbstractContextManager[None]:
        """A block of many forward-only scorings (Score-CAM): :meth:`predict` runs a
        BatchNorm-folded stand-in of ``model`` where one applies
        (:func:`interp_torch.folding.folded_batchnorm`), dropped when the block ends."""
        from interp_torch.folding import folded_batchnorm

        return folded_batchnorm()

    def patched_scores(
        self, model: nn.Module, inputs: Any, layer: Any, channel_masks: np.ndarray,
        target: TargetSpec, *, batch_size: int = 32, output: Any = None,
        channel_axis: int | None = None,
    ) -> np.ndarray:
        """Scores with the layer's output multiplied by each mask, ``(M, N)``.

        Ablation runs from the layer on: each sample runs through the whole network once
        (batch 1); what the modules below the layer produce is recorded and replayed in the
        sample's later passes (:func:`~interp_torch.layers.replaying_below`), and the layer's
        output is expanded to one copy per mask by a forward hook, so only the part above the
        layer runs on the copies. (A torch module's forward is arbitrary code, so the part
        above the layer cannot be cut out as a function; the ancestors' own forward code
        still runs, on the replayed values.) The first recorded and the first replayed pass
        each carry an all-ones mask that must give the unpatched score; a model whose code
        after the layer cannot take the expanded batch (a batch size read before the layer,
        say) falls back to copying the input, every copy running the whole network.
        """
        ((name, module),) = resolve(model, [layer])
        x = self._prepare(inputs, model)
        if isinstance(x, tuple | list | dict):
            raise NotImplementedError("patched_scores supports single-tensor inputs")
        masks = patching.channel_masks(channel_masks, channel_axis)
        n = int(x.shape[0])
        per_chunk = patching.mask_chunks(len(masks), n, batch_size)
        axis = 1 if channel_axis is None else int(channel_axis)
        with _explaining(model):
            return patching.patch_with_fallback(
                model, name,
                lambda: self._patched_from_layer(model, x, name, module, masks, target,
                                                 batch_size, output, axis),
                lambda: self._patched_tiled(model, x, name, module, masks, target, per_chunk,
                                            output, axis))

    @staticmethod
    def _mask_hook(name: str, current: dict[str, Any], axis: int = 1) -> Callable[..., Any]:
        """A forward hook: the layer's output (``n`` samples, or expanded to ``M`` copies of
        them first where ``current["expand"]``) times ``current["mask"]`` ``(M, C)`` along
        the output's channel ``axis``."""
        def hook(mod: nn.Module, args: Any, out: Any) -> Any:
            t = first_tensor(out)
            m = current["mask"].to(device=t.device, dtype=t.dtype)
            ax = axis % t.ndim
            if ax == 0 or m.shape[1] != t.shape[ax]:
                raise ValueError(
                    f"channel_masks have {m.shape[1]} channels but layer {name!r} has "
                    f"{t.shape[ax]} on axis {ax} of its output {tuple(t.shape)}"
                )
            if current["expand"]:
                t = t.repeat((m.shape[0],) + (1,) * (t.ndim - 1))
            n = t.shape[0] // m.shape[0]
            shape = [m.shape[0], 1] + [1] * (t.ndim - 1)
            shape[ax + 1] = m.shape[1]
            patched = t.reshape(m.shape[0], n, *t.shape[1:]) * m.reshape(shape)
            return replace_first_tensor(out, patched.reshape(t.shape))
        return hook

    def _patched_from_layer(self, model: nn.Module, x: torch.Tensor, name: str,
                            module: nn.Module, masks: np.ndarray, target: TargetSpec,
                            batch_size: int, output: Any, axis: int = 1) -> np.ndarray:
        """Ablation from the layer on, one sample at a time: the first pass of a sample runs
        the whole network once (batch 1) and records what the modules below the layer
        produced (:func:`~interp_torch.layers.replaying_below`); later passes replay that, and
        only the layer's output onwards runs, on one copy per mask."""
        current: dict[str, Any] = {"expand": True}
        plain = self._scores_of(model, x, target, output)
        with contextlib.ExitStack() as stack:
            try:
                replay = stack.enter_context(replaying_below(model, module))
            except ValueError as exc:  # the layer is the model itself
                raise patching.ExpansionRefusedError from exc
            stack.enter_context(hooked([(name, module)],
                                       lambda _: self._mask_hook(name, current, axis)))

            def sample_scorer(i: int) -> Callable[[np.ndarray], np.ndarray]:
                sample, spec = x[i : i + 1], target.take(np.array([i]))
                passes = iter(range(len(masks) + 1))

                def score(batch: np.ndarray) -> np.ndarray:
                    (replay.record if next(passes) == 0 else replay.replay)()
                    current["mask"] = torch.from_numpy(batch)
                    out = select_output(self._run(model, sample), output)
                    scores, _ = target_scores(out, spec.tile(len(batch)), OPS)
                    return to_numpy(scores, False).reshape(-1)
                return score

            # The first two passes (recorded, replayed) each carry an all-ones mask, which
            # must reproduce the unpatched score.
            per_mask = patching.mask_chunks(len(masks), 1, batch_size)
            return patching.expanded_patch_rows(masks, plain, per_mask, sample_scorer,
                                                (ValueError, RuntimeError, IndexError, KeyError),
                                                pad=False, probes=2)

    def _patched_tiled(self, model: nn.Module, x: torch.Tensor, name: str, module: nn.Module,
                       masks: np.ndarray, target: TargetSpec, per_chunk: int,
                       output: Any, axis: int = 1) -> np.ndarray:
        n = int(x.shape[0])
        current: dict[str, Any] = {"expand": False}
        rows = []
        with hooked([(name, module)], lambda _: self._mask_hook(name, current, axis)):
            for start in range(0, len(masks), per_chunk):
                chunk = torch.from_numpy(masks[start : start + per_chunk])
                current["mask"] = chunk
                tiled = x.repeat((len(chunk),) + (1,) * (x.ndim - 1))
                out = select_output(self._run_fast(model, tiled), output)
                scores, _ = target_scores(out, target.tile(len(chunk)), OPS)
                rows.append(to_numpy(scores, False).reshape(len(chunk), n))
        return np.concatenate(rows, axis=0)

    def _scores_of(self, model: nn.Module, x: Any, target: TargetSpec,
                   output: Any) -> np.ndarray:
        """Target scores of one forward pass (no hooks added), float32 ``(N,)``."""
        out = select_output(self._run_fast(model, x), output)
        return to_numpy(target_scores(out, target, OPS)[0], False)

    def _run_fast(self, model: nn.Module, x: Any) -> Any:
        """``model(x)`` with an image batch in channels-last memory format on the CPU, where
        oneDNN's convolutions are faster (same values, same shape); a model whose code refuses
        that layout (``view`` on a permuted tensor) runs on ``x`` as given from then on."""
        fast = channels_last(x) if torch.is_tensor(x) else x
        if fast is x or model in _CHANNELS_LAST_REFUSED:
            return self._run(model, x)
        try:
            return self._run(model, fast)
        except ValueError:
            _CHANNELS_LAST_REFUSED.add(model)
            return self._run(model, x)

    # -- gradients of the target scores at the input --------------------------------------
    def score_input_gradients(
        self, model: nn.Module, inputs: Any, target: TargetSpec, *, batch_size: int = 32,
        output: Any = None, guided: bool = False,
    ) -> protocol.InputGradients:
        _refuse_inference_mode()
        x = self._prepare(inputs, model)
        if not torch.is_tensor(x) or not x.is_floating_point():
            raise NotImplementedError(
                "score_input_gradients needs one floating-point input tensor, got "
                f"{_describe(x)}")
        from interp_torch.folding import scoring_model  # BatchNorm folding in a block

        scores, grads, tops = [], [], []
        with _explaining(model, grad_enabled=True):
            runner = model if guided else scoring_model(model, x, self._run)
            for sl in chunks(int(x.shape[0]), batch_size):
                leaf = x[sl].detach().requires_grad_(True)
                with guided_relus() if guided else contextlib.nullcontext():
                    out = select_output(self._run_fast(runner, leaf), output)
                    s, top1 = target_scores(out, target.take(sl), OPS)
                if not s.requires_grad:
                    raise ValueError("the target score does not depend on the input (a "
                                     "non-differentiable path, or integer inputs)")
                (g,) = torch.autograd.grad(s.sum(), [leaf])
                scores.append(to_numpy(s, False))
                grads.append(to_numpy(g, False))
                tops.append(None if top1 is None else top1.cpu().numpy())
        top = None if tops[0] is None else np.concatenate(tops)
        return protocol.InputGradients(np.concatenate(scores), target.resolved_indices(top),
                                       np.concatenate(grads))

    def bias_gradients(
        self, model: nn.Module, inputs: Any, target: TargetSpec, *, output: Any = None,
    ) -> protocol.BiasGradients:
        _refuse_inference_mode()
        x = self._prepare(inputs, model)
        if not torch.is_tensor(x) or not x.is_floating_point():
            raise NotImplementedError(
                f"bias_gradients needs one floating-point input tensor, got {_describe(x)}")
        x = x.detach().requires_grad_(True)
        found = bias_layers(model)
        store: dict[str, torch.Tensor] = {}

        def make_hook(name: str) -> Callable[..., Any]:
            def hook(module: nn.Module, args: Any, out: Any) -> Any:
                t = first_tensor(out)
                if t is None or t.ndim < 3:
                    return None
                if name in store:
                    raise layer_ran_twice_error(name)
                store[name] = t
                return replace_first_tensor(out, t.clone())  # shielded from in-place ReLUs
            return hook

        with _explaining(model, grad_enabled=True), hooked(
                [(name, module) for name, module, _ in found], make_hook):
            out = select_output(self._run(model, x), output)
            scores, top1 = target_scores(out, target, OPS)
            if not scores.requires_grad:
                raise ValueError("the target score does not depend on the input")
            names = [name for name, _, _ in found if name in store]
            grads = torch.autograd.grad(scores.sum(), [x, *(store[k] for k in names)],
                                        allow_unused=True)
        biases = {name: bias for name, _, bias in found}
        layer_grads = {k: to_numpy(torch.zeros_like(store[k]) if g is None else g, True)
                       for k, g in zip(names, grads[1:], strict=True)}
        return protocol.BiasGradients(
            scores=to_numpy(scores, False),
            targets=target.resolved_indices(None if top1 is None else top1.cpu().numpy()),
            input_gradients=to_numpy(grads[0], False),
            biases={k: to_numpy(biases[k], False) for k in layer_grads}, gradients=layer_grads,
        )

    # -- attention ------------------------------------------------------------------------
    def attention(
        self, model: nn.Module, inputs: Any, target: TargetSpec, *,
        gradients: protocol.AttentionGradients = "none", output: Any = None,
        batch_size: int = 32,
    ) -> protocol.AttentionCapture:
        """The probabilities of every global self-attention layer, in run order
        (:mod:`interp_torch.attention`: ``nn.MultiheadAttention``, timm, Hugging Face), and
        their gradients as :meth:`~interp_core.backend.protocol.AttentionBackend.attention`
        says. Eval mode for the call; the model comes back as it was."""
        if gradients != "none":
            _refuse_inference_mode()
        x = self._prepare(inputs, model)
        with _explaining(model, grad_enabled=gradients != "none"):
            return capture_attention(model, x, target, lambda batch: self._run(model, batch),
                                     gradients=gradients, output=output,
                                     batch_size=batch_size, backend=self.name)

    # -- dense weights and input gradients ------------------------------------------------
    def linear_weights(self, model: nn.Module, fc: Any = None) -> np.ndarray:
        _refuse_meta(model)
        if fc is None:
            dense = [m for m in model.modules() if isinstance(m, nn.Linear)]
            if not dense:
                raise ValueError("the model has no nn.Linear layer; pass fc= explicitly")
            module = dense[-1]
        else:
            ((_, module),) = resolve(model, [fc])
        weight = getattr(module, "weight", None)
        if weight is None or weight.ndim not in (2, 4):
            raise ValueError(
                f"fc layer {type(module).__name__} has no (outputs, inputs) weight; pass the "
                "nn.Linear (or 1x1 convolution) after global pooling"
            )
        return to_numpy(weight.reshape(weight.shape[0], -1), False)

    def input_gradients(
        self, model: nn.Module, inputs: Any, layer: Any, channels: np.ndarray, *,
        output: Any = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        _refuse_inference_mode()
        x = self._prepare(inputs, model).detach().requires_grad_(True)
        checked = check_channels(channels, int(x.shape[0]))
        idx = torch.as_tensor(checked, device=x.device)
        store: dict[str, torch.Tensor] = {}
        named = [] if layer is None else resolve(model, [layer])

        def make_hook(name: str) -> Callable[..., None]:
            def hook(mod: nn.Module, args: Any, out: Any) -> None:
                store[name] = first_tensor(out)
            return hook

        with _explaining(model, grad_enabled=True), hooked(named, make_hook):
            out = select_output(self._run(model, x), output)
            if layer is None:
                target = out
            else:
                target = store.get(named[0][0])
                if target is None:
                    raise missing_layers_error([named[0][0]], _HOOK_HINT)
            if target.ndim < 2:
                raise ValueError(
                    f"layer output of shape {tuple(target.shape)} has no channel axis"
                )
            where = f"layer {named[0][0]!r}" if named else "the model output"
            check_channel_range(checked, int(target.shape[1]), where)
            values = channel_objective(target, idx, OPS, 1)
            if not values.requires_grad:
                raise ValueError(
                    f"the objective at layer {layer!r} does not depend on the input "
                    "(a non-differentiable path)"
                )
            (grad,) = torch.autograd.grad(values.sum(), [x])
        return to_numpy(values, False), to_numpy(grad, False)
