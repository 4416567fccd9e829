"""Registration, layers, capture and prediction, against the closed forms."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest

import interp_core as ic
from interp_core.backend.layer_choice import default_layer
from interp_core.backend.protocol import GRADIENTS, scoring_session
from interp_core.backend.target_spec import resolve_targets
from interp_core.testing import reference as ref
from interp_core.testing.suite.fixtures import ATOL, SuiteFixtures


def assert_capture_equal(got: Any, want: Any, n: int, variant: str) -> None:
    """A capture of layer ``"features"`` equals the oracle's: layout, values, scores."""
    (layer,) = got.layers.values()
    expected = want.layers[ref.LAYER]
    shape = (n, *ref.feature_shape(variant))
    assert layer.activations.dtype == np.float32
    assert layer.activations.shape == shape, (
        f"activations {layer.activations.shape}, want {shape}: canonical (N, H, W, C)")
    np.testing.assert_allclose(layer.activations, expected.activations, atol=ATOL)
    if expected.gradients is not None:
        assert layer.gradients is not None and layer.gradients.shape == shape
        np.testing.assert_allclose(layer.gradients, expected.gradients, atol=ATOL,
                                   err_msg="d(sum of scores)/dA differs from the closed form")
    np.testing.assert_allclose(got.scores, want.scores, atol=ATOL, rtol=1e-5)
    np.testing.assert_array_equal(got.targets, want.targets)
    assert tuple(got.input_spatial) == ref.input_shape(variant)[:2]


