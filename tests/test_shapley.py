"""ShapleyCAM and the optional ``"hvp"`` capability (Hessian-vector products at layers).

The conformance suite (:mod:`interp_core.testing.suite.hvp`) checks every adapter's ``H A``
against the reference model's closed form; here: that closed form against finite differences,
the method's weights and declarations, torch's ``H A`` against finite differences of plain
autograd in float64 on a smooth network (an in-place activation after the layer), a JAX
``Split``, and, on every installed framework, that each of several layers gets its own
``H_l A_l``, compiled passes cached, on the demo ViT (GELU, softmax attention, LayerNorm).
The three frameworks' agreement is in ``tests/test_cross_framework.py``, pytorch-grad-cam's in
``tests/test_pytorch_grad_cam_package.py`` (zoo venv).
"""

from __future__ import annotations

import numpy as np
import pytest

import interp_core as ic
from interp_core.backend.layout import to_backend_layout
from interp_core.backend.protocol import ALL_CAPABILITIES, GRADIENTS, HVP
from interp_core.backend.target_spec import resolve_targets
from interp_core.datasets import make_shapes
from interp_core.methods import method_table, required_capabilities
from interp_core.methods.shapley import shapleycam_weights
from interp_core.testing import reference as ref
from interp_core.testing.suite.hvp import similarity_targets
from tests.conftest import installed_frameworks, require_framework


# -- the NumPy core and the closed form -------------------------------------------------------
@pytest.mark.parametrize("variant", ["gap", "flatten"])
def test_the_reference_hvp_is_the_derivative_of_the_reference_gradients(variant):
    """``H A = d/dt G((1 + t) A)`` at ``t = 0``, by central differences in float64."""
    model = ref.ReferenceModel(ref.reference_weights(variant=variant), variant)
    x = ref.reference_inputs(4, variant=variant)
    spec = similarity_targets()
    cap = ref.ReferenceBackend().capture_hvp(model, x, [ref.LAYER], spec)
    layer = cap.layers[ref.LAYER]
    acts = layer.activations.astype(np.float64)

    def grads(a: np.ndarray) -> np.ndarray:  # the head in float64
        w = model.weights
        pooled = a.mean(axis=(1, 2)) if variant == "gap" else a.reshape(len(a), -1)
        out = pooled @ w.fc_weight.T.astype(np.float64) + w.fc_bias
        return model.head_gradient(a.shape, ref.score_gradient(out, spec))

    h = 1e-4
    want = (grads((1 + h) * acts) - grads((1 - h) * acts)) / (2 * h)
    scale = np.abs(want).max()
    assert scale > 1e-3
    np.testing.assert_allclose(layer.hvp, want, atol=1e-5 * scale, rtol=0)
    np.testing.assert_allclose(layer.gradients, grads(acts), atol=1e-6)


def test_shapleycam_weights_are_the_spatial_mean_of_g_minus_half_ha():
    rng = np.random.default_rng(0)
    g, ha = rng.normal(size=(2, 3, 4, 5)), rng.normal(size=(2, 3, 4, 5))
    got = shapleycam_weights(g.astype(np.float32), ha.astype(np.float32))
    assert got.shape == (2, 5) and got.dtype == np.float32
    np.testing.assert_allclose(got, (g - 0.5 * ha).mean(axis=(1, 2)), atol=1e-6)
    with pytest.raises(ValueError, match="Hessian-vector product has shape"):
        shapleycam_weights(g, ha[:, :2])


