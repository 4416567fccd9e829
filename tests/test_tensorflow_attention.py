"""The TensorFlow adapter's attention capture (``backend.attention``) and the demo ViT in Keras,
against the NumPy reference transformer."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import require_framework

tf = require_framework("tensorflow", "tensorflow")
keras = require_framework("tensorflow", "keras")

from interp_tensorflow import demo_vit  # noqa: E402
from interp_tensorflow import testing as tf_testing  # noqa: E402

import interp_core as ic  # noqa: E402
from interp_core.backend.attention import stochastic_rows  # noqa: E402
from interp_core.backend.target_spec import resolve_targets  # noqa: E402
from interp_core.datasets.demo_vit import ViTConfig, random_vit_weights  # noqa: E402
from interp_core.testing import reference_transformer as rt  # noqa: E402
from interp_core.testing.reference import reference_weights  # noqa: E402
from interp_core.testing.suite.hygiene import assert_same_state  # noqa: E402

TINY = ViTConfig(patch=4, grid=(3, 4), dim=8, heads=2, blocks=2, mlp=16, classes=3)
VARIANTS = {
    "class_token": TINY,
    "mean_pool": ViTConfig(patch=4, grid=(3, 4), dim=8, heads=2, blocks=3, mlp=16, classes=3,
                           class_token=False),
    "registers": ViTConfig(patch=4, grid=(3, 3), dim=8, heads=2, blocks=2, mlp=16, classes=3,
                           registers=4),
}
N = 5


@pytest.fixture(scope="module")
def backend():
    return ic.get_backend("tensorflow")


@pytest.fixture(scope="module")
def vits():
    """Per variant: (weights, Keras model, channels-last inputs)."""
    built = {}
    for i, (name, cfg) in enumerate(VARIANTS.items()):
        weights = random_vit_weights(cfg, seed=i + 1)
        x = np.random.default_rng(i).random((N, *cfg.input_size, cfg.channels),
                                            dtype=np.float32)
        built[name] = (weights, tf_testing.reference_transformer(weights, cfg), x)
    return built


def assert_capture_matches(got, want, gradients):
    assert got.blocks == [f"blocks_{i}/attn" for i in range(len(want.blocks))]
    np.testing.assert_array_equal(got.targets, want.targets)
    np.testing.assert_allclose(got.scores, want.scores, atol=1e-5)
    for a, r in zip(got.attentions, want.attentions, strict=True):
        assert a.dtype == np.float32 and a.shape == r.shape
        np.testing.assert_allclose(a, r, atol=1e-5)
    if gradients == "none":
        assert got.gradients is None
        return
    for g, r in zip(got.gradients, want.gradients, strict=True):
        assert g.dtype == np.float32 and g.shape == r.shape
        np.testing.assert_allclose(g, r, atol=1e-5 * np.abs(r).max())


# -- the builder --------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_demo_vit_logits_equal_the_reference(vits, variant):
    weights, model, x = vits[variant]
    np.testing.assert_allclose(model(x, training=False).numpy(), rt.forward(weights, x,
                                                                            VARIANTS[variant]),
                               atol=1e-5)


def test_demo_vit_names_and_square_grid_from_the_weights():
    cfg = ViTConfig(patch=4, grid=(2, 2), dim=8, heads=2, blocks=1, mlp=16, classes=3)
    model = demo_vit.build(random_vit_weights(cfg))  # the grid read back from pos_embed
    assert [layer.name for layer in model.layers[1:]] == [
        "patch_embed", "tokens", "blocks_0", "norm", "pool", "head"]
    block = model.get_layer("blocks_0")
    assert [layer.name for layer in (block.norm1, block.attn, block.norm2, block.mlp)] == [
        "norm1", "attn", "norm2", "mlp"]
    assert tuple(model.inputs[0].shape[1:]) == (8, 8, 3)
    with pytest.raises(ValueError, match="pos_embed"):
        demo_vit.build(random_vit_weights(cfg), ViTConfig(patch=4, grid=(2, 3), dim=8, heads=2,
                                                          blocks=1, mlp=16, classes=3))


# -- attention against the reference ------------------------------------------------------------
@pytest.mark.parametrize("gradients", ["none", "output", "per_block"])
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_attention_equals_the_reference(backend, vits, variant, gradients):
    weights, model, x = vits[variant]
    got = backend.attention(model, x, resolve_targets(None, N), gradients=gradients)
    assert_capture_matches(got, rt.attention(weights, x, gradients=gradients,
                                             config=VARIANTS[variant]), gradients)


@pytest.mark.parametrize("gradients", ["output", "per_block"])
def test_attention_for_given_classes_in_batches(backend, vits, gradients):
    weights, model, x = vits["class_token"]
    classes = np.array([2, 0, 1, 1, 0])
    got = backend.attention(model, x, resolve_targets(classes.tolist(), N), gradients=gradients,
                            batch_size=2)
    assert_capture_matches(got, rt.attention(weights, x, classes, gradients=gradients,
                                             config=TINY), gradients)


def test_per_block_gradients_are_the_blocks_own(backend, vits):
    """The last block's per-block gradient is the output gradient; earlier blocks' are not."""
    _, model, x = vits["mean_pool"]
    spec = resolve_targets(None, N)
    output = backend.attention(model, x, spec, gradients="output")
    per_block = backend.attention(model, x, spec, gradients="per_block")
    np.testing.assert_allclose(per_block.gradients[-1], output.gradients[-1], atol=1e-7)
    assert not np.allclose(per_block.gradients[0], output.gradients[0], atol=1e-3)


def test_a_second_call_on_the_same_shapes_traces_nothing(backend, vits):
    _, model, x = vits["class_token"]
    backend.attention(model, x, resolve_targets(None, N), gradients="output")
    traces = backend.trace_count
    backend.attention(model, x[::-1].copy(), resolve_targets(None, N), gradients="output")
    assert backend.trace_count == traces


# -- the model comes back as it was -------------------------------------------------------------
def test_model_unchanged_after_the_call_and_after_errors(backend, vits):
    _, model, x = vits["registers"]
    attn = model.get_layer("blocks_0").attn
    attn._flash_attention = True  # a fused-attention switch on: read with it off, then back on
    try:
        before = tf_testing.model_state(model)
        backend.attention(model, x, resolve_targets(None, N), gradients="per_block")
        assert_same_state(before, tf_testing.model_state(model))
        assert attn._flash_attention is True

        def broken(out):
            raise RuntimeError("output selector failed")

        with pytest.raises(RuntimeError, match="output selector failed"):
            backend.attention(model, x, resolve_targets(None, N), gradients="per_block",
                              output=broken)
        with pytest.raises(ValueError, match="out of range"):
            backend.attention(model, x, resolve_targets(7, N), gradients="output")
        assert_same_state(before, tf_testing.model_state(model))
        assert attn._flash_attention is True
        for layer in (attn, model.get_layer("blocks_0")):
            assert not {"call", "_compute_attention", "_masked_softmax"} & set(vars(layer))
    finally:
        attn._flash_attention = False


def test_a_model_without_attention_gets_the_clear_error(backend):
    model = tf_testing.reference_model(reference_weights())
    with pytest.raises(NotImplementedError, match="no global self-attention"):
        backend.attention(model, np.zeros((1, 10, 10, 3), np.float32),
                          resolve_targets(None, 1))


def test_bad_gradients_mode_is_named(backend, vits):
    _, model, x = vits["class_token"]
    with pytest.raises(ValueError, match="'input'"):
        backend.attention(model, x, resolve_targets(None, N), gradients="input")


class SubclassedViT(keras.Model):
    """The demo ViT's layers in a subclassed model, the blocks in a list."""

    def __init__(self, layers):
        super().__init__(name="subclassed_vit")
        self.stem, self.blocks, self.tail = layers[:2], layers[2:-3], layers[-3:]

    def call(self, x):
        for layer in [*self.stem, *self.blocks, *self.tail]:
            x = layer(x)
        return x


