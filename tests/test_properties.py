"""Property tests (hypothesis) of every CAM method on the NumPy core (issue 11, item 6).

Every method that runs on the NumPy reference backend is run through its public pipeline
(``explain``), in one or both of two ways:

- ``ArrayBackend`` hands the core arbitrary activations ``A`` and gradients ``G``
  ``(N, *spatial, C)``, for the methods whose map is a function of ``A`` and ``G`` alone
  (:data:`ARRAY_METHODS`: all but CAM, Ablation-CAM and Score-CAM, which need the model's
  dense weights or forward passes);
- the NumPy reference model (conv, ReLU, global average pooling, dense) through
  ``ReferenceBackend``, with weights and inputs drawn by hypothesis, for every method it runs
  (:data:`REFERENCE_METHODS`; the input-gradient attributions need capabilities it lacks).

Properties:

- range: maps are float32, finite, in [0, 1], of shape ``(N, *input_spatial)``, for any
  finite float32 input; all-zero activations, and activations and gradients constant over
  space, give all-zero maps (never NaN); all-zero gradients give all-zero maps for the methods
  that use gradients;
- batch independence: each sample's map is the one it gets alone in a batch of one;
- channel permutation: permuting the channel axis of ``A`` and ``G`` together (or, on the
  model, the convolution's output channels and the dense layer's inputs) leaves every map
  unchanged, for every method, and moves channel weights along;
- scale, with ``a, b > 0`` and ``A >= 0`` (post-ReLU activations) on the arrays:

  ===========================  ==========  ==========  ================
  method                       ``a * A``   ``b * G``   ``(a A, G / a)``
  ===========================  ==========  ==========  ================
  gradcam, gradcam-guidedgrads invariant   invariant   invariant
  xgradcam, hirescam, layercam
  gradcam-elementwise,
  eigengradcam, segeigencam,
  finercam
  eigencam, fem                invariant   (no ``G``)  invariant
  gradcam++, refinecam         changes     changes     invariant
  kpcacam                      changes     (no ``G``)  changes
  ===========================  ==========  ==========  ================

  Grad-CAM++'s weights ``sum_s relu(g) g^2 / (2 g^2 + sum(A) g^3)`` are ``sum_s g / (2 +
  sum(A) g)`` where ``g > 0``: the gradient-sum weights of Grad-CAM for small ``sum(A) g``,
  and ``count(g > 0) / sum(A)`` for large. Neither scale alone leaves them alone; the joint
  rescaling ``(a A, G / a)`` (a ReLU layer's output scaled by ``a`` and the next layer's
  weights by ``1 / a``: the same function) does. KPCA-CAM's default kernel
  ``tanh(<u, v> / C + 1)`` is not homogeneous: for small activations KPCA-CAM is Eigen-CAM,
  for large ones the kernel saturates.

  On the reference model: scaling the convolution by ``a`` (``A -> a A``) and the dense weights
  by ``b`` leaves CAM's map unchanged, and Ablation-CAM's while the target score keeps its
  sign (its weights ``(y - y_c) / y`` share the factor ``1 / y``); Score-CAM's weights are a
  softmax of scores, so scaling changes its map (a softmax temperature), while adding a
  constant to the target's logit does not.

Comparisons allow for float32 rounding: the raw maps (``Explanation.raw``) must agree up to a
positive factor to ``RTOL``, and the final maps to the error that the measured raw difference
can make through ReLU and min-max. Samples whose map is close to constant are compared on the
raw map only; samples whose principal component is not unique (Eigen-CAM, Eigen-Grad-CAM,
KPCA-CAM) are skipped, since rounding may then pick another component.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import interp_core as ic
from interp_core.backend.protocol import GRADIENTS, Capture, LayerCapture, LayerProbe
from interp_core.methods import METHODS
from interp_core.methods.activation import sign_corrected_component
from interp_core.methods.kpca import KERNELS, kernel_first_component
from interp_core.testing import reference as ref

#: Methods that run the model forward again (Score-CAM scores masked inputs): not on bare
#: arrays. CAM and Ablation-CAM drop out of the array tests by themselves: their constructors
#: raise NotImplementedError for the capabilities the array backend lacks.
FORWARD_METHODS = frozenset({"scorecam"})
#: Not invariant to ``A -> a A`` alone (see the module docstring and the tests at the end).
CHANGES_WITH_A = frozenset({"gradcam++", "kpcacam", "refinecam"})
#: Not invariant to ``G -> b G`` alone.
CHANGES_WITH_G = frozenset({"gradcam++", "refinecam"})
#: Not invariant to ``(A, G) -> (a A, G / a)``.
CHANGES_WITH_JOINT = frozenset({"kpcacam"})
#: Maps from a principal component (unique only with an eigengap; sign set by a correlation).
PRINCIPAL_METHODS = frozenset({"eigencam", "eigengradcam", "kpcacam", "segeigencam"})

RTOL = 1e-4
LAYER = "layer"
SETTINGS = settings(max_examples=25, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


# -- an adapter whose "capture" returns the arrays it is given ------------------------------
class ArrayModel:
    """Stands for a model whose layer produced the arrays in the inputs."""

    def __init__(self, input_spatial: tuple[int, ...]) -> None:
        self.input_spatial = tuple(input_spatial)


class ArrayBackend:
    """Inputs ``(N, 2, *spatial, C)`` carry ``A`` (``[:, 0]``) and ``G`` (``[:, 1]``)."""

    name = "arrays"
    capabilities = frozenset({GRADIENTS})

    def layer_names(self, model: ArrayModel) -> list[str]:
        return [LAYER]

    def layer_outputs(self, model: ArrayModel, inputs: Any) -> LayerProbe:
        return LayerProbe((), model.input_spatial, len(inputs), native_channels_first=False,
                          only=LAYER)

    def capture(self, model: ArrayModel, inputs: Any, layers: Any, target: Any, *,
                gradients: bool = True, **options: Any) -> Capture:
        x = np.asarray(inputs, dtype=np.float32)
        n = len(x)
        classes = target.indices if getattr(target, "indices", None) is not None else None
        return Capture(
            layers={LAYER: LayerCapture(LAYER, x[:, 0].copy(),
                                        x[:, 1].copy() if gradients else None)},
            scores=np.zeros(n, np.float32),
            targets=np.zeros(n, np.int64) if classes is None else np.asarray(classes),
            input_spatial=model.input_spatial,
        )

    def to_numpy(self, x: Any) -> np.ndarray:
        return np.asarray(x)

    def from_numpy(self, x: np.ndarray, model: Any) -> np.ndarray:
        return np.asarray(x, dtype=np.float32)


def explain_arrays(method: str, A: np.ndarray, G: np.ndarray,
                   input_spatial: tuple[int, ...]) -> ic.Explanation:
    """``method``'s explanation of a layer that produced ``A`` with gradients ``G``."""
    cam = METHODS[method](ArrayModel(input_spatial), LAYER, backend=ArrayBackend())
    return cam.explain(np.stack([A, G], axis=1).astype(np.float32))


