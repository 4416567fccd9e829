"""The Keras model zoo of the sweep: every ``keras.applications`` model with random weights
(``weights=None``) at its smallest allowed input, and an independent Grad-CAM reference.

The reference splits the Functional model at the layer (``keras.Model(inputs, [layer.output,
model.output])``), takes the gradient of the target logit with a ``tf.GradientTape`` by hand and
computes Grad-CAM in TensorFlow. Models are built with ``classifier_activation=None`` so that the
logit is the output (interp-core would otherwise explain the logit behind the softmax).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from zoo_common import Result, agrees, timed

import interp_core as ic
from interp_core.datasets.shapes import make_shapes

#: Every keras.applications model: (name, input side, slow). The side is the smallest that the
#: application allows (32 for most; Inception 75, Xception 71) and that leaves its last stage
#: a grid of more than one position (64 for the stride-32 networks, 139 for Inception): at 32
#: pixels most end in 1x1 maps, which no default or named layer can make informative.
APPLICATIONS = [
    ("ConvNeXtTiny", 64, False), ("ConvNeXtSmall", 64, True), ("ConvNeXtBase", 64, True),
    ("ConvNeXtLarge", 64, True), ("ConvNeXtXLarge", 64, True),
    ("DenseNet121", 64, False), ("DenseNet169", 64, True), ("DenseNet201", 64, True),
    ("EfficientNetB0", 64, False), ("EfficientNetB1", 64, True), ("EfficientNetB2", 64, True),
    ("EfficientNetB3", 64, True), ("EfficientNetB4", 64, True), ("EfficientNetB5", 64, True),
    ("EfficientNetB6", 64, True), ("EfficientNetB7", 64, True),
    ("EfficientNetV2B0", 64, False), ("EfficientNetV2B1", 64, True),
    ("EfficientNetV2B2", 64, True), ("EfficientNetV2B3", 64, True),
    ("EfficientNetV2S", 64, True), ("EfficientNetV2M", 64, True), ("EfficientNetV2L", 64, True),
    ("InceptionResNetV2", 139, True), ("InceptionV3", 139, False),
    ("MobileNet", 64, False), ("MobileNetV2", 64, False), ("MobileNetV3Small", 64, False),
    ("MobileNetV3Large", 64, True), ("NASNetMobile", 64, False), ("NASNetLarge", 64, True),
    ("ResNet50", 64, False), ("ResNet101", 64, True), ("ResNet152", 64, True),
    ("ResNet50V2", 64, False), ("ResNet101V2", 64, True), ("ResNet152V2", 64, True),
    ("VGG16", 64, False), ("VGG19", 64, True), ("Xception", 96, False),
]

#: Layer types a "named layer" is chosen among (the last one of these in the model).
CONVOLUTIONS = ("Conv2D", "DepthwiseConv2D", "SeparableConv2D")


@dataclass(frozen=True)
class Case:
    name: str
    size: int
    slow: bool = False
    family: str = ""

    @property
    def id(self) -> str:
        return f"keras.applications/{self.name}"

    def build(self) -> keras.Model:
        keras.utils.set_random_seed(0)
        factory: Callable[..., keras.Model] = getattr(keras.applications, self.name)
        kwargs: dict[str, Any] = {"weights": None, "classes": 10,
                                  "input_shape": (self.size, self.size, 3),
                                  "classifier_activation": None}
        if self.name.startswith("NASNet"):
            kwargs["input_shape"] = (self.size, self.size, 3)
        return factory(**kwargs)


CASES = [Case(name, size, slow, name.rstrip("0123456789").removesuffix("V").rstrip("B"))
         for name, size, slow in APPLICATIONS]


def make_input(size: int) -> np.ndarray:
    """Shapes images ``(1, size, size, 3)`` scaled to [-1, 1]: structured, not noise."""
    return (make_shapes(1, size=size, seed=3).images * 2.0 - 1.0).astype(np.float32)


def named_layer(model: keras.Model) -> str:
    """The model's last convolution with more than one output position, by name (MobileNet's
    classifier is a 1x1 convolution on the pooled features)."""
    return [layer.name for layer in model.layers
            if type(layer).__name__ in CONVOLUTIONS
            and int(np.prod(layer.output.shape[1:3])) > 1][-1]


def _minmax(m: tf.Tensor) -> tf.Tensor:
    lo = tf.reduce_min(m, axis=(1, 2), keepdims=True)
    hi = tf.reduce_max(m, axis=(1, 2), keepdims=True)
    span = hi - lo
    flat = span <= 1e-6 * tf.maximum(tf.abs(hi), tf.abs(lo))
    return tf.where(flat, tf.zeros_like(m), (m - lo) / tf.where(flat, 1.0, span))


def reference_gradcam(model: keras.Model, x: np.ndarray, layer: str, *, relu: bool = True
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Grad-CAM of the top-1 class at ``layer`` by hand: ``(maps (N, H, W), raw (N, h, w))``.

    The gradient pass runs as a ``tf.function``, as interp-core's does: random-weight networks
    such as EfficientNetV2L reach activations of 1e7, where eager and graph execution round
    differently by far more than the tolerance.
    """
    split = keras.Model(model.inputs, [model.get_layer(layer).output, model.output])

    @tf.function
    def raw_map(images: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            acts, logits = split(images, training=False)
            tape.watch(acts)
            classes = tf.argmax(logits, axis=1)
            score = tf.reduce_sum(tf.gather(logits, classes, axis=1, batch_dims=1))
        grads = tape.gradient(score, acts)
        weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)
        return tf.reduce_sum(weights * acts, axis=-1)

    raw = raw_map(tf.convert_to_tensor(x))
    cam = _minmax(tf.nn.relu(raw) if relu else raw)
    up = tf.image.resize(cam[..., None], x.shape[1:3], method="bilinear")[..., 0]
    return _minmax(up).numpy(), raw.numpy()


def check(case: Case) -> Result:
    """Grad-CAM with the default layer and with the last convolution against the reference."""
    result = Result(case.id, case.family, "keras.applications")
    try:
        with timed(result):
            model = case.build()
            x = make_input(case.size)
            exp = ic.GradCAM(model).explain(x)
            (result.default_layer,) = exp.layers
            result.default_ok = _agrees(exp, model, x, result.default_layer, case)
            result.named_layer = named_layer(model)
            named = ic.GradCAM(model, result.named_layer).explain(x)
            result.named_ok = _agrees(named, model, x, result.named_layer, case)
    finally:
        keras.backend.clear_session()
    return result


def _agrees(exp: Any, model: keras.Model, x: np.ndarray, layer: str, case: Case) -> bool:
    """:func:`zoo_common.agrees` with this module's reference at ``layer``."""
    return agrees(case.id, layer, exp.raw[layer], exp.maps,
                  lambda relu: reference_gradcam(model, x, layer, relu=relu),
                  lambda: ic.GradCAM(model, layer, relu=False)(x))
