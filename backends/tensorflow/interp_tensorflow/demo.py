"""The demo shapes classifier (:mod:`interp_core.datasets.demo`) as a Keras model."""

from __future__ import annotations

import keras
import numpy as np


def build(weights: dict[str, np.ndarray]) -> keras.Model:
    """A Sequential Keras model holding ``weights`` (channels-last, as stored).

    Input ``(N, H, W, 3)`` in [0, 1] (64 x 64 for the bundled weights; any size works);
    logits ``(N, 5)``. Layer names ``block1``..``block3``, ``pool1``, ``pool2``, ``gap``, ``fc``.
    """
    classes = int(weights["fc/bias"].shape[0])
    layers: list[keras.layers.Layer] = [keras.Input((None, None, 3), name="image")]
    widths = [int(weights[f"block{i}/bias"].shape[0]) for i in (1, 2, 3)]
    for i, width in enumerate(widths, start=1):
        layers.append(keras.layers.Conv2D(width, 3, padding="same", activation="relu",
                                          name=f"block{i}"))
        if i < 3:
            layers.append(keras.layers.MaxPooling2D(2, name=f"pool{i}"))
    layers += [keras.layers.GlobalAveragePooling2D(name="gap"),
               keras.layers.Dense(classes, name="fc")]
    model = keras.Sequential(layers, name="demo_shapes")
    for i in (1, 2, 3):
        model.get_layer(f"block{i}").set_weights(
            [weights[f"block{i}/kernel"], weights[f"block{i}/bias"]])
    model.get_layer("fc").set_weights([weights["fc/kernel"], weights["fc/bias"]])
    return model