def explain_reference(method: str, weights: ref.ReferenceWeights, x: np.ndarray,
                      targets: list[int]) -> ic.Explanation:
    model = ref.ReferenceModel(weights)
    return METHODS[method](model, ref.LAYER, backend=ref.ReferenceBackend()).explain(x, targets)


def runs_on(method: str, model: Any, layer: str, backend: Any) -> bool:
    """Whether ``method`` can be built on ``backend`` (a constructor raises
    NotImplementedError when the backend lacks a capability the method needs)."""
    try:
        METHODS[method](model, layer, backend=backend)
    except NotImplementedError:
        return False
    return True


#: Every method that runs on the NumPy reference backend (input-gradient attributions need
#: capabilities it does not declare).
REFERENCE_METHODS = sorted(
    m for m in METHODS if runs_on(m, ref.ReferenceModel(), ref.LAYER, ref.ReferenceBackend()))
#: Every method whose map is a function of the layer's activations and gradients alone.
ARRAY_METHODS = sorted(
    m for m in METHODS
    if m not in FORWARD_METHODS and runs_on(m, ArrayModel((1, 1)), LAYER, ArrayBackend()))


# -- strategies -----------------------------------------------------------------------------
#: Values on a coarse dyadic grid keep most sums exact, so rounding stays far below RTOL.
grid = st.integers(-32, 32).map(lambda k: k / 8)
grid_nonneg = st.integers(0, 32).map(lambda k: k / 8)
wide = st.floats(-1e4, 1e4, allow_nan=False, allow_infinity=False, width=32)
#: Any finite float32; its products can overflow to inf inside a method.
any_finite = st.floats(allow_nan=False, allow_infinity=False, width=32)
#: Finite float32 whose products, and sums of a few, stay finite.
product_safe = st.floats(-(2.0**62), 2.0**62, allow_nan=False, allow_infinity=False, width=32)
#: Known to fail on inputs whose products overflow float32 (see the test below).
OVERFLOW_FAILS: dict[str, str] = {}
#: Known to give a map of rounding noise where the activations are constant over space
#: (KPCA-CAM did until its centred kernel's rounding noise was taken for zero).
CONSTANT_FAILS: dict[str, str] = {}


