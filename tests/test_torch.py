"""The torch adapter: conformance, model hygiene, targets, layouts and dtypes."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import require_framework

torch = require_framework("torch", "torch")
from interp_torch import testing as torch_testing  # noqa: E402
from torch import nn  # noqa: E402

import interp_core as ic  # noqa: E402
from interp_core.backend.layer_choice import default_layer  # noqa: E402
from interp_core.testing.conformance import ConformanceFromModule  # noqa: E402
from interp_core.testing.reference import reference_weights  # noqa: E402
from interp_core.testing.suite.hygiene import assert_same_state  # noqa: E402
from tests.torch_models import ReferenceNet, SmallResNet  # noqa: E402


class TestTorchConformance(ConformanceFromModule, backend="torch", helpers=torch_testing):
    @pytest.fixture
    def stateful_model(self):
        torch.manual_seed(0)
        model = SmallResNet(classes=10)
        model.train()
        model.layer1.eval()  # mixed flags must come back exactly
        model.stem[0].weight.requires_grad_(False)
        x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(1))
        return model, "layer2", x


@pytest.fixture
def resnet() -> nn.Module:
    torch.manual_seed(0)
    return SmallResNet(classes=10)


@pytest.fixture
def x() -> torch.Tensor:
    return torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(1))


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
    assert default_layer(ic.get_backend(resnet), resnet, x) == "layer2"
    with pytest.warns(DeprecationWarning, match="default_layer"):  # the former method
        assert ic.get_backend(resnet).default_layer(resnet, x) == "layer2"


def test_inplace_relu_after_the_hooked_layer(resnet, x):
    # layer2.bn2 is followed by "+ identity" and an in-place ReLU; conv1 by bn1 then ReLU(inplace)
    maps = ic.GradCAM(resnet, ["layer2.conv2", "layer1.bn1"])(x)
    assert np.isfinite(maps).all() and maps.shape == (3, 16, 16)


def test_multi_layer_fusion_is_mean_of_normalised_maps(resnet, x):
    # DESIGN.md section 3: ReLU and min-max each layer at its resolution, resize, mean, min-max
    fused = ic.GradCAM(resnet, ["layer1", "layer2"]).explain(x, 2)
    size = fused.maps.shape[1:]
    per_layer = [ic.resize_bilinear(ic.normalize_minmax(np.maximum(r, 0)), size)
                 for r in fused.raw.values()]
    np.testing.assert_allclose(fused.maps, ic.normalize_minmax(np.mean(per_layer, axis=0)),
                               atol=1e-5)


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
    # An explicit class: the top-1 of near-tied random logits can differ between precisions.
    maps = ic.GradCAM(model, "layer2")(x.numpy(), 3)  # float32 NumPy in, cast to the model dtype
    ref = ic.GradCAM(SmallResNet(classes=10), "layer2")
    ref.model.load_state_dict({k: v.float() for k, v in model.state_dict().items()})
    assert maps.dtype == np.float32
    assert np.abs(maps - ref(x, 3)).mean() < 0.05
    assert next(model.parameters()).dtype == dtype


class _HuggingFaceStyle(nn.Module):
    """Returns an object with ``.logits`` (tuple and dict outputs are in the suite)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = ReferenceNet(reference_weights())

    def forward(self, x):
        return type("Out", (), {"logits": self.net(x), "loss": None})()


def test_output_object_with_logits():
    x = torch.randn(2, 3, 10, 10)
    plain = ic.GradCAM(ReferenceNet(reference_weights()), "features")(x, 1)
    np.testing.assert_allclose(ic.GradCAM(_HuggingFaceStyle(), "net.features")(x, 1), plain,
                               atol=1e-6)


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
    # Token layers are reshaped automatically: the same maps as an explicit tokens_to_grid.
    automatic = ic.GradCAM(model, "block.1")(x, [0, 1])
    explicit = ic.GradCAM(model, "block.1", reshape=ic.tokens_to_grid(prefix=1))(x, [0, 1])
    np.testing.assert_allclose(automatic, explicit, atol=1e-6)


def test_bad_layers(resnet, x):
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


def test_no_hooks_left_after_a_multi_layer_failure(resnet, x):
    before = torch_testing.model_state(resnet)
    for bad in (dict(targets=[1]), dict(targets=50)):
        with pytest.raises(ValueError):
            ic.GradCAM(resnet, ["layer1", "layer2"])(x, **bad)
    assert_same_state(before, torch_testing.model_state(resnet))


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