def test_shapleycam_on_the_oracle():
    """Grad-CAM for logit targets (``H A = 0`` above an affine head); not for similarity
    targets, where the weights are ``mean(G - 0.5 H A)`` of the capture."""
    model, x = ref.ReferenceModel(variant="flatten"), ref.reference_inputs(4, variant="flatten")
    oracle = ref.ReferenceBackend()
    shapley = ic.ShapleyCAM(model, ref.LAYER, backend=oracle)
    gradcam = ic.GradCAM(model, ref.LAYER, backend=oracle)
    np.testing.assert_allclose(shapley(x, [0, 3, 1, 4]), gradcam(x, [0, 3, 1, 4]), atol=1e-6)
    spec = similarity_targets()
    targets = [ic.SimilarityTarget(e) for e in spec.embeddings]
    exp = shapley.explain(x, targets)
    layer = oracle.capture_hvp(model, x, [ref.LAYER], spec).layers[ref.LAYER]
    want = (layer.gradients - 0.5 * layer.hvp).mean(axis=(1, 2))
    np.testing.assert_allclose(exp.weights[ref.LAYER], want, atol=1e-7)
    assert np.abs(exp.maps - gradcam(x, targets)).max() > 0.05
    assert exp.method == "shapleycam"
    assert ic.ShapleyCAM(model, ref.LAYER, backend=oracle, eigen_smooth=True)(x, targets).shape \
        == exp.maps.shape


class _NoHvp(ref.ReferenceBackend):
    capabilities = frozenset({GRADIENTS})


def test_a_backend_without_hvp_is_refused_with_what_to_use_instead():
    with pytest.raises(NotImplementedError, match=r"'hvp'.*Hessian-vector.*GradCAM"):
        ic.ShapleyCAM(ref.ReferenceModel(), ref.LAYER, backend=_NoHvp())


def test_declarations_and_catalog():
    assert HVP == "hvp" and HVP in ALL_CAPABILITIES
    assert "shapleycam" in ic.methods() and ic.ShapleyCAM in vars(ic).values()
    assert required_capabilities("shapleycam") == (HVP,)
    (row,) = [m for m in method_table() if m.name == "shapleycam"]
    assert row.needs == "hessian-vector products" and "Cai" in row.source


# -- torch: H A against finite differences of plain autograd, float64 -------------------------
def test_torch_hvp_equals_finite_differences_of_autograd():
    torch = require_framework("torch", "torch")
    nn = torch.nn
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.SiLU(),
        nn.Conv2d(6, 8, 3, padding=1), nn.SiLU(inplace=True),  # in place on the layer's output
        nn.Conv2d(8, 8, 3, padding=1), nn.GELU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5),
    ).double().eval()
    x = torch.randn(3, 3, 7, 9, dtype=torch.float64)
    targets = [1, 4, 0]
    layers = ["2", "4"]
    cap = ic.get_backend("torch").capture_hvp(model, x, layers, resolve_targets(targets, 3))
    for name in layers:
        k = int(name) + 1
        below, above = model[:k], model[k:]
        acts = below(x).detach()

        def grads(a, above=above):
            a = a.clone().requires_grad_(True)
            out = above(a.clone())  # the head's in-place activation must not touch ``a``
            (g,) = torch.autograd.grad(out[torch.arange(3), targets].sum(), a)
            return g

        h = 1e-5
        want = ((grads((1 + h) * acts) - grads((1 - h) * acts)) / (2 * h)).numpy()
        want = np.moveaxis(want, 1, -1)
        got = cap.layers[name]
        scale = np.abs(want).max()
        assert scale > 1e-4, "H A of this smooth network must not vanish"
        np.testing.assert_allclose(got.hvp, want, atol=1e-5 * scale, rtol=0, err_msg=name)
        np.testing.assert_allclose(got.gradients, np.moveaxis(grads(acts).numpy(), 1, -1),
                                   atol=1e-7)
    assert all(not m._forward_hooks for m in model.modules())


