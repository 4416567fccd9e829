"""The JAX adapter: conformance (NNX), Split models, compile cache, model hygiene, targets."""

from __future__ import annotations

import functools
import subprocess
import sys
import warnings

import numpy as np
import pytest

from tests.conftest import require_framework

jax = require_framework("jax", "jax")
import jax.numpy as jnp  # noqa: E402
from flax import nnx  # noqa: E402
from interp_jax import testing as jax_testing  # noqa: E402
from interp_jax.backend import JaxBackend  # noqa: E402
from interp_jax.layers import ModelTraceError  # noqa: E402
from interp_jax.testing import ConvReLU, ReferenceNNX  # noqa: E402

import interp_core as ic  # noqa: E402
from interp_core.backend.layer_choice import default_layer  # noqa: E402
from interp_core.backend.target_spec import resolve_targets  # noqa: E402
from interp_core.methods import METHODS, required_capabilities  # noqa: E402
from interp_core.testing import reference as ref  # noqa: E402
from interp_core.testing.conformance import ConformanceFromModule  # noqa: E402

#: Layer-gradient methods the NumPy oracle has a closed form for (input-gradient methods such as
#: saliency are compared across frameworks in tests/test_methods_peers.py).
GRADIENT_METHODS = sorted(
    name for name, cls in METHODS.items() if cls.needs_gradients and name != "cam"
    and set(required_capabilities(name)) <= ref.ReferenceBackend.capabilities
)


# -- models ---------------------------------------------------------------------------------
def _set(variable: nnx.Variable, value: np.ndarray) -> None:
    variable.set_value(jnp.asarray(value))