def known_failures(methods: list[str], failures: dict[str, str]) -> list[Any]:
    """``methods`` as pytest parameters, the ones in ``failures`` marked strict xfail."""
    return [pytest.param(m, marks=pytest.mark.xfail(reason=failures[m], strict=True))
            if m in failures else m for m in methods]


@st.composite
def layer_shapes(draw: st.DrawFn) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """``((N, *spatial, C), input_spatial)``: 1 to 3 spatial axes; the input the same size or
    larger (so the map is resized)."""
    k = draw(st.integers(1, 3))
    spatial = tuple(draw(st.lists(st.integers(1, 5), min_size=k, max_size=k)))
    n = draw(st.integers(1, 3))
    c = draw(st.integers(1, 6))
    grow = draw(st.sampled_from([0, 1, 3]))
    return (n, *spatial, c), tuple(s * (1 + grow) + grow for s in spatial)


@st.composite
def layer_arrays(draw: st.DrawFn, acts: st.SearchStrategy = grid_nonneg,
                 grads: st.SearchStrategy = grid) -> tuple[np.ndarray, np.ndarray, tuple]:
    shape, size = draw(layer_shapes())
    A = draw(hnp.arrays(np.float32, shape, elements=acts))
    G = draw(hnp.arrays(np.float32, shape, elements=grads))
    return A, G, size


