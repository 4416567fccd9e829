"""Every target kind, and structured model outputs, against the closed forms."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import interp_core as ic
from interp_core.backend.target_spec import no_target, resolve_targets
from interp_core.testing import reference as ref
from interp_core.testing.suite.capture import assert_capture_equal
from interp_core.testing.suite.fixtures import ATOL, SuiteFixtures, require_hook


def _raw(exp: Any) -> np.ndarray:
    return next(iter(exp.raw.values()))


def _assert_scored_as_oracle(impl: Any, model: Any, x: Any, oracle: Any, oracle_model: Any,
                             x_np: np.ndarray, spec: Any, variant: str,
                             batch_size: int = 3) -> None:
    """The adapter's capture of the 4-sample batch for ``spec``, and its batched predict, equal
    the oracle's."""
    want = oracle.capture(oracle_model, x_np, [ref.LAYER], spec)
    assert_capture_equal(impl.capture(model, x, [ref.LAYER], spec), want, 4, variant)
    np.testing.assert_allclose(impl.predict(model, x, spec, batch_size=batch_size), want.scores,
                               atol=ATOL, rtol=1e-5)


class TargetTests(SuiteFixtures):
    def test_binary_target(self, impl: Any, build: Any, model: Any, to_input: Any,
                           x_np: np.ndarray, oracle: Any, variant: str) -> None:
        weights = ref.reference_weights(variant=variant, classes=1)
        single, oracle_model = build(weights, variant), ref.ReferenceModel(weights, variant)
        x = to_input(x_np)
        for targets in (ic.BinaryTarget(),
                        [ic.BinaryTarget(p) for p in (True, False, False, True)]):
            _assert_scored_as_oracle(impl, single, x, oracle, oracle_model, x_np,
                                     resolve_targets(targets, 4), variant)
        with pytest.raises(ValueError, match="single"):
            impl.capture(model, x, [ref.LAYER], resolve_targets(ic.BinaryTarget(), 4))

    @pytest.mark.parametrize("variant", ["segmentation"])
    def test_segmentation_target(self, impl: Any, model: Any, x: Any, x_np: np.ndarray,
                                 oracle: Any, oracle_model: Any, variant: str) -> None:
        h, w, _ = ref.feature_shape(variant)
        masks = (np.random.default_rng(3).random((4, h, w)) > 0.5).astype(np.float32)
        targets = [ic.SegmentationTarget(c, m) for c, m in zip([2, 0, 4, 1], masks, strict=True)]
        _assert_scored_as_oracle(impl, model, x, oracle, oracle_model, x_np,
                                 resolve_targets(targets, 4), variant)
        with pytest.raises(ValueError, match="mask"):
            impl.capture(model, x, [ref.LAYER],
                         resolve_targets(ic.SegmentationTarget(2, masks[0, :5]), 4))

    def test_similarity_target(self, impl: Any, model: Any, x: Any, x_np: np.ndarray,
                               oracle: Any, oracle_model: Any, variant: str) -> None:
        rng = np.random.default_rng(4)
        spec = resolve_targets([ic.SimilarityTarget(e) for e in rng.normal(size=(4, 5))], 4)
        _assert_scored_as_oracle(impl, model, x, oracle, oracle_model, x_np, spec, variant)
        with pytest.raises(ValueError, match="embedding"):
            impl.capture(model, x, [ref.LAYER], resolve_targets(ic.SimilarityTarget([1, 2]), 4))

    def test_output_target(self, impl: Any, model: Any, x: Any, x_np: np.ndarray,
                           oracle: Any, oracle_model: Any, variant: str) -> None:
        """Framework-native callables (basic indexing and arithmetic), one per sample."""
        f = ic.OutputTarget(lambda o: o[:, 3] - 0.5 * o[:, 1])
        g = ic.OutputTarget(lambda o: o[:, 0])
        _assert_scored_as_oracle(impl, model, x, oracle, oracle_model, x_np,
                                 resolve_targets([f, g, f, f], 4), variant, batch_size=2)

    def test_no_target(self, impl: Any, model: Any, x: Any, x_np: np.ndarray, oracle: Any,
                       oracle_model: Any) -> None:
        """Kind ``"none"`` (target-free methods): activations as for any target, zero scores,
        targets -1, and no check of the output's shape (here a 3-D one, no class output)."""
        want = oracle.capture(oracle_model, x_np, [ref.LAYER], resolve_targets(None, 4),
                              gradients=False)
        for output in (None, lambda o: o[:, None, :]):
            got = impl.capture(model, x, [ref.LAYER], no_target(4), gradients=False,
                               output=output)
            np.testing.assert_allclose(got.layers[ref.LAYER].activations,
                                       want.layers[ref.LAYER].activations, atol=ATOL, rtol=1e-5)
            np.testing.assert_array_equal(np.asarray(got.scores), np.zeros(4, np.float32))
            np.testing.assert_array_equal(np.asarray(got.targets), np.full(4, -1))

    @pytest.mark.parametrize("kind", ["tuple", "dict"])
    def test_structured_outputs(self, impl: Any, model: Any, x: Any,
                                structured_output_model: Any, kind: str) -> None:
        wrap = require_hook(structured_output_model, "structured_output_model")
        wrapped, layer = wrap(model, kind)
        targets = [1, 2, 3, 0]
        options = {"backend": impl, "relu": False, "normalize": False}
        plain = ic.GradCAM(model, ref.LAYER, **options).explain(x, targets)
        default = ic.GradCAM(wrapped, layer, **options).explain(x, targets)
        np.testing.assert_allclose(_raw(default), _raw(plain), atol=1e-6, rtol=1e-6)
        np.testing.assert_allclose(default.scores, plain.scores, atol=1e-6, rtol=1e-6)
        aux = 1 if kind == "tuple" else "aux"  # aux = -logits
        negated = ic.GradCAM(wrapped, layer, output=aux, **options).explain(x, targets)
        np.testing.assert_allclose(_raw(negated), -_raw(plain), atol=1e-6, rtol=1e-6)
        np.testing.assert_allclose(negated.scores, -plain.scores, atol=1e-6, rtol=1e-6)
        spec = resolve_targets(targets, 4)
        np.testing.assert_allclose(impl.predict(wrapped, x, spec, output=aux), -plain.scores,
                                   atol=ATOL, rtol=1e-5)