class CaptureTests(SuiteFixtures):
    # -- registration and layers ----------------------------------------------------------
    def test_capabilities_declared(self, impl: Any) -> None:
        assert isinstance(impl.name, str) and impl.name == impl.name.lower()
        assert GRADIENTS in impl.capabilities

    def test_detected_from_model(self, impl: Any, model: Any) -> None:
        assert ic.get_backend(model).name == impl.name

    def test_reference_model_matches_its_variant(self, impl: Any, model: Any, x: Any,
                                                 x_np: np.ndarray, oracle_model: Any,
                                                 variant: str) -> None:
        got = impl.predict(model, x, resolve_targets(None, len(x_np)))
        np.testing.assert_allclose(
            got, oracle_model(x_np).max(axis=1), atol=ATOL, rtol=1e-5,
            err_msg=f"the reference_model builder did not build the {variant!r} variant")

    def test_layer_names(self, impl: Any, model: Any) -> None:
        names = impl.layer_names(model)
        assert any(ref.LAYER in n for n in names), names
        assert any(ref.FC in n for n in names), names

    def test_default_layer_is_the_spatial_layer(self, impl: Any, model: Any, x: Any,
                                                x_np: np.ndarray, oracle_model: Any) -> None:
        name = default_layer(impl, model, x)
        cap = impl.capture(model, x, [name], resolve_targets(None, len(x_np)), gradients=False)
        np.testing.assert_allclose(next(iter(cap.layers.values())).activations,
                                   oracle_model.features(x_np), atol=ATOL)

    # -- capture against closed forms -----------------------------------------------------
    def test_capture_matches_closed_form(self, impl: Any, model: Any, x: Any, x_np: np.ndarray,
                                         oracle: Any, oracle_model: Any, variant: str) -> None:
        spec = resolve_targets([0, 1, 2, 4], 4)
        got = impl.capture(model, x, [ref.LAYER], spec)
        assert_capture_equal(got, oracle.capture(oracle_model, x_np, [ref.LAYER], spec), 4,
                             variant)

    def test_top1_targets(self, impl: Any, model: Any, x: Any, x_np: np.ndarray, oracle: Any,
                          oracle_model: Any, variant: str) -> None:
        spec = resolve_targets(None, 4)
        got = impl.capture(model, x, [ref.LAYER], spec)
        np.testing.assert_array_equal(got.targets, oracle_model(x_np).argmax(1))
        assert_capture_equal(got, oracle.capture(oracle_model, x_np, [ref.LAYER], spec), 4,
                             variant)

    def test_capture_without_gradients(self, impl: Any, model: Any, x: Any) -> None:
        cap = impl.capture(model, x, [ref.LAYER], resolve_targets(2, 4), gradients=False)
        assert cap.layers[next(iter(cap.layers))].gradients is None
        assert cap.scores.shape == (4,)

    def test_predict(self, impl: Any, model: Any, x: Any, x_np: np.ndarray,
                     oracle_model: Any) -> None:
        spec = resolve_targets([3, 1, 0, 2], 4)
        got = impl.predict(model, x, spec, batch_size=3)
        want = oracle_model(x_np)[np.arange(4), [3, 1, 0, 2]]
        assert got.shape == (4,) and got.dtype == np.float32
        np.testing.assert_allclose(got, want, atol=ATOL, rtol=1e-5)

    def test_predict_in_scoring_session(self, impl: Any, model: Any, x: Any, x_np: np.ndarray,
                                        oracle_model: Any) -> None:
        """Inside the adapter's optional ``scoring_session`` (Score-CAM's), ``predict`` gives
        the same scores; an adapter without one gets an empty block."""
        spec = resolve_targets([3, 1, 0, 2], 4)
        with scoring_session(impl, model):
            got = impl.predict(model, x, spec, batch_size=3)
            again = impl.predict(model, x, spec, batch_size=4)
        want = oracle_model(x_np)[np.arange(4), [3, 1, 0, 2]]
        np.testing.assert_allclose(got, want, atol=ATOL, rtol=1e-5)
        np.testing.assert_allclose(again, want, atol=ATOL, rtol=1e-5)
        np.testing.assert_allclose(impl.predict(model, x, spec, batch_size=3), want, atol=ATOL,
                                   rtol=1e-5)

    def test_batch_independence(self, impl: Any, model: Any, to_input: Any,
                                x_np: np.ndarray) -> None:
        """Each sample's gradient is its own: the sum of scores, never the batch mean."""
        spec = resolve_targets([1, 2, 3, 0], 4)
        batch = impl.capture(model, to_input(x_np), [ref.LAYER], spec)
        for i, t in enumerate([1, 2, 3, 0]):
            one = impl.capture(model, to_input(x_np[i : i + 1]), [ref.LAYER],
                               resolve_targets([t], 1))
            (b,), (o,) = batch.layers.values(), one.layers.values()
            np.testing.assert_allclose(b.gradients[i], o.gradients[0], atol=ATOL)
            np.testing.assert_allclose(batch.scores[i], one.scores[0], atol=ATOL, rtol=1e-5)

    def test_numpy_input_in_native_layout(self, impl: Any, model: Any, x: Any) -> None:
        as_numpy = np.asarray(impl.to_numpy(x))
        cam = ic.GradCAM(model, ref.LAYER, backend=impl)
        np.testing.assert_allclose(cam(as_numpy, 2), cam(x, 2), atol=1e-6)

    # -- bad input ------------------------------------------------------------------------
    def test_target_out_of_range_names_the_output_count(self, impl: Any, model: Any,
                                                        x: Any) -> None:
        with pytest.raises(ValueError, match=f"{ref.CLASSES} outputs"):
            ic.GradCAM(model, ref.LAYER, backend=impl)(x, targets=7)
        with pytest.raises(ValueError, match=f"{ref.CLASSES} outputs"):
            impl.predict(model, x, resolve_targets(7, 4))

    def test_targets_of_wrong_length(self, impl: Any, model: Any, x: Any) -> None:
        with pytest.raises(ValueError, match="4 samples"):
            ic.GradCAM(model, ref.LAYER, backend=impl)(x, targets=[1, 2])

    def test_unknown_layer_lists_close_names(self, impl: Any, model: Any, x: Any) -> None:
        with pytest.raises((ValueError, KeyError), match=ref.LAYER):
            ic.GradCAM(model, "featurez", backend=impl)(x)
        with pytest.raises((ValueError, KeyError), match=ref.LAYER):
            impl.capture(model, x, ["featurez"], resolve_targets(0, 4))

    @pytest.mark.parametrize("variant", ["gap"])
    def test_non_finite_gradients_warn_and_give_zeros(self, impl: Any, model: Any,
                                                      to_input: Any, x_np: np.ndarray) -> None:
        x_bad = x_np.copy()
        x_bad[1] = np.nan
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            maps = ic.GradCAM(model, ref.LAYER, backend=impl)(to_input(x_bad), 0)
        assert any("non-finite" in str(w.message) for w in caught)
        assert np.isfinite(maps).all()
        assert (maps[1] == 0).all() and maps[0].max() == pytest.approx(1.0)