@st.composite
def reference_setups(draw: st.DrawFn, n_max: int = 3
                     ) -> tuple[ref.ReferenceWeights, np.ndarray, list[int]]:
    """Weights, inputs ``(N, 10, 10, 3)`` and class targets of the reference model."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    scale = draw(st.sampled_from([0.05, 0.4, 2.0]))
    kernel = rng.normal(0, scale, (ref.KERNEL, ref.KERNEL, 3, ref.CHANNELS))
    if draw(st.booleans()):  # some channels dead for every input
        kernel[..., rng.random(ref.CHANNELS) < 0.3] = 0.0
    weights = ref.ReferenceWeights(
        conv_kernel=kernel.astype(np.float32),
        conv_bias=rng.normal(0, scale / 2, ref.CHANNELS).astype(np.float32),
        fc_weight=rng.normal(0, 1, (ref.CLASSES, ref.CHANNELS)).astype(np.float32),
        fc_bias=rng.normal(0, 0.5, ref.CLASSES).astype(np.float32),
    )
    n = draw(st.integers(1, n_max))
    x = rng.normal(0, 1, (n, *ref.INPUT_SHAPE)).astype(np.float32)
    targets = rng.integers(0, ref.CLASSES, n).tolist()
    return weights, x, targets


# -- comparing maps up to rounding ----------------------------------------------------------
def principal_component_is_posed(X: np.ndarray, reference: np.ndarray,
                                 sigmoid_kernel: bool = False) -> np.ndarray:
    """Per sample of ``X`` ``(N, *spatial, C)``, whether its first (kernel) principal component
    is unique (a clear eigengap) and its sign well defined (a clear correlation with
    ``reference`` ``(N, *spatial)``). Elsewhere rounding may pick another component or sign,
    and the map is not a function of the data; comparisons skip such samples."""
    n, c = len(X), X.shape[-1]
    flat = X.reshape(n, -1, c).astype(np.float64)
    flat = flat - flat.mean(axis=1, keepdims=True)
    M = flat @ flat.transpose(0, 2, 1)  # positions x positions
    if sigmoid_kernel:  # KPCA-CAM's default kernel, tanh(<u, v> / C + 1), centred
        M = np.tanh(M / c + 1.0)
        M = M - M.mean(1, keepdims=True) - M.mean(2, keepdims=True) + M.mean((1, 2), keepdims=True)
    values, vectors = np.linalg.eigh(M)
    top = values[:, -1]
    second = values[:, -2] if M.shape[1] > 1 else np.zeros(n)
    proj = vectors[:, :, -1] * np.sqrt(np.maximum(top, 0.0))[:, None]
    proj = proj - proj.mean(1, keepdims=True)
    ref_c = reference.reshape(n, -1).astype(np.float64)
    ref_c = ref_c - ref_c.mean(1, keepdims=True)
    corr = np.abs((proj * ref_c).sum(1))
    norms = np.linalg.norm(proj, axis=1) * np.linalg.norm(ref_c, axis=1)
    scale = np.abs(np.trace(M, axis1=1, axis2=2)) + 1e-300
    return (top > 1e-9 * scale) & (top - second > 1e-2 * top) & (corr > 1e-2 * norms)


def posed(method: str, A: np.ndarray, G: np.ndarray) -> np.ndarray:
    """Samples on which ``method``'s map is well defined (all, except for the principal-
    component methods, see :func:`principal_component_is_posed`)."""
    if method == "eigencam":
        return principal_component_is_posed(A, A.mean(axis=-1))
    if method == "eigengradcam":
        return principal_component_is_posed(A * G, (A * G).sum(axis=-1))
    if method == "kpcacam":
        return principal_component_is_posed(A, A.mean(axis=-1), sigmoid_kernel=True)
    if method == "fem":  # a value on its channel's k-sigma threshold may round to either side
        a = A.astype(np.float64)
        axes = tuple(range(1, A.ndim - 1))
        std = a.std(axis=axes, keepdims=True)
        gap = np.abs(a - a.mean(axis=axes, keepdims=True) - 2 * std)
        clear = (gap > 1e-5 * (np.abs(a).max(axis=axes, keepdims=True) + 1e-30)) | (std == 0)
        return clear.reshape(len(A), -1).all(axis=1)
    if method == "segeigencam":  # the sign comes from the extremes: they must differ clearly
        X = np.abs(G.astype(np.float64)) * A
        proj = sign_corrected_component(X).reshape(len(A), -1).astype(np.float64)
        hi, lo = np.abs(proj.max(axis=1)), np.abs(proj.min(axis=1))
        return principal_component_is_posed(X, proj) & (np.abs(hi - lo) > 1e-2 * np.maximum(
            hi, lo))
    if method in PRINCIPAL_METHODS:
        raise AssertionError(f"no well-posedness check for {method!r}")
    return np.ones(len(A), bool)


def post_ratio(raw: np.ndarray, size: tuple[int, ...]) -> float:
    """How much min-max after ReLU amplifies an error in ``raw`` (one sample), bounded below
    by the span of its ReLU map relative to its largest magnitude; inf if near constant."""
    size_of = float(np.abs(raw).max())
    r = np.maximum(raw.astype(np.float64), 0)
    span = float(r.max() - r.min())
    if size_of == 0 or span <= 1e-3 * size_of:
        return np.inf
    scaled = (r - r.min()) / span
    up = ic.resize_bilinear(scaled[None].astype(np.float32), size)[0] if scaled.shape != size \
        else scaled
    span_up = float(up.max() - up.min())
    if span_up <= 1e-3:
        return np.inf
    return 10.0 / (span * span_up)


def assert_same_explanation(got: ic.Explanation, want: ic.Explanation, *,
                            factor: float | None = 1.0, samples: np.ndarray | None = None,
                            rtol: float = RTOL) -> None:
    """``got`` shows the same map as ``want`` for each chosen sample.

    ``factor``: the raw maps must satisfy ``got.raw == factor * want.raw`` (``None``: some
    positive factor, fitted per sample).
    """
    n = len(want.maps)
    assert got.maps.shape == want.maps.shape and got.maps.dtype == np.float32
    chosen = np.ones(n, bool) if samples is None else samples
    size = tuple(want.maps.shape[1:])
    for name in want.raw:
        rw = want.raw[name].astype(np.float64)
        rg = got.raw[name].astype(np.float64)
        for i in np.flatnonzero(chosen):
            w, g = rw[i], rg[i]
            magnitude = np.abs(w).max()
            if magnitude == 0:  # nothing to scale the rounding by: only all-zero is checkable
                if np.abs(g).max() == 0:
                    np.testing.assert_array_equal(got.maps[i], 0.0)
                continue
            lam = factor if factor is not None else float((g * w).sum() / (w * w).sum())
            assert lam > 0, f"sample {i}: the raw map changed sign (factor {lam})"
            delta = float(np.abs(g / lam - w).max())
            assert delta <= rtol * magnitude, (
                f"sample {i}: raw maps differ by {delta:.3g} (largest |raw| {magnitude:.3g})"
            )
            amplify = post_ratio(w, size)
            if np.isfinite(amplify):
                err = float(np.abs(got.maps[i] - want.maps[i]).max())
                assert err <= amplify * (delta + 1e-7 * magnitude) + 1e-5, (
                    f"sample {i}: maps differ by {err:.3g}, raw by {delta:.3g}"
                )


def assert_valid_maps(exp: ic.Explanation, n: int, size: tuple[int, ...]) -> None:
    maps = exp.maps
    assert maps.shape == (n, *size) and maps.dtype == np.float32
    assert np.isfinite(maps).all()
    assert maps.min() >= 0.0 and maps.max() <= 1.0


# -- range: finite, [0, 1], zeros for zero and constant input --------------------------------
@pytest.mark.parametrize("method", ARRAY_METHODS)
@SETTINGS
@given(data=st.data())
def test_array_maps_are_finite_and_in_unit_range(method, data):
    """Any finite float32 arrays (products within float32 where a method is known to fail
    beyond, see the next test)."""
    values = product_safe if method in OVERFLOW_FAILS else any_finite
    A, G, size = data.draw(layer_arrays(acts=values, grads=values))
    assert_valid_maps(explain_arrays(method, A, G, size), len(A), size)


@pytest.mark.parametrize("method", known_failures(ARRAY_METHODS, OVERFLOW_FAILS))
def test_array_maps_are_valid_when_products_overflow_float32(method):
    rng = np.random.default_rng(0)
    A = (rng.random((2, 4, 4, 3)) * 3e19).astype(np.float32)
    G = (rng.normal(size=(2, 4, 4, 3)) * 3e19).astype(np.float32)  # |G * A| up to ~1e39
    assert_valid_maps(explain_arrays(method, A, G, (8, 8)), 2, (8, 8))


@pytest.mark.parametrize("method", known_failures(ARRAY_METHODS, CONSTANT_FAILS))
@SETTINGS
@given(shapes=layer_shapes(), data=st.data())
def test_zero_activations_give_zero_maps(method, shapes, data):
    shape, size = shapes
    G = data.draw(hnp.arrays(np.float32, shape, elements=grid))
    exp = explain_arrays(method, np.zeros(shape, np.float32), G, size)
    assert_valid_maps(exp, shape[0], size)
    np.testing.assert_array_equal(exp.maps, 0.0)


@pytest.mark.parametrize("method", known_failures(ARRAY_METHODS, CONSTANT_FAILS))
@SETTINGS
@given(shapes=layer_shapes(), data=st.data())
def test_maps_constant_over_space_become_zeros(method, shapes, data):
    shape, size = shapes
    n, c = shape[0], shape[-1]
    per_channel = (n,) + (1,) * (len(shape) - 2) + (c,)
    A = np.broadcast_to(data.draw(hnp.arrays(np.float32, per_channel, elements=wide)), shape)
    G = np.broadcast_to(data.draw(hnp.arrays(np.float32, per_channel, elements=wide)), shape)
    exp = explain_arrays(method, A, G, size)
    assert_valid_maps(exp, n, size)
    np.testing.assert_array_equal(exp.maps, 0.0)


@pytest.mark.parametrize("method", [m for m in ARRAY_METHODS if METHODS[m].needs_gradients])
@SETTINGS
@given(shapes=layer_shapes(), data=st.data())
def test_zero_gradients_give_zero_maps(method, shapes, data):
    shape, size = shapes
    A = data.draw(hnp.arrays(np.float32, shape, elements=wide))
    exp = explain_arrays(method, A, np.zeros(shape, np.float32), size)
    np.testing.assert_array_equal(exp.maps, 0.0)


@pytest.mark.parametrize("method", REFERENCE_METHODS)
@SETTINGS
@given(setup=reference_setups())
def test_reference_maps_are_finite_and_in_unit_range(method, setup):
    weights, x, targets = setup
    exp = explain_reference(method, weights, x, targets)
    assert_valid_maps(exp, len(x), ref.INPUT_SHAPE[:2])


@pytest.mark.parametrize("method", REFERENCE_METHODS)
@SETTINGS
@given(setup=reference_setups(), constant_input=st.booleans())
def test_reference_dead_or_constant_activations_give_zero_maps(method, setup, constant_input):
    """A dead layer (zero kernel, bias <= 0: A == 0) or a constant input (A constant over
    space, and so is every gradient of this model): all-zero maps, never NaN."""
    weights, x, targets = setup
    if constant_input:
        x = np.broadcast_to(x[:, :1, :1, :], x.shape).copy()
    else:
        weights = ref.ReferenceWeights(np.zeros_like(weights.conv_kernel),
                                       -np.abs(weights.conv_bias), weights.fc_weight,
                                       weights.fc_bias)
    exp = explain_reference(method, weights, x, targets)
    assert_valid_maps(exp, len(x), ref.INPUT_SHAPE[:2])
    np.testing.assert_array_equal(exp.maps, 0.0)


# -- batch independence ---------------------------------------------------------------------
@pytest.mark.parametrize("method", ARRAY_METHODS)
@SETTINGS
@given(arrays=layer_arrays(acts=grid, grads=grid), data=st.data())
def test_array_maps_do_not_depend_on_the_rest_of_the_batch(method, arrays, data):
    A, G, size = arrays
    # the other samples replaced by new ones: sample 0's map stays the same
    others = data.draw(hnp.arrays(np.float32, (2, *A.shape[1:]), elements=grid))
    whole = explain_arrays(method, np.concatenate([A, others]), np.concatenate([G, others]),
                           size)
    well = posed(method, A, G)
    for i in range(len(A)):
        alone = explain_arrays(method, A[i : i + 1], G[i : i + 1], size)
        if well[i]:
            assert_same_explanation(_take(whole, i), alone)


@pytest.mark.parametrize("method", REFERENCE_METHODS)
@SETTINGS
@given(setup=reference_setups(n_max=4))
def test_reference_maps_do_not_depend_on_the_rest_of_the_batch(method, setup):
    weights, x, targets = setup
    model = ref.ReferenceModel(weights)
    whole = explain_reference(method, weights, x, targets)
    well = _reference_posed(method, model, x, targets)
    for i in range(len(x)):
        if well[i]:
            alone = explain_reference(method, weights, x[i : i + 1], targets[i : i + 1])
            assert_same_explanation(_take(whole, i), alone)


def _take(exp: ic.Explanation, i: int) -> ic.Explanation:
    """Sample ``i`` of an explanation, as a batch of one."""
    return ic.Explanation(
        maps=exp.maps[i : i + 1], raw={k: v[i : i + 1] for k, v in exp.raw.items()},
        scores=exp.scores[i : i + 1], targets=exp.targets[i : i + 1], layers=exp.layers,
        method=exp.method, backend=exp.backend,
        weights={k: v[i : i + 1] for k, v in exp.weights.items()},
    )


def _reference_posed(method: str, model: ref.ReferenceModel, x: np.ndarray,
                     targets: list[int]) -> np.ndarray:
    A = model.features(x)
    G = np.broadcast_to(model.weights.fc_weight[targets][:, None, None, :], A.shape)
    return posed(method, A, G)


# -- channel permutation --------------------------------------------------------------------
@pytest.mark.parametrize("method", ARRAY_METHODS)
@SETTINGS
@given(arrays=layer_arrays(acts=grid, grads=grid), seed=st.integers(0, 2**32 - 1))
def test_array_maps_are_invariant_to_permuting_channels(method, arrays, seed):
    A, G, size = arrays
    perm = np.random.default_rng(seed).permutation(A.shape[-1])
    want = explain_arrays(method, A, G, size)
    got = explain_arrays(method, A[..., perm], G[..., perm], size)
    assert_same_explanation(got, want, samples=posed(method, A, G))
    for name, w in want.weights.items():  # channel-weight methods: the weights move along
        np.testing.assert_allclose(got.weights[name], w[:, perm], rtol=1e-5, atol=1e-6)


def permuted_channels(weights: ref.ReferenceWeights, perm: np.ndarray) -> ref.ReferenceWeights:
    """The same function with the convolution's output channels in order ``perm``."""
    return ref.ReferenceWeights(weights.conv_kernel[..., perm], weights.conv_bias[perm],
                                weights.fc_weight[:, perm], weights.fc_bias)


