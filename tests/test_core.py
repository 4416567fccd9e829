"""NumPy core: post-processing properties, method formulas, targets, visualisation."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import interp_core as ic
from interp_core.backend.target_spec import resolve_targets, select_output
from interp_core.methods import METHODS
from interp_core.methods.activation import first_component
from interp_core.methods.grad_cam import (
    gradcam_plus_plus_weights,
    gradcam_weights,
    xgradcam_weights,
)
from interp_core.methods.postprocess import interpolation_matrix, resize_linear
from interp_core.testing.reference import ReferenceBackend, ReferenceModel, reference_inputs

finite = st.floats(-1e4, 1e4, allow_nan=False, width=32)


@settings(max_examples=60, deadline=None)
@given(
    maps=hnp.arrays(np.float32, hnp.array_shapes(min_dims=3, max_dims=4, min_side=1,
                                                 max_side=9), elements=finite),
    data=st.data(),
)
def test_resize_shape_and_range(maps, data):
    k = maps.ndim - 1
    size = tuple(data.draw(st.integers(1, 17)) for _ in range(k))
    out = ic.resize_bilinear(maps, size)
    assert out.shape == (maps.shape[0], *size) and out.dtype == np.float32
    # linear interpolation is a convex combination: it never leaves the input's range
    lo = maps.reshape(len(maps), -1).min(1)
    hi = maps.reshape(len(maps), -1).max(1)
    flat = out.reshape(len(out), -1)
    tol = 1e-3 * np.maximum(1, np.abs(maps).max())
    assert (flat >= lo[:, None] - tol).all() and (flat <= hi[:, None] + tol).all()


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 30), st.integers(1, 30), st.booleans())
def test_interpolation_rows_sum_to_one(n_in, n_out, align):
    m = interpolation_matrix(n_in, n_out, align)
    np.testing.assert_allclose(m.sum(1), 1.0, atol=1e-12)
    assert (m >= 0).all()


def test_resize_identity_and_align_corners_endpoints():
    x = np.random.default_rng(0).random((2, 5, 7)).astype(np.float32)
    np.testing.assert_array_equal(ic.resize_bilinear(x, (5, 7)), x)
    up = resize_linear(x, (9, 13), align_corners=True)
    np.testing.assert_allclose(up[:, [0, -1]][:, :, [0, -1]], x[:, [0, -1]][:, :, [0, -1]])


@settings(max_examples=80, deadline=None)
@given(hnp.arrays(np.float32, hnp.array_shapes(min_dims=2, max_dims=4, min_side=1, max_side=8),
                  elements=st.floats(allow_nan=True, allow_infinity=True, width=32)))
def test_normalize_range_and_no_nan(maps):
    out = ic.normalize_minmax(maps)
    assert out.shape == maps.shape and out.dtype == np.float32
    assert np.isfinite(out).all()
    assert (out >= 0).all() and (out <= 1).all()


@settings(max_examples=40, deadline=None)
@given(st.floats(-1e6, 1e6, allow_nan=False, width=32), st.integers(1, 5), st.integers(1, 6))
def test_constant_maps_become_zeros(value, n, side):
    maps = np.full((n, side, side), value, dtype=np.float32)
    assert (ic.normalize_minmax(maps) == 0).all()
    # tiny relative noise on a large constant is still "constant"
    noisy = maps + np.float32(abs(value) * 1e-8)
    assert (ic.normalize_minmax(noisy) == 0).all()


def test_normalize_is_per_sample():
    maps = np.stack([np.arange(4.0).reshape(2, 2), 10 * np.arange(4.0).reshape(2, 2)])
    out = ic.normalize_minmax(maps)
    np.testing.assert_allclose(out[0], out[1])
    assert out.max() == 1 and out.min() == 0


def test_gradcam_family_weights_by_hand():
    rng = np.random.default_rng(0)
    A = rng.random((2, 3, 4, 5)).astype(np.float32)
    G = rng.normal(size=(2, 3, 4, 5)).astype(np.float32)
    np.testing.assert_allclose(gradcam_weights(A, G), G.mean((1, 2)), rtol=1e-6)
    np.testing.assert_allclose(xgradcam_weights(A, G),
                               (G * A).sum((1, 2)) / (A.sum((1, 2)) + 1e-7), rtol=1e-5)
    # Grad-CAM++ eq. 19 written out for one sample and channel
    n, c = 1, 2
    g, a = G[n, ..., c].astype(np.float64), A[n, ..., c].astype(np.float64)
    alpha = g**2 / (2 * g**2 + a.sum() * g**3 + 1e-6)
    want = (alpha * np.maximum(g, 0)).sum()
    assert gradcam_plus_plus_weights(A, G)[n, c] == pytest.approx(want, rel=1e-4)


def test_eigen_cam_sign_follows_the_activations():
    rng = np.random.default_rng(0)
    blob = np.zeros((6, 6), np.float32)
    blob[1:3, 1:3] = 1.0
    A = blob[None, :, :, None] * rng.random(8)[None, None, None, :] + 0.01 * rng.random(
        (1, 6, 6, 8))
    for flip in (1.0, -1.0):
        proj = first_component(A.astype(np.float32) * 1.0, (A * flip).mean(-1))
        # positively correlated with the reference map, whichever sign the SVD returned
        corr = np.corrcoef(proj.ravel(), (A * flip).mean(-1).ravel())[0, 1]
        assert corr > 0.9


def test_method_options_give_raw_maps():
    model, backend = ReferenceModel(), ReferenceBackend()
    x = reference_inputs(2)
    exp = ic.GradCAM(model, "features", backend=backend, relu=False, normalize=False,
                     upsample=False).explain(x, [0, 1])
    np.testing.assert_allclose(exp.maps, exp.raw["features"], rtol=1e-6)
    assert exp.maps.shape == (2, 8, 8) and exp.maps.min() < 0
    with pytest.raises(TypeError, match="unknown options"):
        ic.GradCAM(model, "features", backend=backend, colour="red")


@pytest.mark.parametrize("method", ["cam", "gradcam", "gradcam++", "xgradcam", "scorecam",
                                    "ablationcam"])
def test_channel_weight_methods_fill_explanation_weights(method):
    model, backend = ReferenceModel(), ReferenceBackend()
    x = reference_inputs(3)
    options = {"fc": "fc"} if method == "cam" else {}
    cls = METHODS[method]
    assert issubclass(cls, ic.ChannelWeightCAM)
    exp = cls(model, "features", backend=backend, **options).explain(x, [0, 3, 1])
    w = exp.weights["features"]
    assert w.shape == (3, 8) and w.dtype == np.float32
    acts = model.features(x)
    np.testing.assert_allclose(exp.raw["features"], np.einsum("nhwc,nc->nhw", acts, w),
                               rtol=1e-5, atol=1e-6)
    if method in ("cam", "gradcam"):  # GAP + dense: w = W_fc[k] (CAM) = W_fc[k] / 64 (Grad-CAM)
        scale = 1.0 if method == "cam" else 1.0 / 64
        np.testing.assert_allclose(w, model.weights.fc_weight[[0, 3, 1]] * scale, rtol=1e-5)


def test_methods_without_channel_weights_leave_weights_empty():
    exp = ic.HiResCAM(ReferenceModel(), "features", backend=ReferenceBackend()).explain(
        reference_inputs(2), [0, 1])
    assert exp.weights == {}


def test_explain_and_methods_listing():
    assert {"gradcam", "gradcam++", "xgradcam", "hirescam", "gradcam-elementwise", "layercam",
            "eigencam", "eigengradcam", "cam"} <= set(ic.methods())
    x = reference_inputs(2)
    maps = ic.explain(ReferenceModel(), x, method="GradCAM_PP".replace("_PP", "pp"),
                      layer="features", backend=ReferenceBackend())
    assert maps.shape == (2, 10, 10)
    with pytest.raises(ValueError, match="known methods"):
        ic.explain(ReferenceModel(), x, method="nocam", backend=ReferenceBackend())


def test_resolve_targets():
    assert resolve_targets(None, 3).kind == "top1"
    spec = resolve_targets(2, 3)
    assert spec.kind == "class" and spec.indices.tolist() == [2, 2, 2]
    assert resolve_targets(np.int64(1), 2).indices.tolist() == [1, 1]
    assert resolve_targets([ic.ClassTarget(1), 4], 2).indices.tolist() == [1, 4]
    assert resolve_targets(ic.BinaryTarget(False), 2).signs.tolist() == [-1, -1]
    with pytest.raises(ValueError, match="3 samples"):
        resolve_targets([1, 2], 3)
    with pytest.raises(ValueError, match="one kind"):
        resolve_targets([1, ic.BinaryTarget()], 2)
    with pytest.raises(TypeError, match="BinaryTarget"):
        resolve_targets(True, 2)
    with pytest.raises(ValueError, match=">= 0"):
        resolve_targets(-1, 2)
    with pytest.raises(ValueError, match="zero norm"):
        resolve_targets(ic.SimilarityTarget(np.zeros(3)), 1)
    sub = resolve_targets([5, 6, 7], 3).take(slice(1, 3))
    assert sub.indices.tolist() == [6, 7] and sub.n == 2


def test_select_output():
    logits = np.ones(3)
    assert select_output(logits) is logits
    assert select_output((logits, 0)) is logits
    assert select_output({"a": 0, "logits": logits}) is logits
    assert select_output({"a": logits}) is logits
    assert select_output(type("O", (), {"logits": logits})()) is logits
    assert select_output({"aux": logits}, "aux") is logits
    assert select_output((0, logits), 1) is logits
    assert select_output((0, logits), lambda out: out[1]) is logits
    with pytest.raises(KeyError, match="nope"):
        select_output({"a": 1}, "nope")


def test_tokens_to_grid():
    tokens = np.arange(2 * 17 * 3, dtype=np.float32).reshape(2, 17, 3)
    grid = ic.tokens_to_grid(prefix=1)(tokens)
    assert grid.shape == (2, 4, 4, 3)
    np.testing.assert_array_equal(grid[0, 0, 1], tokens[0, 2])
    assert ic.tokens_to_grid(prefix=0, height=2)(tokens[:, :16]).shape == (2, 2, 8, 3)
    with pytest.raises(ValueError, match="grid"):
        ic.tokens_to_grid(prefix=2)(tokens)


def test_overlay_and_colormaps(tmp_path):
    img = np.zeros((8, 6, 3), np.float32)
    heat = np.zeros((4, 3), np.float32)
    heat[0, 0] = 1.0
    out = ic.overlay(img, heat, alpha=1.0)
    assert out.dtype == np.uint8 and out.shape == (8, 6, 3)
    # jet: 0 is dark blue, 1 is dark red
    assert out[7, 5].tolist() == [0, 0, 128] and out[0, 0][0] > 120 and out[0, 0][2] == 0
    assert ic.overlay(img, heat, alpha=0.0).max() == 0
    chw = ic.overlay(np.ones((3, 8, 6)), np.ones((8, 6)), colormap="gray")
    assert (chw == 255).all()
    for name in ("viridis", "inferno", "hot"):
        assert ic.overlay(img, heat, colormap=name).shape == (8, 6, 3)
    with pytest.raises(ValueError, match="alpha"):
        ic.overlay(img, heat, alpha=2)
    path = ic.save_png(tmp_path / "sub" / "o.png", out)
    from PIL import Image

    assert np.array_equal(np.asarray(Image.open(path)), out)
