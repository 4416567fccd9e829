"""Sparseness, Complexity, Faithfulness Correlation, pixel-flipping, region perturbation,
Relevance Rank/Mass Accuracy and eMPRT: known answers, bad input, batch-size independence, and
the same numbers through the torch, TensorFlow and JAX adapters on the demo model.

Agreement with Quantus itself: tests/test_metrics_quantus.py (zoo venv).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from interp_core import metrics
from interp_core.backend.layout import to_backend_layout
from interp_core.backend.registry import get_backend
from interp_core.datasets import make_shapes
from interp_core.datasets.demo import LAYER, demo_model, demo_weights
from interp_core.testing import reference as ref
from tests.conftest import installed_frameworks
from tests.test_metrics import BOX, CONSTANT, INVERTED, OBJECT, PERFECT, LinearBackend, LinearModel

H = W = 4


# -- complexity ------------------------------------------------------------------------------
def test_sparseness_known_values():
    one_hot = np.zeros((1, 4, 4), np.float32)
    one_hot[0, 2, 1] = 5.0
    np.testing.assert_allclose(metrics.sparseness(one_hot), [1 - 1 / 16], rtol=1e-6)
    np.testing.assert_allclose(metrics.sparseness(CONSTANT), [0.0], atol=1e-7)
    np.testing.assert_allclose(metrics.sparseness(0 * CONSTANT), [0.0])
    # sorted (0, 0, 1, 3): (2k - 5) weights (-3, -1, 1, 3) -> (1 + 9) / (4 * 4)
    a = np.array([[[3.0, 0], [0, -1]]])  # signed: magnitudes count
    np.testing.assert_allclose(metrics.sparseness(a), [10 / 16], rtol=1e-6)
    # scale-invariant; one value per sample
    two = np.stack([a[0], 7 * a[0]])
    np.testing.assert_allclose(metrics.sparseness(two), [10 / 16] * 2, rtol=1e-6)


def test_complexity_known_values():
    one_hot = np.zeros((1, 4, 4), np.float32)
    one_hot[0, 0, 0] = 1.0
    np.testing.assert_allclose(metrics.complexity(one_hot), [0.0], atol=1e-7)
    np.testing.assert_allclose(metrics.complexity(CONSTANT), [math.log(16)], rtol=1e-6)
    np.testing.assert_allclose(metrics.complexity(0 * CONSTANT), [math.log(16)], rtol=1e-6)
    half = np.array([[[1.0, -1.0], [0.0, 0.0]]])
    np.testing.assert_allclose(metrics.complexity(half), [math.log(2)], rtol=1e-6)
    p = np.array([0.5, 0.25, 0.25, 0.0])
    want = -(p[:3] * np.log(p[:3])).sum()
    np.testing.assert_allclose(metrics.complexity(10 * p.reshape(1, 2, 2)), [want], rtol=1e-6)


def test_histogram_entropy():
    np.testing.assert_allclose(metrics.histogram_entropy(CONSTANT), [0.0])
    spread = np.arange(100, dtype=np.float32).reshape(1, 10, 10)  # one value per bin
    np.testing.assert_allclose(metrics.histogram_entropy(spread), [math.log(100)], rtol=1e-6)
    two_levels = np.where(OBJECT, 1.0, 0.0)[None]  # 4 and 12 pixels in the end bins
    want = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    np.testing.assert_allclose(metrics.histogram_entropy(two_levels, n_bins=7), [want], rtol=1e-6)
    with pytest.raises(ValueError, match="n_bins"):
        metrics.histogram_entropy(spread, n_bins=0)


# -- localisation ----------------------------------------------------------------------------
def test_relevance_rank_accuracy():
    for region in (dict(boxes=BOX), dict(masks=OBJECT[None])):
        np.testing.assert_allclose(metrics.relevance_rank_accuracy(PERFECT, **region), [1.0])
        np.testing.assert_allclose(metrics.relevance_rank_accuracy(INVERTED, **region), [0.0])
        # a constant map ties everything: the expected share is the object's area, 4/16
        np.testing.assert_allclose(metrics.relevance_rank_accuracy(CONSTANT, **region), [0.25])
    partial = PERFECT.copy()
    partial[0, 1, 1] = 0.0  # 3 object pixels on top; the 4th place is one of 13 tied pixels,
    partial[0, 0, 0] = 0.0  # one of which is on the object
    np.testing.assert_allclose(metrics.relevance_rank_accuracy(partial, boxes=BOX),
                               [(3 + 1 / 13) / 4], rtol=1e-6)
    with pytest.warns(RuntimeWarning, match="empty"):
        got = metrics.relevance_rank_accuracy(np.stack([PERFECT[0]] * 2),
                                              masks=np.stack([OBJECT, 0 * OBJECT]))
    assert got[0] == 1.0 and np.isnan(got[1])


def test_relevance_mass_accuracy():
    rng = np.random.default_rng(0)
    maps = rng.random((3, H, W)).astype(np.float32)
    masks = rng.random((3, H, W)) < 0.4
    np.testing.assert_allclose(metrics.relevance_mass_accuracy(maps, masks=masks),
                               metrics.energy_pointing_game(maps, masks=masks), rtol=1e-6)
    signed = np.where(OBJECT, 1.0, -5.0)[None]  # negative relevance off the object is ignored
    np.testing.assert_allclose(metrics.relevance_mass_accuracy(signed, boxes=BOX), [1.0])
    np.testing.assert_allclose(metrics.relevance_mass_accuracy(-PERFECT, boxes=BOX), [0.0])
    with pytest.warns(RuntimeWarning, match="empty"):
        got = metrics.relevance_mass_accuracy(PERFECT, masks=0 * OBJECT[None])
    assert np.isnan(got).all()
    with pytest.raises(ValueError, match="exactly one"):
        metrics.relevance_mass_accuracy(PERFECT)


# -- model-based, on the linear model (score = 2 * sum of the object's pixel values) ----------
@pytest.fixture
def linear():
    return LinearModel(OBJECT.astype(float)), LinearBackend()


def test_faithfulness_correlation_known_signs(linear):
    model, backend = linear
    x = np.random.default_rng(1).random((2, H, W, 2)).astype(np.float32)
    exact = (OBJECT * x.sum(-1)).astype(np.float32)  # each pixel's share of the score
    kw = dict(backend=backend, nr_runs=30, subset_size=3)
    np.testing.assert_allclose(metrics.faithfulness_correlation(model, x, exact, **kw), 1.0,
                               rtol=1e-6)
    np.testing.assert_allclose(metrics.faithfulness_correlation(model, x, -exact, **kw), -1.0,
                               rtol=1e-6)
    constant = np.full((2, H, W), 0.5, np.float32)  # every subset sums to the same
    np.testing.assert_allclose(metrics.faithfulness_correlation(model, x, constant, **kw), 0.0)
    # seeded: the same draws again, other draws with another seed, any batch size
    again = metrics.faithfulness_correlation(model, x, exact[::-1], batch_size=7, **kw)
    other = metrics.faithfulness_correlation(model, x, exact[::-1], seed=1, **kw)
    np.testing.assert_array_equal(
        metrics.faithfulness_correlation(model, x, exact[::-1], **kw), again)
    assert not np.array_equal(again, other)


def test_faithfulness_correlation_given_subsets(linear):
    model, backend = linear
    x = np.ones((1, H, W, 2), np.float32)
    subsets = np.array([[[5, 0], [0, 1], [5, 6], [9, 10]]])  # 1, 0, 2, 2 object pixels
    maps = np.arange(16, dtype=np.float32).reshape(1, H, W)
    sums = maps.reshape(-1)[subsets[0]].sum(1)
    drops = 2.0 * np.array([1, 0, 2, 2])
    want = np.corrcoef(sums, drops)[0, 1]
    got = metrics.faithfulness_correlation(model, x, maps, backend=backend, subsets=subsets)
    np.testing.assert_allclose(got, [want], rtol=1e-6)


def test_pixel_flipping_is_deletion_and_lerf(linear):
    model, backend = linear
    x = np.ones((1, H, W, 2), np.float32)
    kw = dict(backend=backend, step=1)
    morf = metrics.pixel_flipping_curve(model, x, PERFECT, **kw)
    deletion = metrics.deletion_curve(model, x, PERFECT, **kw)
    np.testing.assert_array_equal(morf.scores, deletion.scores)
    lerf = metrics.pixel_flipping_curve(model, x, PERFECT, order="lerf", **kw)
    np.testing.assert_allclose(lerf.scores[0], 2 * np.minimum(4, 16 - np.arange(17)))
    np.testing.assert_allclose(metrics.pixel_flipping(model, x, PERFECT, order="lerf", **kw),
                               lerf.auc)
    with pytest.raises(ValueError, match="order"):
        metrics.pixel_flipping(model, x, PERFECT, order="both", **kw)


def test_patch_grid():
    from interp_core.metrics.regions import patch_grid

    ids, count = patch_grid((4, 4), 2)
    assert count == 4
    np.testing.assert_array_equal(ids.reshape(4, 4), [[0, 0, 1, 1], [0, 0, 1, 1],
                                                      [2, 2, 3, 3], [2, 2, 3, 3]])
    ids, count = patch_grid((6, 5), 4)  # overhang 2 (1 before) and 3 (1 before)
    assert count == 4
    np.testing.assert_array_equal(ids.reshape(6, 5)[:, 0], [0, 0, 0, 2, 2, 2])
    np.testing.assert_array_equal(ids.reshape(6, 5)[0], [0, 0, 0, 1, 1])


def test_region_perturbation_known_values():
    weight = np.array([[4, 4, 3, 3], [4, 4, 3, 3], [2, 2, 1, 1], [2, 2, 1, 1]], float)
    model, backend = LinearModel(weight), LinearBackend()
    x = np.ones((1, H, W, 2), np.float32)
    maps = weight[None].astype(np.float32)
    kw = dict(backend=backend, patch_size=2, regions=None)
    curve = metrics.region_perturbation_curve(model, x, maps, **kw)
    np.testing.assert_allclose(curve.fractions, np.arange(5) / 4)
    np.testing.assert_allclose(curve.scores[0], [80, 48, 24, 8, 0])  # patches 32, 24, 16, 8
    np.testing.assert_allclose(metrics.region_perturbation(model, x, maps, **kw), [48.0])
    lerf = metrics.region_perturbation_curve(model, x, maps, order="lerf", **kw)
    np.testing.assert_allclose(lerf.scores[0], [80, 72, 56, 32, 0])
    two = metrics.region_perturbation_curve(model, x, maps, backend=backend, patch_size=2,
                                            regions=2)
    np.testing.assert_allclose(two.scores[0], [80, 48, 24])
    rand = [metrics.region_perturbation_curve(model, x, maps, order="random", seed=s, **kw)
            for s in (0, 0, 1, 2, 3)]
    np.testing.assert_array_equal(rand[0].scores, rand[1].scores)
    assert all(r.scores[0, -1] == 0 for r in rand)
    with pytest.raises(ValueError, match="patch_size"):
        metrics.region_perturbation(model, x, maps, backend=backend, patch_size=0)
    with pytest.raises(ValueError, match="regions"):
        metrics.region_perturbation(model, x, maps, backend=backend, regions=0)


@pytest.mark.parametrize("call, match", [
    (dict(subset_size=17), "subset_size=17"),
    (dict(subset_size=0), "subset_size"),
    (dict(nr_runs=1, subset_size=3), "nr_runs"),
    (dict(subsets=np.zeros((1, 3), int)), "subsets must be integer"),
    (dict(subsets=np.zeros((2, 3, 1), int)), "subsets must be integer"),
    (dict(subsets=np.full((1, 3, 1), 16)), r"\[16, 16\]"),
    (dict(subsets=np.zeros((1, 1, 2), int)), "nr_runs"),
    (dict(baseline="noise", subset_size=3), "baseline"),
])
def test_faithfulness_correlation_bad_input(linear, call, match):
    model, backend = linear
    with pytest.raises(ValueError, match=match):
        metrics.faithfulness_correlation(model, np.ones((1, H, W, 2), np.float32), PERFECT,
                                         backend=backend, **call)


def test_bad_maps():
    for fn in (metrics.sparseness, metrics.complexity, metrics.histogram_entropy,
               metrics.relevance_rank_accuracy, metrics.relevance_mass_accuracy):
        kw = {} if fn.__name__ in ("sparseness", "complexity", "histogram_entropy") \
            else dict(boxes=BOX)
        with pytest.raises(ValueError, match="NaN"):
            fn(np.full((1, 4, 4), np.nan), **kw)
        with pytest.raises(ValueError, match=r"\(N, \*spatial\)"):
            fn(np.ones(4), **kw)
        with pytest.raises(TypeError, match=r"numeric array.*str"):
            fn("a map", **kw)


def test_batch_size_independence():
    model, backend = ref.ReferenceModel(), ref.ReferenceBackend()
    x = ref.reference_inputs(3, seed=5)
    maps = np.random.default_rng(2).random((3, 10, 10)).astype(np.float32)

    def run(bs):
        kw = dict(backend=backend, batch_size=bs)
        return [metrics.faithfulness_correlation(model, x, maps, nr_runs=9, subset_size=7, **kw),
                metrics.region_perturbation_curve(model, x, maps, patch_size=3, regions=5,
                                                  **kw).scores,
                metrics.region_perturbation_curve(model, x, maps, patch_size=3, order="random",
                                                  **kw).scores]

    first = run(1)
    for bs in (4, 64):
        for a, b in zip(first, run(bs), strict=True):
            np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-6)


# -- eMPRT -----------------------------------------------------------------------------------
def test_efficient_mprt_of_an_unchanged_copy_is_zero():
    import copy

    model, backend = ref.ReferenceModel(), ref.ReferenceBackend()
    x = ref.reference_inputs(3, seed=4)
    for measure in ("histogram", "entropy"):
        got = metrics.efficient_mprt(model, x, copy.deepcopy, backend=backend, layer="features",
                                     measure=measure)
        np.testing.assert_allclose(got, 0.0, atol=1e-6)


def test_efficient_mprt_bad_input():
    model, backend = ref.ReferenceModel(), ref.ReferenceBackend()
    x = ref.reference_inputs(2, seed=1)
    with pytest.raises(ValueError, match="measure"):
        metrics.efficient_mprt(model, x, lambda m: m, measure="gini", backend=backend)
    with pytest.raises(ValueError, match="copy"):
        metrics.efficient_mprt(model, x, lambda m: m, backend=backend, layer="features")
    with pytest.raises(TypeError, match=r"randomize must be a callable.*int"):
        metrics.efficient_mprt(model, x, 3, backend=backend, layer="features")


# -- every adapter, the demo model -----------------------------------------------------------
def _random_weights(seed):
    rng = np.random.default_rng(seed)
    return {k: (rng.standard_normal(v.shape) * v.std()).astype(np.float32)
            for k, v in demo_weights().items()}


def _weights_of(model, framework):
    if framework == "torch":
        return [p.detach().numpy().copy() for p in model.parameters()]
    if framework == "tensorflow":
        return [np.asarray(w).copy() for w in model.get_weights()]
    from flax import nnx

    return [np.asarray(v).copy() for v in
            __import__("jax").tree_util.tree_leaves(nnx.state(model, nnx.Param))]


def _everything(framework, n=4):
    # 32 perturbed inputs per metric, 16 per forward pass: one batch shape (TF and JAX compile
    # once per shape)
    model = demo_model(framework)
    images = make_shapes(n, seed=9)
    x = to_backend_layout(images.images, get_backend(framework))
    import interp_core as ic

    maps = ic.GradCAM(model, LAYER, backend=framework)(x)
    before = _weights_of(model, framework)
    randomized = _random_weights(3)
    out = {
        "sparseness": metrics.sparseness(maps),
        "complexity": metrics.complexity(maps),
        "rra": metrics.relevance_rank_accuracy(maps, masks=images.masks),
        "rma": metrics.relevance_mass_accuracy(maps, boxes=images.boxes),
        "fc": metrics.faithfulness_correlation(model, x, maps, nr_runs=8, subset_size=200,
                                               batch_size=16),
        "pf": metrics.pixel_flipping_curve(model, x, maps, step=586, batch_size=16).scores,
        "rp": metrics.region_perturbation_curve(model, x, maps, patch_size=16, regions=7,
                                                batch_size=16).scores,
        "emprt": metrics.efficient_mprt(model, x, lambda m: demo_model(framework, randomized),
                                        layer=LAYER),
    }
    for a, b in zip(before, _weights_of(model, framework), strict=True):
        np.testing.assert_array_equal(a, b)  # the user's model is untouched
    return out


FRAMEWORKS = installed_frameworks(("torch", "tensorflow", "jax"))


@pytest.fixture(scope="module")
def torch_results():
    if "torch" not in FRAMEWORKS:
        pytest.skip("torch is not installed")
    return _everything("torch")


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_every_framework_gives_the_same_values(framework, torch_results):
    got = torch_results if framework == "torch" else _everything(framework)
    assert {k: v.shape[0] for k, v in got.items()} == {k: 4 for k in got}
    assert np.isfinite(got["emprt"]).all() and (np.abs(got["fc"]) <= 1).all()
    for key, value in torch_results.items():
        np.testing.assert_allclose(got[key], value, rtol=2e-4, atol=2e-4, err_msg=key)
