"""Keras layer addressing and call interception.

Names: a layer of the model is addressed by its name; a layer inside a nested model (a
pretrained-style base inside a Functional model) or inside a layer that holds sublayers by the
path of names, ``"base/block5_conv3"``. Keras 3 forbids ``/`` in layer names, so paths are
unambiguous.

Interception: to read (or patch) a layer's output, the layer's ``call`` is wrapped for the
duration of one forward pass (an instance attribute that shadows the class method, removed in
``finally``). This works the same for Sequential, Functional, subclassed and nested models:
Keras reaches every layer through ``Layer.__call__`` -> ``self.call``, and a nested base model is
just another layer whose own ``call`` runs its inner layers on the outer graph's tensors, so
there is never a "Graph disconnected" error and no model is cloned or rebuilt. Inside a
``tf.function`` the wrapper runs only while tracing; later calls of the compiled function never
touch the model object.
"""

from __future__ import annotations

import contextlib
import difflib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from interp_core.backend.layers import (
    first_leaf,
    not_a_tensor_error,
    replace_first,
    resolve_layer_paths,
    unknown_layer_error,
)
from interp_core.backend.protocol import LayerOutput

#: A hook gets the layer's (first) output tensor and returns the tensor to pass on.
Hook = Callable[[tf.Tensor], tf.Tensor]

_MISSING = object()
_SQUASHING = ("softmax", "sigmoid")


# -- structure ----------------------------------------------------------------------------------
def children(layer: Any) -> list[Any]:
    """Direct sublayers of ``layer`` (model layers, or a custom layer's tracked sublayers)."""
    subs = getattr(layer, "layers", None)
    if not isinstance(subs, list | tuple):
        flatten = getattr(layer, "_flatten_layers", None)
        subs = list(flatten(include_self=False, recursive=False)) if flatten else []
    return [s for s in subs if isinstance(s, keras.layers.Layer)
            and not isinstance(s, keras.layers.InputLayer)]


def walk(model: Any) -> list[tuple[str, Any]]:
    """Every addressable layer as ``(path, layer)``, depth first, in definition order."""
    found: list[tuple[str, Any]] = []
    seen: set[int] = set()

    def visit(layer: Any, prefix: str) -> None:
        for child in children(layer):
            path = prefix + child.name
            found.append((path, child))
            if id(child) not in seen:  # a shared layer is listed under each path, walked once
                seen.add(id(child))
                visit(child, path + "/")

    visit(model, "")
    return found


def layer_paths(model: Any) -> list[str]:
    """All addressable layer paths of ``model``."""
    return [path for path, _ in walk(model)]


def resolve(model: Any, layers: Sequence[Any]) -> list[tuple[str, Any]]:
    """Turn names, paths or layer objects into ``(path, layer)`` pairs.

    A bare name that is not a top-level layer but names exactly one nested layer is accepted
    (``"block5_conv3"`` for ``"vgg16/block5_conv3"``).

    Raises
    ------
    ValueError
        Unknown name (the message lists the closest paths, nested ones with their prefix), a
        layer object that is not part of the model, or a duplicate.
    """
    pairs = walk(model)
    by_path = dict(pairs)

    def paths_by_id() -> dict[int, str]:
        by_id: dict[int, str] = {}
        for path, layer in pairs:
            by_id.setdefault(id(layer), path)  # a layer reused under two paths: the first
        return by_id

    paths = resolve_layer_paths(
        layers, keras.layers.Layer, paths_by_id, lambda name: _lookup(name, by_path),
        foreign_layer=lambda layer: (
            f"layer {layer.name!r} ({type(layer).__name__}) is not part of the model; pass one "
            "of its layers or a name from layer_names(model)"),
        expected="a layer name (nested: 'base/block5_conv3') or a Keras layer object",
    )
    return [(path, by_path[path]) for path in paths]


