"""The TensorFlow / Keras 3 adapter: activations and gradients of Keras layers.

Works for Sequential, Functional, subclassed and nested Keras 3 models on the TensorFlow
backend, single- or multi-input, channels-last or channels-first. Layers are read by wrapping
their ``call`` while the compiled pass traces (:mod:`interp_tensorflow.layers`), gradients come
from a ``GradientTape`` that watches the captured outputs only, and every pass is a cached
``tf.function`` (:mod:`interp_tensorflow.compiled`). The model always runs with
``training=False``; no weight, trainable flag or layer attribute is changed (temporary call
wrappers are removed in ``finally``).

Canonical layout: activations and gradients come back channels-last ``(N, *spatial, C)``; the
outputs of ``data_format="channels_first"`` layers are transposed inside the compiled pass.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from interp_core.backend import patching, protocol
from interp_core.backend.checks import check_channel_range, check_channels
from interp_core.backend.compiled import needs_output_shape, plan_targets
from interp_core.backend.inputs import chunks
from interp_core.backend.layer_choice import deprecated_default_layer
from interp_core.backend.target_spec import TargetSpec, select_output
from interp_tensorflow import attention
from interp_tensorflow.compiled import Program, class_axis, forward, is_keras_model
from interp_tensorflow.hvp import HvpProgram
from interp_tensorflow.layers import (
    bias_layers,
    children,
    eager_gradients,
    layer_outputs,
    layer_paths,
    model_data_format,
    resolve,
    spatial_shape,
    walk,
)

#: Programs kept per model (oldest dropped first); each holds its traced concrete functions.
MAX_PROGRAMS_PER_MODEL = 32

#: Convolutions (each has ``rank``, its number of spatial axes): what tells a model's input.
_CONVOLUTIONS = (
    keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D,
    keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose, keras.layers.Conv3DTranspose,
    keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D,
    keras.layers.SeparableConv1D, keras.layers.SeparableConv2D,
)
#: Layers that keep the channel count, passed over on the way to the first convolution.
_CHANNEL_NORMS = (keras.layers.BatchNormalization, keras.layers.GroupNormalization,
                  keras.layers.Normalization)


class TensorFlowBackend:
    """interp-core backend for Keras 3 models on TensorFlow (inputs in the model's own layout).

    Attributes
    ----------
    trace_count : int
        How many times a compiled pass has been traced in this process (tests check that a
        second call on the same shapes adds none).
    """

    name = "tensorflow"
    capabilities = protocol.ALL_CAPABILITIES

    def __init__(self) -> None:
        self.trace_count = 0
        self._lock = threading.RLock()
        self._programs: weakref.WeakKeyDictionary[Any, OrderedDict[tuple, Program]] = (
            weakref.WeakKeyDictionary())
        self._output_shapes: weakref.WeakKeyDictionary[Any, dict[tuple, tuple[int, ...]]] = (
            weakref.WeakKeyDictionary())
        self._data_formats: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()

    def input_layout(self, model: Any) -> str:
        """The model's image layout: its ``data_format`` (read by the core's ``layout``)."""
        if model is None:
            return "channels_last"
        with self._lock:
            fmt = self._data_formats.get(model)
            if fmt is None:
                fmt = self._data_formats[model] = model_data_format(model)
        return fmt

    def input_spec(self, model: Any) -> protocol.InputSpec | None:
        """What ``model`` takes: its declared input shape (``model.inputs[0]``, for Functional
        models and Sequential ones with an ``Input``), else its first convolution's channel
        count (once built) and rank; None when a dense layer or an embedding comes first, the
        input is not a grid (rank < 3), or nothing tells."""
        if not is_keras_model(model):
            return None
        layout = self.input_layout(model)
        try:
            declared = model.inputs
        except (AttributeError, ValueError):
            declared = None
        if declared:
            shape = tuple(declared[0].shape)
            if len(shape) < 3:
                return None
            channels = shape[1] if layout == "channels_first" else shape[-1]
            return protocol.InputSpec(None if channels is None else int(channels),
                                      len(shape) - 2, layout)
        for _, layer in walk(model):
            if isinstance(layer, _CONVOLUTIONS):
                axes = getattr(getattr(layer, "input_spec", None), "axes", None) or {}
                channels = next(iter(axes.values()), None) if len(axes) == 1 else None
                return protocol.InputSpec(None if channels is None else int(channels),
                                          int(layer.rank), layout)
            if isinstance(layer, _CHANNEL_NORMS) or children(layer):
                continue
            if layer.weights:  # a Dense or an Embedding sees the input first
                return None
        return None

    # -- conversions ----------------------------------------------------------------------
    def to_numpy(self, x: Any) -> np.ndarray:
        if tf.is_tensor(x) or isinstance(x, tf.Variable):
            return x.numpy()
        return np.asarray(x)

    def from_numpy(self, x: np.ndarray, model: Any) -> Any:
        return self._prepare(x, model)

    def _prepare(self, inputs: Any, model: Any) -> Any:
        """Inputs as tensors; floats take the dtype the model's inputs declare (else floatx)."""
        declared = _declared_input_dtypes(model)
        if isinstance(inputs, dict):
            x: Any = {k: self._tensor(v, declared.get(k)) for k, v in inputs.items()}
        elif isinstance(inputs, tuple | list):
            x = [self._tensor(v, declared.get(i)) for i, v in enumerate(inputs)]
        else:
            x = self._tensor(inputs, declared.get(0))
        _check_input_shapes(model, tf.nest.flatten(x))
        return x

    @staticmethod
    def _tensor(value: Any, dtype: str | None) -> tf.Tensor:
        if isinstance(value, keras.KerasTensor):
            raise TypeError("inputs must be concrete tensors or arrays, not symbolic KerasTensors")
        t = value if tf.is_tensor(value) else tf.convert_to_tensor(np.asarray(value))
        if t.dtype.is_floating:
            want = tf.as_dtype(dtype) if dtype and tf.as_dtype(dtype).is_floating else (
                tf.as_dtype(keras.config.floatx()))
            if t.dtype != want:
                t = tf.cast(t, want)
        return t

    # -- layers ---------------------------------------------------------------------------
    def layer_names(self, model: Any) -> list[str]:
        return layer_paths(model)

    def layer_outputs(self, model: Any, inputs: Any) -> protocol.LayerProbe:
        """One eager pass on the first sample (no trace) recording every layer's output, for
        the core's choice of the default layer
        (:func:`~interp_core.backend.layer_choice.default_layer`)."""
        _check_model(model)
        x = _first_samples(self._prepare(inputs, model), 1)
        fmt = model_data_format(model)
        spatial = spatial_shape(tuple(tf.nest.flatten(x)[0].shape), fmt)
        return protocol.LayerProbe(layer_outputs(model, x), spatial, 1,
                                   native_channels_first=fmt == "channels_first", sample=x)

    def gradient_probe(self, model: Any, inputs: Any,
                       names: Sequence[str]) -> dict[str, np.ndarray]:
        """The default layer's top-1 gradient check from one eager pass, so that choosing a
        layer traces no ``tf.function`` (:func:`~interp_tensorflow.layers.eager_gradients`)."""
        _check_model(model)
        return eager_gradients(model, self._prepare(inputs, model), names)

    def default_layer(self, model: Any, inputs: Any) -> str:
        """Deprecated: :func:`interp_core.backend.layer_choice.default_layer` chooses."""
        return deprecated_default_layer(self, model, inputs)

    # -- compiled passes ------------------------------------------------------------------
    def _count_trace(self) -> None:
        self.trace_count += 1

    def _program(self, model: Any, mode: str, paths: tuple[str, ...], *, kind: str = "",
                 fns: Any = None, output: Any = None,
                 factory: Callable[..., Program] = Program, **options: Any) -> Program:
        key = (mode, paths, kind, fns, output, tuple(sorted(options.items())))
        with self._lock:
            programs = self._programs.setdefault(model, OrderedDict())
            program = programs.get(key)
            if program is None:
                program = factory(mode, paths, kind=kind, output=output,
                                  on_trace=self._count_trace, **options)
                programs[key] = program
                while len(programs) > MAX_PROGRAMS_PER_MODEL:
                    programs.popitem(last=False)
            else:
                programs.move_to_end(key)
            return program

    def _constants(self, model: Any, x: Any, spec: TargetSpec, output: Any) -> list[tf.Tensor]:
        """The target constants, validated against the selected output's shape."""
        if spec.kind in ("fn", "top1"):
            return []  # top-1 needs none; callables are part of the program key
        shape = self._output_shape(model, x, output) if needs_output_shape(spec) else None
        axis = class_axis(model)
        return [tf.convert_to_tensor(c) for c in plan_targets(spec, shape, axis).consts]

    def _output_shape(self, model: Any, x: Any, output: Any) -> tuple[int, ...]:
        leaves = tf.nest.flatten(x)
        n = int(leaves[0].shape[0])
        signature = tuple((tuple(t.shape[1:]), t.dtype.name) for t in leaves)
        with self._lock:
            cache = self._output_shapes.setdefault(model, {})
            key = (signature, output)
            if key not in cache:
                if len(cache) >= 64:  # new output callables each call must not pile up
                    cache.clear()
                static = _static_output_shape(model, leaves, output)
                if static is None:  # no graph to read: one eager sample
                    static = tuple(forward(model, _first_samples(x, 1), [], output).shape[1:])
                cache[key] = tuple(int(d) for d in static)
            return (n, *cache[key])

    def _run(self, program: Program, model: Any, spec: TargetSpec | None, *args: Any) -> Any:
        with self._lock:
            return program(model, spec, *args)

    # -- capture --------------------------------------------------------------------------
    def capture(
        self, model: Any, inputs: Any, layers: Sequence[Any], target: TargetSpec, *,
        gradients: bool = True, output: Any = None, native_layout: bool = False,
    ) -> protocol.Capture:
        _check_model(model)
        x = self._prepare(inputs, model)
        paths = tuple(p for p, _ in resolve(model, layers))
        consts = self._constants(model, x, target, output)
        program = self._program(model, "capture", paths, kind=target.kind, fns=_fns(target),
                                output=output, gradients=gradients, native_layout=native_layout)
        result = self._run(program, model, target, x, consts)
        acts = [t.numpy() for t in result["acts"]]
        grads = ([t.numpy() for t in result["grads"]] if result["grads"] is not None
                 else [None] * len(paths))
        top1 = result["top1"]
        return protocol.Capture(
            layers={p: protocol.LayerCapture(p, a, g)
                    for p, a, g in zip(paths, acts, grads, strict=True)},
            scores=result["scores"].numpy(),
            targets=target.resolved_indices(None if top1 is None else top1.numpy()),
            input_spatial=self._input_spatial(model, x),
        )

    def capture_hvp(
        self, model: Any, inputs: Any, layers: Sequence[Any], target: TargetSpec, *,
        output: Any = None, native_layout: bool = False,
    ) -> protocol.Capture:
        """:meth:`capture` with each layer's Hessian-vector product ``H A`` (capability
        ``"hvp"``): second-order symbolic ``tf.gradients`` in a compiled pass of its own,
        cached like :meth:`capture`'s (:class:`~interp_tensorflow.hvp.HvpProgram`; why not
        nested tapes: its module docstring)."""
        _check_model(model)
        x = self._prepare(inputs, model)
        paths = tuple(p for p, _ in resolve(model, layers))
        consts = self._constants(model, x, target, output)
        program = self._program(model, "capture_hvp", paths, kind=target.kind,
                                fns=_fns(target), output=output, factory=HvpProgram,
                                native_layout=native_layout)
        result = self._run(program, model, target, x, consts)
        top1 = result["top1"]
        return protocol.Capture(
            layers={p: protocol.LayerCapture(p, a.numpy(), g.numpy(), h.numpy())
                    for p, a, g, h in zip(paths, result["acts"], result["grads"],
                                          result["hvp"], strict=True)},
            scores=result["scores"].numpy(),
            targets=target.resolved_indices(None if top1 is None else top1.numpy()),
            input_spatial=self._input_spatial(model, x),
        )

    def _input_spatial(self, model: Any, x: Any) -> tuple[int, ...]:
        leaves = tf.nest.flatten(x)
        image = next((t for t in leaves if t.shape.rank >= 3), None)
        if image is None:
            return tuple(int(d) for d in leaves[0].shape[1:])
        return tuple(int(d) for d in spatial_shape(image.shape, self.input_layout(model)))

    # -- attention (rollout, gradient rollout, LeGrad) ------------------------------------
    def attention(
        self, model: Any, inputs: Any, target: TargetSpec, *,
        gradients: protocol.AttentionGradients = "none", output: Any = None,
        batch_size: int = 32,
    ) -> protocol.AttentionCapture:
        """The probabilities of every ``keras.layers.MultiHeadAttention`` self-attention layer
        (and their gradients), from compiled passes of ``batch_size`` samples
        (:mod:`interp_tensorflow.attention`)."""
        _check_model(model)
        return attention.capture(self, model, self._prepare(inputs, model), target,
                                 gradients=gradients, output=output, batch_size=batch_size)

    # -- forward-only work ----------------------------------------------------------------
    def predict(
        self, model: Any, inputs: Any, target: TargetSpec, *, batch_size: int = 32,
        output: Any = None,
    ) -> np.ndarray:
        _check_model(model)
        x = self._prepare(inputs, model)
        n = int(tf.nest.flatten(x)[0].shape[0])
        parts = []
        for sl in chunks(n, batch_size):
            chunk = tf.nest.map_structure(lambda t, sl=sl: t[sl], x)
            spec = target.take(sl)
            # per chunk: "fn" targets key on the chunk's own callables (baked into the trace)
            program = self._program(model, "predict", (), kind=spec.kind, fns=_fns(spec),
                                    output=output)
            consts = self._constants(model, chunk, spec, output)
            parts.append(self._run(program, model, spec, chunk, consts).numpy())
        return np.concatenate(parts) if parts else np.zeros(0, np.float32)

    def patched_scores(
        self, model: Any, inputs: Any, layer: Any, channel_masks: np.ndarray,
        target: TargetSpec, *, batch_size: int = 32, output: Any = None,
        channel_axis: int | None = None,
    ) -> np.ndarray:
        _check_model(model)
        masks = patching.channel_masks(channel_masks, channel_axis, usual_axis_only=self.name)
        x = self._prepare(inputs, model)
        if not tf.is_tensor(x):
            raise NotImplementedError("patched_scores supports single-tensor inputs")
        ((path, _),) = resolve(model, [layer])
        n = int(x.shape[0])

        def tiled() -> np.ndarray:
            per_chunk = patching.mask_chunks(len(masks), n, batch_size)
            program = self._program(model, "patch", (path,), kind=target.kind,
                                    fns=_fns(target), output=output)
            rows = []
            for start in range(0, len(masks), per_chunk):
                chunk = masks[start : start + per_chunk]
                tiled = tf.tile(x, [len(chunk)] + [1] * (x.shape.rank - 1))
                spec = target.tile(len(chunk))
                consts = self._constants(model, tiled, spec, output)
                scores = self._run(program, model, spec, tiled, consts, tf.constant(chunk))
                rows.append(scores.numpy().reshape(len(chunk), n))
            return np.concatenate(rows, axis=0) if rows else np.zeros((0, n), np.float32)

        return patching.patch_with_fallback(
            model, path,
            lambda: self._patched_expanded(model, x, path, masks, target, batch_size, output),
            tiled)

    def _patched_expanded(self, model: Any, x: tf.Tensor, path: str, masks: np.ndarray,
                          target: TargetSpec, batch_size: int, output: Any) -> np.ndarray:
        """Ablation from the layer on, one sample at a time: the compiled pass runs the
        network below the layer on the sample alone and expands the layer's output to one
        copy per mask. Every pass carries an extra all-ones mask whose score must equal the
        unpatched one; a model whose code above the layer cannot take the expanded batch
        raises :class:`~interp_core.backend.patching.ExpansionRefusedError` (the caller then
        copies the input)."""
        n = int(x.shape[0])
        per = patching.mask_chunks(len(masks), 1, batch_size)
        width = per + 1
        plain = self.predict(model, x, target, batch_size=max(1, n), output=output)
        program = self._program(model, "patch", (path,), kind=target.kind, fns=_fns(target),
                                output=output, expand=True)

        def sample_scorer(i: int) -> Callable[[np.ndarray], np.ndarray]:
            sample = x[i : i + 1]
            spec = target.take(np.array([i])).tile(width)
            consts = self._constants(model, tf.tile(sample, [width] + [1] * (x.shape.rank - 1)),
                                     spec, output)
            return lambda padded: self._run(program, model, spec, sample, consts,
                                            tf.constant(padded)).numpy()

        return patching.expanded_patch_rows(masks, plain, per, sample_scorer,
                                            (ValueError, TypeError, tf.errors.InvalidArgumentError))

    # -- gradients of the target scores at the input --------------------------------------
    def score_input_gradients(
        self, model: Any, inputs: Any, target: TargetSpec, *, batch_size: int = 32,
        output: Any = None, guided: bool = False,
    ) -> protocol.InputGradients:
        x = self._float_input(model, inputs, "score_input_gradients")
        n = int(x.shape[0])
        scores, grads, tops = [], [], []
        for sl in chunks(n, batch_size):
            chunk, spec = x[sl], target.take(sl)
            program = self._program(model, "score_gradients", (), kind=spec.kind,
                                    fns=_fns(spec), output=output, guided=bool(guided))
            result = self._run(program, model, spec, chunk,
                               self._constants(model, chunk, spec, output))
            scores.append(result["scores"].numpy())
            grads.append(result["grads"].numpy())
            tops.append(None if result["top1"] is None else result["top1"].numpy())
        top = None if tops[0] is None else np.concatenate(tops)
        return protocol.InputGradients(np.concatenate(scores), target.resolved_indices(top),
                                       np.concatenate(grads))

    def bias_gradients(
        self, model: Any, inputs: Any, target: TargetSpec, *, output: Any = None,
    ) -> protocol.BiasGradients:
        x = self._float_input(model, inputs, "bias_gradients")
        found = bias_layers(model)
        paths = tuple(p for p, _, _ in found)
        program = self._program(model, "bias_gradients", paths, kind=target.kind,
                                fns=_fns(target), output=output)
        result = self._run(program, model, target, x, self._constants(model, x, target, output))
        grads = {p: g.numpy() for p, g in result["grads"].items()}
        biases = {p: b for p, _, b in found if p in grads}
        top1 = result["top1"]
        return protocol.BiasGradients(
            scores=result["scores"].numpy(),
            targets=target.resolved_indices(None if top1 is None else top1.numpy()),
            input_gradients=result["input"].numpy(), biases=biases,
            gradients={p: grads[p] for p in paths if p in grads},
        )

    def _float_input(self, model: Any, inputs: Any, what: str) -> tf.Tensor:
        _check_model(model)
        x = self._prepare(inputs, model)
        if not tf.is_tensor(x) or not x.dtype.is_floating:
            raise NotImplementedError(f"{what} supports one floating-point input tensor")
        return x

    # -- dense weights and input gradients ------------------------------------------------
    def linear_weights(self, model: Any, fc: Any = None) -> np.ndarray:
        _check_model(model)
        if fc is None:
            dense = [(p, layer) for p, layer in walk(model)
                     if isinstance(layer, keras.layers.Dense)]
            if not dense:
                raise ValueError("the model has no Dense layer; pass fc= (a layer name or "
                                 "object) explicitly")
            path, layer = dense[-1]
        else:
            ((path, layer),) = resolve(model, [fc])
        kernel = getattr(layer, "kernel", None)
        if kernel is None or len(kernel.shape) not in (2, 3, 4, 5) or (
            len(kernel.shape) > 2 and any(int(d) != 1 for d in kernel.shape[:-2])
        ):
            raise ValueError(
                f"fc layer {path!r} ({type(layer).__name__}) has no (inputs, outputs) kernel; "
                "pass the Dense layer (or 1x1 convolution) after global average pooling"
            )
        k = np.asarray(keras.ops.convert_to_numpy(kernel), dtype=np.float32)
        return np.ascontiguousarray(k.reshape(-1, k.shape[-1]).T)

    def input_gradients(
        self, model: Any, inputs: Any, layer: Any, channels: np.ndarray, *,
        output: Any = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        _check_model(model)
        x = self._prepare(inputs, model)
        if not tf.is_tensor(x) or not x.dtype.is_floating:
            raise NotImplementedError("input_gradients supports one floating-point input tensor")
        paths = () if layer is None else tuple(p for p, _ in resolve(model, [layer]))
        idx = check_channels(channels, int(x.shape[0]))
        program = self._program(model, "input_gradients", paths, output=output)
        result = self._run(program, model, None, x, tf.constant(idx))
        where = f"layer {paths[0]!r}" if paths else "the model output"
        check_channel_range(idx, int(result["channels"]), where)
        return result["values"].numpy(), result["grads"].numpy()


# -- helpers ------------------------------------------------------------------------------------
def _check_model(model: Any) -> None:
    if keras.backend.backend() != "tensorflow":
        raise RuntimeError(
            f"Keras runs on the {keras.backend.backend()!r} backend; interp-tensorflow explains "
            "Keras models on TensorFlow (set KERAS_BACKEND=tensorflow before importing keras)"
        )
    if not is_keras_model(model):
        raise TypeError(
            f"interp-tensorflow explains Keras 3 models (keras.Model / keras.layers.Layer), got "
            f"{type(model).__module__}.{type(model).__qualname__}"
        )
    if not model.built:
        raise ValueError(
            f"model {model.name!r} has not been built, so its weights do not exist yet: build it "
            "first, by calling it once on a batch (model(x)) or with model.build(input_shape), "
            "or give it a keras.Input"
        )


def _check_input_shapes(model: Any, leaves: Sequence[tf.Tensor]) -> None:
    """Compare the inputs with the shapes a graph model declares; a ``ValueError`` that shows
    both instead of Keras' error from deep inside the call."""
    try:
        declared = model.inputs
    except (AttributeError, ValueError):
        return
    if not declared or len(declared) != len(leaves):
        return
    for i, (spec, t) in enumerate(zip(declared, leaves, strict=True)):
        want, got = tuple(spec.shape), tuple(int(d) for d in t.shape)
        fits = len(want) == len(got) and all(
            w is None or w == g for w, g in zip(want[1:], got[1:], strict=True))
        if not fits:
            expected = "(N, " + ", ".join("?" if w is None else str(w) for w in want[1:]) + ")"
            which = f"input {i}" if len(leaves) > 1 else "the input"
            raise ValueError(
                f"{which} has shape {got}, but model {model.name!r} expects {expected} "
                f"(data_format {model_data_format(model)!r})"
            )


def _fns(spec: TargetSpec) -> Any:
    return spec.fns if spec.kind == "fn" else None


def _first_samples(x: Any, n: int) -> Any:
    return tf.nest.map_structure(lambda t: t[:n], x)


def _declared_input_dtypes(model: Any) -> dict[Any, str]:
    """Input position/name -> dtype the model declares (graph models only)."""
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        return {}
    if not inputs:
        return {}
    found: dict[Any, str] = {}
    for i, t in enumerate(inputs):
        found[i] = t.dtype
        name = getattr(t, "name", None)
        if name:
            found[name] = t.dtype
    return found


def _static_output_shape(model: Any, leaves: Sequence[tf.Tensor], output: Any
                         ) -> tuple[int, ...] | None:
    """The selected output's per-sample shape from the model's graph, if it has one and the
    inputs match the graph's declared shapes; None where only running the model can tell."""
    if callable(output):
        return None
    try:
        declared = model.inputs
        structure = model.output
    except (AttributeError, ValueError):
        return None
    if not declared or len(declared) != len(leaves):
        return None
    for spec, t in zip(declared, leaves, strict=True):
        want, got = tuple(spec.shape[1:]), tuple(t.shape[1:])
        if len(want) != len(got) or any(w is not None and w != g for w, g in zip(want, got,
                                                                                 strict=True)):
            return None
    if output == "logits" and isinstance(structure, keras.KerasTensor):
        selected = structure
    else:
        try:
            selected = select_output(structure, output)
        except (KeyError, IndexError, TypeError):
            return None
    if not isinstance(selected, keras.KerasTensor):
        return None
    shape = tuple(selected.shape[1:])
    if any(d is None for d in shape):
        return None
    return tuple(int(d) for d in shape)

