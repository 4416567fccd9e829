"""The JAX adapter's attention capture and demo ViT, against the NumPy reference transformer."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from tests.conftest import require_framework

jax = require_framework("jax", "jax")
from flax import nnx  # noqa: E402
from interp_jax import demo_vit  # noqa: E402
from interp_jax import testing as jax_testing  # noqa: E402
from interp_jax.backend import JaxBackend  # noqa: E402
from interp_jax.layers import ModelTraceError  # noqa: E402

import interp_core as ic  # noqa: E402
from interp_core.backend.attention import check_capture, stochastic_rows  # noqa: E402
from interp_core.backend.target_spec import resolve_targets  # noqa: E402
from interp_core.datasets.demo_vit import (  # noqa: E402
    ViTConfig,
    demo_vit_model,
    random_vit_weights,
)
from interp_core.testing import reference as ref  # noqa: E402
from interp_core.testing import reference_transformer as rt  # noqa: E402

TINY = ref.REFERENCE_VIT  # patches of 4 on a 3x4 grid, D=8, 2 heads, 2 blocks, 3 classes
CONFIGS = {
    "class_token": TINY,
    "mean_pool": dataclasses.replace(TINY, class_token=False),
    "registers": dataclasses.replace(TINY, registers=4),
}
N = 3


def _inputs(cfg: ViTConfig, n: int = N, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, *cfg.input_size, cfg.channels),
                                              dtype=np.float32)


@pytest.fixture(scope="module")
def backend() -> JaxBackend:
    return JaxBackend()


def _close(actual: list[np.ndarray], expected: list[np.ndarray], rel: bool) -> None:
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected, strict=True):
        assert a.dtype == np.float32 and a.shape == e.shape
        scale = float(np.abs(e).max()) if rel else 1.0
        np.testing.assert_allclose(a, e, rtol=0, atol=1e-5 * scale)


# -- the builder ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(CONFIGS))
def test_demo_vit_logits_match_reference(name: str) -> None:
    cfg = CONFIGS[name]
    weights = random_vit_weights(cfg, seed=1)
    model = jax_testing.reference_transformer(weights, cfg)
    x = _inputs(cfg)
    np.testing.assert_allclose(np.asarray(model(x)), rt.forward(weights, x, cfg), atol=1e-5)


def test_demo_vit_names_and_inferred_config() -> None:
    weights = random_vit_weights(ViTConfig(patch=4, grid=(2, 2), dim=8, heads=2, blocks=2,
                                           mlp=16, classes=3), seed=0)
    model = demo_vit.build(weights)  # sizes read from the weights (square grid)
    names = JaxBackend().layer_names(model)
    for name in ("patch_embed", "blocks.0", "blocks.1.norm1", "blocks.1.attn",
                 "blocks.1.norm2", "blocks.1.mlp", "norm", "head"):
        assert name in names
    assert isinstance(demo_vit_model("jax", weights), demo_vit.DemoViT)  # the registration


# -- attention against the reference --------------------------------------------------------
@pytest.mark.parametrize("name", list(CONFIGS))
def test_attention_and_gradients_match_reference(backend: JaxBackend, name: str) -> None:
    cfg = CONFIGS[name]
    weights = random_vit_weights(cfg, seed=1)
    model = demo_vit.build(weights, cfg)
    x = _inputs(cfg)
    targets = None if name == "class_token" else np.array([0, 2, 1])
    spec = resolve_targets(None if targets is None else list(targets), N)
    for gradients in ("none", "output", "per_block"):
        # batch_size 2 of 3 samples: two chunks, the second padded.
        got = check_capture(backend.attention(model, x, spec, gradients=gradients,
                                              batch_size=2), N)
        want = rt.attention(weights, x, targets, gradients=gradients, config=cfg)
        assert got.blocks == want.blocks == ["blocks.0.attn", "blocks.1.attn"]
        _close(got.attentions, want.attentions, rel=False)
        assert all(stochastic_rows(p) for p in got.attentions)
        np.testing.assert_allclose(got.scores, want.scores, atol=1e-5)
        np.testing.assert_array_equal(got.targets, want.targets)
        if gradients == "none":
            assert got.gradients is None
        else:
            _close(got.gradients, want.gradients, rel=True)


def test_per_block_differs_from_output_except_last_block(backend: JaxBackend) -> None:
    weights = random_vit_weights(TINY, seed=2)
    model = demo_vit.build(weights, TINY)
    x, spec = _inputs(TINY), resolve_targets(None, N)
    out = backend.attention(model, x, spec, gradients="output").gradients
    per = backend.attention(model, x, spec, gradients="per_block").gradients
    np.testing.assert_allclose(per[-1], out[-1], atol=1e-6)
    assert not np.allclose(per[0], out[0], atol=1e-6)


def test_second_call_does_not_retrace(backend: JaxBackend) -> None:
    model = demo_vit.build(random_vit_weights(TINY, seed=3), TINY)
    x = _inputs(TINY)
    backend.attention(model, x, resolve_targets(None, N), gradients="output")
    count = backend.trace_count
    other = demo_vit.build(random_vit_weights(TINY, seed=4), TINY)  # new weights, same program
    backend.attention(other, _inputs(TINY, seed=1), resolve_targets(None, N),
                      gradients="output")
    assert backend.trace_count == count


def test_core_methods_equal_the_reference_adapter() -> None:
    weights = random_vit_weights(TINY, seed=0)
    for key in weights:  # sharper attention than at initialisation: the methods differ
        if "/query/" in key or "/key/" in key:
            weights[key] = weights[key] * 6.0
    model = jax_testing.reference_transformer(weights, TINY)
    oracle = rt.ReferenceTransformer(weights, TINY)
    x = _inputs(TINY)
    for method in ("AttentionRollout", "GradientRollout", "LeGrad"):
        cls = getattr(ic, method)
        got = cls(model).explain(x, [2, 0, 1])
        want = cls(oracle, backend=rt.ReferenceTransformerBackend()).explain(x, [2, 0, 1])
        assert got.backend == "jax" and got.layers == want.layers
        np.testing.assert_allclose(got.maps, want.maps, atol=1e-4, err_msg=method)


# -- hygiene and errors -----------------------------------------------------------------------
class FailingViT(demo_vit.DemoViT):
    """A demo ViT that raises after its blocks ran (with the adapter's functions on them)."""

    def __call__(self, x: jax.Array) -> jax.Array:
        logits = super().__call__(x)
        raise RuntimeError(f"boom after logits of shape {logits.shape}")


def _attention_fns(model: nnx.Module) -> list[object]:
    return [m.attention_fn for _, m in nnx.iter_modules(model)
            if isinstance(m, nnx.MultiHeadAttention)]


def test_model_unchanged_after_call_and_after_error(backend: JaxBackend) -> None:
    weights = random_vit_weights(TINY, seed=5)
    model = demo_vit.build(weights, TINY)
    before = jax_testing.model_state(model)
    backend.attention(model, _inputs(TINY), resolve_targets(None, N), gradients="per_block")
    failing = FailingViT(TINY)
    failing_before = jax_testing.model_state(failing)
    with pytest.raises(ModelTraceError, match="boom"):
        backend.attention(failing, _inputs(TINY), resolve_targets(None, N),
                          gradients="per_block")
    for m, state in ((model, before), (failing, failing_before)):
        after = jax_testing.model_state(m)
        assert [k for k, _ in after["state"]] == [k for k, _ in state["state"]]
        for (_, a), (_, b) in zip(after["state"], state["state"], strict=True):
            np.testing.assert_array_equal(a, b)
        assert after["flags"] == state["flags"]
        assert all(fn is nnx.dot_product_attention for fn in _attention_fns(m))
        assert all(type(b) is demo_vit.Block for b in m.blocks)


def test_model_without_attention_is_refused(backend: JaxBackend) -> None:
    x = ref.reference_inputs(n=2)
    with pytest.raises(NotImplementedError, match="no global self-attention"):
        backend.attention(jax_testing.reference_model(), x, resolve_targets(None, len(x)))
    split = ic.Split(lambda v: v.mean(axis=(1, 2)), lambda f: f)
    with pytest.raises(NotImplementedError, match="no global self-attention"):
        backend.attention(split, x, resolve_targets(None, len(x)))


def test_custom_attention_fn_is_refused(backend: JaxBackend) -> None:
    model = demo_vit.build(random_vit_weights(TINY, seed=6), TINY)
    model.blocks[1].attn.attention_fn = lambda *a, **k: nnx.dot_product_attention(*a, **k)
    with pytest.raises(NotImplementedError, match=r"blocks\.1\.attn"):
        backend.attention(model, _inputs(TINY), resolve_targets(None, N))


def test_unknown_gradients_mode(backend: JaxBackend) -> None:
    model = demo_vit.build(random_vit_weights(TINY, seed=6), TINY)
    with pytest.raises(ValueError, match="per_block"):
        backend.attention(model, _inputs(TINY), resolve_targets(None, N), gradients="blocks")


class BareAttention(nnx.Module):
    """Grouped-query attention layers held directly in a list (no block around them), then a
    mean over tokens and a dense head: input ``(N, T, 8)``."""

    def __init__(self) -> None:
        rngs = nnx.Rngs(0)
        self.layers = nnx.List([
            nnx.MultiHeadAttention(num_heads=4, num_kv_heads=2, in_features=8, decode=False,
                                   rngs=rngs)
            for _ in range(2)])
        self.head = nnx.Linear(8, 3, rngs=rngs)

    def __call__(self, z: jax.Array) -> jax.Array:
        for layer in self.layers:
            z = z + layer(z)
        return self.head(z.mean(1))


def test_other_models_grouped_query_attention_without_blocks(backend: JaxBackend) -> None:
    model = BareAttention()
    z = np.random.default_rng(0).normal(size=(2, 5, 8)).astype(np.float32)
    logits = np.asarray(model(z))
    cap = backend.attention(model, z, resolve_targets(None, 2), gradients="output")
    assert cap.blocks == ["layers.0", "layers.1"]
    assert [p.shape for p in cap.attentions] == [(2, 4, 5, 5)] * 2
    assert all(stochastic_rows(p) for p in cap.attentions)
    # The recording attention computes what Flax's does: the scores are the model's logits.
    np.testing.assert_allclose(cap.scores, logits.max(1), atol=1e-5)
    np.testing.assert_array_equal(cap.targets, logits.argmax(1))
    assert all(np.abs(g).max() > 0 for g in cap.gradients)
    with pytest.raises(ValueError, match="inside a block"):
        backend.attention(model, z, resolve_targets(None, 2), gradients="per_block")