# -- JAX: a Split ------------------------------------------------------------------------------
def test_jax_split_hvp_equals_jvp_of_grad():
    jax = require_framework("jax", "jax")
    jnp = jax.numpy
    rng = np.random.default_rng(2)
    w1 = jnp.asarray(rng.normal(0, 0.5, (3, 6)), jnp.float32)
    w2 = jnp.asarray(rng.normal(0, 0.5, (6, 4)), jnp.float32)

    def features(x):
        return jnp.tanh(x @ w1)  # (N, H, W, 6)

    def head(a):
        return jax.nn.softmax(jax.nn.silu(a).mean(axis=(1, 2)) @ w2)

    x = jnp.asarray(rng.normal(size=(3, 5, 4, 3)), jnp.float32)
    targets = [0, 2, 3]
    cap = ic.get_backend("jax").capture_hvp(ic.Split(features, head), x, ["features"],
                                            resolve_targets(targets, 3))
    (layer,) = cap.layers.values()
    acts = features(x)

    def grad(a):
        return jax.grad(lambda b: head(b)[jnp.arange(3), jnp.asarray(targets)].sum())(a)

    want = np.asarray(jax.jvp(grad, (acts,), (acts,))[1])
    assert np.abs(want).max() > 1e-3
    np.testing.assert_allclose(layer.hvp, want, atol=1e-6)
    np.testing.assert_allclose(layer.gradients, np.asarray(grad(acts)), atol=1e-7)


# -- every framework: each layer's own H A, on the demo ViT ------------------------------------
FRAMEWORKS = installed_frameworks(("torch", "tensorflow", "jax"))
#: Two blocks of the demo ViT, as each adapter names them.
VIT_BLOCKS = {"torch": ["blocks.1", "blocks.2"], "tensorflow": ["blocks_1", "blocks_2"],
              "jax": ["blocks.1", "blocks.2"]}


@pytest.mark.parametrize("backend", FRAMEWORKS)
def test_each_layer_gets_its_own_hvp_and_a_second_call_traces_nothing(backend):
    from interp_core.datasets.demo_vit import demo_vit_model

    model = demo_vit_model(backend)
    adapter = ic.get_backend(backend)
    x = to_backend_layout(make_shapes(2, seed=3).images, adapter, model)
    spec = resolve_targets([0, 2], 2)
    both = adapter.capture_hvp(model, x, VIT_BLOCKS[backend], spec, native_layout=True)
    for name in VIT_BLOCKS[backend]:
        alone = adapter.capture_hvp(model, x, [name], spec, native_layout=True).layers[name]
        got = both.layers[name]
        assert got.hvp.shape == got.activations.shape == alone.hvp.shape
        scale = np.abs(alone.hvp).max()
        assert scale > 1e-3
        np.testing.assert_allclose(got.hvp, alone.hvp, atol=1e-5 * scale, err_msg=name)
        np.testing.assert_allclose(got.gradients, alone.gradients, atol=1e-6, err_msg=name)
    plain = adapter.capture(model, x, VIT_BLOCKS[backend], spec, native_layout=True)
    for name, layer in plain.layers.items():
        np.testing.assert_allclose(both.layers[name].gradients, layer.gradients, atol=1e-6)
        np.testing.assert_allclose(both.layers[name].activations, layer.activations, atol=1e-6)
    np.testing.assert_allclose(both.scores, plain.scores, rtol=1e-6)
    traces = getattr(adapter, "trace_count", 0)
    again = adapter.capture_hvp(model, x, VIT_BLOCKS[backend], spec, native_layout=True)
    np.testing.assert_array_equal(again.layers[name].hvp, both.layers[name].hvp)
    if backend != "torch":  # compiled passes: the second call on the same shapes is cached
        assert adapter.trace_count == traces


def test_torch_attention_kernels_are_restored():
    torch = require_framework("torch", "torch")
    from interp_core.datasets.demo_vit import demo_vit_model

    cuda = torch.backends.cuda
    flags = (cuda.flash_sdp_enabled(), cuda.mem_efficient_sdp_enabled(), cuda.math_sdp_enabled())
    model = demo_vit_model("torch")
    x = to_backend_layout(make_shapes(1, seed=3).images, ic.get_backend("torch"), model)
    ic.ShapleyCAM(model, "blocks.2", reshape=ic.tokens_to_grid(prefix=1))(x)
    assert (cuda.flash_sdp_enabled(), cuda.mem_efficient_sdp_enabled(),
            cuda.math_sdp_enabled()) == flags
