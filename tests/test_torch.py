"""The torch adapter: conformance, model hygiene, targets, layouts and dtypes."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import require_framework

torch = require_framework("torch", "torch")
from torch import nn  # noqa: E402

import interp_core as ic  # noqa: E402
from interp_core.testing.conformance import BackendConformance  # noqa: E402
from interp_core.testing.reference import reference_weights  # noqa: E402
from tests.torch_models import ReferenceNet, SmallResNet  # noqa: E402


class TestTorchConformance(BackendConformance):
    @pytest.fixture
    def backend(self) -> str:
        return "torch"

    @pytest.fixture
    def reference_model(self) -> nn.Module:
        return ReferenceNet(reference_weights())

    @pytest.fixture
    def to_input(self):
        return lambda x: torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


@pytest.fixture
def resnet() -> nn.Module:
    torch.manual_seed(0)
    return SmallResNet(classes=10)


@pytest.fixture
def x() -> torch.Tensor:
    return torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(1))


def _state(model: nn.Module) -> dict:
    return {
        "training": [m.training for m in model.modules()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "hooks": [(len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks))
                  for m in model.modules()],
        "buffers": [b.clone() for b in model.buffers()],
        "params": [p.detach().clone() for p in model.parameters()],
        "grads": [p.grad for p in model.parameters()],
        "grad_mode": torch.is_grad_enabled(),
    }


def _assert_same_state(a: dict, b: dict) -> None:
    for key in ("training", "requires_grad", "hooks", "grad_mode"):
        assert a[key] == b[key], key
    for key in ("buffers", "params"):
        for t, u in zip(a[key], b[key], strict=True):
            assert torch.equal(t, u), key
    assert all(g is None for g in b["grads"])


@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "eigencam", "cam", "layercam"])
def test_model_state_untouched(resnet, x, method):
    resnet.train()
    resnet.layer1.eval()  # mixed flags must come back exactly
    resnet.stem[0].weight.requires_grad_(False)
    before = _state(resnet)
    maps = ic.explain(resnet, x, method=method, layer="layer2")
    assert maps.shape == (3, 16, 16)
    _assert_same_state(before, _state(resnet))


def test_model_state_restored_after_exception(resnet, x):
    resnet.train()
    before = _state(resnet)
    with pytest.raises(ValueError, match="10 outputs"):
        ic.GradCAM(resnet, "layer2")(x, targets=[1, 2, 99])
    _assert_same_state(before, _state(resnet))


def test_works_under_outer_no_grad(resnet, x):
    with torch.no_grad():
        maps = ic.GradCAM(resnet, "layer2")(x)
        assert not torch.is_grad_enabled()
    assert maps.max() == pytest.approx(1.0)


def test_gradients_equal_full_autograd(resnet, x):
    """Re-rooting at the layer gives the same gradients as a full backward pass."""
    resnet.eval()
    store = {}
    handle = resnet.layer1.register_forward_hook(lambda m, a, o: store.setdefault("a", o))
    out = resnet(x)
    handle.remove()
    scores = out[torch.arange(3), torch.tensor([1, 4, 7])]
    (g,) = torch.autograd.grad(scores.sum(), [store["a"]])
    cap = ic.get_backend("torch").capture(
        resnet, x, ["layer1"], ic.backend.resolve_targets([1, 4, 7], 3))
    np.testing.assert_allclose(cap.layers["layer1"].gradients,
                               g.permute(0, 2, 3, 1).numpy(), atol=1e-6)
    np.testing.assert_allclose(cap.layers["layer1"].activations,
                               store["a"].detach().permute(0, 2, 3, 1).numpy(), atol=1e-6)
    np.testing.assert_allclose(cap.scores, scores.detach().numpy(), rtol=1e-6)


def test_layer_by_object_and_default_layer(resnet, x):
    by_name = ic.GradCAM(resnet, "layer2")(x)
    by_obj = ic.GradCAM(resnet, resnet.layer2)(x)
    by_default = ic.GradCAM(resnet)(x)
    np.testing.assert_array_equal(by_name, by_obj)
    np.testing.assert_array_equal(by_name, by_default)
    assert ic.get_backend(resnet).default_layer(resnet, x) == "layer2"


def test_inplace_relu_after_the_hooked_layer(resnet, x):
    # layer2.bn2 is followed by "+ identity" and an in-place ReLU; conv1 by bn1 then ReLU(inplace)
    maps = ic.GradCAM(resnet, ["layer2.conv2", "layer1.bn1"])(x)
    assert np.isfinite(maps).all() and maps.shape == (3, 16, 16)


def test_multi_layer_fusion_is_mean_of_normalised_maps(resnet, x):
    a = ic.GradCAM(resnet, "layer1")(x, 2)
    b = ic.GradCAM(resnet, "layer2")(x, 2)
    fused = ic.GradCAM(resnet, ["layer1", "layer2"])(x, 2)
    np.testing.assert_allclose(fused, ic.normalize_minmax((a + b) / 2), atol=1e-5)


@pytest.mark.parametrize("dims,shape", [(1, (2, 3, 32)), (3, (2, 3, 8, 8, 8))])
def test_1d_and_3d_convolutions(dims, shape):
    torch.manual_seed(0)
    model = SmallResNet(classes=4, dims=dims)
    x = torch.randn(*shape)
    for method in ("gradcam", "hirescam", "eigencam", "gradcam++"):
        maps = ic.explain(model, x, method=method, layer="layer2")
        assert maps.shape == (shape[0], *shape[2:])
        assert np.isfinite(maps).all() and maps.max() == pytest.approx(1.0)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_models(dtype, x):
    torch.manual_seed(0)
    model = SmallResNet(classes=10).to(dtype)
    maps = ic.GradCAM(model, "layer2")(x.numpy())  # float32 NumPy in, cast to the model dtype
    ref = ic.GradCAM(SmallResNet(classes=10), "layer2")
    ref.model.load_state_dict({k: v.float() for k, v in model.state_dict().items()})
    assert maps.dtype == np.float32
    assert np.abs(maps - ref(x)).mean() < 0.05
    assert next(model.parameters()).dtype == dtype


class _Wrapped(nn.Module):
    def __init__(self, kind: str) -> None:
        super().__init__()
        self.net = ReferenceNet(reference_weights())
        self.kind = kind

    def forward(self, x):
        logits = self.net(x)
        if self.kind == "tuple":
            return logits, logits * 0
        if self.kind == "dict":
            return {"aux": logits * 0, "logits": logits}
        return type("Out", (), {"logits": logits, "loss": None})()


@pytest.mark.parametrize("kind", ["tuple", "dict", "hf"])
def test_structured_outputs(kind):
    x = torch.randn(2, 3, 10, 10)
    plain = ic.GradCAM(ReferenceNet(reference_weights()), "features")(x, 1)
    got = ic.GradCAM(_Wrapped(kind), "net.features")(x, 1)
    np.testing.assert_allclose(got, plain, atol=1e-6)
    if kind == "dict":
        aux = ic.GradCAM(_Wrapped(kind), "net.features", output="aux")
        assert (aux(x, 1) == 0).all()  # aux is all zeros: zero gradients, a constant map


def test_binary_target_single_logit():
    torch.manual_seed(0)
    model = SmallResNet(classes=1)
    x = torch.randn(2, 3, 16, 16)
    pos = ic.GradCAM(model, "layer2", relu=False, normalize=False).explain(x, ic.BinaryTarget())
    neg = ic.GradCAM(model, "layer2", relu=False, normalize=False).explain(
        x, ic.BinaryTarget(positive=False))
    np.testing.assert_allclose(pos.raw["layer2"], -neg.raw["layer2"], atol=1e-6)
    np.testing.assert_allclose(pos.scores, -neg.scores, atol=1e-6)
    assert pos.targets.tolist() == [1, 1] and neg.targets.tolist() == [0, 0]
    with pytest.raises(ValueError, match="single"):
        ic.GradCAM(SmallResNet(classes=3), "layer2")(x, ic.BinaryTarget())


def test_segmentation_similarity_and_output_targets():
    torch.manual_seed(0)
    seg = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 1))
    x = torch.randn(2, 3, 12, 12)
    mask = np.zeros((12, 12), np.float32)
    mask[2:6, 2:6] = 1
    exp = ic.GradCAM(seg, "1").explain(x, ic.SegmentationTarget(2, mask))
    with torch.no_grad():
        want = (seg(x)[:, 2] * torch.from_numpy(mask)).sum((1, 2))
    np.testing.assert_allclose(exp.scores, want.numpy(), rtol=1e-5)

    model = ReferenceNet(reference_weights())
    emb = np.arange(5, dtype=np.float32)
    exp = ic.GradCAM(model, "features").explain(x[:, :, :10, :10], ic.SimilarityTarget(emb))
    with torch.no_grad():
        out = model(x[:, :, :10, :10])
        cos = torch.nn.functional.cosine_similarity(out, torch.from_numpy(emb)[None], dim=1)
    np.testing.assert_allclose(exp.scores, cos.numpy(), rtol=1e-5)

    fn_maps = ic.GradCAM(model, "features")(x[:, :, :10, :10], ic.OutputTarget(lambda o: o[:, 3]))
    cls_maps = ic.GradCAM(model, "features")(x[:, :, :10, :10], 3)
    np.testing.assert_allclose(fn_maps, cls_maps, atol=1e-6)


class _TinyViT(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, 16, 4, 4)
        self.cls = nn.Parameter(torch.randn(1, 1, 16))
        self.block = nn.Sequential(nn.LayerNorm(16), nn.Linear(16, 16), nn.GELU())
        self.head = nn.Linear(16, 3)

    def forward(self, x):
        tokens = self.patch(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.cls.expand(len(x), -1, -1), tokens], dim=1)
        tokens = tokens + self.block(tokens)
        return self.head(tokens.mean(1))


def test_token_layers_with_tokens_to_grid():
    torch.manual_seed(0)
    model = _TinyViT()
    x = torch.randn(2, 3, 16, 16)
    exp = ic.GradCAM(model, "block", reshape=ic.tokens_to_grid(prefix=1)).explain(x)
    assert exp.raw["block"].shape == (2, 4, 4)
    assert exp.maps.shape == (2, 16, 16)
    with pytest.raises(ValueError, match="tokens_to_grid"):
        ic.GradCAM(model, "block.1")(x)


def test_bad_layers(resnet, x):
    with pytest.raises(ValueError, match="layer2"):
        ic.GradCAM(resnet, "layer_2")(x)
    with pytest.raises(ValueError, match="no spatial axes"):
        ic.GradCAM(resnet, "fc")(x)

    class Unused(SmallResNet):
        def __init__(self):
            super().__init__()
            self.extra = nn.Conv2d(3, 3, 1)

    with pytest.raises(ValueError, match="never ran"):
        ic.GradCAM(Unused(), "extra")(x)
    with pytest.raises(ValueError, match="not a submodule"):
        ic.GradCAM(resnet, nn.Conv2d(1, 1, 1))(x)


def test_no_hooks_left_after_any_failure(resnet, x):
    before = _state(resnet)
    for bad in (dict(targets=[1]), dict(targets=50)):
        with pytest.raises(ValueError):
            ic.GradCAM(resnet, ["layer1", "layer2"])(x, **bad)
    _assert_same_state(before, _state(resnet))


def test_resize_matches_torch_interpolate():
    rng = np.random.default_rng(0)
    maps = rng.random((2, 7, 5)).astype(np.float32)
    for size in [(16, 11), (3, 2), (7, 5), (21, 4)]:
        ours = ic.resize_bilinear(maps, size)
        theirs = torch.nn.functional.interpolate(
            torch.from_numpy(maps)[:, None], size=size, mode="bilinear", align_corners=False)
        np.testing.assert_allclose(ours, theirs[:, 0].numpy(), atol=1e-6)
    vol = rng.random((1, 4, 5, 6)).astype(np.float32)
    ours = ic.resize_bilinear(vol, (8, 3, 12))
    theirs = torch.nn.functional.interpolate(
        torch.from_numpy(vol)[:, None], size=(8, 3, 12), mode="trilinear", align_corners=False)
    np.testing.assert_allclose(ours, theirs[:, 0].numpy(), atol=1e-6)


def test_linear_weights_and_patched_scores(resnet, x):
    backend = ic.get_backend("torch")
    np.testing.assert_array_equal(backend.linear_weights(resnet), resnet.fc.weight.detach().numpy())
    spec = ic.backend.resolve_targets([0, 1, 2], 3)
    masks = np.ones((3, 16), np.float32)
    masks[1, :8] = 0
    masks[2] = 0
    got = backend.patched_scores(resnet, x, "layer2", masks, spec, batch_size=4)
    np.testing.assert_allclose(got[0], backend.predict(resnet, x, spec), rtol=1e-5)
    bias = resnet.fc.bias.detach().numpy()[[0, 1, 2]]
    np.testing.assert_allclose(got[2], bias, atol=1e-5)  # all channels zeroed: bias only
    assert not np.allclose(got[1], got[0])


def test_input_gradients_match_autograd(resnet, x):
    backend = ic.get_backend("torch")
    values, grads = backend.input_gradients(resnet, x, "layer1", np.array([0, 3, 5]))
    xr = x.clone().requires_grad_(True)
    resnet.eval()
    store = {}
    h = resnet.layer1.register_forward_hook(lambda m, a, o: store.setdefault("a", o))
    resnet(xr)
    h.remove()
    obj = store["a"].mean((2, 3))[torch.arange(3), torch.tensor([0, 3, 5])]
    (g,) = torch.autograd.grad(obj.sum(), [xr])
    np.testing.assert_allclose(values, obj.detach().numpy(), rtol=1e-5)
    np.testing.assert_allclose(grads, g.numpy(), atol=1e-6)
    with pytest.raises(ValueError, match="out of range"):
        backend.input_gradients(resnet, x, "layer1", np.array([0, 3, 99]))
