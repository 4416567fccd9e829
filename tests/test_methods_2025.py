"""The methods the peers added in 2025 (issue 23): FEM, Finer-CAM (and its ContrastTarget),
Seg-Eigen-CAM and RefineCAM.

- Core, no framework: the formulas against loops written out here, on NumPy arrays and on the
  NumPy reference backend; edge cases (constant activations, more ranks than classes, a
  single-logit model); the contrast target's constants for compiled adapters.
- Adapters: new ContrastTarget values do not recompile TensorFlow's or JAX's functions.

Agreement with pytorch-grad-cam itself is in ``tests/test_pytorch_grad_cam_package.py`` (zoo
venv); between the three frameworks in ``tests/test_cross_framework.py``.
"""

from __future__ import annotations

import numpy as np
import pytest

import interp_core as ic
from interp_core.backend.compiled import ReplayOps, plan_targets
from interp_core.backend.scoring import target_scores
from interp_core.backend.target_spec import fixed_targets, resolve_targets
from interp_core.methods import method_table
from interp_core.methods.activation import fem_weights, first_component, sign_corrected_component
from interp_core.methods.postprocess import finish_maps, normalize_minmax, resize_bilinear
from interp_core.testing import reference as ref
from tests.conftest import require_framework

OPS = ref.NUMPY_OPS


@pytest.fixture
def backend() -> ref.ReferenceBackend:
    return ref.ReferenceBackend()


@pytest.fixture
def model() -> ref.ReferenceModel:
    return ref.ReferenceModel()


@pytest.fixture
def x() -> np.ndarray:
    return ref.reference_inputs(4)


# -- FEM ----------------------------------------------------------------------------------------
def test_fem_weights_are_the_share_above_the_k_sigma_threshold():
    a = np.random.default_rng(0).gamma(1.0, size=(2, 5, 6, 4)).astype(np.float32)
    a[1, ..., 2] = 0.7  # a constant channel: nothing above its mean
    for k in (0.0, 1.0, 2.0):
        want = np.zeros((2, 4))
        for n in range(2):
            for c in range(4):
                values = a[n, ..., c].astype(np.float64).ravel()
                want[n, c] = np.mean(values > values.mean() + k * values.std())
        np.testing.assert_allclose(fem_weights(a, k), want, atol=1e-7)
    assert fem_weights(a)[1, 2] == 0


def test_fem_map_is_the_weighted_sum_and_constant_layers_give_zeros(backend, model, x):
    exp = ic.FEM(model, backend=backend, k=1.0).explain(x)
    acts = model.features(x)
    weights = fem_weights(acts, 1.0)
    np.testing.assert_allclose(exp.weights[ref.LAYER], weights)
    np.testing.assert_allclose(exp.raw[ref.LAYER], np.einsum("nhwc,nc->nhw", acts, weights),
                               rtol=1e-5, atol=1e-6)
    assert exp.maps.shape == (4, *x.shape[1:3]) and exp.method == "fem"
    assert exp.scores.shape == (0,) and (exp.targets == -1).all()  # target-free
    np.testing.assert_array_equal(ic.FEM(model, backend=backend, k=1.0)(x, [1, 2, 3, 4]),
                                  exp.maps)  # targets are ignored
    constant = np.full((2, 4, 4, 3), 5.0, np.float32)
    assert not fem_weights(constant).any()
    maps = finish_maps([np.einsum("nhwc,nc->nhw", constant, fem_weights(constant))], (8, 8))
    assert np.isfinite(maps).all() and not maps.any()
    with pytest.raises(ValueError, match="k=nan"):
        ic.FEM(model, backend=backend, k=float("nan"))


# -- Seg-Eigen-CAM -----------------------------------------------------------------------------
def test_sign_correction_makes_the_largest_magnitude_positive():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(6, 5, 7, 3))
    got = sign_corrected_component(X)
    plain = first_component(X, X.sum(-1))
    flat = got.reshape(6, -1)
    assert (np.abs(flat.max(1)) >= np.abs(flat.min(1))).all()
    for g, p in zip(got, plain, strict=True):  # the same component, up to its sign
        assert np.allclose(g, p, atol=1e-5) or np.allclose(g, -p, atol=1e-5)
    np.testing.assert_allclose(sign_corrected_component(-X), got, atol=1e-5)  # sign-free
    # one hot spot on a flat background: the spot is positive whatever the SVD returns
    spot = np.zeros((1, 6, 6, 2))
    spot[0, 2, 3] = [4.0, -3.0]
    corrected = sign_corrected_component(spot)[0]
    assert corrected[2, 3] == corrected.max() > 0


