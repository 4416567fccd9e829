"""The optional ``"hvp"`` capability (ShapleyCAM): Hessian-vector products against closed forms.

The reference models' heads are affine, so ``H A`` at ``"features"`` is zero for logit targets
and, for a :class:`~interp_core.SimilarityTarget` (cosine similarity, not linear in the
output), ``J^T H_out (out - b)`` in closed form
(:meth:`~interp_core.testing.reference.ReferenceBackend.capture_hvp`): nonzero, varying over
space and channels on ``"flatten"``, and different per sample. An adapter that returns zeros
(a second backward pass that was never recorded), flips the sign, mixes the samples or the
layout fails here.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import interp_core as ic
from interp_core.backend.protocol import HVP
from interp_core.backend.target_spec import TargetSpec, resolve_targets
from interp_core.testing import reference as ref
from interp_core.testing.suite.capture import assert_capture_equal
from interp_core.testing.suite.fixtures import ATOL, SuiteFixtures, require

#: Relative tolerance of a Hessian-vector product (two float32 backward passes), times the
#: largest value of the closed form.
HVP_RTOL = 1e-4


def similarity_targets(n: int = 4, seed: int = 4) -> TargetSpec:
    """One :class:`~interp_core.SimilarityTarget` per sample, random embeddings of the 5
    outputs: a score whose Hessian with respect to the output is not zero."""
    rng = np.random.default_rng(seed)
    return resolve_targets([ic.SimilarityTarget(e) for e in rng.normal(size=(n, ref.CLASSES))],
                           n)


def assert_hvp_equal(got: Any, want: Any, n: int, variant: str, what: str) -> None:
    """The capture equals the oracle's (:func:`assert_capture_equal`), and so does its
    ``hvp`` to :data:`HVP_RTOL` of its scale."""
    assert_capture_equal(got, want, n, variant)
    (layer,) = got.layers.values()
    expected = want.layers[ref.LAYER].hvp
    assert layer.hvp is not None, "capture_hvp returned no hvp (LayerCapture.hvp is None)"
    assert layer.hvp.dtype == np.float32 and layer.hvp.shape == expected.shape, (
        f"hvp {layer.hvp.dtype} {layer.hvp.shape}, want float32 {expected.shape} (the "
        "gradients' layout)")
    scale = max(float(np.abs(expected).max()), ATOL)
    np.testing.assert_allclose(layer.hvp, expected, atol=HVP_RTOL * scale, rtol=0,
                               err_msg=f"H A differs from the closed form ({what})")


class HvpTests(SuiteFixtures):
    def test_hvp_matches_closed_form(self, impl: Any, model: Any, x: Any, x_np: np.ndarray,
                                     oracle: Any, oracle_model: Any, variant: str) -> None:
        require(impl, HVP)
        spec = similarity_targets()
        want = oracle.capture_hvp(oracle_model, x_np, [ref.LAYER], spec)
        assert np.abs(want.layers[ref.LAYER].hvp).max() > 1e-3  # the test can fail
        got = impl.capture_hvp(model, x, [ref.LAYER], spec)
        assert_hvp_equal(got, want, 4, variant, "similarity targets")

    def test_hvp_of_logit_targets_is_zero(self, impl: Any, model: Any, x: Any,
                                          x_np: np.ndarray, oracle: Any, oracle_model: Any,
                                          variant: str) -> None:
        """Above the layer the reference model is affine: the Hessian of a logit is zero, and
        the gradients are :meth:`capture`'s."""
        require(impl, HVP)
        for targets in ([0, 3, 1, 4], None):
            spec = resolve_targets(targets, 4)
            got = impl.capture_hvp(model, x, [ref.LAYER], spec)
            assert_capture_equal(got, oracle.capture(oracle_model, x_np, [ref.LAYER], spec), 4,
                                 variant)
            (layer,) = got.layers.values()
            assert layer.hvp is not None and layer.hvp.shape == layer.gradients.shape
            np.testing.assert_allclose(layer.hvp, 0.0, atol=ATOL)

    @pytest.mark.parametrize("variant", ["flatten"])
    def test_hvp_batch_independence(self, impl: Any, model: Any, to_input: Any,
                                    x_np: np.ndarray, oracle: Any, oracle_model: Any,
                                    variant: str) -> None:
        """Sample ``i``'s product is that of its own score, alone or in the batch."""
        require(impl, HVP)
        spec = similarity_targets()
        for i in (0, 3):
            one = spec.take(slice(i, i + 1))
            want = oracle.capture_hvp(oracle_model, x_np[i : i + 1], [ref.LAYER], one)
            got = impl.capture_hvp(model, to_input(x_np[i : i + 1]), [ref.LAYER], one)
            assert_hvp_equal(got, want, 1, variant, f"sample {i} alone")

    @pytest.mark.parametrize("variant", ["flatten"])
    def test_shapleycam_matches_oracle(self, impl: Any, model: Any, x: Any, x_np: np.ndarray,
                                       oracle_model: Any, oracle: Any) -> None:
        """ShapleyCAM's weights ``mean(G - 0.5 H A)`` through the adapter, on a target where
        they differ from Grad-CAM's."""
        require(impl, HVP)
        targets = [ic.SimilarityTarget(e) for e in
                   np.random.default_rng(4).normal(size=(4, ref.CLASSES))]
        got = ic.ShapleyCAM(model, ref.LAYER, backend=impl).explain(x, targets)
        want = ic.ShapleyCAM(oracle_model, ref.LAYER, backend=oracle).explain(x_np, targets)
        grad = ic.GradCAM(oracle_model, ref.LAYER, backend=oracle).explain(x_np, targets)
        w_got, w_want = got.weights[got.layers[0]], want.weights[ref.LAYER]
        scale = float(np.abs(w_want).max())
        assert np.abs(w_want - grad.weights[ref.LAYER]).max() > 0.1 * scale
        np.testing.assert_allclose(w_got, w_want, atol=HVP_RTOL * scale, rtol=0)
        np.testing.assert_allclose(got.maps, want.maps, atol=1e-4)
