"""The methods the peers have (issue 13), in the core and through all three adapters.

- Core, no framework: every new method through a closed-form backend (the NumPy reference
  model with input gradients, guided gradients and bias gradients in closed form), against
  formulas written out here; the quadrature rules; SmoothGrad's noise; the method table.
- Adapters: ``score_input_gradients`` (plain and guided) and ``bias_gradients`` of each
  adapter's reference models against the closed forms; guided ReLUs however the model writes
  them; the three frameworks agree on the demo model for every new method and option.
- pytorch-grad-cam: it does not install beside torch 2.13 (it needs torchvision), so
  ``eigen_smooth``, ``aug_smooth``, FullGrad and KPCA-CAM are compared with re-implementations
  of its algorithm (``base_cam.py``, ``utils/svd_on_activations.py``, ``fullgrad_cam.py``,
  ``kpca_cam.py``, ttach's ``HorizontalFlip`` and ``Multiply``), written here in torch and
  NumPy independently of the library.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import interp_core as ic
from interp_core.backend.layout import to_backend_layout
from interp_core.backend.patching import EXPANSION_REFUSED
from interp_core.backend.protocol import (
    BIAS_GRADIENTS,
    GUIDED_BACKPROP,
    SCORE_INPUT_GRADIENTS,
    BiasGradients,
    InputGradients,
)
from interp_core.backend.target_spec import resolve_targets
from interp_core.datasets import make_shapes
from interp_core.datasets.demo import LAYER, demo_model
from interp_core.methods import (
    CATALOG,
    KPCACAM,
    METHODS,
    FullGrad,
    GradCAM,
    GuidedBackprop,
    GuidedGradCAM,
    GuidedGradientsGradCAM,
    InputXGradient,
    IntegratedGradients,
    Saliency,
    SmoothGrad,
    method_table,
    methods_markdown,
    required_capabilities,
)
from interp_core.methods.input_gradients import integration_rule
from interp_core.methods.kpca import kernel_first_component
from interp_core.testing import reference as ref
from tests.conftest import require_framework

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
DOCS = Path(__file__).resolve().parents[1] / "docs" / "methods.md"
TARGETS = [0, 3, 1, 4]


# -- a closed-form backend: the reference model with every new capability --------------------
class ClosedFormBackend(ref.ReferenceBackend):
    """:class:`~interp_core.testing.reference.ReferenceBackend` plus input gradients (plain
    and guided) and bias gradients, in closed form. The reference model is conv -> ReLU ->
    linear head, so with ``U = dS/dA``: the input gradient is the conv's input gradient of
    ``U * (pre > 0)``; the guided one of ``U * (pre > 0) * (U > 0)``; the conv's bias gradient
    is ``U * (pre > 0)``; a 1x1 ``fc`` convolution (segmentation) has the score gradient."""

    name = "closed-form"
    capabilities = ref.ReferenceBackend.capabilities | {
        SCORE_INPUT_GRADIENTS, GUIDED_BACKPROP, BIAS_GRADIENTS}

    @staticmethod
    def _backward(model: ref.ReferenceModel, x: np.ndarray, target: Any) -> tuple[Any, ...]:
        w = model.weights
        pre = ref.conv_valid(x, w.conv_kernel, w.conv_bias).astype(np.float64)
        acts = np.maximum(pre, 0)
        out = model.head(acts.astype(np.float32))
        scores, top1 = ref.target_scores(out, target, ref.NUMPY_OPS)
        out_grad = ref.score_gradient(out, target, top1)
        upstream = model.head_gradient(acts.shape, out_grad)
        return pre, upstream, np.asarray(scores, np.float32), top1, out_grad

    def score_input_gradients(self, model: ref.ReferenceModel, inputs: Any, target: Any, *,
                              batch_size: int = 32, output: Any = None,
                              guided: bool = False) -> InputGradients:
        x = np.asarray(inputs, dtype=np.float32)
        pre, upstream, scores, top1, _ = self._backward(model, x, target)
        through = upstream * (pre > 0) * ((upstream > 0) if guided else 1.0)
        grads = ref.conv_valid_input_gradient(through, model.weights.conv_kernel)
        return InputGradients(scores, target.resolved_indices(top1), grads.astype(np.float32))

    def bias_gradients(self, model: ref.ReferenceModel, inputs: Any, target: Any, *,
                       output: Any = None) -> BiasGradients:
        x = np.asarray(inputs, dtype=np.float32)
        pre, upstream, scores, top1, out_grad = self._backward(model, x, target)
        plain = self.score_input_gradients(model, x, target).gradients
        biases = {ref.LAYER: model.weights.conv_bias.astype(np.float32)}
        grads = {ref.LAYER: (upstream * (pre > 0)).astype(np.float32)}
        if model.variant == "segmentation":
            biases[ref.FC] = model.weights.fc_bias.astype(np.float32)
            grads[ref.FC] = out_grad.astype(np.float32)
        return BiasGradients(scores, target.resolved_indices(top1), plain, biases, grads)


@pytest.fixture
def closed() -> ClosedFormBackend:
    return ClosedFormBackend()


def _oracle(variant: str = "gap") -> ref.ReferenceModel:
    return ref.ReferenceModel(ref.reference_weights(variant=variant), variant)


# -- core: the methods on closed forms ---------------------------------------------------------
def test_saliency_input_x_gradient_guided_backprop_closed_form(closed):
    model, x = _oracle("flatten"), ref.reference_inputs(4, variant="flatten")
    spec = resolve_targets(TARGETS, 4)
    plain = closed.score_input_gradients(model, x, spec).gradients
    guided = closed.score_input_gradients(model, x, spec, guided=True).gradients
    sal = Saliency(model, backend=closed).explain(x, TARGETS)
    np.testing.assert_allclose(sal.raw["input"], np.abs(plain), rtol=1e-6)
    expected = np.abs(plain).max(axis=-1)
    expected = (expected - expected.min((1, 2), keepdims=True)) / np.ptp(
        expected, axis=(1, 2), keepdims=True)
    np.testing.assert_allclose(sal.maps, expected, atol=1e-6)
    assert sal.layers == ["input"] and sal.maps.shape == (4, 9, 12)
    ixg = InputXGradient(model, backend=closed).explain(x, TARGETS)
    np.testing.assert_allclose(ixg.raw["input"], x * plain, rtol=1e-6)
    gb = GuidedBackprop(model, backend=closed).explain(x, TARGETS)
    np.testing.assert_allclose(gb.raw["input"], guided, rtol=1e-6)
    assert np.abs(guided - plain).max() > 1e-3


@pytest.mark.parametrize("interpolation", ["bilinear", "nearest"])
def test_guided_gradcam_is_guided_backprop_times_upsampled_gradcam(closed, interpolation):
    model, x = _oracle("flatten"), ref.reference_inputs(4, variant="flatten")
    exp = GuidedGradCAM(model, ref.LAYER, backend=closed,
                        interpolation=interpolation).explain(x, TARGETS)
    cam = GradCAM(model, ref.LAYER, backend=closed).explain(x, TARGETS)
    np.testing.assert_allclose(exp.raw[ref.LAYER], cam.raw[ref.LAYER], rtol=1e-6)
    guided = closed.score_input_gradients(model, x, resolve_targets(TARGETS, 4),
                                          guided=True).gradients
    raw = np.maximum(cam.raw[ref.LAYER], 0)  # (4, 7, 10) -> (4, 9, 12)
    if interpolation == "nearest":
        rows = np.floor(np.arange(9) * 7 / 9).astype(int)
        cols = np.floor(np.arange(12) * 10 / 12).astype(int)
        up = raw[:, rows][:, :, cols]
    else:
        up = ic.resize_bilinear(raw, (9, 12))
    np.testing.assert_allclose(exp.raw["input"], guided * up[..., None], rtol=1e-5,
                               atol=1e-7)
    assert exp.weights[ref.LAYER].shape == (4, ref.CHANNELS)


def test_guided_gradients_gradcam_weights(closed):
    model, x = _oracle("flatten"), ref.reference_inputs(4, variant="flatten")
    exp = GuidedGradientsGradCAM(model, ref.LAYER, backend=closed).explain(x, TARGETS)
    cap = closed.capture(model, x, [ref.LAYER], resolve_targets(TARGETS, 4))
    A, G = cap.layers[ref.LAYER].activations, cap.layers[ref.LAYER].gradients
    w = (np.where((A > 0) & (G > 0), G, 0)).mean(axis=(1, 2))
    np.testing.assert_allclose(exp.weights[ref.LAYER], w, rtol=1e-6)
    np.testing.assert_allclose(exp.raw[ref.LAYER], np.einsum("nhwc,nc->nhw", A, w), rtol=1e-5)
    assert (exp.weights[ref.LAYER] >= 0).all()


@pytest.mark.parametrize("rule", ["gausslegendre", "riemann_left", "riemann_right",
                                  "riemann_middle", "trapezoid"])
def test_integration_rules_integrate_polynomials(rule):
    alphas, weights = integration_rule(rule, 8)
    exact = {"gausslegendre": 15, "riemann_middle": 1, "trapezoid": 1}.get(rule, 0)
    for degree in range(exact + 1):
        assert np.isclose((weights * alphas**degree).sum(), 1 / (degree + 1), atol=1e-12)
    assert np.isclose(weights.sum(), 1.0) and ((alphas >= 0) & (alphas <= 1)).all()
    with pytest.raises(ValueError, match="steps"):
        integration_rule(rule, 1)
    with pytest.raises(ValueError, match="rule"):
        integration_rule("simpson", 8)


def test_integrated_gradients_closed_form_and_completeness(closed):
    model, x = _oracle("gap"), ref.reference_inputs(3)
    baseline = np.full_like(x[:1], 0.1)
    ig = IntegratedGradients(model, backend=closed, baseline=baseline, steps=8,
                             rule="riemann_middle", batch_size=5)
    exp = ig.explain(x, [1, 2, 0])
    spec = resolve_targets([1, 2, 0], 3)
    alphas = (np.arange(8) + 0.5) / 8
    total = sum(closed.score_input_gradients(model, baseline + a * (x - baseline), spec)
                .gradients.astype(np.float64) for a in alphas) / 8
    np.testing.assert_allclose(exp.raw["input"], (x - baseline) * total, rtol=1e-5, atol=1e-7)
    fine = IntegratedGradients(model, backend=closed, baseline=baseline, steps=64).explain(
        x, [1, 2, 0])
    gap = model(x)[np.arange(3), [1, 2, 0]] - model(np.broadcast_to(baseline, x.shape))[
        np.arange(3), [1, 2, 0]]
    np.testing.assert_allclose(fine.raw["convergence_delta"],
                               fine.raw["input"].sum(axis=(1, 2, 3)) - gap, atol=1e-5)
    assert np.abs(fine.raw["convergence_delta"]).max() < 1e-2 * np.abs(gap).max()
    assert np.abs(exp.raw["convergence_delta"]).max() > np.abs(
        fine.raw["convergence_delta"]).max()


def test_smoothgrad_closed_form_seeded_and_batch_independent(closed):
    model, x = _oracle("gap"), ref.reference_inputs(3)
    exp = SmoothGrad(model, backend=closed, n_samples=5, noise_level=0.2, seed=4,
                     batch_size=32).explain(x, [1, 2, 0])
    rng = np.random.default_rng(4)
    sigma = 0.2 * (x.reshape(3, -1).max(1) - x.reshape(3, -1).min(1))
    spec = resolve_targets([1, 2, 0], 3)
    want = np.zeros(x.shape)
    for _ in range(5):
        noisy = (x + sigma[:, None, None, None] * rng.standard_normal(x.shape)).astype(np.float32)
        want += closed.score_input_gradients(model, noisy, spec).gradients / 5
    np.testing.assert_allclose(exp.raw["input"], want, rtol=1e-5, atol=1e-7)
    small = SmoothGrad(model, backend=closed, n_samples=5, noise_level=0.2, seed=4,
                       batch_size=4).explain(x, [1, 2, 0])
    np.testing.assert_allclose(small.raw["input"], exp.raw["input"], rtol=1e-6, atol=1e-8)
    other = SmoothGrad(model, backend=closed, n_samples=5, noise_level=0.2, seed=5).explain(
        x, [1, 2, 0])
    assert np.abs(other.raw["input"] - exp.raw["input"]).max() > 1e-4


def test_fullgrad_closed_form(closed):
    model, x = _oracle("segmentation"), ref.reference_inputs(2, variant="segmentation")
    mask = np.zeros((2, 7, 10), np.float32)
    mask[:, 2:5, 3:8] = 1
    targets = [ic.SegmentationTarget(1, mask[0]), ic.SegmentationTarget(3, mask[1])]
    exp = FullGrad(model, backend=closed).explain(x, targets)
    got = closed.bias_gradients(model, x, resolve_targets(targets, 2))

    def scale(v: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
        v = v - v.min(axis=axes, keepdims=True)
        return v / (1e-7 + v.max(axis=axes, keepdims=True))

    total = scale(np.abs(x * got.input_gradients), (1, 2)).sum(-1)
    for name in (ref.LAYER, ref.FC):
        term = scale(np.abs(got.gradients[name] * got.biases[name]), (1, 2)).sum(-1)
        np.testing.assert_allclose(exp.raw[name], term, rtol=1e-5)
        total = total + ic.resize_bilinear(term, (9, 12))
    np.testing.assert_allclose(exp.maps, scale(total, (1, 2)), atol=1e-5)
    assert exp.layers == ["input", ref.LAYER, ref.FC]


def test_kpca_cam_sigmoid_kernel(closed):
    model, x = _oracle("gap"), ref.reference_inputs(3)
    exp = KPCACAM(model, ref.LAYER, backend=closed).explain(x)
    A = model.features(x).reshape(3, -1, ref.CHANNELS).astype(np.float64)
    for i in range(3):
        X = A[i] - A[i].mean(0)
        K = np.tanh(X @ X.T / ref.CHANNELS + 1.0)
        J = np.eye(len(K)) - 1.0 / len(K)
        values, vectors = np.linalg.eigh(J @ K @ J)
        proj = vectors[:, -1] * np.sqrt(values[-1])
        got = exp.raw[ref.LAYER][i].reshape(-1)
        sign = np.sign((got * proj).sum())
        np.testing.assert_allclose(got, sign * proj, rtol=1e-4, atol=1e-6)
        assert np.corrcoef(got, A[i].mean(-1))[0, 1] >= 0  # oriented with the activations


def test_kpca_large_layer_uses_subspace_iteration():
    rng = np.random.default_rng(0)
    X = np.maximum(rng.normal(size=(1, 33, 33, 16)), 0).astype(np.float32)  # 1089 positions
    for kernel in ("sigmoid", "rbf"):
        got = kernel_first_component(X, X.mean(-1), kernel=kernel)
        flat = X[0].reshape(-1, 16).astype(np.float64)
        flat -= flat.mean(0)
        dots = flat @ flat.T
        sq = np.diag(dots)
        K = np.tanh(dots / 16 + 1) if kernel == "sigmoid" else np.exp(
            -(sq[:, None] + sq[None] - 2 * dots) / 16)
        J = np.eye(len(K)) - 1.0 / len(K)
        values, vectors = np.linalg.eigh(J @ K @ J)
        proj = vectors[:, -1] * np.sqrt(values[-1])
        g = got.reshape(-1)
        np.testing.assert_allclose(g, np.sign((g * proj).sum()) * proj, atol=1e-4)


def test_smoothing_options(closed):
    model, x = _oracle("flatten"), ref.reference_inputs(4, variant="flatten")
    with pytest.raises(TypeError, match="eigen_smooth"):
        KPCACAM(model, ref.LAYER, backend=closed, eigen_smooth=True)
    with pytest.raises(TypeError, match="eigen_smooth"):
        Saliency(model, backend=closed, eigen_smooth=True)
    for name in ("gradcam", "hirescam", "layercam", "gradcam-elementwise", "scorecam",
                 "ablationcam", "gradcam++", "xgradcam"):
        smooth = METHODS[name](model, ref.LAYER, backend=closed, eigen_smooth=True).explain(
            x, TARGETS)
        plain = METHODS[name](model, ref.LAYER, backend=closed).explain(x, TARGETS)
        assert smooth.maps.shape == plain.maps.shape and np.isfinite(smooth.maps).all()
        assert np.abs(smooth.maps - plain.maps).max() > 1e-3, name
    eig = ic.EigenCAM(model, ref.LAYER, backend=closed)
    np.testing.assert_allclose(
        ic.EigenCAM(model, ref.LAYER, backend=closed, eigen_smooth=True)(x), eig(x), atol=1e-6)
    # aug_smooth: the mean of six de-augmented maps, other fields of the plain run
    aug = GradCAM(model, ref.LAYER, backend=closed, aug_smooth=True).explain(x, TARGETS)
    plain = GradCAM(model, ref.LAYER, backend=closed)
    maps = [plain(x * f, TARGETS) for f in (0.9, 1.0, 1.1)]
    maps += [plain(np.ascontiguousarray(x[:, :, ::-1] * f), TARGETS)[:, :, ::-1]
             for f in (0.9, 1.0, 1.1)]
    np.testing.assert_allclose(aug.maps, np.mean(maps, axis=0), atol=1e-6)
    np.testing.assert_allclose(aug.raw[ref.LAYER], plain.explain(x, TARGETS).raw[ref.LAYER])


def test_capabilities_are_required():
    model, x = _oracle("gap"), ref.reference_inputs(2)
    oracle = ref.ReferenceBackend()
    for cls in (Saliency, InputXGradient, SmoothGrad, IntegratedGradients, GuidedBackprop,
                FullGrad):
        with pytest.raises(NotImplementedError, match="capabilit"):
            cls(model, backend=oracle)
    with pytest.raises(NotImplementedError, match="GuidedGradCAM"):
        GuidedGradCAM(model, ref.LAYER, backend=oracle)
    assert required_capabilities("guidedbackprop") == (SCORE_INPUT_GRADIENTS, GUIDED_BACKPROP)
    assert required_capabilities("gradcam") == ()
    with pytest.raises(ValueError, match="reduce"):
        Saliency(model, backend=ClosedFormBackend(), reduce="mean")
    with pytest.raises(ValueError, match="n_samples"):
        SmoothGrad(model, backend=ClosedFormBackend(), n_samples=0)
    with pytest.raises(ValueError, match="baseline"):
        IntegratedGradients(model, backend=ClosedFormBackend(), baseline=np.zeros(5))(x)


def test_method_table_lists_every_method_and_docs_embed_it():
    table = method_table()
    assert [m.name for m in table] == ic.methods() == sorted(METHODS)
    assert {m.needs for m in table} == {"activations", "gradients", "hessian-vector products",
                                        "forward per channel", "input gradients", "attention",
                                        "attention gradients"}
    kinds = {m.name: m.needs for m in CATALOG}
    assert kinds["scorecam"] == "forward per channel" and kinds["saliency"] == "input gradients"
    assert kinds["gradcam"] == "gradients" and kinds["eigencam"] == "activations"
    assert methods_markdown() in DOCS.read_text(), (
        "docs/methods.md is out of date: paste interp_core.methods.methods_markdown()")


# -- adapters against the closed forms ---------------------------------------------------------
FRAMEWORKS = {"torch": ("torch", "interp_torch.testing"),
              "tensorflow": ("tensorflow", "interp_tensorflow.testing"),
              "jax": ("jax", "interp_jax.testing")}


def _adapter(name: str) -> tuple[Any, Any]:
    require_framework(name, FRAMEWORKS[name][0])
    testing = require_framework(name, FRAMEWORKS[name][1])
    return ic.get_backend(name), testing


def _channels_last(grad: np.ndarray, impl: Any) -> np.ndarray:
    return np.moveaxis(grad, 1, -1) if getattr(impl, "input_layout", None) == \
        "channels_first" else grad


@pytest.mark.parametrize("framework", sorted(FRAMEWORKS))
@pytest.mark.parametrize("variant", ["flatten", "segmentation"])
def test_adapter_gradients_equal_closed_forms(framework, variant, closed):
    impl, testing = _adapter(framework)
    weights = ref.reference_weights(variant=variant)
    model = testing.reference_model(weights, variant)
    oracle = ref.ReferenceModel(weights, variant)
    x_np = ref.reference_inputs(4, variant=variant)
    x = testing.to_input(x_np)
    if variant == "segmentation":
        mask = (np.random.default_rng(2).random((4, 7, 10)) > 0.5).astype(np.float32)
        targets = [ic.SegmentationTarget(k, m) for k, m in zip(TARGETS, mask, strict=True)]
    else:
        targets = TARGETS
    spec = resolve_targets(targets, 4)
    for guided in (False, True):
        got = impl.score_input_gradients(model, x, spec, batch_size=3, guided=guided)
        want = closed.score_input_gradients(oracle, x_np, spec, guided=guided)
        np.testing.assert_allclose(_channels_last(got.gradients, impl), want.gradients,
                                   atol=1e-5, rtol=1e-4)
        np.testing.assert_allclose(got.scores, want.scores, atol=1e-5, rtol=1e-5)
        np.testing.assert_array_equal(got.targets, want.targets)
    got_b = impl.bias_gradients(model, x, spec)
    want_b = closed.bias_gradients(oracle, x_np, spec)
    np.testing.assert_allclose(_channels_last(got_b.input_gradients, impl),
                               want_b.input_gradients, atol=1e-5, rtol=1e-4)
    matched = 0
    for name, bias in want_b.biases.items():
        (theirs,) = [k for k, b in got_b.biases.items()
                     if b.shape == bias.shape and np.allclose(b, bias, atol=1e-6)]
        np.testing.assert_allclose(got_b.gradients[theirs], want_b.gradients[name], atol=1e-5,
                                   rtol=1e-4)
        matched += 1
    assert matched == len(got_b.biases)


@pytest.mark.parametrize("framework", sorted(FRAMEWORKS))
def test_guided_backprop_reaches_relus_however_written(framework):
    """A ReLU written as a layer, a function or ``max(x, 0)`` is guided like one fused into a
    convolution: two models with the same weights give the same guided gradients."""
    impl, _ = _adapter(framework)
    fused, split, x = _relu_variants(framework)
    spec = resolve_targets([1, 0], 2)
    a = impl.score_input_gradients(fused, x, spec, guided=True).gradients
    b = impl.score_input_gradients(split, x, spec, guided=True).gradients
    plain = impl.score_input_gradients(split, x, spec).gradients
    np.testing.assert_allclose(a, b, atol=1e-6)
    assert np.abs(a - plain).max() > 1e-3


def _relu_variants(framework: str) -> tuple[Any, Any, Any]:
    rng = np.random.default_rng(0)
    k1, k2 = rng.normal(size=(3, 3, 3, 6)), rng.normal(size=(3, 3, 6, 6)) * 0.5
    dense = rng.normal(size=(6, 2))
    x = rng.random((2, 8, 8, 3)).astype(np.float32)
    if framework == "torch":
        import torch
        from torch import nn

        class Fused(nn.Module):
            def __init__(self, inplace: bool = False) -> None:
                super().__init__()
                self.c1, self.c2 = nn.Conv2d(3, 6, 3), nn.Conv2d(6, 6, 3)
                self.r1, self.r2 = nn.ReLU(), nn.ReLU(inplace=inplace)
                self.fc = nn.Linear(6, 2)

            def forward(self, t: torch.Tensor) -> torch.Tensor:
                h = self.r2(self.c2(self.r1(self.c1(t))))
                return self.fc(h.mean((2, 3)))

        class Written(Fused):
            def forward(self, t: torch.Tensor) -> torch.Tensor:
                h = torch.nn.functional.relu(self.c1(t))
                h = self.c2(h).relu_()
                return self.fc(torch.relu(h).mean((2, 3)))

        def build(cls: type) -> nn.Module:
            m = cls()
            with torch.no_grad():
                m.c1.weight.copy_(torch.from_numpy(k1.transpose(3, 2, 0, 1)))
                m.c2.weight.copy_(torch.from_numpy(k2.transpose(3, 2, 0, 1)))
                m.fc.weight.copy_(torch.from_numpy(dense.T))
                for layer in (m.c1, m.c2, m.fc):
                    layer.bias.zero_()
            return m.eval()

        return build(Fused), build(Written), torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
    if framework == "tensorflow":
        import keras

        def build(fused: bool) -> Any:
            act = "relu" if fused else None
            layers = [keras.Input((8, 8, 3)), keras.layers.Conv2D(6, 3, activation=act)]
            layers += [] if fused else [keras.layers.ReLU()]
            layers += [keras.layers.Conv2D(6, 3, activation=act)]
            layers += [] if fused else [keras.layers.Activation("relu")]
            layers += [keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2)]
            m = keras.Sequential(layers)
            convs = [la for la in m.layers if isinstance(la, keras.layers.Conv2D)]
            convs[0].set_weights([k1, np.zeros(6)])
            convs[1].set_weights([k2, np.zeros(6)])
            m.layers[-1].set_weights([dense, np.zeros(2)])
            return m

        return build(True), build(False), x
    import jax.numpy as jnp
    from flax import nnx

    class Net(nnx.Module):
        def __init__(self, style: str) -> None:
            rngs = nnx.Rngs(0)
            self.c1 = nnx.Conv(3, 6, (3, 3), padding="VALID", rngs=rngs)
            self.c2 = nnx.Conv(6, 6, (3, 3), padding="VALID", rngs=rngs)
            self.fc = nnx.Linear(6, 2, rngs=rngs)
            self.style = style

        def __call__(self, t: Any) -> Any:
            if self.style == "nnx":
                h = nnx.relu(self.c2(nnx.relu(self.c1(t))))
            else:
                h = jnp.maximum(self.c2(jnp.maximum(0.0, self.c1(t))), 0)
            return self.fc(h.mean((1, 2)))

    def build(style: str) -> Any:
        m = Net(style)
        m.c1.kernel.set_value(jnp.asarray(k1, jnp.float32))
        m.c2.kernel.set_value(jnp.asarray(k2, jnp.float32))
        m.fc.kernel.set_value(jnp.asarray(dense, jnp.float32))
        return m

    return build("nnx"), build("max"), jnp.asarray(x)


# -- the three frameworks agree on the demo model ----------------------------------------------
CASES = [
    ("gradcam-guidedgrads", {}), ("guidedbackprop", {}), ("guidedgradcam", {}),
    ("saliency", {}), ("inputxgradient", {}), ("smoothgrad", {"n_samples": 4, "seed": 3}),
    ("integratedgradients", {"steps": 8, "rule": "trapezoid"}),
    ("fullgrad", {}), ("kpcacam", {}), ("gradcam", {"eigen_smooth": True}),
    ("layercam", {"eigen_smooth": True}), ("scorecam", {"eigen_smooth": True, "top_k": 8}),
    ("gradcam", {"aug_smooth": True}), ("hirescam", {"aug_smooth": True, "eigen_smooth": True}),
]


@pytest.fixture(scope="module")
def demo_maps() -> dict[str, dict[str, Any]]:
    """Per framework that imports, per case, the Explanation on 4 shapes images."""
    images = make_shapes(4, seed=11).images
    found: dict[str, dict[str, Any]] = {}
    for name, (module, _) in FRAMEWORKS.items():
        try:
            require_framework(name, module)
        except pytest.skip.Exception:
            continue
        model = demo_model(name)
        impl = ic.get_backend(name)
        x = to_backend_layout(images, impl, model)
        found[name] = {f"{m}{sorted(o.items())}": METHODS[m](model, LAYER, backend=name, **o)
                       .explain(x, None if m == "kpcacam" else [0, 1, 2, 3])
                       for m, o in CASES}
    return found


@pytest.mark.parametrize("case", [f"{m}{sorted(o.items())}" for m, o in CASES])
def test_frameworks_agree_on_the_demo_model(demo_maps, case):
    if len(demo_maps) < 2:
        pytest.skip("fewer than two frameworks installed")
    names = sorted(demo_maps)
    first = demo_maps[names[0]][case]
    assert first.maps.shape == (4, 64, 64) and 0.5 < first.maps.max() <= 1.0  # aug: a mean
    for other in names[1:]:
        exp = demo_maps[other][case]
        np.testing.assert_allclose(exp.maps, first.maps, atol=1e-4, err_msg=f"{other} {case}")
        np.testing.assert_array_equal(exp.targets, first.targets)
        np.testing.assert_allclose(exp.scores, first.scores, atol=1e-4, rtol=1e-5)
        if "convergence_delta" in first.raw:
            np.testing.assert_allclose(exp.raw["convergence_delta"],
                                       first.raw["convergence_delta"], atol=1e-4)


# -- pytorch-grad-cam's algorithms, re-implemented (it does not install beside torch 2.13) ----
def _pgc_net() -> Any:
    """A torch classifier with convolution biases, batch norm (non-trivial running statistics)
    and non-in-place ReLUs, in eval mode."""
    torch = require_framework("torch", "torch")
    nn = torch.nn
    torch.manual_seed(1)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 5),
    )
    with torch.no_grad():
        for bn in (net[1], net[5]):
            bn.running_mean.uniform_(-0.3, 0.3)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.3, 0.3)
        net[-1].weight.mul_(5.0)
    return net.eval()


def _pgc_input(n: int = 3) -> Any:
    torch = require_framework("torch", "torch")
    return torch.from_numpy(np.random.default_rng(8).random((n, 3, 16, 16), dtype=np.float32))


def _scale_cam_image(cam: np.ndarray, size: tuple[int, int] | None = None) -> np.ndarray:
    """pytorch-grad-cam ``utils/image.py::scale_cam_image``: per map ``(x - min) / (1e-7 +
    max)``, then ``cv2.resize`` (bilinear, half-pixel centres: torch's ``align_corners=False``
    upsampling, which is what cv2's INTER_LINEAR does when enlarging)."""
    import torch

    out = []
    for img in cam:
        img = img - np.min(img)
        img = img / (1e-7 + np.max(img))
        if size is not None and img.shape != size:
            img = torch.nn.functional.interpolate(
                torch.from_numpy(np.float32(img))[None, None], size=size, mode="bilinear",
                align_corners=False)[0, 0].numpy()
        out.append(img)
    return np.float32(out)


def _pgc_layer_pass(model: Any, x: Any, layer: Any, targets: list[int] | None
                    ) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Activations and gradients of ``layer`` (``ActivationsAndGradients``) for the sum of
    the targets' logits (``ClassifierOutputTarget``; top-1 when None)."""
    import torch

    store: dict[str, Any] = {}
    handle = layer.register_forward_hook(lambda m, i, o: store.__setitem__("a", o))
    try:
        out = model(x)
    finally:
        handle.remove()
    if targets is None:
        targets = out.argmax(1).tolist()
    loss = sum(out[i, t] for i, t in enumerate(targets))
    (grad,) = torch.autograd.grad(loss, [store["a"]])
    return store["a"].detach().numpy(), grad.numpy(), targets


def _pgc_2d_projection(batch: np.ndarray) -> np.ndarray:
    """``utils/svd_on_activations.py::get_2d_projection`` (NumPy SVD)."""
    projections = []
    for activations in batch:
        reshaped = activations.reshape(activations.shape[0], -1).transpose()
        reshaped = reshaped - reshaped.mean(axis=0)
        _, _, vt = np.linalg.svd(reshaped, full_matrices=True)
        projections.append((reshaped @ vt[0, :]).reshape(activations.shape[1:]))
    return np.float32(projections)


def _pgc_gradcam(model: Any, x: Any, layer: Any, targets: list[int] | None,
                 eigen_smooth: bool) -> np.ndarray:
    """``BaseCAM.forward`` with ``GradCAM.get_cam_weights`` for one layer. The sign of the
    eigen projection, which the SVD leaves arbitrary, is taken as ours is: positively
    correlated with the unsmoothed map."""
    acts, grads, _ = _pgc_layer_pass(model, x, layer, targets)
    weights = grads.mean(axis=(2, 3))
    weighted = weights[:, :, None, None] * acts
    if eigen_smooth:
        cam = _pgc_2d_projection(weighted)
        plain = weighted.sum(axis=1)
        for i in range(len(cam)):
            if np.corrcoef(cam[i].ravel(), plain[i].ravel())[0, 1] < 0:
                cam[i] = -cam[i]
    else:
        cam = weighted.sum(axis=1)
    scaled = _scale_cam_image(np.maximum(cam, 0), tuple(x.shape[-2:]))
    return _scale_cam_image(np.maximum(scaled[:, None], 0).mean(axis=1))


def _pgc_aug_smooth(model: Any, x: Any, layer: Any, targets: list[int] | None,
                    eigen_smooth: bool) -> np.ndarray:
    """``BaseCAM.forward_augmentation_smoothing``: ttach ``Compose([HorizontalFlip(),
    Multiply([0.9, 1, 1.1])])``; each map de-augmented (flipped back), then the mean."""
    cams = []
    for flip in (False, True):
        for factor in (0.9, 1.0, 1.1):
            augmented = (x.flip(3) if flip else x) * factor
            cam = _pgc_gradcam(model, augmented, layer, targets, eigen_smooth)
            cams.append(cam[:, :, ::-1] if flip else cam)
    return np.mean(np.float32(cams), axis=0)


@pytest.mark.parametrize("targets", [[0, 3, 1], None])
@pytest.mark.parametrize("layer", ["6", "8"])
def test_eigen_and_aug_smooth_as_pytorch_grad_cam(targets, layer):
    model, x = _pgc_net(), _pgc_input()
    module = model[int(layer)]
    for eigen in (False, True):
        ours = GradCAM(model, layer, eigen_smooth=eigen)(x, targets)
        np.testing.assert_allclose(ours, _pgc_gradcam(model, x, module, targets, eigen),
                                   atol=1e-3)
        ours = GradCAM(model, layer, aug_smooth=True, eigen_smooth=eigen)(x, targets)
        np.testing.assert_allclose(ours, _pgc_aug_smooth(model, x, module, targets, eigen),
                                   atol=1e-3)


def _pgc_fullgrad(model: Any, x: Any, targets: list[int]) -> np.ndarray:
    """``fullgrad_cam.py``: every ``Conv2d`` / ``BatchNorm2d`` with a bias (exact types), the
    bias of batch norm from its running statistics; ``scale_accross_batch_and_channels``."""
    import torch

    layers = [m for m in model.modules()
              if type(m) in (torch.nn.Conv2d, torch.nn.BatchNorm2d) and m.bias is not None]
    biases = []
    for m in layers:
        if isinstance(m, torch.nn.BatchNorm2d):
            b = -(m.running_mean * m.weight / torch.sqrt(m.running_var + m.eps)) + m.bias
        else:
            b = m.bias
        biases.append(b.detach().numpy())
    outputs: list[Any] = []
    handles = [m.register_forward_hook(lambda mod, i, o: outputs.append(o)) for m in layers]
    leaf = x.clone().requires_grad_(True)
    try:
        out = model(leaf)
    finally:
        for h in handles:
            h.remove()
    loss = sum(out[i, t] for i, t in enumerate(targets))
    grads = torch.autograd.grad(loss, [leaf, *outputs])
    size = tuple(x.shape[-2:])

    def across(t: np.ndarray) -> np.ndarray:
        n, c = t.shape[:2]
        return _scale_cam_image(t.reshape(n * c, *t.shape[2:]), size).reshape(n, c, *size)

    per_layer = [across(np.abs(grads[0].numpy() * x.numpy()))]
    for bias, grad in zip(biases, grads[1:], strict=True):
        per_layer.append(across(np.abs(bias[None, :, None, None] * grad.numpy())).sum(
            axis=1)[:, None])
    summed = np.concatenate(per_layer, axis=1).sum(axis=1)[:, None]
    return _scale_cam_image(summed.sum(axis=1))


def test_fullgrad_as_pytorch_grad_cam():
    model, x = _pgc_net(), _pgc_input()
    targets = [0, 3, 1]
    ours = FullGrad(model).explain(x, targets)
    np.testing.assert_allclose(ours.maps, _pgc_fullgrad(model, x, targets), atol=1e-5)
    assert ours.layers == ["input", "0", "1", "5", "7"]


def _sklearn_kernel_pca_first(X: np.ndarray) -> np.ndarray:
    """scikit-learn ``KernelPCA(n_components=1, kernel="sigmoid", gamma=None)``'s
    ``fit_transform`` on ``X`` ``(P, C)``: sigmoid kernel with ``gamma = 1 / C``,
    ``coef0 = 1``; ``KernelCenterer``; dense ``eigh`` (P <= 200); ``svd_flip`` (largest
    |entry| positive); ``v * sqrt(lambda)``."""
    import scipy.linalg

    K = np.tanh(X @ X.T / X.shape[1] + 1.0)
    n = K.shape[0]
    fit_rows = K.sum(axis=0) / n
    K = K - fit_rows - (K.sum(axis=1) / n)[:, None] + fit_rows.sum() / n
    values, vectors = scipy.linalg.eigh(K, subset_by_index=(n - 1, n - 1))
    values = np.maximum(values, 0)
    v = vectors[:, 0]
    v = v * np.sign(v[np.argmax(np.abs(v))])
    return v * np.sqrt(values[0])


def test_kpca_cam_as_pytorch_grad_cam():
    pytest.importorskip("scipy")
    model, x = _pgc_net(), _pgc_input()
    exp = KPCACAM(model, "6").explain(x)
    acts, _, _ = _pgc_layer_pass(model, x, model[6], [0, 0, 0])
    sizes = acts.shape[2:]
    want = []
    for i, a in enumerate(acts):
        X = a.reshape(a.shape[0], -1).T.astype(np.float64)
        proj = _sklearn_kernel_pca_first(X - X.mean(axis=0)).reshape(sizes)
        sign = np.sign((proj * exp.raw["6"][i]).sum())
        np.testing.assert_allclose(exp.raw["6"][i], sign * proj, atol=1e-5, rtol=1e-4)
        want.append(sign * proj)
    scaled = _scale_cam_image(np.maximum(np.float32(want), 0), (16, 16))
    np.testing.assert_allclose(exp.maps, _scale_cam_image(scaled), atol=1e-5)


# -- torch: ablation from the layer on ---------------------------------------------------------
def _torch_skip_net(read_batch_early: bool) -> Any:
    """Conv stem, a target block, a block that adds the stem's output back (a skip connection
    across the target layer), pooling and a dense head; optionally reading the batch size
    before the target layer and reshaping with it afterwards (so the batch cannot grow at the
    layer)."""
    torch = require_framework("torch", "torch")
    nn = torch.nn

    class SkipNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
            self.block = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
            self.mix = nn.Conv2d(8, 8, 1)
            self.fc = nn.Linear(8, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            n = x.shape[0]
            s = self.stem(x)
            h = torch.relu(self.mix(self.block(s)) + s)
            pooled = h.mean((2, 3))
            return self.fc(pooled.reshape(n, -1) if read_batch_early else pooled)

    torch.manual_seed(2)
    return SkipNet().eval()


@pytest.mark.parametrize("read_batch_early", [False, True])
def test_torch_ablation_from_the_layer_equals_copies(read_batch_early):
    torch = require_framework("torch", "torch")

    model = _torch_skip_net(read_batch_early)
    impl = ic.get_backend("torch")
    x = torch.from_numpy(np.random.default_rng(4).random((3, 3, 8, 8), dtype=np.float32))
    masks = np.ones((11, 8), np.float32)
    masks[np.arange(8), np.arange(8)] = 0
    masks[8:] = np.random.default_rng(5).random((3, 8)) > 0.5
    spec = resolve_targets([0, 2, 1], 3)
    got = impl.patched_scores(model, x, "block", masks, spec, batch_size=4)
    refused = EXPANSION_REFUSED.refused(model, "block")
    assert refused == read_batch_early  # the early-batch model falls back to copies
    want = np.stack([impl.predict(_masked(model, "block", m), x, spec) for m in masks])
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
    exp = ic.AblationCAM(model, "block").explain(x, [0, 2, 1])
    assert exp.maps.shape == (3, 8, 8) and np.isfinite(exp.maps).all()


def _masked(model: Any, layer: str, mask: np.ndarray) -> Any:
    """A deep copy of ``model`` whose ``layer`` output is multiplied by ``mask``."""
    import copy

    import torch

    clone = copy.deepcopy(model)
    module = dict(clone.named_modules())[layer]
    weight = torch.from_numpy(mask.astype(np.float32))[None, :, None, None]
    module.register_forward_hook(lambda m, i, o: o * weight)
    return clone


def test_torch_replay_below_a_layer_with_a_shared_module():
    """A ReLU module used below and above the layer (as torchvision's Bottleneck does) is
    replayed below and runs above; the model is left without instance forwards or hooks."""
    torch = require_framework("torch", "torch")
    nn = torch.nn

    class Shared(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b, self.c = nn.Conv2d(3, 6, 3), nn.Conv2d(6, 6, 3), nn.Conv2d(6, 6, 1)
            self.relu = nn.ReLU()
            self.fc = nn.Linear(6, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.relu(self.a(x))
            h = self.relu(self.b(h))
            return self.fc(self.relu(self.c(h) - 0.1).mean((2, 3)))

    torch.manual_seed(3)
    model = Shared().eval()
    x = torch.from_numpy(np.random.default_rng(6).random((2, 3, 9, 9), dtype=np.float32))
    masks = (np.random.default_rng(7).random((9, 6)) > 0.4).astype(np.float32)
    spec = resolve_targets([2, 0], 2)
    impl = ic.get_backend("torch")
    got = impl.patched_scores(model, x, "b", masks, spec, batch_size=2)
    want = np.stack([impl.predict(_masked(model, "b", m), x, spec) for m in masks])
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
    assert not EXPANSION_REFUSED.refused(model, "b")  # replayed, not copied
    assert all("forward" not in vars(m) for m in model.modules())
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())



def assert_expanded_equals_copies(impl: Any, framework: str, to_input: Any) -> None:
    """The demo model's ablation scores from the layer on (expanded) equal copies of the
    input (the refusal memory forced), and the first call refused nothing."""
    masks = (np.random.default_rng(0).random((37, 64)) > 0.3).astype(np.float32)
    spec = resolve_targets([1, 3], 2)
    model = demo_model(framework)
    x = to_input(make_shapes(2, seed=3).images)
    got = impl.patched_scores(model, x, "block3", masks, spec, batch_size=16)
    assert not EXPANSION_REFUSED.refused(model, "block3")
    EXPANSION_REFUSED.refuse(model, "block3")  # force the copies
    try:
        want = impl.patched_scores(model, x, "block3", masks, spec, batch_size=16)
    finally:
        EXPANSION_REFUSED.forget(model, "block3")
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)

def test_jax_ablation_from_the_layer_equals_copies():
    """The compiled ablation pass runs below the layer once per sample and expands the layer's
    output; it equals copying the input, also for a model that reads the batch size before the
    layer (which falls back to copies)."""
    require_framework("jax", "jax")
    import jax.numpy as jnp
    from flax import nnx

    impl = ic.get_backend("jax")
    assert_expanded_equals_copies(impl, "jax", jnp.asarray)

    class EarlyBatch(nnx.Module):
        def __init__(self) -> None:
            rngs = nnx.Rngs(0)
            self.conv = nnx.Conv(3, 8, (3, 3), rngs=rngs)
            self.block = nnx.Conv(8, 8, (3, 3), rngs=rngs)
            self.fc = nnx.Linear(8 * 8 * 8, 4, rngs=rngs)

        def __call__(self, t: Any) -> Any:
            n = t.shape[0]
            h = nnx.relu(self.block(nnx.relu(self.conv(t))))
            return self.fc(h.reshape(n, -1))

    early = EarlyBatch()
    xe = jnp.asarray(np.random.default_rng(1).random((2, 8, 8, 3), dtype=np.float32))
    masks8 = (np.random.default_rng(2).random((5, 8)) > 0.5).astype(np.float32)
    got = impl.patched_scores(early, xe, "block", masks8, resolve_targets([0, 2], 2))
    assert EXPANSION_REFUSED.refused(early, "block")
    for row, mask in zip(got, masks8, strict=True):
        h = nnx.relu(early.block(nnx.relu(early.conv(xe)))) * mask
        np.testing.assert_allclose(row, np.asarray(early.fc(h.reshape(2, -1)))[[0, 1], [0, 2]],
                                   atol=1e-5)


def test_tensorflow_ablation_from_the_layer_equals_copies():
    """As for JAX: the compiled Keras pass expands the layer's output; equal to copying the
    input, and a model that reads the batch size before the layer falls back to copies."""
    tf = require_framework("tensorflow", "tensorflow")
    import keras

    impl = ic.get_backend("tensorflow")
    assert_expanded_equals_copies(impl, "tensorflow", np.asarray)

    class EarlyBatch(keras.Model):
        def __init__(self) -> None:
            super().__init__()
            self.conv = keras.layers.Conv2D(8, 3, activation="relu", name="conv")
            self.block = keras.layers.Conv2D(8, 3, activation="relu", name="block")
            self.fc = keras.layers.Dense(4, name="fc")

        def call(self, t: Any) -> Any:
            n = tf.shape(t)[0]
            return self.fc(tf.reshape(self.block(self.conv(t)), [n, 4 * 4 * 8]))

    early = EarlyBatch()
    xe = np.random.default_rng(1).random((2, 8, 8, 3), dtype=np.float32)
    early(xe)
    masks8 = (np.random.default_rng(2).random((5, 8)) > 0.5).astype(np.float32)
    got = impl.patched_scores(early, xe, "block", masks8, resolve_targets([0, 2], 2))
    assert EXPANSION_REFUSED.refused(early, "block")
    h = early.block(early.conv(xe)).numpy()
    for row, mask in zip(got, masks8, strict=True):
        logits = early.fc(tf.reshape(h * mask, [2, -1])).numpy()
        np.testing.assert_allclose(row, logits[[0, 1], [0, 2]], atol=1e-5)
