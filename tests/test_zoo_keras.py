"""The Keras sweep: every keras.applications model (random weights) with the default layer and
with its last convolution against a hand-written GradientTape reference
(``tests/zoo_keras.py``); and a channels-first Keras model. The slower half is marked ``slow``.
With ``INTERP_ZOO_RESULTS=DIR`` each outcome is appended to ``DIR/keras.jsonl`` for
``scripts/make_models_table.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import require_framework

tf = require_framework("tensorflow", "tensorflow")
keras = require_framework("tensorflow", "keras")

import zoo_common  # noqa: E402
import zoo_keras  # noqa: E402

import interp_core as ic  # noqa: E402


@pytest.mark.parametrize("case", [zoo_common.param(c) for c in zoo_keras.CASES])
def test_gradcam_default_and_named_layer_match_the_reference(case: zoo_keras.Case) -> None:
    result = zoo_keras.check(case)
    zoo_common.record(result, "keras")
    zoo_common.assert_passed(result)


def test_every_application_is_swept() -> None:
    names = {n for n in dir(keras.applications)
             if n[0].isupper() and callable(getattr(keras.applications, n))}
    assert names == {c.name for c in zoo_keras.CASES}
    assert sum(c.slow for c in zoo_keras.CASES) >= len(zoo_keras.CASES) // 3


def _channels_first_model() -> keras.Model:
    keras.utils.set_random_seed(0)
    inp = keras.Input((3, 32, 32))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu",
                            data_format="channels_first", name="conv1")(inp)
    x = keras.layers.MaxPooling2D(data_format="channels_first", name="pool")(x)
    x = keras.layers.Conv2D(16, 3, padding="same", data_format="channels_first", name="conv2")(x)
    x = keras.layers.Activation("relu", name="act")(x)
    x = keras.layers.GlobalAveragePooling2D(data_format="channels_first", name="gap")(x)
    return keras.Model(inp, keras.layers.Dense(4, name="fc")(x))


def test_channels_first_keras_model() -> None:
    model = _channels_first_model()
    x = zoo_keras.make_input(32).transpose(0, 3, 1, 2)               # (1, 3, 32, 32)
    exp = ic.GradCAM(model).explain(x)
    assert exp.layers == ["act"]
    split = keras.Model(model.inputs, [model.get_layer("act").output, model.output])
    with tf.GradientTape() as tape:
        acts, logits = split(x, training=False)
        score = tf.reduce_max(logits, axis=1)
    grads = tape.gradient(score, acts)                               # (1, 16, 16, 16) NCHW
    raw = tf.reduce_sum(tf.reduce_mean(grads, axis=(2, 3), keepdims=True) * acts, axis=1)
    np.testing.assert_allclose(exp.raw["act"], raw.numpy(), rtol=1e-4,
                               atol=1e-5 * float(tf.reduce_max(tf.abs(raw))))
    assert exp.maps.shape == (1, 32, 32)
    named = ic.GradCAM(model, "conv1").explain(x)
    assert named.raw["conv1"].shape == (1, 32, 32)


def _keras_hub_classifier() -> keras.Model:
    """A keras-hub ``ImageClassifier`` on a small ``ResNetBackbone`` (random weights, built
    from a config: no preset, nothing downloaded)."""
    keras_hub = require_framework("tensorflow", "keras_hub")
    keras.utils.set_random_seed(0)
    backbone = keras_hub.models.ResNetBackbone(
        input_conv_filters=[64], input_conv_kernel_sizes=[7], stackwise_num_filters=[64, 64],
        stackwise_num_blocks=[1, 1], stackwise_num_strides=[1, 2], block_type="basic_block",
        use_pre_activation=False, image_shape=(64, 64, 3))
    return keras_hub.models.ImageClassifier(backbone=backbone, num_classes=4)


def _hub_reference(model: keras.Model, x: np.ndarray, inner: str | None) -> np.ndarray:
    """Grad-CAM's raw map of the top-1 class by hand: the backbone (split at ``inner`` when
    given), then the classifier's own head layers, under a GradientTape."""
    backbone = model.backbone
    outputs = [backbone.output] if inner is None else [backbone.get_layer(inner).output,
                                                       backbone.output]
    split = keras.Model(backbone.inputs, outputs)
    head = [model.get_layer(name) for name in ("pooler", "output_dropout", "predictions")]
    with tf.GradientTape() as tape:
        found = split(x, training=False)
        acts, features = (found, found) if inner is None else found
        logits = features
        for layer in head:
            logits = layer(logits, training=False)
        score = tf.reduce_sum(tf.gather(logits, tf.argmax(logits, axis=1), axis=1, batch_dims=1))
    grads = tape.gradient(score, acts)
    return tf.reduce_sum(tf.reduce_mean(grads, axis=(1, 2), keepdims=True) * acts,
                         axis=-1).numpy()


def test_keras_hub_image_classifier() -> None:
    """keras-hub's classifiers are Keras functional models whose backbone is one nested layer:
    the default layer is the backbone's output, and a layer inside the backbone can be named
    with its path; both agree with a GradientTape reference built from the classifier's own
    backbone and head layers."""
    model = _keras_hub_classifier()
    x = zoo_keras.make_input(64)
    np.testing.assert_allclose(model(x), _hub_logits(model, x), rtol=1e-5, atol=1e-5)
    exp = ic.GradCAM(model).explain(x)
    assert exp.layers == [model.backbone.name]
    want = _hub_reference(model, x, None)
    np.testing.assert_allclose(exp.raw[model.backbone.name], want, rtol=1e-4,
                               atol=1e-5 * np.abs(want).max())
    inner = zoo_keras.named_layer(model.backbone)
    path = f"{model.backbone.name}/{inner}"
    want = _hub_reference(model, x, inner)
    np.testing.assert_allclose(ic.GradCAM(model, path).explain(x).raw[path], want, rtol=1e-4,
                               atol=1e-5 * np.abs(want).max())


def _hub_logits(model: keras.Model, x: np.ndarray) -> np.ndarray:
    """The head applied by hand to the backbone's output: must be the model's own output
    (checks that the reference reproduces the classifier)."""
    out = model.backbone(x, training=False)
    for name in ("pooler", "output_dropout", "predictions"):
        out = model.get_layer(name)(out, training=False)
    return np.asarray(out)
