"""Test helpers for the TensorFlow adapter: the reference models in Keras 3, and state snapshots.

Imported only by tests (it imports keras). A third-party Keras-based adapter can run the
conformance suite on these with ``helpers = interp_tensorflow.testing`` in a subclass of
:class:`interp_core.testing.conformance.ConformanceFromModule`.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from interp_core.testing import reference as ref
from interp_tensorflow import demo_vit


def reference_model(weights: ref.ReferenceWeights | None = None, variant: str = "gap", *,
                    data_format: str = "channels_last") -> keras.Model:
    """The reference model ``variant`` as a Functional Keras model, from NumPy ``weights``.

    Layers ``"features"`` (Conv2D, ReLU), then ``"gap"`` or ``"flatten"``, then ``"fc"`` (Dense;
    a 1x1 Conv2D for ``"segmentation"``). ``data_format="channels_first"`` builds it for
    ``(N, 3, H, W)`` inputs; its Flatten still reads ``(h, w, c)`` order, as Keras defines it.
    """
    w = ref.ReferenceModel(weights, variant).weights  # checks the weights fit the variant
    h, wd, c = ref.input_shape(variant)
    shape = (h, wd, c) if data_format == "channels_last" else (c, h, wd)
    inp = keras.Input(shape, name="image")
    a = keras.layers.Conv2D(ref.CHANNELS, ref.KERNEL, padding="valid", activation="relu",
                            data_format=data_format, name="features")(inp)
    if variant == "gap":
        hidden = keras.layers.GlobalAveragePooling2D(data_format=data_format, name="gap")(a)
        fc = keras.layers.Dense(w.classes, name="fc")
        kernel = w.fc_weight.T
    elif variant == "flatten":
        hidden = keras.layers.Flatten(data_format=data_format, name="flatten")(a)
        fc = keras.layers.Dense(w.classes, name="fc")
        kernel = w.fc_weight.T
    else:
        hidden = a
        fc = keras.layers.Conv2D(w.classes, 1, data_format=data_format, name="fc")
        kernel = w.fc_weight.T[None, None]
    model = keras.Model(inp, fc(hidden), name=f"reference_{variant}")
    model.get_layer("features").set_weights([w.conv_kernel, w.conv_bias])
    fc.set_weights([kernel, w.fc_bias])
    return model


def reference_transformer(weights: dict[str, np.ndarray], config: Any = None, *,
                          data_format: str = "channels_last") -> keras.Model:
    """The reference transformer (:mod:`interp_core.testing.reference_transformer`) as a
    Keras model: the demo ViT (:func:`interp_tensorflow.demo_vit.build`) holding ``weights``
    (sizes from ``config``, a ``ViTConfig``, else read from the weights), taking
    ``(N, H, W, C)`` images (``(N, C, H, W)`` for ``data_format="channels_first"``)."""
    return demo_vit.build(weights, config, data_format=data_format)


def to_input(x: np.ndarray) -> Any:
    """NumPy ``(N, H, W, C)`` -> a ``tf.Tensor`` (channels last, as the model takes it)."""
    import tensorflow as tf

    return tf.convert_to_tensor(np.asarray(x))


def structured_output_model(model: keras.Model, kind: str) -> tuple[keras.Model, str]:
    """``model`` (Functional) returning ``(logits, aux)`` (``kind="tuple"``) or ``{"aux": ...,
    "logits": ...}`` (``"dict"``), with ``aux = -logits``; and its ``"features"`` layer."""
    logits = model.output
    aux = keras.layers.Rescaling(-1.0, name="aux")(logits)
    outputs = (logits, aux) if kind == "tuple" else {"aux": aux, "logits": logits}
    return keras.Model(model.input, outputs, name=f"{model.name}_{kind}"), "features"


def model_state(model: keras.Model) -> dict[str, Any]:
    """The suite's ``model_state`` snapshot of a Keras model: variable values, every layer's
    ``trainable`` flag, its attribute names (nothing added or removed) and its ``call`` (not
    patched)."""
    layers = list(model._flatten_layers())
    return {
        "variables": [(v.path, np.asarray(v.numpy()).copy()) for v in model.variables],
        "trainable": [(layer.name, layer.trainable) for layer in layers],
        "attributes": [(layer.name, sorted(vars(layer))) for layer in layers],
        "calls": [(layer.name, id(getattr(layer.call, "__func__", layer.call)))
                  for layer in layers],
        "built": [(layer.name, layer.built) for layer in layers],
    }
