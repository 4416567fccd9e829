"""Feature maps, feature grids and filter patterns (activation maximisation).

The optimisation is checked against a NumPy oracle: the reference model
(:mod:`interp_core.testing.reference`) with closed-form input gradients in float64.

Cross-backend tolerances (docs/features.md explains them):

- ``TOL_REFERENCE``: on the reference model, every backend's patterns equal the oracle's to 1e-5
  in every pixel after 128 steps with all regularisers (observed: below 2e-7, also at 256 steps).
- ``TOL_DEMO_MEAN``, ``MIN_CORRELATION``: on the demo architecture (three ReLU convolutions,
  two max-pools; 28k ReLUs per image), after 16 steps torch and each other backend differ by at
  most 1e-3 on average and every pattern correlates with torch's to at least 0.999. They agree
  to float32 rounding (about 3e-7) until a unit whose input lies within rounding of a kink
  (ReLU at 0, a max-pool near-tie) switches branch on one backend only; from there that
  pattern drifts apart, slowly. So on deep ReLU networks patterns agree closely but not pixel
  for pixel (docs/features.md has the numbers for 256 steps).
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest

import interp_core as ic
from interp_core.backend.layout import input_layout
from interp_core.backend.protocol import INPUT_GRADIENTS
from interp_core.datasets.demo import random_demo_weights
from interp_core.features.grids import most_active
from interp_core.features.params import DecorrelatedImage, _adjoint_weights
from interp_core.imaging import gaussian_blur, gaussian_matrix
from interp_core.testing import reference as ref

TOL_REFERENCE = 1e-5  # max abs pixel difference from the float64 oracle, reference model
TOL_DEMO_MEAN = 1e-3  # mean abs pixel difference between backends, demo architecture
MIN_CORRELATION = 0.999  # of each pattern with torch's, demo architecture, 16 steps


# -- the NumPy oracle -----------------------------------------------------------------------
class OracleBackend(ref.ReferenceBackend):
    """The reference backend plus closed-form input gradients (float64), channels-last."""

    name = "oracle"
    capabilities = ref.ReferenceBackend.capabilities | {INPUT_GRADIENTS}

    def __init__(self, nan_at_call: int | None = None) -> None:
        self.calls = 0
        self.nan_at_call = nan_at_call

    def input_gradients(self, model: ref.ReferenceModel, inputs: Any, layer: Any,
                        channels: np.ndarray, *, output: Any = None
                        ) -> tuple[np.ndarray, np.ndarray]:
        self.calls += 1
        w = model.weights
        x = np.asarray(inputs, dtype=np.float64)
        idx = np.asarray(channels)
        pre = ref.conv_valid(x, w.conv_kernel.astype(np.float64), w.conv_bias)
        pre = pre.astype(np.float64)
        acts = np.maximum(pre, 0)
        n, h, wd, _ = acts.shape
        if layer == ref.LAYER:
            values = acts.mean(axis=(1, 2))[np.arange(n), idx]
            upstream = np.zeros_like(acts)
            upstream[np.arange(n), :, :, idx] = 1.0 / (h * wd)
        elif layer is None:
            values = (acts.mean(axis=(1, 2)) @ w.fc_weight.T + w.fc_bias)[np.arange(n), idx]
            upstream = np.broadcast_to(w.fc_weight[idx][:, None, None, :] / (h * wd),
                                       acts.shape).copy()
        else:
            raise ValueError(f"unknown layer {layer!r}")
        upstream *= pre > 0
        grads = np.zeros_like(x)
        k = w.conv_kernel.shape[0]
        for i in range(k):
            for j in range(k):
                grads[:, i : i + h, j : j + wd, :] += np.einsum(
                    "nhwd,cd->nhwc", upstream, w.conv_kernel[i, j].astype(np.float64))
        if self.nan_at_call is not None and self.calls >= self.nan_at_call:
            grads[0, 0, 0, 0] = np.nan
        return values.astype(np.float32), grads.astype(np.float32)


@pytest.fixture
def oracle() -> OracleBackend:
    return OracleBackend()


@pytest.fixture
def ref_model() -> ref.ReferenceModel:
    return ref.ReferenceModel(ref.reference_weights())


def objective(backend: OracleBackend, model: Any, images: np.ndarray, channels: Any,
              layer: Any = ref.LAYER) -> np.ndarray:
    return backend.input_gradients(model, images, layer, np.asarray(channels))[0]


def test_oracle_gradient_matches_finite_differences(oracle, ref_model):
    x = ref.reference_inputs(2).astype(np.float64)
    for layer in (ref.LAYER, None):
        _, g = oracle.input_gradients(ref_model, x, layer, np.array([2, 4]))
        eps = 1e-3
        for pos in [(0, 3, 4, 1), (1, 0, 9, 2), (1, 5, 5, 0)]:
            up, down = x.copy(), x.copy()
            up[pos] += eps
            down[pos] -= eps
            fd = (objective(oracle, ref_model, up, [2, 4], layer).astype(np.float64)
                  - objective(oracle, ref_model, down, [2, 4], layer)) / (2 * eps)
            assert fd[pos[0]] == pytest.approx(g[pos], abs=2e-3)


# -- filter patterns on the oracle ---------------------------------------------------------
def test_patterns_shape_range_and_objective_increase(oracle, ref_model):
    channels = [0, 3, 5, 7]
    pats = ic.filter_patterns(ref_model, "features", channels, (10, 10), steps=48,
                              backend=oracle, seed=1)
    assert pats.shape == (4, 10, 10, 3) and pats.dtype == np.float32
    assert pats.min() >= 0.0 and pats.max() <= 1.0
    start = objective(oracle, ref_model, np.full((4, 10, 10, 3), 0.5, np.float32), channels)
    end = objective(oracle, ref_model, pats, channels)
    assert np.all(end > start + 0.5), (start, end)


def test_patterns_deterministic_and_independent_of_batch(oracle, ref_model):
    kw = dict(size=(10, 10), steps=24, backend=oracle, seed=3)
    a = ic.filter_patterns(ref_model, "features", [1, 3, 5], **kw)
    b = ic.filter_patterns(ref_model, "features", [1, 3, 5], **kw)
    np.testing.assert_array_equal(a, b)
    alone = ic.filter_patterns(ref_model, "features", [3], **kw)
    np.testing.assert_allclose(alone[0], a[1], atol=1e-6)
    chunked = ic.filter_patterns(ref_model, "features", [1, 3, 5], batch_size=2, **kw)
    np.testing.assert_allclose(chunked, a, atol=1e-6)
    other_seed = ic.filter_patterns(ref_model, "features", [1, 3, 5], **{**kw, "seed": 4})
    assert np.abs(other_seed - a).max() > 0.05


@pytest.mark.parametrize("decorrelate", [False, True])
def test_regularisers_and_options(oracle, ref_model, decorrelate):
    pats = ic.filter_patterns(ref_model, "features", [3, 3], (10, 10), steps=16, jitter=0,
                              blur_every=0, decay=0.0, decorrelate=decorrelate, backend=oracle)
    np.testing.assert_array_equal(pats[0], pats[1])  # same channel, same pattern
    # Patterns of the model output (class logits) with ImageNet-style input normalisation.
    logits = ic.filter_patterns(ref_model, None, [0, 4], (10, 10), steps=16, backend=oracle,
                                input_mean=[0.5] * 3, input_std=0.25, decorrelate=decorrelate)
    assert logits.shape == (2, 10, 10, 3)
    assert np.isfinite(logits).all() and 0.0 <= logits.min() <= logits.max() <= 1.0


def test_blur_matrix_is_reflecting_gaussian():
    rng = np.random.default_rng(0)
    x = rng.random((2, 9, 7, 3)).astype(np.float32)
    sigma = 0.8
    radius = int(np.ceil(3 * sigma))
    offsets = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 * (offsets / sigma) ** 2)
    kernel /= kernel.sum()
    padded = np.pad(x, ((0, 0), (radius, radius), (radius, radius), (0, 0)), mode="reflect")
    rows = sum(k * padded[:, radius + o : radius + o + 9] for o, k in zip(offsets, kernel,
                                                                            strict=True))
    want = sum(k * rows[:, :, radius + o : radius + o + 7] for o, k in zip(offsets, kernel,
                                                                             strict=True))
    np.testing.assert_allclose(gaussian_blur(x, sigma, (1, 2), "reflect"), want, atol=1e-6)
    np.testing.assert_allclose(gaussian_matrix(5, 2.0, "reflect").sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(gaussian_blur(np.full((1, 4, 4, 3), 0.3), 1.0, (1, 2), "reflect"),
                               0.3, atol=1e-6)


def test_decorrelated_spectrum_gradient_is_exact():
    size = (6, 5)
    fs = np.fft.rfftn(np.zeros(size)).shape
    rng = np.random.default_rng(0)
    for shape in (size, (8,), (4, 6, 4)):
        fshape = np.fft.rfftn(np.zeros(shape)).shape
        spec = rng.normal(size=fshape) + 1j * rng.normal(size=fshape)
        g = rng.normal(size=shape)
        lhs = (np.fft.irfftn(spec, s=shape, axes=range(len(shape))) * g).sum()
        adj = np.fft.rfftn(g) * _adjoint_weights(shape)
        assert lhs == pytest.approx((spec.real * adj.real + spec.imag * adj.imag).sum())
    noise = rng.standard_normal((1, *DecorrelatedImage.noise_shape(size, 3)))
    param = DecorrelatedImage(noise, 0.5, size)
    coef = rng.normal(size=(1, *size, 3))  # objective: sum(coef * image)
    grad = param.spectrum_gradient(coef)
    base = param.spectrum.astype(np.complex128)  # finite differences in float64
    coef_cf = np.moveaxis(coef, -1, 1)
    for index in [(0, 0, 1, 2), (0, 2, 0, 0), (0, 1, 3, 1)]:
        assert index[2:] < fs
        for unit, part in ((1.0, grad.real), (1j, grad.imag)):
            eps = 1e-6
            values = []
            for sign in (1, -1):
                param.spectrum = base.copy()
                param.spectrum[index] += sign * eps * unit
                values.append((coef_cf / (1.0 + np.exp(-param._logits()))).sum())
            fd = (values[0] - values[1]) / (2 * eps)
            assert fd == pytest.approx(part[index], rel=1e-3, abs=1e-4 * np.abs(grad).max())


# -- bad input -----------------------------------------------------------------------------
@pytest.mark.parametrize(("channels", "match"), [
    ([0, 8], "channel 8 is out of range: layer 'features' has 8 channels"),
    ([-1], "channels must be >= 0"),
    ([], "non-empty"),
    ([1.5], "integers"),
    ([[1, 2]], "1-D"),
])
def test_bad_channels(oracle, ref_model, channels, match):
    with pytest.raises(ValueError, match=match):
        ic.filter_patterns(ref_model, "features", channels, (10, 10), steps=2, backend=oracle)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"size": (0, 10)}, "size"), ({"steps": -1}, "steps"), ({"lr": 0}, "lr"),
    ({"decay": 1.0}, "decay"), ({"layout": "nchw"}, "layout"),
    ({"input_std": [1, 0, 1]}, "input_std"), ({"input_mean": [0, 0]}, "input_mean"),
])
def test_bad_arguments(oracle, ref_model, kwargs, match):
    kw = {"size": (10, 10), "steps": 2, **kwargs}
    with pytest.raises(ValueError, match=match):
        ic.filter_patterns(ref_model, "features", [0], backend=oracle, **kw)


def test_backend_without_input_gradients(ref_model):
    with pytest.raises(ValueError, match="input_gradients"):
        ic.filter_patterns(ref_model, "features", [0], (10, 10), backend=ref.ReferenceBackend())


def test_nan_stops_warns_and_returns_what_was_reached(ref_model):
    reached = ic.filter_patterns(ref_model, "features", [1, 3], (10, 10), steps=5,
                                 backend=OracleBackend())
    with pytest.warns(RuntimeWarning, match=r"non-finite .* step 5 .*channels \[1\]"):
        got = ic.filter_patterns(ref_model, "features", [1, 3], (10, 10), steps=40,
                                 backend=OracleBackend(nan_at_call=6))  # one call per step
    assert np.isfinite(got).all()
    np.testing.assert_array_equal(got, reached)


def test_input_layout_choice(oracle):
    assert input_layout(oracle) == "channels_last"
    # The core never guesses from a backend's name: an undeclared layout is channels-last.
    assert input_layout(type("B", (), {"name": "torch"})()) == "channels_last"
    declared = type("B", (), {"name": "torch", "input_layout": "channels_last"})()
    assert input_layout(declared) == "channels_last"
    per_model = type("B", (), {"name": "x", "input_layout": lambda self, m: m})()
    assert input_layout(per_model, "channels_first") == "channels_first"
    assert input_layout(oracle, layout="channels_first") == "channels_first"


# -- feature_grid --------------------------------------------------------------------------
def test_feature_grid_layout_and_separators():
    maps = np.arange(10 * 4 * 5, dtype=np.float32).reshape(10, 4, 5)
    grid = ic.feature_grid(maps, ncols=4, pad=1)
    assert grid.dtype == np.uint8 and grid.shape == (3 * 5 + 1, 4 * 6 + 1, 3)
    assert (grid[0] == 255).all() and (grid[:, 0] == 255).all()  # outer separators
    tile = grid[1:5, 1:6, 0]
    assert tile.min() == 0 and tile.max() == 255  # per-map min-max
    assert (grid[11:15, 13:18] == 255).all()  # the unused cells of the last row stay blank
    big = ic.feature_grid(maps, ncols=8, scale=3, pad=2, pad_value=0)
    assert big.shape == (2 * (12 + 2) + 2, 8 * (15 + 2) + 2, 3)
    assert (big[:2] == 0).all()


def test_feature_grid_normalisation_colormap_and_top():
    maps = np.stack([np.full((3, 3), 5.0), np.linspace(0, 1, 9).reshape(3, 3),
                     np.linspace(0, 3, 9).reshape(3, 3)]).astype(np.float32)
    per = ic.feature_grid(maps, pad=0)
    assert (per[:, :3] == 0).all()  # constant map -> black, never NaN
    glob = ic.feature_grid(maps, normalize="global", pad=0)
    assert (glob[:, :3] == 255).all() and glob[:, 3:6].max() == 51
    raw = ic.feature_grid(maps, normalize=None, pad=0)
    assert (raw[:, :3] == 255).all() and raw[2, 5, 0] == 255
    coloured = ic.feature_grid(maps, colormap="viridis", pad=0)
    assert not np.array_equal(coloured[..., 0], coloured[..., 1])
    top = ic.feature_grid(maps, top=2, normalize="global", pad=0)
    assert top.shape == (3, 6, 3) and (top[:, :3] == 255).all()  # map 0 (mean 5) first
    np.testing.assert_array_equal(most_active(maps, 3), [0, 2, 1])


def test_feature_grid_rgb_tiles_1d_maps_and_labels():
    pats = np.random.default_rng(0).random((5, 6, 6, 3)).astype(np.float32)
    grid = ic.feature_grid(pats, ncols=5, pad=1)
    np.testing.assert_array_equal(grid[1:7, 1:7], np.round(pats[0] * 255).astype(np.uint8))
    strips = ic.feature_grid(np.random.default_rng(1).random((4, 20)), ncols=1, scale=2)
    assert strips.shape == (4 * 3 + 1, 2 * 20 + 2, 3)
    pytest.importorskip("PIL")
    labelled = ic.feature_grid(np.random.default_rng(2).random((3, 16, 16)), labels=True, top=2)
    assert labelled.shape == (16 + 12 + 2, 2 * 17 + 1, 3)
    assert (labelled[1:13, 1:17] < 128).any()  # some ink in the caption band
    named = ic.feature_grid(pats, labels=["a", "b", "c", "d", "e"])
    assert named.shape[0] == 6 + 12 + 2


@pytest.mark.parametrize(("maps", "kwargs", "match"), [
    (np.zeros((2, 3, 4, 4)), {}, "batch"),
    (np.zeros((0, 4, 4)), {}, "C >= 1"),
    (np.zeros((3,)), {}, r"\(C, H, W\)"),
    (np.zeros((2, 4, 4)), {"normalize": "sometimes"}, "normalize"),
    (np.zeros((2, 4, 4, 3)), {"colormap": "jet"}, "RGB"),
    (np.zeros((2, 4, 4)), {"labels": ["one"]}, "labels has 1"),
    (np.zeros((2, 4, 4)), {"ncols": 0}, "ncols"),
    (np.zeros((2, 4, 4)), {"top": 0}, "top"),
    (np.zeros((2, 4, 4)), {"colormap": "no-such-map"}, "colormap"),
])
def test_feature_grid_bad_input(maps, kwargs, match):
    with pytest.raises(ValueError, match=match):
        ic.feature_grid(maps, **kwargs)


# -- torch --------------------------------------------------------------------------------
@pytest.fixture
def torch_ref():
    torch = pytest.importorskip("torch")
    from tests.torch_models import ReferenceNet

    return torch, ReferenceNet(ref.reference_weights())


def test_feature_maps_canonical_layout_torch(torch_ref, ref_model):
    torch, net = torch_ref
    x = ref.reference_inputs(3)
    maps = ic.feature_maps(net, torch.from_numpy(x.transpose(0, 3, 1, 2).copy()), "features")
    assert maps.shape == (3, 8, 8, 8) and maps.dtype == np.float32
    np.testing.assert_allclose(maps, ref_model.features(x).transpose(0, 3, 1, 2), atol=1e-5)
    pooled = ic.feature_maps(net, x.transpose(0, 3, 1, 2), "fc")  # no spatial axes
    assert pooled.shape == (3, 5)


def test_torch_bad_layers_and_non_differentiable_path(torch_ref):
    torch, _ = torch_ref
    from torch import nn

    class Total(nn.Module):
        def forward(self, x):
            return x.flatten(1).sum(1)

    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.stop = nn.Identity()
            self.conv = nn.Conv2d(3, 4, 3)
            self.rounded = nn.Conv2d(3, 4, 3)
            self.total = Total()

        def forward(self, x):
            a = self.conv(self.stop(x).detach())
            r = self.rounded(torch.round(x * 4) / 4)
            s = self.total(a + r)  # each layer runs once (a shared module is an error)
            return torch.stack([s, -s], 1)

    model = Odd()
    with pytest.raises(ValueError, match=r"'total' has output shape .* no channels dimension"):
        ic.feature_maps(model, torch.zeros(1, 3, 8, 8), "total")
    with pytest.raises(ValueError, match="no channels dimension"):
        ic.filter_patterns(model, "total", [0], (8, 8), steps=2)
    with pytest.raises(ValueError, match="unknown layer 'conf'"):
        ic.feature_maps(model, torch.zeros(1, 3, 8, 8), "conf")
    with pytest.raises(ValueError, match="channel 4 is out of range: layer 'conv' has 4"):
        ic.filter_patterns(model, "conv", [4], (8, 8), steps=2)
    with pytest.raises(ValueError, match=r"cannot differentiate .* layer 'conv'"):
        ic.filter_patterns(model, "conv", [0], (8, 8), steps=2)
    with pytest.warns(RuntimeWarning, match=r"gradient of channels \[1\] of layer 'rounded'"):
        ic.filter_patterns(model, "rounded", [1], (8, 8), steps=2)


def test_torch_model_state_untouched(torch_ref):
    torch, net = torch_ref
    net.train()
    before = [p.detach().clone() for p in net.parameters()]
    ic.filter_patterns(net, "features", [0, 1], (10, 10), steps=3)
    ic.feature_maps(net, torch.zeros(1, 3, 10, 10), "features")
    assert net.training and all(m.training for m in net.modules())
    assert all(p.grad is None for p in net.parameters())
    for a, b in zip(before, net.parameters(), strict=True):
        assert torch.equal(a, b)


# -- every backend ------------------------------------------------------------------------
def _wanted() -> set[str]:
    import os

    return {b.strip() for b in os.environ.get("INTERP_TEST_BACKENDS", "").split(",") if b}


def _require(backend: str) -> None:
    """Skip (or fail, where INTERP_TEST_BACKENDS names it) when an adapter is missing."""
    if backend not in ic.backends():
        if backend in _wanted():
            pytest.fail(f"INTERP_TEST_BACKENDS names {backend!r} but it is not installed")
        pytest.skip(f"the {backend} adapter is not installed")
    try:
        ic.get_backend(backend)
    except ImportError as exc:
        if backend in _wanted():
            raise
        pytest.skip(f"{backend} does not import: {exc}")


def _reference_in(backend: str, data_format: str = "channels_last") -> Any:
    """The reference model in ``backend``'s framework, from the fixed NumPy weights."""
    _require(backend)
    w = ref.reference_weights()
    if backend == "torch":
        from tests.torch_models import ReferenceNet

        return ReferenceNet(w)
    if backend == "tensorflow":
        from tests.keras_models import reference_model

        return reference_model(w, data_format)
    import jax
    import jax.numpy as jnp

    def features(x):
        y = jax.lax.conv_general_dilated(x, jnp.asarray(w.conv_kernel), (1, 1), "VALID",
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return jax.nn.relu(y + w.conv_bias)

    return ic.Split(features, lambda a: a.mean(axis=(1, 2)) @ w.fc_weight.T + w.fc_bias)


def _demo_in(backend: str) -> Any:
    from interp_core.datasets.demo import demo_model

    _require(backend)
    return demo_model(backend, weights=random_demo_weights())


@pytest.mark.parametrize("decorrelate", [False, True])
@pytest.mark.parametrize("backend", ["torch", "tensorflow", "jax"])
def test_reference_patterns_equal_the_oracle_on_every_backend(backend, decorrelate, oracle,
                                                              ref_model):
    """128 steps with every regulariser on: the float64 oracle's pattern to ``TOL_REFERENCE``."""
    model = _reference_in(backend)
    kw = dict(size=(10, 10), steps=128, seed=11, decorrelate=decorrelate)
    want = ic.filter_patterns(ref_model, "features", [0, 1, 3, 5, 7], backend=oracle, **kw)
    got = ic.filter_patterns(model, "features", [0, 1, 3, 5, 7], **kw)
    assert np.abs(got - want).max() <= TOL_REFERENCE
    want_logits = ic.filter_patterns(ref_model, None, [2], backend=oracle, **kw)
    got_logits = ic.filter_patterns(model, None, [2], **kw)
    assert np.abs(got_logits - want_logits).max() <= TOL_REFERENCE


def test_channels_first_keras_model_with_layout(oracle, ref_model):
    model = _reference_in("tensorflow", "channels_first")
    kw = dict(size=(10, 10), steps=16, seed=2)
    want = ic.filter_patterns(ref_model, "features", [1, 5], backend=oracle, **kw)
    got = ic.filter_patterns(model, "features", [1, 5], layout="channels_first", **kw)
    assert np.abs(got - want).max() <= TOL_REFERENCE


@pytest.mark.parametrize("decorrelate", [False, True])
@pytest.mark.parametrize("other", ["tensorflow", "jax"])
def test_demo_patterns_and_maps_agree_across_backends(other, decorrelate):
    """The demo architecture (ReLU, max-pool), seeded random weights: torch vs ``other``."""
    channels = [0, 1, 2, 3, 5, 8, 13, 21]
    kw = dict(size=(32, 32), steps=16, seed=7, decorrelate=decorrelate)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # dead channels of random weights
        torch_pats = ic.filter_patterns(_demo_in("torch"), "block3", channels, **kw)
        other_pats = ic.filter_patterns(_demo_in(other), "block3", channels, **kw)
    assert np.abs(other_pats - torch_pats).mean() <= TOL_DEMO_MEAN
    for a, b in zip(other_pats, torch_pats, strict=True):
        assert np.corrcoef(a.ravel(), b.ravel())[0, 1] >= MIN_CORRELATION
    x = np.random.default_rng(0).random((2, 16, 16, 3), dtype=np.float32)
    maps_t = ic.feature_maps(_demo_in("torch"), x.transpose(0, 3, 1, 2), "block2")
    maps_o = ic.feature_maps(_demo_in(other), x, "block2")
    assert maps_o.shape == maps_t.shape == (2, 32, 8, 8)
    np.testing.assert_allclose(maps_o, maps_t, atol=1e-5)