@pytest.mark.parametrize("method", REFERENCE_METHODS)
@SETTINGS
@given(setup=reference_setups(), seed=st.integers(0, 2**32 - 1))
def test_reference_maps_are_invariant_to_permuting_channels(method, setup, seed):
    weights, x, targets = setup
    perm = np.random.default_rng(seed).permutation(ref.CHANNELS)
    want = explain_reference(method, weights, x, targets)
    got = explain_reference(method, permuted_channels(weights, perm), x, targets)
    well = _reference_posed(method, ref.ReferenceModel(weights), x, targets)
    assert_same_explanation(got, want, samples=well)


# -- scale behaviour ------------------------------------------------------------------------
scales = st.sampled_from([0.125, 0.3, 0.5, 2.0, 3.7, 16.0])


@pytest.mark.parametrize(("method", "scaled"), [
    *[(m, "activations") for m in sorted(set(ARRAY_METHODS) - CHANGES_WITH_A)],
    *[(m, "gradients") for m in sorted(set(ARRAY_METHODS) - CHANGES_WITH_G)],
])
@SETTINGS
@given(arrays=layer_arrays(), factor=scales)
def test_array_maps_are_invariant_to_scaling_activations_or_gradients(method, scaled, arrays,
                                                                      factor):
    """``A -> a A`` or ``G -> b G`` alone (see the table in the module docstring)."""
    A, G, size = arrays
    want = explain_arrays(method, A, G, size)
    if scaled == "activations":
        got = explain_arrays(method, A * factor, G, size)
    else:
        got = explain_arrays(method, A, G * factor, size)
    assert_same_explanation(got, want, factor=None, samples=posed(method, A, G), rtol=1e-3)


