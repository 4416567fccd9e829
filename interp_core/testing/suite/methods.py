"""Every method of the CAM family through the adapter equals the NumPy oracle."""

from __future__ import annotations

from itertools import combinations
from typing import Any

import numpy as np
import pytest

import interp_core as ic
from interp_core.backend.protocol import LINEAR_WEIGHTS
from interp_core.methods import METHODS, required_capabilities
from interp_core.testing import reference as ref
from interp_core.testing.suite.fixtures import SuiteFixtures, require

#: Methods that weigh gradients differently: one map each on a spatially varying gradient.
GRADIENT_WEIGHTINGS = ("gradcam", "hirescam", "layercam", "xgradcam")


class MethodTests(SuiteFixtures):
    @pytest.mark.parametrize("method", sorted(METHODS))
    def test_method_matches_oracle(self, impl: Any, model: Any, x: Any, x_np: np.ndarray,
                                   oracle: Any, oracle_model: Any, variant: str,
                                   method: str) -> None:
        cls = METHODS[method]
        for capability in required_capabilities(method):
            require(impl, capability)
            if capability not in oracle.capabilities:
                pytest.skip(f"the NumPy oracle has no closed form for {capability!r}")
        if method == "cam" and variant != "gap":
            pytest.skip("CAM needs global average pooling before the dense layer")
        targets = [0, 3, 1, 4]
        got = cls(model, ref.LAYER, backend=impl).explain(x, targets)
        want = cls(oracle_model, ref.LAYER, backend=oracle).explain(x_np, targets)
        assert got.maps.shape == (4, *ref.input_shape(variant)[:2])
        assert got.maps.dtype == np.float32
        assert np.isfinite(got.maps).all() and got.maps.min() >= 0 and got.maps.max() <= 1
        np.testing.assert_allclose(got.raw[got.layers[0]], want.raw[ref.LAYER], atol=1e-4,
                                   rtol=1e-4)
        np.testing.assert_allclose(got.maps, want.maps, atol=1e-4)
        np.testing.assert_allclose(got.scores, want.scores, atol=1e-5, rtol=1e-5)
        assert got.backend == impl.name and got.method == method

    @pytest.mark.parametrize("variant", ["gap"])
    def test_cam_equals_gradcam(self, impl: Any, model: Any, x: Any) -> None:
        require(impl, LINEAR_WEIGHTS)
        cam = ic.CAM(model, ref.LAYER, backend=impl, fc=ref.FC)(x)
        grad = ic.GradCAM(model, ref.LAYER, backend=impl)(x)
        np.testing.assert_allclose(cam, grad, atol=1e-5)

    @pytest.mark.parametrize("variant", ["flatten"])
    def test_gradient_weightings_differ(self, impl: Any, model: Any, x: Any) -> None:
        """On a gradient that varies over space and channels, the four weightings disagree."""
        maps = {m: METHODS[m](model, ref.LAYER, backend=impl)(x, [0, 3, 1, 4])
                for m in GRADIENT_WEIGHTINGS}
        for a, b in combinations(GRADIENT_WEIGHTINGS, 2):
            assert np.abs(maps[a] - maps[b]).max() > 0.1, f"{a} and {b} give the same maps"