@pytest.mark.parametrize("kind", ["sequential", "subclassed"])
def test_sequential_and_subclassed_models_of_the_same_layers(backend, vits, kind):
    weights, functional, x = vits["mean_pool"]
    layers = functional.layers[1:]  # the layers themselves, shared: the same weights
    model = (keras.Sequential([keras.Input(x.shape[1:]), *layers]) if kind == "sequential"
             else SubclassedViT(layers))
    model(x[:1])
    got = backend.attention(model, x, resolve_targets(None, N), gradients="per_block")
    assert_capture_matches(got, rt.attention(weights, x, gradients="per_block",
                                             config=VARIANTS["mean_pool"]), "per_block")


# -- other Keras models -------------------------------------------------------------------------
def linear_attention_model(tokens=(6,), dim=8, classes=3):
    """MultiHeadAttention used directly in a Functional model, then linear layers without bias:
    each score is exactly sum(gradient * probabilities) over heads and tokens. ``tokens`` of
    two axes: attention over a grid of tokens."""
    inp = keras.Input((*tokens, dim))
    mha = keras.layers.MultiHeadAttention(2, 4, use_bias=False, name="mha")
    pool = (keras.layers.GlobalAveragePooling1D() if len(tokens) == 1
            else keras.layers.GlobalAveragePooling2D())
    pooled = pool(mha(inp, inp))
    model = keras.Model(inp, keras.layers.Dense(classes, use_bias=False)(pooled))
    rng = np.random.default_rng(0)
    model.set_weights([rng.normal(0, 0.5, w.shape).astype(np.float32)
                       for w in model.get_weights()])
    return model


