"""Metrics on hand-made cases whose answers are known, and batch-size independence."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from interp_core import metrics
from interp_core.backend.protocol import Capture
from interp_core.metrics.remove_debias import ROAD_NEIGHBOURS
from interp_core.testing import reference as ref

H = W = 4
OBJECT = np.zeros((H, W), dtype=bool)
OBJECT[1:3, 1:3] = True  # 4 object pixels of 16
BOX = np.array([[1, 1, 3, 3]])


class LinearModel:
    """score = sum over pixels and channels of ``weight * x``, for an ``(N, H, W, C)`` input."""

    def __init__(self, weight: np.ndarray) -> None:
        self.weight = weight.astype(np.float64)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return (np.asarray(x, np.float64) * self.weight[None, :, :, None]).sum(axis=(1, 2, 3))


class LinearBackend:
    """A complete NumPy backend for :class:`LinearModel` (one output, class 0)."""

    name = "linear"
    capabilities = frozenset()

    def __init__(self) -> None:
        self.batches: list[int] = []

    def predict(self, model, inputs, target, *, batch_size=32, output=None):
        assert len(inputs) <= batch_size
        assert target.kind == "class" and (target.indices == 0).all()
        self.batches.append(len(inputs))
        return model(inputs).astype(np.float32)

    def capture(self, model, inputs, layers, target, *, gradients=True, output=None,
                native_layout=False):
        scores = model(inputs).astype(np.float32)
        return Capture({}, scores, np.zeros(len(scores), np.int64), tuple(inputs.shape[1:3]))

    def to_numpy(self, x):
        return np.asarray(x)

    def from_numpy(self, x, model):
        return np.asarray(x, np.float32)


@pytest.fixture
def linear():
    return LinearModel(OBJECT.astype(float)), LinearBackend(), np.ones((1, H, W, 2), np.float32)


PERFECT = np.where(OBJECT, 1.0, 0.0)[None].astype(np.float32)
INVERTED = 1.0 - PERFECT
CONSTANT = np.full((1, H, W), 0.5, np.float32)


# -- deletion and insertion ------------------------------------------------------------------
def test_deletion_and_insertion_known_areas(linear):
    model, backend, x = linear  # score = 2 * number of intact object pixels (2 channels)
    kw = dict(backend=backend, step=1)
    perfect = metrics.deletion_curve(model, x, PERFECT, **kw)
    np.testing.assert_allclose(perfect.fractions, np.arange(17) / 16)
    np.testing.assert_allclose(perfect.scores[0], 2 * np.maximum(4 - np.arange(17), 0))
    # trapezoids: perfect 2 * (3.5 + 2.5 + 1.5 + 0.5) / 16; inverted 2 * (12 * 4 + 8) / 16
    np.testing.assert_allclose(perfect.auc, [1.0])
    np.testing.assert_allclose(metrics.deletion(model, x, INVERTED, **kw), [7.0])
    ins = dict(kw, baseline="zeros")
    np.testing.assert_allclose(metrics.insertion(model, x, PERFECT, **ins), [7.0])
    np.testing.assert_allclose(metrics.insertion(model, x, INVERTED, **ins), [1.0])
    # a constant map removes pixels in raster order: object pixels 5, 6, 9, 10 (0-based)
    const = metrics.deletion_curve(model, x, CONSTANT, **kw).scores[0]
    removed_obj = np.array([np.isin(np.arange(c), [5, 6, 9, 10]).sum() for c in range(17)])
    np.testing.assert_allclose(const, 2 * (4 - removed_obj))


def test_step_size_and_partial_last_step(linear):
    model, backend, x = linear
    curve = metrics.deletion_curve(model, x, PERFECT, backend=backend, step=5)
    np.testing.assert_allclose(curve.fractions, [0, 5 / 16, 10 / 16, 15 / 16, 1])
    np.testing.assert_allclose(curve.scores[0], [8, 0, 0, 0, 0])
    default = metrics.deletion_curve(model, x, PERFECT, backend=backend)
    assert len(default.fractions) == 16 // 4 + 1  # sqrt(16) = 4 pixels per step
    with pytest.raises(ValueError, match="step"):
        metrics.deletion(model, x, PERFECT, backend=backend, step=0)


def test_baselines(linear):
    model, backend, x = linear
    rng = np.random.default_rng(0)
    x = rng.random((2, H, W, 2)).astype(np.float32)
    maps = rng.random((2, H, W)).astype(np.float32)
    end = {}
    for baseline in ("zeros", "mean", "blur"):
        end[baseline] = metrics.deletion_curve(model, x, maps, backend=backend,
                                               baseline=baseline).scores[:, -1]
    np.testing.assert_allclose(end["zeros"], 0, atol=1e-6)
    mean = x.mean(axis=(1, 2), keepdims=True) * np.ones_like(x)
    np.testing.assert_allclose(end["mean"], model(mean), rtol=1e-5)
    blurred = metrics.gaussian_blur(x, 5.0, (1, 2))
    np.testing.assert_allclose(end["blur"], model(blurred), rtol=1e-5)
    custom = np.full(x.shape[1:], 3.0, np.float32)
    got = metrics.deletion_curve(model, x, maps, backend=backend, baseline=custom).scores[:, -1]
    np.testing.assert_allclose(got, 3.0 * 4 * 2)
    with pytest.raises(ValueError, match="baseline"):
        metrics.deletion(model, x, maps, backend=backend, baseline="noise")


def test_gaussian_blur():
    const = np.full((1, 9, 7), 2.5, np.float32)
    np.testing.assert_allclose(metrics.gaussian_blur(const, 1.5, (1, 2)), const, rtol=1e-6)
    impulse = np.zeros((15, 15), np.float32)
    impulse[7, 7] = 1
    out = metrics.gaussian_blur(impulse, 1.0, (0, 1))
    assert out.sum() == pytest.approx(1.0, rel=1e-5)
    assert out[7, 7] == out.max() and out[7, 6] == pytest.approx(out[6, 7])
    g = np.exp(-0.5 * np.arange(-3, 4) ** 2)
    np.testing.assert_allclose(out[7, 4:11], g * g[3] / g.sum() ** 2, rtol=1e-5)
    np.testing.assert_array_equal(metrics.gaussian_blur(impulse, 0.0, (0, 1)), impulse)


# -- Average Drop and Increase in Confidence ---------------------------------------------------
def test_average_drop_and_increase(linear):
    model, backend, x = linear
    kw = dict(backend=backend)
    np.testing.assert_allclose(metrics.average_drop(model, x, PERFECT, **kw), [0.0])
    np.testing.assert_allclose(metrics.average_drop(model, x, INVERTED, **kw), [1.0])
    np.testing.assert_allclose(metrics.average_drop(model, x, CONSTANT, **kw), [0.5])
    assert not metrics.increase_in_confidence(model, x, PERFECT, **kw)[0]
    # background that counts against the class: keeping only the object raises the score
    penal = LinearModel(np.where(OBJECT, 1.0, -0.25))
    assert metrics.increase_in_confidence(penal, x, PERFECT, **kw)[0]
    assert not metrics.increase_in_confidence(penal, x, INVERTED, **kw)[0]
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        metrics.average_drop(model, x, PERFECT * 2, **kw)


def test_average_drop_undefined_for_non_positive_scores(linear):
    _, backend, x = linear
    negative = LinearModel(-np.ones((H, W)))
    with pytest.warns(RuntimeWarning, match="<= 0"):
        got = metrics.average_drop(negative, x, PERFECT, backend=backend)
    assert np.isnan(got).all()


# -- ROAD ------------------------------------------------------------------------------------
def dense_imputation(image, removed):
    """The ROAD system assembled pixel by pixel and solved densely; ``image`` (C, H, W)."""
    c, h, w = image.shape
    unknown = list(zip(*np.nonzero(removed), strict=True))
    index = {p: k for k, p in enumerate(unknown)}
    a = np.zeros((len(unknown), len(unknown)))
    b = np.zeros((len(unknown), c))
    for k, (i, j) in enumerate(unknown):
        for (dy, dx), weight in ROAD_NEIGHBOURS:
            y, x = i + dy, j + dx
            if not (0 <= y < h and 0 <= x < w):
                continue
            a[k, k] += weight
            if (y, x) in index:
                a[k, index[(y, x)]] -= weight
            else:
                b[k] += weight * image[:, y, x]
    out = image.astype(np.float64).copy()
    sol = np.linalg.solve(a, b)
    for k, (i, j) in enumerate(unknown):
        out[:, i, j] = sol[k]
    return out


def test_noisy_linear_imputation_solves_the_system():
    rng = np.random.default_rng(0)
    images = rng.random((2, 3, 9, 11))
    removed = rng.random((2, 9, 11)) < 0.6
    removed[1, :, :4] = True  # a large hole touching the border
    got = metrics.noisy_linear_imputation(images, removed, noise=0.0)
    for i in range(2):
        np.testing.assert_allclose(got[i], dense_imputation(images[i], removed[i]), atol=1e-5)
    # a linear ramp is reproduced exactly inside the image (symmetric neighbour weights)
    ramp = (np.arange(9)[:, None] * 0.3 + np.arange(11)[None, :] * 0.1)[None, None]
    hole = np.zeros((1, 9, 11), bool)
    hole[0, 2:7, 3:9] = True
    np.testing.assert_allclose(metrics.noisy_linear_imputation(ramp, hole, noise=0.0), ramp,
                               atol=1e-5)
    # noise goes on removed pixels only, with the requested standard deviation
    noisy = metrics.noisy_linear_imputation(images, removed, noise=0.5)
    diff = noisy - got
    assert (diff[:, :, ~removed[0]][0] == 0).all()
    assert np.std(diff[np.broadcast_to(removed[:, None], diff.shape)]) == pytest.approx(0.5,
                                                                                        rel=0.1)


def test_road_known_cases(linear):
    model, backend, _ = linear
    x = np.ones((1, H, W, 2), np.float32)
    # a constant image is imputed exactly: every score equals the original one (2 * 4)
    for m in (PERFECT, INVERTED, CONSTANT):
        got = metrics.road(model, x, m, backend=backend, noise=0.0, percentages=(25, 50, 75))
        np.testing.assert_allclose(got, 8.0, rtol=1e-5)
    # object bright on a dark background: removing the object first lowers the score more
    x = np.where(OBJECT, 1.0, 0.0)[None, :, :, None].repeat(2, -1).astype(np.float32)
    kw = dict(backend=backend, noise=0.0, percentages=(25, 50))
    morf_perfect = metrics.road(model, x, PERFECT, order="morf", **kw)
    morf_inverted = metrics.road(model, x, INVERTED, order="morf", **kw)
    lerf_perfect = metrics.road(model, x, PERFECT, order="lerf", **kw)
    assert (morf_perfect < morf_inverted).all()
    np.testing.assert_allclose(morf_inverted[0, 0], 8.0, atol=1e-5)  # background only
    np.testing.assert_allclose(lerf_perfect, 8.0, atol=1e-5)  # the object is kept
    combined = metrics.road_combined(model, x, PERFECT, **kw)
    np.testing.assert_allclose(combined, (lerf_perfect.mean(1) - morf_perfect.mean(1)) / 2,
                               rtol=1e-6)
    with pytest.raises(ValueError, match="order"):
        metrics.road(model, x, PERFECT, backend=backend, order="both")


# -- localisation ----------------------------------------------------------------------------
def test_pointing_game():
    perfect, inverted = PERFECT.copy(), INVERTED.copy()
    perfect[0, 1, 1] = 2.0  # unique peak on the object
    inverted[0, 0, 0] = 2.0  # unique peak off the object
    for region in (dict(boxes=BOX), dict(masks=OBJECT[None])):
        assert metrics.pointing_game(perfect, **region).tolist() == [True]
        assert metrics.pointing_game(inverted, **region).tolist() == [False]
        assert metrics.pointing_game(CONSTANT, **region).tolist() == [False]  # points nowhere
        # (0, 0) is sqrt(2) px from the object's corner pixel (1, 1)
        assert metrics.pointing_game(inverted, tolerance=1.4, **region).tolist() == [False]
        assert metrics.pointing_game(inverted, tolerance=1.5, **region).tolist() == [True]
    tie = np.zeros((1, H, W), np.float32)
    tie[0, 0, 3] = tie[0, 2, 2] = 1.0  # two maxima, one on the object
    assert metrics.pointing_game(tie, boxes=BOX).tolist() == [True]
    with pytest.raises(ValueError, match="exactly one"):
        metrics.pointing_game(PERFECT)
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        metrics.pointing_game(PERFECT, boxes=np.array([[1, 1, 3]]))


def test_energy_pointing_game():
    for region in (dict(boxes=BOX), dict(masks=OBJECT[None])):
        np.testing.assert_allclose(metrics.energy_pointing_game(PERFECT, **region), [1.0])
        np.testing.assert_allclose(metrics.energy_pointing_game(INVERTED, **region), [0.0])
        np.testing.assert_allclose(metrics.energy_pointing_game(CONSTANT, **region), [0.25])
        np.testing.assert_allclose(metrics.energy_pointing_game(0 * CONSTANT, **region), [0.0])
    with pytest.raises(ValueError, match="non-negative"):
        metrics.energy_pointing_game(-PERFECT, boxes=BOX)


def test_boxes_on_shapes_dataset_agree_with_masks():
    from interp_core.datasets.shapes import make_shapes

    batch = make_shapes(6, size=32, seed=3)
    maps = batch.masks.astype(np.float32) + 0.01 * np.random.default_rng(0).random(
        batch.masks.shape).astype(np.float32)
    assert metrics.pointing_game(maps, boxes=batch.boxes).all()
    assert metrics.pointing_game(maps, masks=batch.masks).all()
    in_box = metrics.energy_pointing_game(maps, boxes=batch.boxes)
    in_mask = metrics.energy_pointing_game(maps, masks=batch.masks)
    assert (in_box >= in_mask - 1e-6).all() and (in_mask > 0.8).all()


# -- Spearman and the randomisation check ------------------------------------------------------
def test_spearman_known_values():
    a = np.array([[1.0, 2, 3, 4], [1, 2, 3, 4], [1, 2, 3, 4], [1, 1, 2, 9]])
    b = np.array([[2.0, 4, 6, 8], [4, 3, 2, 1], [1, 3, 2, 4], [1, 2, 3, 4]])
    # third row: 1 - 6 * 2 / (4 * 15) = 0.8; fourth: ranks (1.5, 1.5, 3, 4) vs (1, 2, 3, 4)
    want = [1.0, -1.0, 0.8, 4.5 / np.sqrt(4.5 * 5)]
    np.testing.assert_allclose(metrics.spearman(a, b), want, rtol=1e-6)
    np.testing.assert_allclose(metrics.spearman(np.ones((1, 4)), a[:1]), [0.0])
    with pytest.raises(ValueError, match="one shape"):
        metrics.spearman(a, b[:, :3])


def test_model_randomization_torch():
    torch = pytest.importorskip("torch")
    from tests.torch_models import SmallResNet

    torch.manual_seed(0)
    model = SmallResNet(classes=5).eval()
    x = torch.randn(4, 3, 16, 16)

    def same(m):
        return copy.deepcopy(m)

    def randomize(m):
        m = copy.deepcopy(m)
        torch.manual_seed(123)
        for module in (m.layer2, m.fc):
            for sub in module.modules():
                if hasattr(sub, "reset_parameters"):
                    sub.reset_parameters()
        return m

    before = [p.detach().clone() for p in model.parameters()]
    np.testing.assert_allclose(
        metrics.model_randomization(model, x, same, method="gradcam", layer="layer2"), 1.0,
        rtol=1e-6)
    rho = metrics.model_randomization(model, x, randomize, method="gradcam", layer="layer2")
    assert rho.shape == (4,) and (rho < 0.9).all()
    assert all(torch.equal(p, q) for p, q in zip(before, model.parameters(), strict=True))
    with pytest.raises(ValueError, match="copy"):
        metrics.model_randomization(model, x, lambda m: m, layer="layer2")


# -- through real backends, batch-size independence --------------------------------------------
def _everything(model, x, maps, targets, backend, batch_size):
    kw = dict(backend=backend, batch_size=batch_size)
    return {
        "deletion": metrics.deletion_curve(model, x, maps, targets, step=9, **kw).scores,
        "insertion": metrics.insertion_curve(model, x, maps, targets, step=9, **kw).scores,
        "drop": metrics.average_drop(model, x, maps, targets, **kw),
        "increase": metrics.increase_in_confidence(model, x, maps, targets, **kw),
        "road": metrics.road(model, x, maps, targets, percentages=(20, 60), **kw),
    }


@pytest.mark.filterwarnings("ignore:average_drop:RuntimeWarning")
def test_batch_size_independence_and_top1_pinning():
    model = ref.ReferenceModel()
    backend = ref.ReferenceBackend()
    x = ref.reference_inputs(3, seed=5)
    x = x - x.min()  # positive scores are likelier; average_drop may still warn
    maps = np.random.default_rng(2).random((3, 10, 10)).astype(np.float32)
    top1 = model(x).argmax(1).tolist()
    results = [_everything(model, x, maps, None, backend, bs) for bs in (1, 4, 64)]
    explicit = _everything(model, x, maps, top1, backend, 5)
    for other in [*results[1:], explicit]:
        for key, value in results[0].items():
            np.testing.assert_allclose(other[key], value, rtol=1e-6, atol=1e-6, err_msg=key)


def _reference_in(framework):
    """The reference model and its input in ``framework`` (skip where not installed)."""
    x = ref.reference_inputs(2, seed=7)
    if framework == "torch":
        torch = pytest.importorskip("torch")
        from tests.torch_models import ReferenceNet

        return ReferenceNet(ref.reference_weights()), torch.from_numpy(
            np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    if framework == "tensorflow":
        pytest.importorskip("tensorflow")
        from tests.keras_models import reference_model

        return reference_model(ref.reference_weights()), x
    jnp = pytest.importorskip("jax.numpy")
    from tests.test_jax import ReferenceNNX

    return ReferenceNNX(ref.reference_weights()), jnp.asarray(x)


@pytest.mark.filterwarnings("ignore:average_drop:RuntimeWarning")
@pytest.mark.parametrize("framework", ["torch", "tensorflow", "jax"])
def test_every_adapter_agrees_with_numpy(framework):
    """Layouts (NCHW torch, NHWC Keras/Flax) and top-1 pinning through each real adapter."""
    model, x_native = _reference_in(framework)
    x = ref.reference_inputs(2, seed=7)
    maps = np.random.default_rng(3).random((2, 10, 10)).astype(np.float32)
    for targets in ([1, 3], None):
        want = _everything(ref.ReferenceModel(), x, maps, targets, ref.ReferenceBackend(), 8)
        got = _everything(model, x_native, maps, targets, None, 8)
        for key, value in want.items():
            np.testing.assert_allclose(got[key], value, rtol=1e-4, atol=1e-4, err_msg=key)


def test_maps_must_match_inputs(linear):
    model, backend, x = linear
    with pytest.raises(ValueError, match="samples"):
        metrics.deletion(model, x, np.zeros((2, H, W)), backend=backend)
    with pytest.raises(ValueError, match="spatial shape"):
        metrics.deletion(model, x, np.zeros((1, H, W + 1)), backend=backend)
    with pytest.raises(ValueError, match="NaN"):
        metrics.deletion(model, x, np.full((1, H, W), np.nan), backend=backend)