def _lookup(name: str, by_path: dict[str, Any]) -> str:
    if name in by_path:
        return name
    leaf_matches = [p for p in by_path if p.rsplit("/", 1)[-1] == name]
    if len(leaf_matches) == 1:
        return leaf_matches[0]
    if len(leaf_matches) > 1:
        raise ValueError(f"layer name {name!r} is ambiguous: it matches {leaf_matches}; "
                         "pass the full path")
    paths = list(by_path)
    close = difflib.get_close_matches(name, paths, n=6, cutoff=0.5)
    leaves = {p.rsplit("/", 1)[-1]: p for p in paths}
    for leaf in difflib.get_close_matches(name.rsplit("/", 1)[-1], list(leaves), n=6, cutoff=0.6):
        if leaves[leaf] not in close:
            close.append(leaves[leaf])
    raise unknown_layer_error(
        name, paths, "interp_core.get_backend('tensorflow').layer_names(model)",
        close=close[:8], detail="addressable layers, nested ones as 'outer/inner'")


# -- layouts ------------------------------------------------------------------------------------
def model_data_format(model: Any) -> str:
    """The data format of the first layer that declares one, else Keras's global setting."""
    for _, layer in walk(model):
        fmt = getattr(layer, "data_format", None)
        if fmt in ("channels_first", "channels_last"):
            return fmt
    return keras.config.image_data_format()


def layer_data_format(layer: Any, default: str) -> str:
    """``layer.data_format``; for a nested model its last spatial sublayer's; else ``default``."""
    fmt = getattr(layer, "data_format", None)
    if fmt in ("channels_first", "channels_last"):
        return fmt
    for _, sub in reversed(walk(layer)):
        fmt = getattr(sub, "data_format", None)
        if fmt in ("channels_first", "channels_last"):
            return fmt
    return default


def spatial_shape(shape: Sequence[Any], data_format: str) -> tuple[int, ...]:
    """Spatial axes of a ``(N, *spatial, C)`` or ``(N, C, *spatial)`` shape (rank >= 3)."""
    dims = tuple(shape)
    return tuple(dims[2:]) if data_format == "channels_first" else tuple(dims[1:-1])


# -- the logit behind a final softmax / sigmoid -------------------------------------------------
def output_layer(model: Any) -> Any:
    """The layer that produces the model's (first) output, descending into nested models."""
    layer = None
    try:
        outputs = model.outputs
    except (AttributeError, ValueError):
        outputs = None
    if outputs:
        history = getattr(outputs[0], "_keras_history", None)
        layer = getattr(history, "operation", None) if history is not None else None
    if layer is None:
        subs = children(model)
        layer = subs[-1] if subs else None
    if layer is not None and children(layer) and isinstance(layer, keras.Model):
        return output_layer(layer)
    return layer


def squashing(layer: Any) -> str | None:
    """``"softmax"``/``"sigmoid"`` when ``layer`` ends in that activation, else None."""
    if isinstance(layer, keras.layers.Softmax):
        return "softmax"
    name = getattr(getattr(layer, "activation", None), "__name__", None)
    return name if name in _SQUASHING else None


# -- interception -------------------------------------------------------------------------------
def _set(obj: Any, attr: str, value: Any) -> Any:
    """Set an instance attribute without Keras tracking; return what restores it."""
    previous = obj.__dict__.get(attr, _MISSING)
    object.__setattr__(obj, attr, value)
    return previous


def _restore(obj: Any, attr: str, previous: Any) -> None:
    if previous is _MISSING:
        object.__delattr__(obj, attr)
    else:
        object.__setattr__(obj, attr, previous)