@pytest.mark.parametrize("tokens", [(6,), (2, 3)])
def test_multi_head_attention_used_directly(backend, tokens):
    model = linear_attention_model(tokens)
    x = np.random.default_rng(1).normal(size=(4, *tokens, 8)).astype(np.float32)
    got = backend.attention(model, x, resolve_targets(None, 4), gradients="output")
    assert got.blocks == ["mha"] and got.attentions[0].shape == (4, 2, 6, 6)
    assert stochastic_rows(got.attentions[0], atol=1e-5)
    _, scores = model.get_layer("mha")(x, x, return_attention_scores=True)
    np.testing.assert_allclose(got.attentions[0], scores.numpy().reshape(4, 2, 6, 6), atol=1e-6)
    linear = (got.gradients[0] * got.attentions[0]).sum(axis=(1, 2, 3))
    np.testing.assert_allclose(linear, got.scores, rtol=1e-4, atol=1e-5)
    plain = backend.attention(model, x, resolve_targets(None, 4))
    assert plain.gradients is None
    np.testing.assert_allclose(plain.attentions[0], got.attentions[0], atol=1e-6)
    with pytest.raises(NotImplementedError, match="per_block"):
        backend.attention(model, x, resolve_targets(None, 4), gradients="per_block")


def test_keras_hub_vit_encoder_blocks(backend):
    keras_hub = pytest.importorskip("keras_hub")
    backbone = keras_hub.models.ViTBackbone(image_shape=(8, 8, 3), patch_size=4, num_layers=2,
                                            num_heads=2, hidden_dim=8, mlp_dim=16)
    model = keras_hub.models.ViTImageClassifier(backbone=backbone, num_classes=3,
                                                preprocessor=None)
    x = np.random.default_rng(2).random((3, 8, 8, 3), dtype=np.float32)
    before = tf_testing.model_state(model)
    spec = resolve_targets(None, 3)
    output = backend.attention(model, x, spec, gradients="output")
    per_block = backend.attention(model, x, spec, gradients="per_block")
    assert_same_state(before, tf_testing.model_state(model))
    assert [b.rsplit("/", 2)[-2:] for b in output.blocks] == [
        ["transformer_block_1", "mha"], ["transformer_block_2", "mha"]]
    assert all(stochastic_rows(a, atol=1e-5) and a.shape == (3, 2, 5, 5)
               for a in output.attentions)
    np.testing.assert_allclose(per_block.gradients[-1], output.gradients[-1], atol=1e-7)
    np.testing.assert_allclose(output.scores, model(x).numpy().max(1), atol=1e-5)
