"""The backend conformance suite: what every adapter must do, checked against closed forms.

Subclass :class:`BackendConformance` in your adapter's tests and give it three fixtures::

    import pytest
    from interp_core.testing.conformance import BackendConformance
    from interp_core.testing.reference import reference_weights

    class TestMyLibConformance(BackendConformance):
        @pytest.fixture
        def backend(self):
            return "mylib"                       # the registered name (or a Backend instance)

        @pytest.fixture
        def reference_model(self):
            return build_reference_model(reference_weights())   # in your framework

        @pytest.fixture
        def to_input(self):
            return lambda x: mylib.asarray(x)    # NumPy (N, 10, 10, 3) -> your native input

The reference model is described in :mod:`interp_core.testing.reference`: its spatial layer must
be addressable as ``"features"`` and its dense layer as ``"fc"``. Results are compared with
:class:`~interp_core.testing.reference.ReferenceBackend` (pure NumPy) to ``ATOL``.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest

import interp_core as ic
from interp_core.backend.protocol import ACTIVATION_PATCH, GRADIENTS, LINEAR_WEIGHTS
from interp_core.backend.targets import resolve_targets
from interp_core.methods import METHODS
from interp_core.testing import reference as ref

ATOL = 1e-5


def _backend(backend: Any) -> Any:
    return ic.get_backend(backend)


class BackendConformance:
    """Abstract pytest suite; subclasses provide ``backend``, ``reference_model``, ``to_input``."""

    @pytest.fixture
    def backend(self) -> Any:  # pragma: no cover - subclasses override
        raise NotImplementedError("subclass BackendConformance and define the backend fixture")

    @pytest.fixture
    def reference_model(self) -> Any:  # pragma: no cover
        raise NotImplementedError("define reference_model: the reference model in your framework")

    @pytest.fixture
    def to_input(self) -> Any:  # pragma: no cover
        raise NotImplementedError("define to_input: NumPy (N, 10, 10, 3) -> native input")

    # -- fixtures shared by the tests -----------------------------------------------------
    @pytest.fixture
    def impl(self, backend: Any) -> Any:
        return _backend(backend)

    @pytest.fixture
    def x_np(self) -> np.ndarray:
        return ref.reference_inputs(4)

    @pytest.fixture
    def oracle(self) -> tuple[ref.ReferenceBackend, ref.ReferenceModel]:
        return ref.ReferenceBackend(), ref.ReferenceModel(ref.reference_weights())

    # -- registration and detection -------------------------------------------------------
    def test_capabilities_declared(self, impl: Any) -> None:
        assert isinstance(impl.name, str) and impl.name == impl.name.lower()
        assert GRADIENTS in impl.capabilities

    def test_detected_from_model(self, impl: Any, reference_model: Any) -> None:
        assert ic.get_backend(reference_model).name == impl.name

    def test_layer_names(self, impl: Any, reference_model: Any) -> None:
        names = impl.layer_names(reference_model)
        assert any(ref.LAYER in n for n in names), names
        assert any(ref.FC in n for n in names), names

    def test_default_layer_is_the_spatial_layer(self, impl: Any, reference_model: Any,
                                                to_input: Any, x_np: np.ndarray) -> None:
        name = impl.default_layer(reference_model, to_input(x_np))
        cap = impl.capture(reference_model, to_input(x_np), [name], resolve_targets(None, 4),
                           gradients=False)
        expected = ref.ReferenceModel(ref.reference_weights()).features(x_np)
        np.testing.assert_allclose(next(iter(cap.layers.values())).activations, expected,
                                   atol=ATOL)

    # -- capture against closed forms -----------------------------------------------------
    def test_capture_matches_closed_form(self, impl: Any, reference_model: Any, to_input: Any,
                                         x_np: np.ndarray, oracle: Any) -> None:
        spec = resolve_targets([0, 1, 2, 4], 4)
        got = impl.capture(reference_model, to_input(x_np), [ref.LAYER], spec)
        want = oracle[0].capture(oracle[1], x_np, [ref.LAYER], spec)
        (layer,) = got.layers.values()
        assert layer.activations.dtype == np.float32
        assert layer.activations.shape == (4, 8, 8, ref.CHANNELS)  # canonical channels-last
        np.testing.assert_allclose(layer.activations, want.layers[ref.LAYER].activations,
                                   atol=ATOL)
        np.testing.assert_allclose(layer.gradients, want.layers[ref.LAYER].gradients, atol=ATOL)
        np.testing.assert_allclose(got.scores, want.scores, atol=ATOL, rtol=1e-5)
        np.testing.assert_array_equal(got.targets, [0, 1, 2, 4])
        assert tuple(got.input_spatial) == ref.INPUT_SHAPE[:2]

    def test_top1_targets(self, impl: Any, reference_model: Any, to_input: Any,
                          x_np: np.ndarray, oracle: Any) -> None:
        got = impl.capture(reference_model, to_input(x_np), [ref.LAYER], resolve_targets(None, 4))
        logits = oracle[1](x_np)
        np.testing.assert_array_equal(got.targets, logits.argmax(1))
        np.testing.assert_allclose(got.scores, logits.max(1), atol=ATOL, rtol=1e-5)

    def test_capture_without_gradients(self, impl: Any, reference_model: Any, to_input: Any,
                                       x_np: np.ndarray) -> None:
        cap = impl.capture(reference_model, to_input(x_np), [ref.LAYER],
                           resolve_targets(2, 4), gradients=False)
        assert cap.layers[next(iter(cap.layers))].gradients is None
        assert cap.scores.shape == (4,)

    def test_predict(self, impl: Any, reference_model: Any, to_input: Any,
                     x_np: np.ndarray, oracle: Any) -> None:
        spec = resolve_targets([3, 1, 0, 2], 4)
        got = impl.predict(reference_model, to_input(x_np), spec, batch_size=3)
        want = oracle[1](x_np)[np.arange(4), [3, 1, 0, 2]]
        assert got.shape == (4,) and got.dtype == np.float32
        np.testing.assert_allclose(got, want, atol=ATOL, rtol=1e-5)

    # -- every method through the adapter equals the NumPy oracle ------------------------
    @pytest.mark.parametrize("method", sorted(METHODS))
    def test_method_matches_oracle(self, impl: Any, reference_model: Any, to_input: Any,
                                   x_np: np.ndarray, oracle: Any, method: str) -> None:
        cls = METHODS[method]
        if method == "cam" and LINEAR_WEIGHTS not in impl.capabilities:
            pytest.skip(f"{impl.name} cannot read dense weights")
        if method == "ablationcam" and ACTIVATION_PATCH not in impl.capabilities:
            pytest.skip(f"{impl.name} cannot patch activations")
        targets = [0, 3, 1, 4]
        got = cls(reference_model, ref.LAYER, backend=impl).explain(to_input(x_np), targets)
        want = cls(oracle[1], ref.LAYER, backend=oracle[0]).explain(x_np, targets)
        assert got.maps.shape == (4, *ref.INPUT_SHAPE[:2])
        assert got.maps.dtype == np.float32
        assert np.isfinite(got.maps).all() and got.maps.min() >= 0 and got.maps.max() <= 1
        np.testing.assert_allclose(got.raw[got.layers[0]], want.raw[ref.LAYER], atol=1e-4,
                                   rtol=1e-4)
        np.testing.assert_allclose(got.maps, want.maps, atol=1e-4)
        assert got.backend == impl.name and got.method == method

    def test_cam_equals_gradcam(self, impl: Any, reference_model: Any, to_input: Any,
                                x_np: np.ndarray) -> None:
        if LINEAR_WEIGHTS not in impl.capabilities:
            pytest.skip(f"{impl.name} cannot read dense weights")
        x = to_input(x_np)
        cam = ic.CAM(reference_model, ref.LAYER, backend=impl, fc=ref.FC)(x)
        grad = ic.GradCAM(reference_model, ref.LAYER, backend=impl)(x)
        np.testing.assert_allclose(cam, grad, atol=1e-5)

    def test_batch_independence(self, impl: Any, reference_model: Any, to_input: Any,
                                x_np: np.ndarray) -> None:
        cam = ic.GradCAM(reference_model, ref.LAYER, backend=impl)
        batch = cam(to_input(x_np), targets=[1, 2, 3, 0])
        for i, t in enumerate([1, 2, 3, 0]):
            single = cam(to_input(x_np[i : i + 1]), targets=[t])
            np.testing.assert_allclose(batch[i], single[0], atol=1e-5)

    def test_numpy_input_in_native_layout(self, impl: Any, reference_model: Any,
                                          to_input: Any, x_np: np.ndarray) -> None:
        native = to_input(x_np)
        as_numpy = np.asarray(impl.to_numpy(native))
        cam = ic.GradCAM(reference_model, ref.LAYER, backend=impl)
        np.testing.assert_allclose(cam(as_numpy, 2), cam(native, 2), atol=1e-6)

    # -- bad input ------------------------------------------------------------------------
    def test_target_out_of_range_names_the_output_count(
        self, impl: Any, reference_model: Any, to_input: Any, x_np: np.ndarray
    ) -> None:
        with pytest.raises(ValueError, match=f"{ref.CLASSES} outputs"):
            ic.GradCAM(reference_model, ref.LAYER, backend=impl)(to_input(x_np), targets=7)

    def test_targets_of_wrong_length(self, impl: Any, reference_model: Any, to_input: Any,
                                     x_np: np.ndarray) -> None:
        with pytest.raises(ValueError, match="4 samples"):
            ic.GradCAM(reference_model, ref.LAYER, backend=impl)(to_input(x_np), targets=[1, 2])

    def test_unknown_layer_lists_close_names(self, impl: Any, reference_model: Any,
                                             to_input: Any, x_np: np.ndarray) -> None:
        with pytest.raises((ValueError, KeyError), match=ref.LAYER):
            ic.GradCAM(reference_model, "featurez", backend=impl)(to_input(x_np))

    def test_non_finite_gradients_warn_and_give_zeros(
        self, impl: Any, reference_model: Any, to_input: Any, x_np: np.ndarray
    ) -> None:
        x_bad = x_np.copy()
        x_bad[1] = np.nan
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            maps = ic.GradCAM(reference_model, ref.LAYER, backend=impl)(to_input(x_bad), 0)
        assert any("non-finite" in str(w.message) for w in caught)
        assert np.isfinite(maps).all()
        assert (maps[1] == 0).all() and maps[0].max() == pytest.approx(1.0)