@contextlib.contextmanager
def intercepted(hooks: Sequence[tuple[str, Any, Hook]],
                logits_of: Any = None, logits_store: dict[str, Any] | None = None
                ) -> Iterator[None]:
    """Wrap each layer's ``call`` so that ``hook(output)`` sees (and may replace) its output.

    Parameters
    ----------
    hooks : sequence of (path, layer, hook)
        The hook gets the first output tensor; what it returns is passed on downstream.
    logits_of : layer, optional
        A final softmax/sigmoid layer whose pre-activation input is recorded in
        ``logits_store["logits"]`` (its ``activation`` is wrapped by a recorder that returns
        exactly what the activation returns; a ``Softmax`` layer's input is recorded).

    Every wrapper is removed in ``finally``, so the model is as before even after an error.
    """
    undo: list[tuple[Any, str, Any]] = []
    try:
        for path, layer, hook in hooks:
            # A quantized layer runs ``quantized_call`` instead of ``call``.
            attr = "quantized_call" if getattr(layer, "quantization_mode", None) else "call"
            wrapped = _wrap_call(path, getattr(layer, attr), hook)
            undo.append((layer, attr, _set(layer, attr, wrapped)))
        if logits_of is not None and logits_store is not None:
            if isinstance(logits_of, keras.layers.Softmax):
                undo.append((logits_of, "call", _set(
                    logits_of, "call", _record_input(logits_of.call, logits_store))))
            else:
                activation = logits_of.activation

                def recorder(x: tf.Tensor, *args: Any, **kwargs: Any) -> tf.Tensor:
                    logits_store["logits"] = x
                    return activation(x, *args, **kwargs)

                undo.append((logits_of, "activation", _set(logits_of, "activation", recorder)))
        yield
    finally:
        for obj, attr, previous in reversed(undo):
            _restore(obj, attr, previous)


def _wrap_call(path: str, call: Callable[..., Any], hook: Hook) -> Callable[..., Any]:
    def call_and_hook(*args: Any, **kwargs: Any) -> Any:
        out = call(*args, **kwargs)
        t = first_leaf(out, tf.is_tensor)
        if t is None:
            raise not_a_tensor_error(path, out)
        new = hook(t)
        return out if new is t else replace_first(out, new, tf.is_tensor)

    return call_and_hook


def _record_input(call: Callable[..., Any], store: dict[str, Any]) -> Callable[..., Any]:
    def call_and_record(inputs: Any, *args: Any, **kwargs: Any) -> Any:
        store["logits"] = inputs
        return call(inputs, *args, **kwargs)

    return call_and_record


# -- the dry run of the default layer -----------------------------------------------------------
def layer_outputs(model: Any, x: Any) -> list[LayerOutput]:
    """What every layer emitted in one eager pass of ``model`` on ``x``, in the order the outputs
    were produced, shapes in the core's channels-last layout (a layer that ran several times:
    its last run)."""
    fmt = model_data_format(model)
    seen: dict[str, LayerOutput] = {}
    hooks = []
    visited: set[int] = set()
    for path, layer in walk(model):
        if id(layer) in visited:
            continue
        visited.add(id(layer))
        layer_fmt = layer_data_format(layer, fmt)

        def hook(t: tf.Tensor, path: str = path, layer_fmt: str = layer_fmt,
                 type_name: str = type(layer).__name__) -> tf.Tensor:
            shape = tuple(int(d) for d in t.shape)
            if layer_fmt == "channels_first" and len(shape) >= 3:
                shape = (shape[0], *shape[2:], shape[1])
            calls = seen.pop(path).calls + 1 if path in seen else 1
            seen[path] = LayerOutput(path, shape, type_name, calls)
            return t

        hooks.append((path, layer, hook))
    with intercepted(hooks):
        model(x, training=False)
    return list(seen.values())


# -- biased layers (FullGrad) -------------------------------------------------------------------
_CONVOLUTIONS = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)


def is_bias_convolution(layer: Any) -> bool:
    """A convolution that adds a bias (its activation, if any, comes after the bias)."""
    return isinstance(layer, _CONVOLUTIONS) and bool(getattr(layer, "use_bias", False)) \
        and getattr(layer, "bias", None) is not None


