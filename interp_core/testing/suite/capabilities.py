"""The optional capabilities: dense weights, activation patching, input gradients."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from interp_core.backend.protocol import ACTIVATION_PATCH, INPUT_GRADIENTS, LINEAR_WEIGHTS
from interp_core.backend.target_spec import resolve_targets
from interp_core.testing import reference as ref
from interp_core.testing.suite.fixtures import ATOL, SuiteFixtures, require


def channel_masks() -> np.ndarray:
    """``(11, 8)`` masks: all kept, each channel alone, a random half, all ablated."""
    rng = np.random.default_rng(5)
    return np.concatenate([
        np.ones((1, ref.CHANNELS)), np.eye(ref.CHANNELS),
        (rng.random((1, ref.CHANNELS)) > 0.5), np.zeros((1, ref.CHANNELS)),
    ]).astype(np.float32)


class CapabilityTests(SuiteFixtures):
    # -- linear_weights (CAM) -------------------------------------------------------------
    @pytest.mark.parametrize("variant", ["gap", "segmentation"])
    def test_linear_weights(self, impl: Any, model: Any, weights: Any, variant: str) -> None:
        require(impl, LINEAR_WEIGHTS)
        got = impl.linear_weights(model, ref.FC)
        assert got.dtype == np.float32 and got.shape == weights.fc_weight.shape
        np.testing.assert_array_equal(got, weights.fc_weight)
        if variant == "gap":  # fc=None: the last dense layer
            np.testing.assert_array_equal(impl.linear_weights(model), weights.fc_weight)
        with pytest.raises(ValueError):  # a 3x3 convolution is no (outputs, inputs) matrix
            impl.linear_weights(model, ref.LAYER)

    # -- patched_scores (Ablation-CAM) ----------------------------------------------------
    def test_patched_scores(self, impl: Any, model: Any, x: Any, x_np: np.ndarray,
                            oracle: Any, oracle_model: Any) -> None:
        require(impl, ACTIVATION_PATCH)
        masks = channel_masks()
        spec = resolve_targets([0, 3, 1, 4], 4)
        got = impl.patched_scores(model, x, ref.LAYER, masks, spec, batch_size=6)
        assert got.shape == (len(masks), 4) and got.dtype == np.float32
        want = oracle.patched_scores(oracle_model, x_np, ref.LAYER, masks, spec)
        np.testing.assert_allclose(got, want, atol=ATOL, rtol=1e-5)
        np.testing.assert_allclose(got[0], impl.predict(model, x, spec), atol=ATOL, rtol=1e-5)
        top1 = impl.patched_scores(model, x, ref.LAYER, masks[:3], resolve_targets(None, 4))
        np.testing.assert_allclose(
            top1, oracle.patched_scores(oracle_model, x_np, ref.LAYER, masks[:3],
                                        resolve_targets(None, 4)), atol=ATOL, rtol=1e-5)

    def test_patched_scores_bad_masks(self, impl: Any, model: Any, x: Any) -> None:
        require(impl, ACTIVATION_PATCH)
        spec = resolve_targets(0, 4)
        with pytest.raises(ValueError, match=str(ref.CHANNELS)):
            impl.patched_scores(model, x, ref.LAYER, np.ones((2, 3), np.float32), spec)
        with pytest.raises((ValueError, KeyError), match=ref.LAYER):
            impl.patched_scores(model, x, "featurez", np.ones((2, ref.CHANNELS), np.float32),
                                spec)

    # -- input_gradients (feature visualisation) ------------------------------------------
    @pytest.mark.parametrize("layer", [ref.LAYER, None])
    def test_input_gradients(self, impl: Any, model: Any, x: Any, x_np: np.ndarray,
                             to_input: Any, oracle_model: Any, layer: str | None) -> None:
        require(impl, INPUT_GRADIENTS)
        channels = np.array([0, 3, 5, 7]) if layer else np.array([0, 3, 1, 4])
        values, grads = impl.input_gradients(model, x, layer, channels)
        want_values, want = ref.input_gradients(oracle_model, x_np, layer, channels)
        native = np.asarray(impl.to_numpy(to_input(want.astype(np.float32))))
        assert values.shape == (4,) and values.dtype == np.float32
        assert grads.shape == native.shape and grads.dtype == np.float32
        np.testing.assert_allclose(values, want_values, atol=ATOL, rtol=1e-5)
        np.testing.assert_allclose(grads, native, atol=ATOL,
                                   err_msg="d(objective)/d(input) differs from the closed form")

    def test_input_gradients_bad_channels(self, impl: Any, model: Any, x: Any) -> None:
        require(impl, INPUT_GRADIENTS)
        with pytest.raises(ValueError, match=f"{ref.CHANNELS} channels"):
            impl.input_gradients(model, x, ref.LAYER, np.array([0, 3, 5, ref.CHANNELS]))
        with pytest.raises((ValueError, KeyError), match=ref.LAYER):
            impl.input_gradients(model, x, "featurez", np.array([0, 1, 2, 3]))