@pytest.mark.parametrize("method", sorted(set(ARRAY_METHODS) - CHANGES_WITH_JOINT))
@SETTINGS
@given(arrays=layer_arrays(grads=st.integers(-8, 8).map(lambda k: k / 2)),
       a=st.sampled_from([0.5, 0.8, 1.25, 2.0]))
def test_array_maps_are_invariant_to_rescaling_a_relu_layer(method, arrays, a):
    """``(A, G) -> (a A, G / a)``: the layer's output scaled and the next layer's weights
    unscaled, the same function. Grad-CAM++ gives the same map too; KPCA-CAM does not."""
    A, G, size = arrays
    want = explain_arrays(method, A, G, size)
    got = explain_arrays(method, A * a, G / a, size)
    assert_same_explanation(got, want, factor=None, samples=posed(method, A, G),
                            rtol=1e-3)


def test_gradcam_plus_plus_changes_with_the_scale_of_activations_or_gradients():
    """Grad-CAM++ weighs channel 0 (a gradient everywhere) against channel 1 (one strong
    gradient) differently at each scale: ``sum_s g / (2 + sum(A) g)`` is not homogeneous. At
    large ``sum(A) g`` it counts positive gradients (channel 0 wins), at small ones it sums
    them (channel 1 wins)."""
    A = np.zeros((1, 4, 4, 2), np.float32)
    G = np.zeros_like(A)
    A[0, :2, :, 0] = 0.01    # channel 0 lights the top half
    G[0, :, :, 0] = 10.0     # a gradient at all 16 positions
    A[0, 2:, :, 1] = 0.01    # channel 1 lights the bottom half
    G[0, 0, 0, 1] = 1000.0   # one strong gradient
    size = (4, 4)
    base = explain_arrays("gradcam++", A, G, size)

    def top_minus_bottom(exp: ic.Explanation) -> float:
        return float(exp.maps[0, :2].mean() - exp.maps[0, 2:].mean())

    # at this scale channel 0 wins; with gradients or activations 100x smaller, channel 1
    assert top_minus_bottom(base) > 0.5
    assert top_minus_bottom(explain_arrays("gradcam++", A, G / 100, size)) < -0.5
    assert top_minus_bottom(explain_arrays("gradcam++", A / 100, G, size)) < -0.5
    # the joint rescaling (a A, G / a) leaves the map alone
    same = explain_arrays("gradcam++", A * 100, G / 100, size)
    np.testing.assert_allclose(same.maps, base.maps, atol=1e-4)
    # Grad-CAM, for contrast, gives the same map at every scale
    grad = explain_arrays("gradcam", A, G, size)
    np.testing.assert_allclose(explain_arrays("gradcam", A, G / 100, size).maps, grad.maps,
                               atol=1e-5)