def test_segeigencam_is_the_corrected_component_of_abs_gradient_times_activation(
        backend, model, x):
    spec = resolve_targets([0, 3, 1, 4], 4)
    cap = backend.capture(model, x, [ref.LAYER], spec)
    layer = cap.layers[ref.LAYER]
    want = sign_corrected_component(np.abs(layer.gradients.astype(np.float64))
                                    * layer.activations)
    exp = ic.SegEigenCAM(model, backend=backend).explain(x, [0, 3, 1, 4])
    np.testing.assert_allclose(exp.raw[ref.LAYER], want, atol=1e-6)
    with pytest.raises(TypeError, match="eigen_smooth"):
        ic.SegEigenCAM(model, backend=backend, eigen_smooth=True)


# -- the contrast target ---------------------------------------------------------------------
def _contrast_by_hand(o: np.ndarray, main: int | None, comparisons: list[int] | None,
                      ranks: tuple[int, ...], alpha: float) -> float:
    """Finer-CAM's score of one row of logits, written out."""
    o = o.astype(np.float64)
    m = int(np.argmax(o)) if main is None else main
    if comparisons is None:
        others = sorted((j for j in range(len(o)) if j != m), key=lambda j: abs(o[j] - o[m]))
        comparisons = [others[r - 1] for r in ranks if r < len(o)]
    p = np.exp(o - o.max()) / np.exp(o - o.max()).sum()
    num = sum(p[j] * (o[m] - alpha * o[j]) for j in comparisons)
    return num / (sum(p[j] for j in comparisons) + 1e-9)


def test_contrast_score_is_finer_cams_formula():
    rng = np.random.default_rng(2)
    logits = (rng.normal(size=(5, 7)) * 3).astype(np.float32)
    cases = [ic.ContrastTarget(), ic.ContrastTarget(main=2, alpha=0.5),
             ic.ContrastTarget(comparisons=[1, 6], alpha=2.0),
             ic.ContrastTarget(main=4, comparisons=[0]), ic.ContrastTarget(ranks=(2, 6, 9))]
    spec = resolve_targets(cases, 5)  # one batch, rows of different lengths
    assert spec.kind == "contrast" and spec.comparisons.shape == (5, 3)
    scores, mains = target_scores(logits, spec, OPS)
    want = [_contrast_by_hand(o, t.main, None if t.comparisons is None else list(t.comparisons),
                              tuple(t.ranks), t.alpha) for o, t in zip(logits, cases, strict=True)]
    np.testing.assert_allclose(scores, want, rtol=1e-5)
    expected_mains = [int(np.argmax(logits[0])), 2, int(np.argmax(logits[2])), 4,
                      int(np.argmax(logits[4]))]
    np.testing.assert_array_equal(mains, expected_mains)
    np.testing.assert_array_equal(spec.resolved_indices(mains), expected_mains)


def test_contrast_ranks_beyond_the_classes_are_dropped_and_one_logit_is_an_error():
    logits = np.array([[3.0, 1.0, 2.5]], np.float32)
    spec = resolve_targets(ic.ContrastTarget(), 1)  # ranks 1, 2, 3 of 3 classes: 1 and 2
    np.testing.assert_allclose(target_scores(logits, spec, OPS)[0],
                               [_contrast_by_hand(logits[0], None, [2, 1], (), 1.0)], rtol=1e-6)
    with pytest.raises(ValueError, match=r"no comparison class.*1 output"):
        target_scores(np.ones((2, 1), np.float32), resolve_targets(ic.ContrastTarget(), 2), OPS)
    with pytest.raises(ValueError, match="no comparison class"):
        target_scores(logits, resolve_targets(ic.ContrastTarget(ranks=[3, 4]), 1), OPS)
    with pytest.raises(ValueError, match="comparison class 3 is out of range"):
        target_scores(logits, resolve_targets(ic.ContrastTarget(comparisons=[3]), 1), OPS)
    with pytest.raises(ValueError, match="main class 5 is out of range"):
        target_scores(logits, resolve_targets(ic.ContrastTarget(main=5), 1), OPS)
    with pytest.raises(ValueError, match=r"\(N, num_classes\)"):
        target_scores(np.ones((1, 3, 2), np.float32), spec, OPS)