def effective_bias(layer: Any) -> np.ndarray | None:
    """The per-channel bias ``layer`` adds in inference mode, float32 ``(C,)``, or None.

    Convolutions: their ``bias``. ``BatchNormalization``: ``beta - moving_mean * gamma /
    sqrt(moving_variance + epsilon)`` (``beta`` 0 without ``center``, ``gamma`` 1 without
    ``scale``).
    """
    if is_bias_convolution(layer):
        return np.asarray(keras.ops.convert_to_numpy(layer.bias), np.float32).reshape(-1)
    if isinstance(layer, keras.layers.BatchNormalization):
        value = lambda v: np.asarray(keras.ops.convert_to_numpy(v), np.float64)  # noqa: E731
        mean, var = value(layer.moving_mean), value(layer.moving_variance)
        gamma = value(layer.gamma) if layer.scale else np.ones_like(mean)
        beta = value(layer.beta) if layer.center else np.zeros_like(mean)
        return (beta - mean * gamma / np.sqrt(var + layer.epsilon)).astype(np.float32)
    return None


def bias_layers(model: Any) -> list[tuple[str, Any, np.ndarray]]:
    """``(path, layer, effective bias)`` of every biased convolution and batch norm, each
    layer once, depth first."""
    found, seen = [], set()
    for path, layer in walk(model):
        if id(layer) in seen:
            continue
        seen.add(id(layer))
        bias = effective_bias(layer)
        if bias is not None:
            found.append((path, layer, bias))
    return found


@contextlib.contextmanager
def recording_pre_activations(layers: Sequence[tuple[str, Any]],
                              record: Callable[[str, tf.Tensor], tf.Tensor]) -> Iterator[None]:
    """For the block, each convolution's activation first passes its input (the convolution
    plus bias, before the activation) through ``record(path, t)``; removed in ``finally``."""
    undo: list[tuple[Any, str, Any]] = []
    try:
        for path, layer in layers:
            activation = layer.activation

            def recorded(x: tf.Tensor, *args: Any, path: str = path,
                         activation: Any = activation, **kwargs: Any) -> tf.Tensor:
                return activation(record(path, x), *args, **kwargs)

            undo.append((layer, "activation", _set(layer, "activation", recorded)))
        yield
    finally:
        for obj, attr, previous in reversed(undo):
            _restore(obj, attr, previous)


def eager_gradients(model: Any, x: Any, names: Sequence[str]) -> dict[str, Any]:
    """Gradients of the top-1 output of ``model(x)`` at the layers ``names``, from one eager
    pass (no ``tf.function`` trace: the default layer's check stays cheap), channels-last.

    Raises
    ------
    ValueError
        The model's (first) output is not ``(N, classes)``.
    """
    fmt = model_data_format(model)
    store: dict[str, tf.Tensor] = {}
    hooks = []
    for path, layer in resolve(model, list(names)):

        def hook(t: tf.Tensor, path: str = path) -> tf.Tensor:
            tape.watch(t)
            store[path] = t
            return t

        hooks.append((path, layer, hook))
    with tf.GradientTape() as tape, intercepted(hooks):
        out = first_leaf(model(x, training=False), tf.is_tensor)
        if out is None or out.shape.rank != 2:
            raise ValueError("the default layer's check needs a (N, classes) output")
        score = tf.reduce_sum(tf.reduce_max(out, axis=1))
    paths = [p for p in names if p in store]
    grads = tape.gradient(score, [store[p] for p in paths])
    found = {}
    for path, grad in zip(paths, grads, strict=True):
        if grad is None:
            grad = tf.zeros_like(store[path])
        layer_fmt = layer_data_format(resolve(model, [path])[0][1], fmt)
        rank = grad.shape.rank
        if layer_fmt == "channels_first" and rank >= 3:
            grad = tf.transpose(grad, [0, *range(2, rank), 1])
        found[path] = grad.numpy()
    return found