def scaled(weights: ref.ReferenceWeights, conv: float = 1.0, fc: float = 1.0,
           bias_shift: np.ndarray | float = 0.0) -> ref.ReferenceWeights:
    """Convolution (kernel and bias) times ``conv`` (so ``A -> conv * A``: ReLU is positively
    homogeneous), dense weights times ``fc``, dense bias plus ``bias_shift``."""
    return ref.ReferenceWeights(
        (weights.conv_kernel * conv).astype(np.float32),
        (weights.conv_bias * conv).astype(np.float32),
        (weights.fc_weight * fc).astype(np.float32),
        (weights.fc_bias + bias_shift).astype(np.float32),
    )


@SETTINGS
@given(setup=reference_setups(), a=scales, b=scales)
def test_cam_is_invariant_to_scaling_the_layer_and_the_dense_weights(setup, a, b):
    weights, x, targets = setup
    want = explain_reference("cam", weights, x, targets)
    got = explain_reference("cam", scaled(weights, conv=a, fc=b), x, targets)
    assert_same_explanation(got, want, factor=a * b, rtol=1e-3)


@SETTINGS
@given(setup=reference_setups(), a=scales, b=scales)
def test_ablation_cam_is_invariant_to_scaling_while_the_score_keeps_its_sign(setup, a, b):
    weights, x, targets = setup
    model, model2 = ref.ReferenceModel(weights), ref.ReferenceModel(scaled(weights, a, b))
    rows = np.arange(len(x))
    y, y2 = model(x)[rows, targets], model2(x)[rows, targets]
    keeps_sign = (np.sign(y) == np.sign(y2)) & (np.abs(y) > 1e-2) & (np.abs(y2) > 1e-2)
    assume(keeps_sign.any())
    want = explain_reference("ablationcam", weights, x, targets)
    got = explain_reference("ablationcam", scaled(weights, a, b), x, targets)
    assert_same_explanation(got, want, factor=None, samples=keeps_sign, rtol=1e-3)


