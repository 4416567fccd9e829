"""Small Keras 3 models for the TensorFlow adapter's tests and benchmark (no downloads)."""

from __future__ import annotations

import keras
import numpy as np
from interp_tensorflow import testing

from interp_core.testing.reference import ReferenceWeights


def reference_model(w: ReferenceWeights, data_format: str = "channels_last") -> keras.Model:
    """The "gap" reference model (interp_core.testing.reference), from
    :func:`interp_tensorflow.testing.reference_model`."""
    return testing.reference_model(w, "gap", data_format=data_format)


def small_convnet(classes: int = 10, activation: str | None = None, size: int = 16,
                  name: str = "convnet", seed: int = 0) -> keras.Model:
    """A Functional classifier with BatchNorm, a residual add and Dropout (NHWC)."""
    keras.utils.set_random_seed(seed)
    inp = keras.Input((size, size, 3), name="image")
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="stem")(inp)
    y = keras.layers.Conv2D(8, 3, padding="same", name="conv1")(x)
    y = keras.layers.BatchNormalization(name="bn1")(y)
    x = keras.layers.ReLU(name="relu1")(keras.layers.Add(name="add1")([x, y]))
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu",
                            name="conv2")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    x = keras.layers.Dropout(0.5, name="drop")(x)
    out = keras.layers.Dense(classes, activation=activation, name="fc")(x)
    return keras.Model(inp, out, name=name)


def nested_model(size: int = 16, seed: int = 0) -> keras.Model:
    """A pretrained-style base (its own Functional model named "base") inside a classifier."""
    keras.utils.set_random_seed(seed)
    b_in = keras.Input((size, size, 3))
    b = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="block1_conv")(b_in)
    b = keras.layers.MaxPooling2D(2, name="block1_pool")(b)
    b = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="block2_conv")(b)
    base = keras.Model(b_in, b, name="base")
    inp = keras.Input((size, size, 3), name="image")
    x = base(inp)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    out = keras.layers.Dense(4, name="fc")(x)
    return keras.Model(inp, out, name="classifier")


class SubclassedNet(keras.Model):
    """A subclassed model (no graph): conv blocks in ``call``, a custom block layer inside."""

    def __init__(self, classes: int = 6) -> None:
        super().__init__(name="subclassed")
        self.stem = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="stem")
        self.block = ResidualBlock(8, name="block")
        self.unused = keras.layers.Conv2D(4, 1, name="unused")
        self.head = keras.layers.Dense(classes, name="head")

    def call(self, x: object, training: bool | None = None) -> object:
        x = self.block(self.stem(x), training=training)
        return self.head(keras.ops.mean(x, axis=(1, 2)))


class ResidualBlock(keras.layers.Layer):
    """A custom layer holding sublayers (addressed as ``"block/conv"``)."""

    def __init__(self, width: int, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.conv = keras.layers.Conv2D(width, 3, padding="same", name="conv")
        self.norm = keras.layers.BatchNormalization(name="norm")

    def call(self, x: object, training: bool | None = None) -> object:
        return keras.ops.relu(x + self.norm(self.conv(x), training=training))


def multi_input_model(seed: int = 0) -> keras.Model:
    """Image + metadata vector -> 3 classes."""
    keras.utils.set_random_seed(seed)
    image = keras.Input((12, 12, 3), name="image")
    meta = keras.Input((4,), name="meta")
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv")(image)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    m = keras.layers.Dense(8, activation="relu", name="meta_dense")(meta)
    h = keras.layers.Concatenate(name="concat")([x, m])
    return keras.Model([image, meta], keras.layers.Dense(3, name="fc")(h), name="multi")


def cat_vs_dog(size: int = 32, seed: int = 0) -> keras.Model:
    """The binary model of the original CAM / Grad-CAM reports: a VGG16 base (weights=None),
    GlobalAveragePooling2D and Dense(1, sigmoid)."""
    keras.utils.set_random_seed(seed)
    base = keras.applications.VGG16(weights=None, include_top=False,
                                    input_shape=(size, size, 3))
    inp = keras.Input((size, size, 3), name="image")
    x = keras.layers.GlobalAveragePooling2D(name="gap")(base(inp))
    out = keras.layers.Dense(1, activation="sigmoid", name="fc")(x)
    return keras.Model(inp, out, name="cat_vs_dog")


def random_images(n: int, size: int = 16, seed: int = 1, channels: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 1, (n, size, size, channels)).astype(np.float32)