def reference_split() -> ic.Split:
    """The reference model as two plain functions closing over its NumPy weights."""
    w = ref.reference_weights()

    def features(x):
        y = jax.lax.conv_general_dilated(x, jnp.asarray(w.conv_kernel), (1, 1), "VALID",
                                         dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return jax.nn.relu(y + w.conv_bias)

    def head(a):
        return a.mean(axis=(1, 2)) @ w.fc_weight.T + w.fc_bias

    return ic.Split(features, head)


class Stateful(nnx.Module):
    """BatchNorm + Dropout, stacked blocks in an nnx.List (paths such as 'blocks.1.conv')."""

    def __init__(self, classes: int = 4, seed: int = 0) -> None:
        rngs = nnx.Rngs(seed, dropout=seed + 1)
        self.stem = ConvReLU(3, 8, padding=1, rngs=rngs)
        self.blocks = nnx.List([ConvReLU(8, 8, padding=1, rngs=rngs) for _ in range(2)])
        self.bn = nnx.BatchNorm(8, rngs=rngs)
        self.drop = nnx.Dropout(0.5, rngs=rngs)
        self.fc = nnx.Linear(8, classes, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        x = self.bn(x)
        return self.fc(self.drop(x.mean(axis=(1, 2))))


@pytest.fixture
def x_np() -> np.ndarray:
    return ref.reference_inputs(4)


@functools.cache
def _stateful_prototype() -> Stateful:
    return Stateful()


@pytest.fixture
def stateful() -> Stateful:
    return nnx.clone(_stateful_prototype())  # a fresh object, without re-running initialisers


@pytest.fixture
def backend() -> JaxBackend:
    return ic.get_backend("jax")


# -- conformance ----------------------------------------------------------------------------
class TestJaxConformance(ConformanceFromModule, backend="jax", helpers=jax_testing):
    @pytest.fixture
    def stateful_model(self):
        model = nnx.clone(_stateful_prototype())
        model.train()
        model.blocks[0].eval()  # mixed flags must stay exactly as they are
        x = np.random.default_rng(1).normal(size=(2, 12, 12, 3)).astype(np.float32)
        return model, "blocks.1", x


# Attention methods need a transformer: tests/test_jax_attention.py checks them.
@pytest.mark.parametrize(
    "method", sorted(n for n in METHODS if "attention" not in required_capabilities(n)))
def test_maps_equal_torch_on_the_reference_model(method, x_np):
    torch = pytest.importorskip("torch")
    from tests.torch_models import ReferenceNet

    targets = [0, 3, 1, 4]
    model = ReferenceNNX(ref.reference_weights())
    got = ic.explain(model, jnp.asarray(x_np), method=method, layer="features",
                     targets=targets)
    x_t = torch.from_numpy(np.ascontiguousarray(x_np.transpose(0, 3, 1, 2)))
    want = ic.explain(ReferenceNet(ref.reference_weights()), x_t, method=method,
                      layer="features", targets=targets)
    np.testing.assert_allclose(got, want, atol=1e-5)


# -- Split ------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", [*GRADIENT_METHODS, "eigencam"])
def test_split_matches_oracle(method, x_np):
    cls = METHODS[method]
    split = reference_split()
    got = cls(split, "features").explain(jnp.asarray(x_np), [0, 3, 1, 4])
    oracle = ref.ReferenceModel(ref.reference_weights())
    want = cls(oracle, ref.LAYER, backend=ref.ReferenceBackend()).explain(x_np, [0, 3, 1, 4])
    assert got.backend == "jax"
    np.testing.assert_allclose(got.raw["features"], want.raw[ref.LAYER], atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(got.maps, want.maps, atol=1e-4)


def test_split_capture_closed_form_and_layers(backend, x_np):
    split = reference_split()
    assert backend.layer_names(split) == ["features"]
    assert default_layer(backend, split, x_np) == "features"
    assert ic.get_backend(split).name == "jax"
    spec = resolve_targets(None, 4)
    got = backend.capture(split, x_np, [split.features], spec)
    oracle = ref.ReferenceModel(ref.reference_weights())
    want = ref.ReferenceBackend().capture(oracle, x_np, [ref.LAYER], spec)
    np.testing.assert_array_equal(got.targets, want.targets)
    np.testing.assert_allclose(got.layers["features"].gradients,
                               want.layers[ref.LAYER].gradients, atol=1e-6)
    np.testing.assert_allclose(backend.predict(split, x_np, resolve_targets(2, 4)),
                               oracle(x_np)[:, 2], atol=1e-5)
    with pytest.raises(ValueError, match="one layer, 'features'"):
        backend.capture(split, x_np, ["fc"], spec)
    with pytest.raises(ValueError, match="GradCAM"):
        ic.CAM(split, "features")(x_np)


def test_split_head_shape_mismatch_names_both_shapes(x_np):
    w = jnp.ones((7, 5))
    split = ic.Split(reference_split().features, lambda a: a.mean(axis=(1, 2)) @ w)
    with pytest.raises(ValueError, match=r"\(4, 8, 8, 8\) float32.*\(4, 10, 10, 3\)"):
        ic.GradCAM(split, "features")(x_np)


class _PytreeModule:
    """An Equinox-style callable pytree: arrays as leaves, the function as static data."""

    def __init__(self, weight: jax.Array, fn) -> None:
        self.weight, self.fn = weight, fn

    def __call__(self, x):
        return self.fn(self.weight, x)


jax.tree_util.register_pytree_node(
    _PytreeModule, lambda m: ((m.weight,), m.fn), lambda fn, leaves: _PytreeModule(*leaves, fn)
)


def _head_fn(weight, a):
    return a.mean(axis=(1, 2)) @ weight


def test_split_pytree_parts_take_new_weights_without_recompiling(backend, x_np):
    w = ref.reference_weights()
    features = reference_split().features
    split_a = ic.Split(features, _PytreeModule(jnp.asarray(w.fc_weight.T), _head_fn))
    split_b = ic.Split(features, _PytreeModule(jnp.asarray(-w.fc_weight.T), _head_fn))
    spec = resolve_targets([1, 2, 3, 4], 4)
    a = backend.capture(split_a, x_np, ["features"], spec)
    count = backend.trace_count
    b = backend.capture(split_b, x_np, ["features"], spec)
    assert backend.trace_count == count
    np.testing.assert_allclose(a.layers["features"].gradients, -b.layers["features"].gradients,
                               atol=1e-7)


class _TwoStage(ReferenceNNX):
    def __init__(self) -> None:
        super().__init__(ref.reference_weights())

    def encode(self, x):
        return self.features(x)

    def decode(self, a):
        return self.fc(a.mean(axis=(1, 2)))


def test_split_of_nnx_modules_and_linen_partial(backend, x_np):
    linen = pytest.importorskip("flax.linen")
    model = _TwoStage()
    nnx_split = ic.Split(model.features, lambda a: model.fc(a.mean(axis=(1, 2))))
    plain = ic.GradCAM(model, "features")(x_np, 2)
    np.testing.assert_allclose(ic.GradCAM(nnx_split, "features")(x_np, 2), plain, atol=1e-6)
    methods = ic.Split(model.encode, model.decode)  # bound methods of one NNX module
    np.testing.assert_allclose(ic.GradCAM(methods, "features")(x_np, 2), plain, atol=1e-6)

    class Head(linen.Module):
        @linen.compact
        def __call__(self, a):
            return linen.Dense(ref.CLASSES)(a.mean(axis=(1, 2)))

    w = ref.reference_weights()
    params = {"params": {"Dense_0": {"kernel": jnp.asarray(w.fc_weight.T),
                                     "bias": jnp.asarray(w.fc_bias)}}}
    linen_split = ic.Split(model.features, functools.partial(Head().apply, params))
    np.testing.assert_allclose(ic.GradCAM(linen_split, "features")(x_np, 2), plain, atol=1e-6)
    before = backend.trace_count
    ic.GradCAM(linen_split, "features")(x_np, 3)
    assert backend.trace_count == before


# -- compile cache ----------------------------------------------------------------------------
def test_second_call_does_not_recompile(backend, stateful):
    x = np.random.default_rng(0).normal(size=(3, 12, 12, 3)).astype(np.float32)
    cam = ic.GradCAM(stateful, "blocks.1")
    first = cam(x, [0, 1, 2])
    count = backend.trace_count
    cam(x, [3, 2, 1])  # other classes: same kind and shapes
    assert backend.trace_count == count
    again = ic.GradCAM(nnx.clone(stateful), "blocks.1")(x, [0, 1, 2])  # new object, same structure
    assert backend.trace_count == count
    np.testing.assert_allclose(again, first, atol=1e-6)
    ic.GradCAM(stateful, "blocks.1")(x[:2], [0, 1])  # new input shape: one more trace
    assert backend.trace_count == count + 1


def test_new_weights_are_used_without_recompiling(backend, x_np):
    model = ReferenceNNX(ref.reference_weights())
    spec = resolve_targets(1, 4)
    before = backend.capture(model, x_np, ["features"], spec)
    count = backend.trace_count
    _set(model.fc.kernel, -np.asarray(model.fc.kernel.get_value()))
    after = backend.capture(model, x_np, ["features"], spec)
    assert backend.trace_count == count
    np.testing.assert_allclose(after.layers["features"].gradients,
                               -before.layers["features"].gradients, atol=1e-7)


# -- model hygiene ----------------------------------------------------------------------------
def test_explains_the_eval_mode_model(backend, stateful):
    x = np.random.default_rng(2).normal(size=(2, 12, 12, 3)).astype(np.float32)
    stateful.train()
    scores = backend.predict(stateful, x, resolve_targets([0, 1], 2))
    eval_copy = nnx.clone(stateful)
    eval_copy.eval()
    want = np.asarray(eval_copy(jnp.asarray(x)))[[0, 1], [0, 1]]
    np.testing.assert_allclose(scores, want, rtol=1e-5, atol=1e-6)
    assert stateful.drop.deterministic is False


# -- layers -----------------------------------------------------------------------------------
def test_layer_paths_objects_and_default_layer(backend, stateful):
    x = np.random.default_rng(3).normal(size=(2, 12, 12, 3)).astype(np.float32)
    names = backend.layer_names(_stateful_prototype())  # clones list attributes sorted
    assert names[:5] == ["stem", "stem.conv", "blocks", "blocks.0", "blocks.0.conv"]
    by_path = ic.GradCAM(stateful, "blocks.1.conv")(x, 1)
    by_object = ic.GradCAM(stateful, stateful.blocks[1].conv)(x, 1)
    np.testing.assert_array_equal(by_path, by_object)
    assert default_layer(backend, stateful, x) == "bn"
    exp = ic.GradCAM(stateful, ["blocks.0", "blocks.1"]).explain(x, 1)
    assert exp.layers == ["blocks.0", "blocks.1"]


def test_bad_layers(backend, stateful):
    x = np.zeros((1, 12, 12, 3), np.float32)
    with pytest.raises(ValueError, match="not a submodule"):
        ic.GradCAM(stateful, nnx.Linear(2, 2, rngs=nnx.Rngs(0)))(x)
    with pytest.raises(ValueError, match="never called"):
        ic.GradCAM(stateful, "blocks")(x)
    with pytest.raises(ValueError, match="no spatial axes"):
        ic.GradCAM(stateful, "fc")(x)
    with pytest.raises(TypeError, match="Split"):
        backend.capture(lambda v: v, x, ["x"], resolve_targets(0, 1))


class _Unused(ReferenceNNX):
    def __init__(self) -> None:
        super().__init__(ref.reference_weights())
        self.extra = nnx.Conv(3, 3, (1, 1), rngs=nnx.Rngs(0))


class _Shared(nnx.Module):
    def __init__(self) -> None:
        self.conv = nnx.Conv(3, 3, (3, 3), padding=1, rngs=nnx.Rngs(0))
        self.fc = nnx.Linear(3, 2, rngs=nnx.Rngs(1))

    def __call__(self, x):
        return self.fc(self.conv(self.conv(x)).mean(axis=(1, 2)))


class _Branchy(ReferenceNNX):
    def __init__(self) -> None:
        super().__init__(ref.reference_weights())

    def __call__(self, x):
        if x.sum() > 0:  # Python control flow on a traced value
            return super().__call__(x)
        return super().__call__(-x)


def test_errors_inside_the_traced_model():
    x = np.ones((2, 10, 10, 3), np.float32)
    with pytest.raises(ValueError, match="never ran"):
        ic.GradCAM(_Unused(), "extra")(x)
    with pytest.raises(ValueError, match="more than once"):
        ic.GradCAM(_Shared(), "conv")(x)
    with pytest.raises(ModelTraceError, match=r"\['features'\].*\(2, 10, 10, 3\) float32"):
        ic.GradCAM(_Branchy(), "features")(x)
    with pytest.raises(ModelTraceError, match=r"\(2, 10, 10, 4\) float32"):  # wrong channels
        ic.GradCAM(ReferenceNNX(ref.reference_weights()), "features")(np.ones((2, 10, 10, 4)))


def test_capture_of_no_layer_gives_top1_classes(backend, x_np):
    cap = backend.capture(ReferenceNNX(ref.reference_weights()), x_np, [],
                          resolve_targets(None, 4))
    assert cap.layers == {}
    np.testing.assert_array_equal(cap.targets, ref.ReferenceModel()(x_np).argmax(1))


# -- targets and outputs ----------------------------------------------------------------------
class _Segmenter(nnx.Module):
    def __init__(self) -> None:
        self.body = ConvReLU(3, 8, padding=1, rngs=nnx.Rngs(0))
        self.head = nnx.Conv(8, 4, (1, 1), rngs=nnx.Rngs(1))

    def __call__(self, x):
        return self.head(self.body(x))


def test_new_segmentation_masks_reuse_the_compiled_function(backend, x_np):
    seg = _Segmenter()
    mask = np.zeros((10, 10), np.float32)
    mask[2:6, 2:6] = 1
    ic.GradCAM(seg, "body").explain(x_np, ic.SegmentationTarget(2, mask))
    count = backend.trace_count
    other = mask[::-1].copy()
    exp = ic.GradCAM(seg, "body").explain(x_np, ic.SegmentationTarget(1, other))
    want = (np.asarray(seg(jnp.asarray(x_np)))[..., 1] * other).sum((1, 2))
    np.testing.assert_allclose(exp.scores, want, rtol=1e-5)
    assert backend.trace_count == count  # new mask and class: same compiled function


class _FeaturesNCHW(nnx.Module):
    def __init__(self) -> None:
        self.inner = ConvReLU(3, ref.CHANNELS, rngs=nnx.Rngs(0))

    def __call__(self, x):
        return jnp.transpose(self.inner(jnp.transpose(x, (0, 2, 3, 1))), (0, 3, 1, 2))


class _ReferenceNCHW(nnx.Module):
    """The reference model with channels-first input and activations."""

    def __init__(self) -> None:
        w = ref.reference_weights()
        self.features = _FeaturesNCHW()
        self.fc = nnx.Linear(ref.CHANNELS, ref.CLASSES, rngs=nnx.Rngs(1))
        _set(self.features.inner.conv.kernel, w.conv_kernel)
        _set(self.features.inner.conv.bias, w.conv_bias)
        _set(self.fc.kernel, w.fc_weight.T)
        _set(self.fc.bias, w.fc_bias)

    def __call__(self, x):
        return self.fc(self.features(x).mean(axis=(2, 3)))


def test_channels_first_layout(x_np):
    first = JaxBackend(layout="NCHW")
    model = _ReferenceNCHW()
    x_first = np.ascontiguousarray(x_np.transpose(0, 3, 1, 2))
    assert default_layer(first, model, x_first) == "features"
    got = ic.GradCAM(model, "features", backend=first).explain(x_first, [0, 3, 1, 4])
    want = ic.GradCAM(ReferenceNNX(ref.reference_weights()), "features").explain(
        x_np, [0, 3, 1, 4])
    np.testing.assert_allclose(got.raw["features"], want.raw["features"], atol=1e-5)
    np.testing.assert_allclose(got.maps, want.maps, atol=1e-5)
    masks = np.eye(ref.CHANNELS, dtype=np.float32)
    spec = resolve_targets(2, 4)
    np.testing.assert_allclose(
        first.patched_scores(model, x_first, "features", masks, spec),
        ic.get_backend("jax").patched_scores(ReferenceNNX(ref.reference_weights()), x_np,
                                             "features", masks, spec), atol=1e-5)
    with pytest.raises(ValueError, match="layout"):
        JaxBackend(layout="HWCN")


# -- capabilities -----------------------------------------------------------------------------
def test_split_patched_scores(backend, x_np):
    masks = np.ones((5, ref.CHANNELS), np.float32)
    masks[1, :4] = 0
    masks[2] = 0
    spec = resolve_targets([0, 1, 2, 3], 4)
    got = backend.patched_scores(reference_split(), x_np, "features", masks, spec)
    want = ref.ReferenceBackend().patched_scores(ref.ReferenceModel(), x_np, ref.LAYER, masks,
                                                 spec)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_input_gradients_compile_once_and_warn_on_non_finite(backend, x_np):
    model = ReferenceNNX(ref.reference_weights())
    channels = np.array([0, 3, 5, 7])
    backend.input_gradients(model, x_np, "features", channels)
    count = backend.trace_count
    backend.input_gradients(model, x_np + 1, "features", channels[::-1].copy())
    assert backend.trace_count == count
    x_bad = x_np.copy()
    x_bad[1] = np.nan
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        backend.input_gradients(model, x_bad, "features", channels)
    assert any("non-finite" in str(c.message) and "[1]" in str(c.message) for c in caught)


# -- demo and plugin --------------------------------------------------------------------------
def _demo_weights() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    w = {}
    for i, (cin, cout) in enumerate([(3, 16), (16, 32), (32, 64)], start=1):
        w[f"block{i}/kernel"] = rng.normal(0, 0.2, (3, 3, cin, cout)).astype(np.float32)
        w[f"block{i}/bias"] = rng.normal(0, 0.05, cout).astype(np.float32)
    w["fc/kernel"] = rng.normal(0, 0.3, (64, 5)).astype(np.float32)
    w["fc/bias"] = rng.normal(0, 0.1, 5).astype(np.float32)
    return w


def test_demo_model_matches_torch():
    from interp_core.backend.registry import load_attribute, registrations

    reg = registrations()["jax"]
    model = load_attribute(reg, reg.demo)(_demo_weights())
    backend = ic.get_backend(model)
    for name in ("block1", "pool1", "block2", "pool2", "block3", "gap", "fc"):
        assert name in backend.layer_names(model)
    x = np.random.default_rng(1).random((2, 64, 64, 3)).astype(np.float32)
    assert default_layer(backend, model, x) == "block3"
    exp = ic.GradCAM(model, "block3").explain(x)
    assert exp.raw["block3"].shape == (2, 16, 16)
    torch = pytest.importorskip("torch")
    torch_demo = pytest.importorskip("interp_torch.demo")

    torch_model = torch_demo.build(_demo_weights())
    x_t = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    with torch.no_grad():
        np.testing.assert_allclose(np.asarray(model(jnp.asarray(x))), torch_model(x_t).numpy(),
                                   atol=1e-4)
    np.testing.assert_allclose(exp.maps, ic.GradCAM(torch_model, "block3")(x_t), atol=1e-4)


def test_plugin_is_light():
    code = (
        "import sys, interp_core as ic, interp_jax.plugin as p\n"
        "assert 'jax' in ic.backends()\n"
        "assert p.interp_core_claim_model(model=object()) is None\n"
        "assert p.interp_core_claim_model(model=ic.Split(abs, abs)) == 'jax'\n"
        "assert not {'jax', 'flax'} & set(sys.modules), sorted(sys.modules)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