@SETTINGS
@given(setup=reference_setups(), shift=st.floats(-5, 5))
def test_score_cam_is_invariant_to_an_offset_of_the_target_logit(setup, shift):
    """Score-CAM's weights are ``softmax_c(score of x * mask_c)``: adding a constant to the
    target's logit adds it to every channel's score, and the softmax ignores it."""
    weights, x, targets = setup
    want = explain_reference("scorecam", weights, x, targets)
    got = explain_reference("scorecam", scaled(weights, bias_shift=shift), x, targets)
    assert_same_explanation(got, want, rtol=1e-3)


def test_score_cam_changes_with_the_scale_of_the_scores():
    """Scaling the dense weights scales the masked-input scores: a softmax temperature, so
    the channel weights, and the map, change (unlike CAM's and Grad-CAM's)."""
    weights = ref.reference_weights(0)
    x = ref.reference_inputs(4)
    targets = [0, 1, 2, 3]
    base = explain_reference("scorecam", weights, x, targets)
    hot = explain_reference("scorecam", scaled(weights, fc=50.0), x, targets)
    assert np.abs(hot.maps - base.maps).max() > 0.1
    cam = explain_reference("cam", weights, x, targets)
    np.testing.assert_allclose(
        explain_reference("cam", scaled(weights, fc=50.0), x, targets).maps, cam.maps,
        atol=1e-4)


def test_kpca_cam_tends_to_eigen_cam_for_small_activations_and_differs_for_large():
    """KPCA-CAM's default kernel ``tanh(<u, v> / C + 1)`` is linear in ``<u, v>`` near 0, so
    for small activations KPCA-CAM is Eigen-CAM; for large ones the kernel saturates."""
    A = np.maximum(np.random.default_rng(3).normal(size=(3, 5, 6, 4)), 0).astype(np.float32)
    G = np.zeros_like(A)

    def gap(scale: float) -> float:
        kpca = explain_arrays("kpcacam", A * scale, G, (5, 6)).maps
        eigen = explain_arrays("eigencam", A * scale, G, (5, 6)).maps
        return float(np.abs(kpca - eigen).max())

    assert gap(1e-3) < 1e-4
    assert gap(10.0) > 0.3


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("side", [5, 33])  # 25 positions: eigh; 1089: subspace iteration
def test_kpca_cam_of_a_layer_constant_over_space_is_zero(kernel, side):
    """Constant activations give a centred kernel of rounding noise (~1e-16): the projection
    and the map are exactly zero, not that noise min-max scaled to [0, 1]; a small real
    difference at one position still gives a map."""
    rng = np.random.default_rng(1)
    per_channel = np.float32(rng.normal(size=(2, 1, 1, 6)) * [[[[1e-3, 0.1, 1, 3, 1e2, 1e4]]]])
    A = np.broadcast_to(per_channel, (2, side, side, 6)).copy()
    proj = kernel_first_component(A, A.mean(-1), kernel=kernel)
    np.testing.assert_array_equal(proj, 0.0)
    if kernel == "sigmoid":  # the method's default kernel, through the whole pipeline
        exp = explain_arrays("kpcacam", A, np.zeros_like(A), (side, side))
        np.testing.assert_array_equal(exp.raw[LAYER], 0.0)
        np.testing.assert_array_equal(exp.maps, 0.0)
    A[:, 2, 3] += 0.5  # one position differs: a real component
    proj = kernel_first_component(A, A.mean(-1), kernel=kernel)
    assert (np.abs(proj).reshape(2, -1).max(axis=1) > 1e-3).all()


def test_method_classes_name_real_methods():
    """The method names this file singles out exist (a renamed method would otherwise slip
    into, or out of, the tests that assume its behaviour)."""
    named = FORWARD_METHODS | CHANGES_WITH_A | CHANGES_WITH_G | CHANGES_WITH_JOINT \
        | PRINCIPAL_METHODS
    assert set(METHODS) >= named, sorted(named - set(METHODS))
    # every method the reference backend runs is in the array tests, or needs the model (or,
    # ShapleyCAM, a Hessian-vector product, which the arrays do not carry)
    assert set(REFERENCE_METHODS) - set(ARRAY_METHODS) <= {"cam", "ablationcam", "scorecam",
                                                           "shapleycam"}