def test_contrast_target_checks_its_arguments():
    with pytest.raises(ValueError, match="main=-1"):
        ic.ContrastTarget(main=-1)
    with pytest.raises(ValueError, match="include the main class 2"):
        ic.ContrastTarget(main=2, comparisons=[1, 2])
    with pytest.raises(ValueError, match="ranks"):
        ic.ContrastTarget(ranks=[0, 1])
    with pytest.raises(ValueError, match="comparisons"):
        ic.ContrastTarget(comparisons=[])
    with pytest.raises(TypeError, match="ints"):
        ic.ContrastTarget(ranks=[1.5])
    with pytest.raises(ValueError, match="alpha"):
        ic.ContrastTarget(alpha=float("inf"))


def test_contrast_constants_replay_and_share_one_compiled_key():
    logits = np.random.default_rng(3).normal(size=(3, 6)).astype(np.float32)
    a = resolve_targets([ic.ContrastTarget(), ic.ContrastTarget(main=1, alpha=0.3),
                         ic.ContrastTarget(comparisons=[0, 5, 2])], 3)
    b = resolve_targets([ic.ContrastTarget(main=4, comparisons=[1, 2, 3], alpha=3.0),
                         ic.ContrastTarget(ranks=(5, 4, 1)), ic.ContrastTarget()], 3)
    plan_a, plan_b = plan_targets(a, logits.shape), plan_targets(b, logits.shape)
    assert plan_a.key == plan_b.key  # new values, same shapes: compiled functions are reused
    for spec, plan in ((a, plan_a), (b, plan_b)):
        direct = target_scores(logits, spec, OPS)
        replayed = target_scores(logits, spec, ReplayOps(OPS, plan.consts))
        np.testing.assert_allclose(replayed[0], direct[0], rtol=1e-6)
        np.testing.assert_array_equal(replayed[1], direct[1])
    pinned = fixed_targets(a, np.array([5, 0, 3]))
    np.testing.assert_array_equal(pinned.indices, [5, 1, 3])  # top-1 mains pinned, others kept
    np.testing.assert_array_equal(pinned.comparisons, a.comparisons)
    np.testing.assert_allclose(a.take(slice(1, 3)).alphas, [0.3, 1.0], rtol=1e-7)


# -- Finer-CAM ----------------------------------------------------------------------------------
def test_finercam_is_gradcam_of_the_contrast_target(backend, model, x):
    logits = model(x)
    finer = ic.FinerCAM(model, backend=backend, alpha=0.5, comparisons=2).explain(x)
    target = ic.ContrastTarget(ranks=(1, 2), alpha=0.5)
    plain = ic.GradCAM(model, backend=backend).explain(x, target)
    np.testing.assert_allclose(finer.maps, plain.maps, atol=1e-6)
    np.testing.assert_array_equal(finer.targets, logits.argmax(1))  # the main classes
    want = [_contrast_by_hand(o, None, None, (1, 2), 0.5) for o in logits]
    np.testing.assert_allclose(finer.scores, want, rtol=1e-5)
    assert finer.method == "finercam" and ref.LAYER in finer.weights
    # given classes are the main classes
    given = ic.FinerCAM(model, backend=backend).explain(x, [1, 2, 3, 4])
    np.testing.assert_array_equal(given.targets, [1, 2, 3, 4])
    np.testing.assert_allclose(
        given.scores, [_contrast_by_hand(o, m, None, (1, 2, 3), 1.0)
                       for o, m in zip(logits, [1, 2, 3, 4], strict=True)], rtol=1e-5)
    # against the plain class target, the maps differ: the comparison classes' evidence goes
    assert np.abs(given.maps - ic.GradCAM(model, backend=backend)(x, [1, 2, 3, 4])).max() > 0.05


def test_finercam_edge_cases(backend, x):
    binary = ref.ReferenceModel(ref.reference_weights(classes=1))
    with pytest.raises(ValueError, match="no comparison class"):
        ic.FinerCAM(binary, backend=backend)(x)
    three = ref.ReferenceModel(ref.reference_weights(classes=3))  # k = 3 > classes - 1
    got = ic.FinerCAM(three, backend=backend).explain(x)
    want = ic.FinerCAM(three, backend=backend, comparisons=2).explain(x)
    np.testing.assert_allclose(got.maps, want.maps, atol=1e-6)
    model = ref.ReferenceModel()
    with pytest.raises(ValueError, match="ranks"):
        ic.FinerCAM(model, backend=backend, comparisons=0)
    with pytest.raises(ValueError, match="FinerCAM explains classes"):
        ic.FinerCAM(model, backend=backend)(x, ic.BinaryTarget())
    with pytest.raises(TypeError, match="CAM method"):
        ic.FinerCAM(model, backend=backend, base=ic.Saliency)
    with pytest.raises(TypeError, match="built on a base method"):
        ic.FinerCAM(model, backend=backend, base=ic.RefineCAM)
    hires = ic.FinerCAM(model, backend=backend, base="hirescam").explain(x)
    target = ic.ContrastTarget()
    np.testing.assert_allclose(hires.maps, ic.HiResCAM(model, backend=backend)(x, target),
                               atol=1e-6)


