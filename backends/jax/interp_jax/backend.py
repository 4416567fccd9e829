"""The JAX adapter: Flax NNX modules and ``interp_core.Split`` models, jit-compiled.

Every request (capture, predict, patched scores, input gradients) runs as one ``jax.jit``
function of ``(model arrays, inputs, target constants)``. Compiled functions are cached per
(model structure, layers, target kind and shapes, output selector); jax adds the input
shape/dtype, so a second call on the same shapes does not trace again (:attr:`trace_count`).

Gradients: the target layer's output gets a zero perturbation ``delta`` inside the forward pass;
the gradient of the *sum* of per-sample target scores with respect to ``delta`` is each sample's
activation gradient. Only the part of the network above the layer is differentiated; no
parameter gradient is formed. For a Split this is ``jax.vjp`` of ``head`` at ``features(x)``.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from interp_core.backend import patching, protocol
from interp_core.backend.checks import (
    channel_objective,
    check_channel_range,
    check_channels,
    warn_non_finite,
)
from interp_core.backend.compiled import TargetPlan, needs_output_shape, plan_targets
from interp_core.backend.layer_choice import deprecated_default_layer
from interp_core.backend.target_spec import TargetSpec
from interp_jax import split_model
from interp_jax.layers import AdapterError, check_ran, recorder
from interp_jax.ops import JaxOps
from interp_jax.structure import ModelStructure, model_structure

_LAYOUTS = {
    "channels_last": -1, "nhwc": -1, "nwc": -1, "ndhwc": -1,
    "channels_first": 1, "nchw": 1, "ncw": 1, "ncdhw": 1,
}


class _LRU(OrderedDict):
    """A least-recently-used cache, safe to share between threads."""

    def __init__(self, maxsize: int) -> None:
        super().__init__()
        self.maxsize = maxsize
        self.lock = threading.RLock()

    def get_or_make(self, key: Hashable, make: Callable[[], Any]) -> Any:
        with self.lock:
            if key in self:
                self.move_to_end(key)
                return self[key]
            value = self[key] = make()
            if len(self) > self.maxsize:
                self.popitem(last=False)
            return value


def _signature(x: Any) -> tuple[Any, ...]:
    leaves, treedef = jax.tree_util.tree_flatten(x)
    return treedef, tuple((tuple(a.shape), str(a.dtype)) for a in leaves)


def _batch_size(x: Any) -> int:
    return int(jax.tree_util.tree_leaves(x)[0].shape[0])


def _take(x: Any, index: np.ndarray) -> Any:
    return jax.tree_util.tree_map(lambda a: a[index], x)


def _as_numpy(a: Any) -> np.ndarray:
    return np.asarray(a).astype(np.float32, copy=False)


class JaxBackend:
    """interp-core backend for Flax NNX modules and :class:`~interp_core.Split` models.

    Parameters
    ----------
    layout : str
        Where the model keeps channels: ``"channels_last"`` (``"NHWC"``, Flax's default) or
        ``"channels_first"`` (``"NCHW"``). Activations are returned channels-last either way.
    cache_size : int
        Compiled functions kept (least recently used ones are dropped).

    Attributes
    ----------
    trace_count : int
        How many times a jitted function of this backend was traced (compiled).
    """

    name = "jax"
    capabilities = protocol.ALL_CAPABILITIES

    def __init__(self, layout: str = "channels_last", cache_size: int = 64) -> None:
        if layout.lower() not in _LAYOUTS:
            raise ValueError(
                f"layout {layout!r} is not known; use 'channels_last' (NHWC) or "
                "'channels_first' (NCHW)"
            )
        self.layout = layout
        self.channel_axis = _LAYOUTS[layout.lower()]
        #: The input layout, as :func:`interp_core.backend.layout.input_layout` reads it.
        self.input_layout = "channels_last" if self.channel_axis == -1 else "channels_first"
        self.trace_count = 0
        self._compiled = _LRU(cache_size)
        self._output_shapes = _LRU(4 * cache_size)

    # -- models -----------------------------------------------------------------------------
    @staticmethod
    def _program(model: Any) -> tuple[ModelStructure, Any]:
        """``(structure, arrays)``: the static part (cache key) and the model's arrays; every
        question about the model goes to its structure
        (:func:`~interp_jax.structure.model_structure`)."""
        return model_structure(model)

    @staticmethod
    def _resolve(model: Any, structure: ModelStructure, layers: Sequence[Any]) -> list[str]:
        return structure.resolve(model, layers)

    def layer_names(self, model: Any) -> list[str]:
        structure, _ = self._program(model)
        return structure.layer_names()

    def input_spec(self, model: Any) -> protocol.InputSpec | None:
        """What a Flax NNX ``model`` takes: the ``in_features`` and spatial rank
        (``len(kernel_size)``) of its first ``nnx.Conv`` in definition order, in this backend's
        layout; None for a :class:`~interp_core.Split` (plain functions declare nothing) and
        where a dense layer or an embedding comes first."""
        structure, _ = self._program(model)
        return structure.input_spec(model, self.input_layout)

    # -- conversions ------------------------------------------------------------------------
    def to_numpy(self, x: Any) -> np.ndarray:
        return np.asarray(x)

    def from_numpy(self, x: np.ndarray, model: Any) -> Any:
        structure, arrays = self._program(model)
        return self._inputs(structure, arrays, np.asarray(x))

    def _inputs(self, structure: Any, arrays: Any, inputs: Any) -> Any:
        """The model's inputs as jax arrays (floats in the dtype of an NNX model's state)."""
        return self._prepare(inputs, structure.input_dtype(arrays))

    def _prepare(self, inputs: Any, dtype: Any) -> Any:
        """Inputs as jax arrays; floats take the model's dtype (float32 without x64)."""
        if isinstance(inputs, tuple | list | dict):
            return jax.tree_util.tree_map(lambda a: self._prepare(a, dtype), inputs)
        a = inputs if isinstance(inputs, jax.Array) else np.asarray(inputs)
        if jnp.issubdtype(a.dtype, jnp.floating):
            want = dtype
            if want is None and a.dtype == np.float64 and not jax.config.jax_enable_x64:
                want = jnp.float32
            if want is not None and a.dtype != want:
                a = a.astype(want)
        return jnp.asarray(a)

    def _spatial(self, shape: Sequence[int]) -> tuple[int, ...]:
        return tuple(int(d) for d in (shape[1:-1] if self.channel_axis == -1 else shape[2:]))

    def _canonical(self, a: Any, native_layout: bool) -> np.ndarray:
        out = _as_numpy(a)
        if not native_layout and self.channel_axis == 1 and out.ndim >= 3:
            out = np.moveaxis(out, 1, -1)
        return np.ascontiguousarray(out)

    # -- targets ----------------------------------------------------------------------------
    def _output_shape(self, structure: Any, arrays: Any, x: Any, output: Any) -> tuple[int, ...]:
        key = (structure.key, _signature(x), split_model.Static(output))

        def make() -> tuple[int, ...]:
            out = jax.eval_shape(
                lambda a, xx: structure.forward(a, xx, {}, output=output), arrays, x)
            if not hasattr(out, "shape"):
                raise ValueError(
                    f"the selected model output is a {type(out).__name__}, not an array; pass "
                    "output= (a key, an index or a callable) to pick the tensor to explain"
                )
            return tuple(int(d) for d in out.shape)

        return self._output_shapes.get_or_make(key, make)

    def _plan(self, structure: Any, arrays: Any, x: Any, target: TargetSpec,
              output: Any) -> TargetPlan:
        shape = None
        if needs_output_shape(target):
            shape = self._output_shape(structure, arrays, x, output)
        return plan_targets(target, shape, self.channel_axis, np.int32)

    def _jitted(self, key: tuple[Any, ...], make: Callable[[], Callable[..., Any]]) -> Any:
        return self._compiled.get_or_make(key, lambda: jax.jit(make()))

    # -- layers -----------------------------------------------------------------------------
    def layer_outputs(self, model: Any, inputs: Any) -> protocol.LayerProbe:
        """One abstract pass (``jax.eval_shape``) recording every layer's output shape, for
        the core's choice of the default layer
        (:func:`~interp_core.backend.layer_choice.default_layer`). A Split has one layer,
        its ``features``, which is taken as it is."""
        structure, arrays = self._program(model)
        x = self._inputs(structure, arrays, inputs)
        return structure.layer_probe(model, arrays, x, channels_first=self.channel_axis == 1)

    def default_layer(self, model: Any, inputs: Any) -> str:
        """Deprecated: :func:`interp_core.backend.layer_choice.default_layer` chooses."""
        return deprecated_default_layer(self, model, inputs)

    # -- capture ----------------------------------------------------------------------------
    def capture(
        self, model: Any, inputs: Any, layers: Sequence[Any], target: TargetSpec, *,
        gradients: bool = True, output: Any = None, native_layout: bool = False,
    ) -> protocol.Capture:
        structure, arrays = self._program(model)
        names = self._resolve(model, structure, layers)
        x = self._inputs(structure, arrays, inputs)
        plan = self._plan(structure, arrays, x, target, output)
        gradients = gradients and bool(names)  # no layer (e.g. top-1 classes only): no grads
        key = ("capture", structure.key, tuple(names), plan.key, gradients,
               split_model.Static(output))
        fn = self._jitted(key, lambda: self._capture_fn(structure, names, plan, gradients,
                                                        output))
        result = jax.device_get(fn(arrays, x, plan.consts))
        grads = result["grads"] if gradients else (None,) * len(names)
        captured = {
            name: protocol.LayerCapture(
                name, self._canonical(act, native_layout),
                None if grad is None else self._canonical(grad, native_layout),
            )
            for name, act, grad in zip(names, result["acts"], grads, strict=True)
        }
        top1 = result["top1"]
        return protocol.Capture(
            layers=captured, scores=_as_numpy(result["scores"]),
            targets=target.resolved_indices(None if top1 is None else np.asarray(top1)),
            input_spatial=self._spatial(jax.tree_util.tree_leaves(x)[0].shape),
        )

    def capture_hvp(
        self, model: Any, inputs: Any, layers: Sequence[Any], target: TargetSpec, *,
        output: Any = None, native_layout: bool = False,
    ) -> protocol.Capture:
        """:meth:`capture` with each layer's Hessian-vector product ``H A`` (capability
        ``"hvp"``), jit-compiled and cached like :meth:`capture`.

        Forward over reverse: the gradient with respect to the layers' zero perturbations
        ``delta`` (:meth:`capture`'s) is linearised once at ``delta = 0`` (``jax.linearize`` of
        ``jax.grad``: one forward and one backward pass), and its linear map, the Hessian, is
        applied to each layer's activations in that layer's slot alone, so that each layer
        gets ``H_l A_l`` and no cross term ``H_lm A_m``.
        """
        structure, arrays = self._program(model)
        names = self._resolve(model, structure, layers)
        x = self._inputs(structure, arrays, inputs)
        plan = self._plan(structure, arrays, x, target, output)
        key = ("capture_hvp", structure.key, tuple(names), plan.key, split_model.Static(output))
        fn = self._jitted(key, lambda: self._capture_hvp_fn(structure, names, plan, output))
        result = jax.device_get(fn(arrays, x, plan.consts))
        captured = {
            name: protocol.LayerCapture(
                name, self._canonical(act, native_layout), self._canonical(grad, native_layout),
                self._canonical(hvp, native_layout),
            )
            for name, act, grad, hvp in zip(names, result["acts"], result["grads"],
                                            result["hvp"], strict=True)
        }
        top1 = result["top1"]
        return protocol.Capture(
            layers=captured, scores=_as_numpy(result["scores"]),
            targets=target.resolved_indices(None if top1 is None else np.asarray(top1)),
            input_spatial=self._spatial(jax.tree_util.tree_leaves(x)[0].shape),
        )

    def _capture_hvp_fn(self, structure: Any, names: list[str], plan: TargetPlan,
                        output: Any) -> Callable[..., Any]:
        ops = JaxOps(self.channel_axis)

        def run(arrays: Any, x: Any, consts: Any) -> dict[str, Any]:
            self.trace_count += 1

            def objective(deltas: Any) -> tuple[Any, Any]:
                store: dict[str, Any] = {}
                handlers = {n: recorder(n, store, deltas[i]) for i, n in enumerate(names)}
                out = structure.forward(arrays, x, handlers, output=output)
                check_ran(store, names)
                scores, top1 = plan.score(out, consts, ops)
                return scores.sum(), (scores, top1, tuple(store[n] for n in names))

            def shapes(arrays: Any, x: Any) -> tuple[Any, ...]:
                store: dict[str, Any] = {}
                structure.forward(arrays, x, {n: recorder(n, store) for n in names})
                check_ran(store, names)
                return tuple(store[n] for n in names)

            zeros = tuple(jnp.zeros(s.shape, s.dtype) for s in jax.eval_shape(shapes, arrays, x))
            grads, hessian, (scores, top1, acts) = jax.linearize(
                jax.grad(objective, has_aux=True), zeros, has_aux=True)
            products = []
            for i, act in enumerate(acts):
                tangent = tuple(act if j == i else z for j, z in enumerate(zeros))
                products.append(hessian(tangent)[i])
            return {"scores": scores, "top1": top1, "acts": acts, "grads": grads,
                    "hvp": tuple(products)}

        return run

    def _capture_fn(self, structure: Any, names: list[str], plan: TargetPlan,
                    gradients: bool, output: Any) -> Callable[..., Any]:
        ops = JaxOps(self.channel_axis)

        def scored(arrays: Any, x: Any, consts: Any, deltas: Any) -> tuple[Any, ...]:
            store: dict[str, Any] = {}
            handlers = {
                n: recorder(n, store, None if deltas is None else deltas[i])
                for i, n in enumerate(names)
            }
            out = structure.forward(arrays, x, handlers, output=output)
            check_ran(store, names)
            scores, top1 = plan.score(out, consts, ops)
            return scores, top1, tuple(store[n] for n in names), out

        def activations(arrays: Any, x: Any) -> tuple[Any, ...]:
            store: dict[str, Any] = {}
            structure.forward(arrays, x, {n: recorder(n, store) for n in names})
            check_ran(store, names)
            return tuple(store[n] for n in names)

        def run(arrays: Any, x: Any, consts: Any) -> dict[str, Any]:
            self.trace_count += 1
            if not gradients:
                scores, top1, acts, _ = scored(arrays, x, consts, None)
                return {"scores": scores, "top1": top1, "acts": acts}
            shapes = jax.eval_shape(activations, arrays, x)
            zeros = tuple(jnp.zeros(s.shape, s.dtype) for s in shapes)

            def objective(deltas: Any) -> tuple[Any, Any]:
                scores, top1, acts, _ = scored(arrays, x, consts, deltas)
                return scores.sum(), (scores, top1, acts)

            (_, (scores, top1, acts)), grads = jax.value_and_grad(
                objective, has_aux=True)(zeros)
            return {"scores": scores, "top1": top1, "acts": acts, "grads": grads}

        return run

    # -- forward-only work ------------------------------------------------------------------
    def predict(
        self, model: Any, inputs: Any, target: TargetSpec, *, batch_size: int = 32,
        output: Any = None,
    ) -> np.ndarray:
        structure, arrays = self._program(model)
        x = self._inputs(structure, arrays, inputs)
        n = _batch_size(x)
        size = max(1, min(batch_size, n))
        parts = []
        for start in range(0, n, size):
            # The last chunk repeats its final sample so every chunk has one shape.
            index = np.minimum(np.arange(start, start + size), n - 1)
            chunk = _take(x, index)
            plan = self._plan(structure, arrays, chunk, target.take(index), output)
            key = ("predict", structure.key, plan.key, split_model.Static(output))
            fn = self._jitted(key, lambda plan=plan: self._predict_fn(structure, plan, output))
            parts.append(_as_numpy(fn(arrays, chunk, plan.consts))[: n - start])
        return np.concatenate(parts) if parts else np.zeros(0, np.float32)

    def _predict_fn(self, structure: Any, plan: TargetPlan, output: Any) -> Callable[..., Any]:
        def run(arrays: Any, x: Any, consts: Any) -> Any:
            self.trace_count += 1
            out = structure.forward(arrays, x, {}, output=output)
            return plan.score(out, consts, JaxOps(self.channel_axis))[0]
        return run

    def patched_scores(
        self, model: Any, inputs: Any, layer: Any, channel_masks: np.ndarray,
        target: TargetSpec, *, batch_size: int = 32, output: Any = None,
        channel_axis: int | None = None,
    ) -> np.ndarray:
        masks = patching.channel_masks(channel_masks, channel_axis, usual_axis_only=self.name)
        structure, arrays = self._program(model)
        (name,) = self._resolve(model, structure, [layer])
        x = self._inputs(structure, arrays, inputs)
        n = _batch_size(x)

        def tiled() -> np.ndarray:
            per_chunk = patching.mask_chunks(len(masks), n, batch_size)
            tiled = target.tile(per_chunk)
            tiled_x = jax.eval_shape(lambda a: jax.tree_util.tree_map(
                lambda v: jnp.concatenate([v] * per_chunk), a), x)
            plan = self._plan(structure, arrays, tiled_x, tiled, output)
            key = ("patched", structure.key, name, plan.key, split_model.Static(output))
            fn = self._jitted(key, lambda: self._patched_fn(structure, name, plan, output))
            rows = []
            for start in range(0, len(masks), per_chunk):
                chunk = masks[start : start + per_chunk]
                count = len(chunk)
                if count < per_chunk:  # pad with all-ones masks: one compiled shape
                    chunk = np.concatenate([chunk, np.ones((per_chunk - count, masks.shape[1]),
                                                           np.float32)])
                scores = _as_numpy(fn(arrays, x, plan.consts, chunk))
                rows.append(scores.reshape(per_chunk, n)[:count])
            return np.concatenate(rows, axis=0) if rows else np.zeros((0, n), np.float32)

        return patching.patch_with_fallback(
            model, name,
            lambda: self._patched_expanded(model, structure, arrays, x, name, masks, target,
                                           batch_size, output),
            tiled)

    def _patched_expanded(self, model: Any, structure: Any, arrays: Any, x: Any, name: str,
                          masks: np.ndarray, target: TargetSpec, batch_size: int,
                          output: Any) -> np.ndarray:
        """Ablation from the layer on, one sample at a time: the compiled pass runs the
        network below the layer on the sample alone and expands the layer's output to one
        copy per mask. Every pass carries an extra all-ones mask whose score must equal the
        unpatched one; a model whose code above the layer cannot take the expanded batch
        raises :class:`~interp_core.backend.patching.ExpansionRefusedError` (the caller then
        copies the input)."""
        from interp_jax.layers import ModelTraceError

        n = _batch_size(x)
        per = patching.mask_chunks(len(masks), 1, batch_size)
        width = per + 1
        plain = self.predict(model, x, target, batch_size=max(1, n), output=output)

        def sample_scorer(i: int) -> Callable[[np.ndarray], np.ndarray]:
            sample, spec = _take(x, np.array([i])), target.take(np.array([i]))
            tiled_x = jax.eval_shape(lambda a: jax.tree_util.tree_map(
                lambda v: jnp.concatenate([v] * width), a), sample)
            plan = self._plan(structure, arrays, tiled_x, spec.tile(width), output)
            key = ("patched-expanded", structure.key, name, plan.key,
                   split_model.Static(output))
            fn = self._jitted(key, lambda: self._patched_fn(
                structure, name, plan, output, expand=True))
            return lambda padded: _as_numpy(fn(arrays, sample, plan.consts, padded))

        return patching.expanded_patch_rows(masks, plain, per, sample_scorer,
                                            (AdapterError, ModelTraceError, TypeError, ValueError))

    def _patched_fn(self, structure: Any, name: str, plan: TargetPlan,
                    output: Any, expand: bool = False) -> Callable[..., Any]:
        """The masked pass: ``x`` copied once per mask, or (``expand``) run once and the
        layer's output expanded to one copy per mask."""
        axis = self.channel_axis
        ops = JaxOps(axis)

        def run(arrays: Any, x: Any, consts: Any, masks: Any) -> Any:
            self.trace_count += 1
            m = masks.shape[0]
            n = _batch_size(x)
            tiled = x if expand else jax.tree_util.tree_map(
                lambda v: jnp.concatenate([v] * m), x)
            seen: dict[str, Any] = {}

            def patch(a: Any) -> Any:
                seen[name] = a
                channels = a.shape[axis]
                if masks.shape[1] != channels:
                    raise AdapterError(
                        f"channel_masks have {masks.shape[1]} channels but layer {name!r} has "
                        f"{channels} (output shape {tuple(a.shape)})"
                    )
                if expand:
                    a = jnp.concatenate([a] * m)
                spatial = (1,) * (a.ndim - 2)
                shape = (m, 1, *spatial, channels) if axis == -1 else (m, 1, channels, *spatial)
                grouped = a.reshape((m, n, *a.shape[1:]))
                return (grouped * masks.reshape(shape).astype(a.dtype)).reshape(a.shape)

            out = structure.forward(arrays, tiled, {name: patch}, output=output)
            check_ran(seen, [name])
            return plan.score(out, consts, ops)[0]

        return run

    # -- gradients of the target scores at the input ----------------------------------------
    def score_input_gradients(
        self, model: Any, inputs: Any, target: TargetSpec, *, batch_size: int = 32,
        output: Any = None, guided: bool = False,
    ) -> protocol.InputGradients:
        structure, arrays = self._program(model)
        x = self._float_input(structure, arrays, inputs, "score_input_gradients")
        n = int(x.shape[0])
        size = max(1, min(batch_size, n))
        scores, grads, tops = [], [], []
        for start in range(0, n, size):
            # The last chunk repeats its final sample so every chunk has one shape.
            index = np.minimum(np.arange(start, start + size), n - 1)
            chunk = x[index]
            plan = self._plan(structure, arrays, chunk, target.take(index), output)
            key = ("score_grads", structure.key, plan.key, bool(guided),
                   split_model.Static(output))
            fn = self._jitted(key, lambda plan=plan: self._score_gradients_fn(
                structure, plan, output, guided))
            s, g, top1 = jax.device_get(fn(arrays, chunk, plan.consts))
            keep = n - start
            scores.append(_as_numpy(s)[:keep])
            grads.append(_as_numpy(g)[:keep])
            tops.append(None if top1 is None else np.asarray(top1)[:keep])
        top = None if tops[0] is None else np.concatenate(tops)
        values, gradients = np.concatenate(scores), np.concatenate(grads)
        warn_non_finite("score_input_gradients", values, gradients)
        return protocol.InputGradients(values, target.resolved_indices(top), gradients)

    def _float_input(self, structure: Any, arrays: Any, inputs: Any, what: str) -> Any:
        x = self._inputs(structure, arrays, inputs)
        if not isinstance(x, jax.Array):
            raise ValueError(f"{what} needs a single input array, not a tuple or dict")
        if not jnp.issubdtype(x.dtype, jnp.floating):
            x = x.astype(jnp.float32)
        return x

    def _score_gradients_fn(self, structure: Any, plan: TargetPlan, output: Any,
                            guided: bool) -> Callable[..., Any]:
        from interp_jax.guided import guided_relus

        ops = JaxOps(self.channel_axis)

        def forward(arrays: Any, x: Any) -> Any:
            return structure.forward(arrays, x, {}, output=output)

        run_model = guided_relus(forward) if guided else forward

        def run(arrays: Any, x: Any, consts: Any) -> tuple[Any, Any, Any]:
            self.trace_count += 1

            def objective(xx: Any) -> tuple[Any, Any]:
                scores, top1 = plan.score(run_model(arrays, xx), consts, ops)
                return scores.sum(), (scores, top1)

            (_, (scores, top1)), grads = jax.value_and_grad(objective, has_aux=True)(x)
            return scores, grads, top1

        return run

    def bias_gradients(
        self, model: Any, inputs: Any, target: TargetSpec, *, output: Any = None,
    ) -> protocol.BiasGradients:
        structure, arrays = self._program(model)
        biases = dict(structure.bias_modules(model))
        x = self._float_input(structure, arrays, inputs, "bias_gradients")
        ran = self._ran_once(structure, arrays, x, list(biases))
        plan = self._plan(structure, arrays, x, target, output)
        key = ("bias_grads", structure.key, tuple(ran), plan.key, split_model.Static(output))
        fn = self._jitted(key, lambda: self._bias_gradients_fn(structure, ran, plan, output))
        result = jax.device_get(fn(arrays, x, plan.consts))
        grads = {name: self._canonical(g, False)
                 for name, g in zip(ran, result["grads"], strict=True)}
        grads = {k: v for k, v in grads.items() if v.ndim >= 3}
        top1 = result["top1"]
        return protocol.BiasGradients(
            scores=_as_numpy(result["scores"]),
            targets=target.resolved_indices(None if top1 is None else np.asarray(top1)),
            input_gradients=_as_numpy(result["input"]),
            biases={k: biases[k] for k in grads}, gradients=grads,
        )

    def _ran_once(self, structure: Any, arrays: Any, x: Any, names: list[str]) -> list[str]:
        """The layers among ``names`` that run exactly once in the forward pass, in order."""
        seen: dict[str, int] = {}

        def count(name: str) -> Callable[[Any], Any]:
            def handle(out: Any) -> Any:
                seen[name] = seen.get(name, 0) + 1
                return out
            return handle

        jax.eval_shape(lambda a, xx: structure.forward(
            a, xx, {n: count(n) for n in names}, probe=True), arrays, x)
        return [n for n in names if seen.get(n) == 1]

    def _bias_gradients_fn(self, structure: Any, names: list[str], plan: TargetPlan,
                           output: Any) -> Callable[..., Any]:
        ops = JaxOps(self.channel_axis)

        def scored(arrays: Any, x: Any, consts: Any, deltas: Any) -> tuple[Any, Any]:
            store: dict[str, Any] = {}
            handlers = {n: recorder(n, store, None if deltas is None else deltas[i])
                        for i, n in enumerate(names)}
            out = structure.forward(arrays, x, handlers, output=output)
            check_ran(store, names)
            return plan.score(out, consts, ops), tuple(store[n] for n in names)

        def run(arrays: Any, x: Any, consts: Any) -> dict[str, Any]:
            self.trace_count += 1
            shapes = jax.eval_shape(lambda a, xx: scored(a, xx, consts, None)[1], arrays, x)
            zeros = tuple(jnp.zeros(s.shape, s.dtype) for s in shapes)

            def objective(xx: Any, deltas: Any) -> tuple[Any, Any]:
                (scores, top1), _ = scored(arrays, xx, consts, deltas)
                return scores.sum(), (scores, top1)

            (_, (scores, top1)), (g_in, g_layers) = jax.value_and_grad(
                objective, argnums=(0, 1), has_aux=True)(x, zeros)
            return {"scores": scores, "top1": top1, "input": g_in, "grads": g_layers}

        return run

    # -- attention (vision transformers) ---------------------------------------------------
    def attention(
        self, model: Any, inputs: Any, target: TargetSpec, *,
        gradients: protocol.AttentionGradients = "none", output: Any = None,
        batch_size: int = 32,
    ) -> protocol.AttentionCapture:
        """The probabilities of every ``nnx.MultiHeadAttention`` (and their gradients), read
        on the traced copy of the model (:mod:`interp_jax.attention`)."""
        from interp_jax.attention import capture_attention

        return capture_attention(self, model, inputs, target, gradients=gradients,
                                 output=output, batch_size=batch_size)

    # -- dense weights and input gradients --------------------------------------------------
    def linear_weights(self, model: Any, fc: Any = None) -> np.ndarray:
        structure, _ = self._program(model)
        return structure.linear_weights(model, fc)

    def input_gradients(
        self, model: Any, inputs: Any, layer: Any, channels: np.ndarray, *,
        output: Any = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        structure, arrays = self._program(model)
        names = [] if layer is None else self._resolve(model, structure, [layer])
        x = self._inputs(structure, arrays, inputs)
        if not isinstance(x, jax.Array):
            raise ValueError("input_gradients needs a single input array, not a tuple or dict")
        if not jnp.issubdtype(x.dtype, jnp.floating):
            x = x.astype(jnp.float32)
        idx = check_channels(channels, int(x.shape[0]))
        key = ("input_gradients", structure.key, tuple(names), split_model.Static(output))
        fn = self._jitted(key, lambda: self._input_gradients_fn(structure, names, output))
        values, grads, count = jax.device_get(fn(arrays, x, idx.astype(np.int32)))
        check_channel_range(idx, int(count), f"layer {names[0]!r}" if names else "the model output")
        values, grads = _as_numpy(values), _as_numpy(grads)
        warn_non_finite("input_gradients", values, grads)
        return values, grads

    def _input_gradients_fn(self, structure: Any, names: list[str],
                            output: Any) -> Callable[..., Any]:
        axis = self.channel_axis
        ops = JaxOps(axis)

        def run(arrays: Any, x: Any, idx: Any) -> tuple[Any, Any, Any]:
            self.trace_count += 1
            counts: list[int] = []

            def objective(xx: Any) -> tuple[Any, Any]:
                store: dict[str, Any] = {}
                out = structure.forward(arrays, xx, {n: recorder(n, store) for n in names},
                                        output=output)
                check_ran(store, names)
                act = store[names[0]] if names else out
                if act.ndim < 2:
                    raise AdapterError(
                        f"output of shape {tuple(act.shape)} has no channel axis"
                    )
                ch_axis = act.ndim - 1 if axis == -1 else 1
                counts.append(act.shape[ch_axis])
                values = channel_objective(act, idx, ops, ch_axis)
                return values.sum(), values

            (_, values), grads = jax.value_and_grad(objective, has_aux=True)(x)
            return values, grads, jnp.int32(counts[0])

        return run
