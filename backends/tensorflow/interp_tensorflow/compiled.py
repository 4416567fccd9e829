"""The compiled passes: one ``tf.function`` per (model, layers, mode, target kind, output).

A :class:`Program` is cached by the backend per model (weakly) and key; ``tf.function`` then
caches one concrete function per input signature (shapes and dtypes of the inputs and of the
fed target constants). Target values, channel masks and channel indices are arguments, so a
second call on the same shapes runs the concrete function without retracing, whatever its
targets. The model object and the target spec reach the traced Python only through cells set
for the duration of a call, so a program holds no reference to the model.

Gradients: a ``GradientTape`` with ``watch_accessed_variables=False`` watches the captured layer
outputs only (from inside the layer's intercepted call), so nothing below the layers is recorded
and no parameter gradient exists. Scores are summed over the batch before differentiation, so
each sample gets its own gradient.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from interp_core.backend.checks import channel_objective
from interp_core.backend.compiled import ReplayOps
from interp_core.backend.layers import layer_ran_twice_error, missing_layers_error
from interp_core.backend.scoring import TensorOps, target_scores
from interp_core.backend.target_spec import TargetSpec, select_output
from interp_tensorflow.guided import guided_relus
from interp_tensorflow.layers import (
    Hook,
    intercepted,
    is_bias_convolution,
    layer_data_format,
    model_data_format,
    output_layer,
    recording_pre_activations,
    resolve,
    squashing,
)
from interp_tensorflow.ops import TFOps


def forward(model: Any, x: Any, hooks: Sequence[tuple[str, Any, Hook]], output: Any) -> Any:
    """Run ``model`` on ``x`` in inference mode with ``hooks``; the selected output tensor.

    ``output="logits"`` on a model whose output is one tensor from a final softmax/sigmoid
    layer gives that layer's pre-activation (recorded as it runs, the model is not edited); on
    a model whose last layer is linear it gives the output itself.
    """
    logits_of = None
    if output == "logits":
        last = output_layer(model)
        if last is not None and squashing(last) is not None:
            logits_of = last
    store: dict[str, Any] = {}
    with intercepted(hooks, logits_of, store):
        raw = model(x, training=False)
    if output == "logits" and tf.is_tensor(raw):
        return store.get("logits", raw)
    selected = select_output(raw, output)
    if not tf.is_tensor(selected):
        raise TypeError(
            f"the selected model output is a {type(selected).__name__}, not a tensor; pass "
            "output= (a key, an index or a callable) to pick the tensor to explain"
        )
    return selected


def non_finite_samples(x: Any) -> tf.Tensor | None:
    """``(N,)`` bool: samples with a NaN or infinity in any floating-point input; None if the
    inputs have no floating-point tensor."""
    flags = [tf.reduce_any(~tf.math.is_finite(tf.reshape(t, [tf.shape(t)[0], -1])), axis=1)
             for t in tf.nest.flatten(x) if t.dtype.is_floating]
    if not flags:
        return None
    return flags[0] if len(flags) == 1 else tf.reduce_any(tf.stack(flags), axis=0)


def mark_samples(t: tf.Tensor, bad: tf.Tensor) -> tf.Tensor:
    """``t`` with the samples flagged in ``bad`` set to NaN.

    TensorFlow's fused graph kernels (Conv2D + BiasAdd + ReLU) can map a NaN input to 0, so a
    sample with a non-finite input would yield a plausible but meaningless map; marking it
    restores the eager (IEEE) result, and the core then warns and gives that sample zeros.
    """
    shape = [-1] + [1] * (t.shape.rank - 1)
    return tf.where(tf.reshape(bad, shape), tf.constant(np.nan, t.dtype), t)


def canonical(t: tf.Tensor, data_format: str) -> tf.Tensor:
    """``(N, C, *S)`` -> ``(N, *S, C)`` for channels-first tensors of rank >= 3; float32."""
    rank = t.shape.rank
    if data_format == "channels_first" and rank is not None and rank >= 3:
        t = tf.transpose(t, [0, *range(2, rank), 1])
    return tf.cast(t, tf.float32)


def recording_hooks(layers: Sequence[tuple[str, Any, str]], store: dict[str, tf.Tensor],
                    watch: Callable[[tf.Tensor], Any] | None = None
                    ) -> list[tuple[str, Any, Hook]]:
    """One hook per ``(path, layer, format)`` that records the layer's output in ``store``
    (``watch`` it first, for a tape), refusing a layer that runs twice."""
    def make_hook(path: str) -> Hook:
        def hook(t: tf.Tensor) -> tf.Tensor:
            if watch is not None:
                watch(t)
            if path in store:
                raise layer_ran_twice_error(path)
            store[path] = t
            return t
        return hook

    return [(p, layer, make_hook(p)) for p, layer, _ in layers]


def check_connected(paths: Sequence[str], gradients: Sequence[tf.Tensor | None]) -> None:
    """Raise ValueError naming the layers whose gradient is None: the score ignores them."""
    unconnected = [p for p, g in zip(paths, gradients, strict=True) if g is None]
    if unconnected:
        raise ValueError(
            f"layer(s) {unconnected} are not connected to the explained output: the "
            "target score does not depend on them. Pick a layer on the path to the "
            "output (or choose the output with output=)"
        )


def mark_non_finite(result: dict[str, Any], x: Any, keys: Sequence[str]) -> dict[str, Any]:
    """``result`` with the samples of non-finite inputs marked in its ``scores`` and in each
    list of per-layer tensors under ``keys`` (None lists stay None)."""
    bad = non_finite_samples(x)
    if bad is not None:
        for key in keys:
            if result[key] is not None:
                result[key] = [mark_samples(t, bad) for t in result[key]]
        result["scores"] = mark_samples(result["scores"], bad)
    return result


@dataclasses.dataclass(eq=False)
class Program:
    """One compiled pass over one model.

    Parameters
    ----------
    mode : str
        ``"capture"``, ``"predict"``, ``"patch"``, ``"input_gradients"``, ``"score_gradients"``
        or ``"bias_gradients"``.
    paths : tuple of str
        Resolved layer paths (empty for ``predict``; the objective layer or none for
        ``input_gradients``).
    gradients, native_layout : bool
        Capture options.
    guided : bool
        ``"score_gradients"``: every ``Relu`` op of the pass gets the guided gradient.
    expand : bool
        ``"patch"``: the input is one sample, run once; the layer's output is expanded to one
        copy per mask (ablation from the layer on).
    kind : str
        The target kind (``spec.kind``); ``"fn"`` specs also key on their callables.
    output : None, str, int or callable
        The output selector.
    on_trace : callable
        Called once per trace (the backend counts traces).
    """

    mode: str
    paths: tuple[str, ...]
    _: dataclasses.KW_ONLY
    gradients: bool = False
    native_layout: bool = False
    kind: str = ""
    output: Any = None
    on_trace: Callable[[], None] | None = None
    guided: bool = False
    expand: bool = False

    def __post_init__(self) -> None:
        self.traces = 0
        self._model: Any = None
        self._spec: TargetSpec | None = None
        # A partial, not the bound method: TF's "frequent retracing" detector keys on the code
        # object, so every program would look like one function retracing all the time.
        self._fn = tf.function(functools.partial(Program._trace, self))

    def __call__(self, model: Any, spec: TargetSpec | None, *args: Any) -> Any:
        self._model, self._spec = model, spec
        try:
            return self._fn(*args)
        finally:
            self._model = self._spec = None

    # -- traced Python (runs once per input signature) ------------------------------------
    def _trace(self, *args: Any) -> Any:
        self.traces += 1
        if self.on_trace is not None:
            self.on_trace()
        return getattr(self, f"_{self.mode}")(self._model, self._spec, *args)

    def _ops(self, consts: Sequence[tf.Tensor]) -> TensorOps:
        ops = TFOps(class_axis(self._model))
        return ops if self.kind == "fn" else ReplayOps(ops, consts)

    def _layers(self, model: Any) -> list[tuple[str, Any, str]]:
        default = model_data_format(model)
        return [(p, layer, layer_data_format(layer, default))
                for p, layer in resolve(model, self.paths)]

    def _capture(self, model: Any, spec: TargetSpec, x: Any, consts: Sequence[tf.Tensor]
                 ) -> dict[str, Any]:
        layers = self._layers(model)
        store: dict[str, tf.Tensor] = {}
        tape = tf.GradientTape(watch_accessed_variables=False) if self.gradients else None
        hooks = recording_hooks(layers, store, None if tape is None else tape.watch)
        with tape if tape is not None else contextlib.nullcontext():
            out = forward(model, x, hooks, self.output)
            missing = [p for p, _, _ in layers if p not in store]
            if missing:
                raise missing_layers_error(missing, "the model's call() uses")
            scores, top1 = target_scores(out, spec, self._ops(consts))
            total = tf.reduce_sum(scores)
        grads: list[tf.Tensor] | None = None
        if tape is not None:
            raw_grads = tape.gradient(total, [store[p] for p, _, _ in layers])
            check_connected([p for p, _, _ in layers], raw_grads)
            grads = [self._layout(g, fmt) for g, (_, _, fmt) in zip(raw_grads, layers,
                                                                    strict=True)]
        result = {
            "acts": [self._layout(store[p], fmt) for p, _, fmt in layers],
            "grads": grads,
            "scores": tf.cast(scores, tf.float32),
            "top1": top1,
        }
        return mark_non_finite(result, x, ("acts", "grads"))

    def _layout(self, t: tf.Tensor, data_format: str) -> tf.Tensor:
        return tf.cast(t, tf.float32) if self.native_layout else canonical(t, data_format)

    def _predict(self, model: Any, spec: TargetSpec, x: Any, consts: Sequence[tf.Tensor]
                 ) -> tf.Tensor:
        out = forward(model, x, [], self.output)
        scores, _ = target_scores(out, spec, self._ops(consts))
        return tf.cast(scores, tf.float32)

    def _patch(self, model: Any, spec: TargetSpec, x: Any, consts: Sequence[tf.Tensor],
               masks: tf.Tensor) -> tf.Tensor:
        ((path, layer, fmt),) = self._layers(model)

        def hook(t: tf.Tensor) -> tf.Tensor:
            m_count, channels = int(masks.shape[0]), int(masks.shape[1])
            if self.expand:
                t = tf.tile(t, [m_count] + [1] * (t.shape.rank - 1))
            axis = 1 if fmt == "channels_first" else t.shape.rank - 1
            if int(t.shape[axis]) != channels:
                raise ValueError(
                    f"channel_masks have {channels} channels but layer {path!r} has "
                    f"{int(t.shape[axis])} (output shape {tuple(t.shape)})"
                )
            n = int(t.shape[0]) // m_count
            shape = [1] * (t.shape.rank + 1)
            shape[0], shape[axis + 1] = m_count, channels
            per_mask = tf.reshape(t, [m_count, n, *t.shape[1:]])
            patched = per_mask * tf.reshape(tf.cast(masks, t.dtype), shape)
            return tf.reshape(patched, tf.shape(t))

        out = forward(model, x, [(path, layer, hook)], self.output)
        scores, _ = target_scores(out, spec, self._ops(consts))
        return tf.cast(scores, tf.float32)

    def _input_gradients(self, model: Any, spec: Any, x: tf.Tensor, channels: tf.Tensor
                         ) -> dict[str, tf.Tensor]:
        layers = self._layers(model)
        store: dict[str, tf.Tensor] = {}
        hooks = [(p, layer, lambda t, p=p: store.setdefault(p, t)) for p, layer, _ in layers]
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(x)
            out = forward(model, x, hooks, self.output)
            if layers:
                path, _, fmt = layers[0]
                if path not in store:
                    raise missing_layers_error([path], "the model's call() uses")
                target = canonical(store[path], fmt)
            else:
                target = tf.cast(out, tf.float32)
            if target.shape.rank < 2:
                raise ValueError(f"output of shape {tuple(target.shape)} has no channel axis")
            count = int(target.shape[-1])
            index = tf.clip_by_value(tf.cast(channels, tf.int64), 0, count - 1)
            values = channel_objective(target, index, TFOps(), -1)  # canonical: channels last
            total = tf.reduce_sum(values)
        grad = tape.gradient(total, x)
        if grad is None:
            raise ValueError("the objective does not depend on the input (a non-differentiable "
                             "path, or integer inputs)")
        return {"values": values, "grads": tf.cast(grad, tf.float32),
                "channels": tf.constant(count, tf.int64)}


    def _score_gradients(self, model: Any, spec: TargetSpec, x: tf.Tensor,
                         consts: Sequence[tf.Tensor]) -> dict[str, Any]:
        """d(sum of target scores)/d(input); symbolic ``tf.gradients`` so that the guided
        gradient override of the ``Relu`` ops (a graph's ``gradient_override_map``) applies."""
        with guided_relus() if self.guided else contextlib.nullcontext():
            out = forward(model, x, [], self.output)
        scores, top1 = target_scores(out, spec, self._ops(consts))
        (grad,) = tf.gradients(tf.reduce_sum(scores), [x])
        if grad is None:
            raise ValueError("the target score does not depend on the input (a "
                             "non-differentiable path, or integer inputs)")
        return {"scores": tf.cast(scores, tf.float32), "top1": top1,
                "grads": tf.cast(grad, tf.float32)}

    def _bias_gradients(self, model: Any, spec: TargetSpec, x: tf.Tensor,
                        consts: Sequence[tf.Tensor]) -> dict[str, Any]:
        """Input gradients and the gradients at every biased layer's pre-activation output
        (convolutions: the input of their activation; batch norm: its output)."""
        layers = self._layers(model)
        store: dict[str, tf.Tensor] = {}
        tape = tf.GradientTape(watch_accessed_variables=False)

        def record(path: str, t: tf.Tensor) -> tf.Tensor:
            if path in store:
                raise layer_ran_twice_error(path)
            tape.watch(t)
            store[path] = t
            return t

        convs = [(p, layer) for p, layer, _ in layers if is_bias_convolution(layer)]
        hooks = [(p, layer, functools.partial(record, p)) for p, layer, _ in layers
                 if not is_bias_convolution(layer)]
        with tape:
            tape.watch(x)
            with recording_pre_activations(convs, record):
                out = forward(model, x, hooks, self.output)
            scores, top1 = target_scores(out, spec, self._ops(consts))
            total = tf.reduce_sum(scores)
        ran = [(p, fmt) for p, _, fmt in layers if p in store and store[p].shape.rank >= 3]
        grads = tape.gradient(total, [x, *(store[p] for p, _ in ran)])
        if grads[0] is None:
            raise ValueError("the target score does not depend on the input")
        layer_grads = {p: canonical(tf.zeros_like(store[p]) if g is None else g, fmt)
                       for (p, fmt), g in zip(ran, grads[1:], strict=True)}
        return {"scores": tf.cast(scores, tf.float32), "top1": top1,
                "input": tf.cast(grads[0], tf.float32), "grads": layer_grads}


def class_axis(model: Any) -> int:
    """Where a dense (segmentation) output of ``model`` keeps its classes: 1 for a
    ``channels_first`` model, else -1."""
    return 1 if model_data_format(model) == "channels_first" else -1


def is_keras_model(model: Any) -> bool:
    """True for Keras 3 layers and models (what this adapter explains)."""
    return isinstance(model, keras.layers.Layer)
