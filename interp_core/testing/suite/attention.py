"""The ``attention`` capability (attention rollout, gradient-weighted rollout, LeGrad), against
the NumPy reference transformer (:mod:`interp_core.testing.reference_transformer`).

Needs the optional ``reference_transformer`` hook: ``build(weights, config)``, the demo ViT
architecture (:mod:`interp_core.datasets.demo_vit`) in your framework. Three variants run: a
class token, a class token and 4 registers, and mean pooling without a class token, all on
the non-square 3x4 patch grid of :data:`~interp_core.testing.reference.REFERENCE_VIT`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from interp_core.backend.protocol import ATTENTION
from interp_core.backend.target_spec import resolve_targets
from interp_core.datasets.demo_vit import ViTConfig, random_vit_weights
from interp_core.methods import method_class
from interp_core.targets import OutputTarget
from interp_core.testing import reference as ref
from interp_core.testing import reference_transformer as vit
from interp_core.testing.suite.fixtures import ATOL, SuiteFixtures, require, require_hook
from interp_core.testing.suite.hygiene import assert_same_state

#: The reference transformer's variants: what the prefix tokens and the pooling are.
VIT_VARIANTS = {
    "class": ref.REFERENCE_VIT,
    "registers": dataclasses.replace(ref.REFERENCE_VIT, registers=4),
    "mean": dataclasses.replace(ref.REFERENCE_VIT, class_token=False),
}


def vit_weights(config: ViTConfig) -> dict[str, np.ndarray]:
    """Seeded weights with sharp attention (query and key scaled up), so that a wrong head or
    token order shows."""
    weights = random_vit_weights(config, seed=3)
    return {k: v * 3.0 if "/query/" in k or "/key/" in k else v for k, v in weights.items()}


def _close(got: np.ndarray, want: np.ndarray, what: str) -> None:
    """Equal to float32 rounding, relative to the largest value (gradients are small)."""
    got = np.asarray(got)
    assert got.shape == want.shape, f"{what}: shape {got.shape}, expected {want.shape}"
    scale = max(1.0, float(np.abs(want).max()))
    np.testing.assert_allclose(got, want, atol=ATOL * scale, err_msg=what)


class AttentionTests(SuiteFixtures):
    @pytest.fixture
    def reference_transformer(self) -> Callable[[dict[str, np.ndarray], ViTConfig], Any] | None:
        """``build(weights, config)``: the demo ViT architecture in your framework."""
        return None

    @pytest.fixture(params=sorted(VIT_VARIANTS))
    def vit_variant(self, request: pytest.FixtureRequest) -> str:
        return request.param

    @pytest.fixture
    def vit_case(self, impl: Any, reference_transformer: Any, to_input: Any,
                 vit_variant: str) -> tuple[Any, Any, np.ndarray, dict[str, np.ndarray],
                                            ViTConfig]:
        """(model, native input, NumPy input, weights, config) of one variant."""
        require(impl, ATTENTION)
        build = require_hook(reference_transformer, "reference_transformer")
        config = VIT_VARIANTS[vit_variant]
        weights = vit_weights(config)
        x_np = np.random.default_rng(11).random((3, *config.input_size, 3)).astype(np.float32)
        return build(weights, config), to_input(x_np), x_np, weights, config

    def test_attention_probabilities(self, impl: Any, vit_case: Any) -> None:
        model, x, x_np, weights, config = vit_case
        got = impl.attention(model, x, resolve_targets(None, 3))
        want = vit.attention(weights, x_np, config=config)
        assert len(got.blocks) == config.blocks and len(set(got.blocks)) == config.blocks
        assert got.gradients is None
        for i, (a, b) in enumerate(zip(got.attentions, want.attentions, strict=True)):
            assert a.dtype == np.float32
            _close(a, b, f"attention of block {i}")
        _close(got.scores, want.scores, "scores")
        np.testing.assert_array_equal(got.targets, want.targets)

    @pytest.mark.parametrize("mode", ["output", "per_block"])
    def test_attention_gradients(self, impl: Any, vit_case: Any, mode: str) -> None:
        model, x, x_np, weights, config = vit_case
        targets = [2, 0, 1]
        got = impl.attention(model, x, resolve_targets(targets, 3), gradients=mode)
        want = vit.attention(weights, x_np, np.array(targets), gradients=mode, config=config)
        assert got.gradients is not None and want.gradients is not None
        for i, (a, b) in enumerate(zip(got.gradients, want.gradients, strict=True)):
            _close(a, b, f"{mode} gradient of block {i}")
        np.testing.assert_array_equal(got.targets, targets)

    @pytest.mark.parametrize("method", ["attentionrollout", "gradientrollout", "legrad"])
    def test_attention_methods_equal_the_reference(self, impl: Any, vit_case: Any,
                                                   method: str) -> None:
        model, x, x_np, weights, config = vit_case
        cls = method_class(method)
        options = {"token": "mean"} if not config.class_token else {}
        got = cls(model, backend=impl, **options).explain(x)
        want = cls(vit.ReferenceTransformer(weights, config),
                   backend=vit.ReferenceTransformerBackend(), **options).explain(x_np)
        _close(got.raw["tokens"], want.raw["tokens"], f"{method} token relevance")
        np.testing.assert_allclose(got.maps, want.maps, atol=1e-4)

    def test_attention_leaves_the_model_as_it_was(self, impl: Any, vit_case: Any,
                                                  model_state: Any) -> None:
        snapshot = require_hook(model_state, "model_state")
        model, x, *_ = vit_case
        before = snapshot(model)
        for mode in ("none", "output", "per_block"):
            impl.attention(model, x, resolve_targets(None, 3), gradients=mode)
            assert_same_state(before, snapshot(model))
        with pytest.raises(ValueError, match="99"):
            impl.attention(model, x, resolve_targets(99, 3), gradients="per_block")
        assert_same_state(before, snapshot(model))

        def raises(logits: Any) -> Any:
            raise RuntimeError("the target's own error")

        for mode in ("none", "output", "per_block"):  # raised while the model is rewired
            with pytest.raises(RuntimeError, match="the target's own error"):
                impl.attention(model, x, resolve_targets(OutputTarget(raises), 3),
                               gradients=mode)
            assert_same_state(before, snapshot(model))

    def test_attention_refuses_a_model_without_attention(self, impl: Any, build: Any,
                                                         to_input: Any) -> None:
        require(impl, ATTENTION)
        model = build(ref.reference_weights(variant="gap"), "gap")
        x = to_input(ref.reference_inputs(2, variant="gap"))
        with pytest.raises(NotImplementedError, match="token Grad-CAM"):
            impl.attention(model, x, resolve_targets(None, 2))