# -- RefineCAM ----------------------------------------------------------------------------------
def test_product_fusion_multiplies_each_layers_finished_map():
    rng = np.random.default_rng(4)
    raw = [rng.normal(size=(3, 4, 5)), rng.normal(size=(3, 8, 10)), rng.normal(size=(3, 2, 3))]
    size = (16, 20)
    finished = [normalize_minmax(resize_bilinear(normalize_minmax(np.maximum(r, 0)), size))
                for r in raw]
    want = normalize_minmax(np.prod(finished, axis=0))
    np.testing.assert_allclose(finish_maps(raw, size, fuse="product"), want, atol=1e-6)
    one = finish_maps(raw[:1], size, fuse="product")
    np.testing.assert_allclose(one, finish_maps(raw[:1], size), atol=1e-6)
    mean = finish_maps(raw, size)  # the other fusions are unchanged
    np.testing.assert_allclose(mean, normalize_minmax(np.mean(
        [resize_bilinear(normalize_minmax(np.maximum(r, 0)), size) for r in raw], axis=0)),
        atol=1e-6)


def test_refinecam_defaults_to_gradcam_plus_plus_and_takes_other_bases(backend, model, x):
    exp = ic.RefineCAM(model, backend=backend).explain(x, [0, 1, 2, 3])
    plus = ic.GradCAMPlusPlus(model, backend=backend).explain(x, [0, 1, 2, 3])
    np.testing.assert_allclose(exp.maps, plus.maps, atol=1e-6)  # one layer: the base's map
    np.testing.assert_allclose(exp.weights[ref.LAYER], plus.weights[ref.LAYER])
    assert exp.method == "refinecam"
    eigen = ic.RefineCAM(model, backend=backend, base=ic.EigenCAM)
    assert eigen.requires == ()  # a gradient-free base captures no gradients
    np.testing.assert_allclose(eigen(x), ic.EigenCAM(model, backend=backend)(x), atol=1e-6)
    assert eigen.target_free and eigen.explain(x, 3).scores.shape == (0,)
    mean = ic.RefineCAM(model, backend=backend, base="gradcam", fuse="mean")
    np.testing.assert_allclose(mean(x, 2), ic.GradCAM(model, backend=backend)(x, 2), atol=1e-6)


def test_the_catalog_lists_the_new_methods():
    table = {m.name: m for m in method_table()}
    for name, needs in (("fem", "activations"), ("finercam", "gradients"),
                        ("segeigencam", "gradients"), ("refinecam", "gradients")):
        assert table[name].needs == needs
        assert name in ic.methods()
    assert table["fem"].requires == ()


# -- compiled adapters: new contrast values never recompile --------------------------------
@pytest.mark.parametrize("name", ["tensorflow", "jax"])
def test_new_contrast_values_do_not_recompile(name):
    require_framework(name, {"tensorflow": "tensorflow", "jax": "jax"}[name])
    from interp_core.backend.layout import to_backend_layout
    from interp_core.datasets import make_shapes
    from interp_core.datasets.demo import LAYER, demo_model

    backend = ic.get_backend(name)
    model = demo_model(name)
    x = to_backend_layout(make_shapes(3, seed=2).images, backend)
    cam = ic.FinerCAM(model, LAYER, backend=name)
    first = cam.explain(x)
    count = backend.trace_count
    again = ic.FinerCAM(model, LAYER, backend=name, alpha=0.25).explain(x, [1, 2, 0])
    ic.GradCAM(model, LAYER, backend=name)(x, ic.ContrastTarget(main=3, comparisons=[0, 1, 2]))
    assert backend.trace_count == count
    assert not np.allclose(first.maps, again.maps)
    np.testing.assert_array_equal(again.targets, [1, 2, 0])
