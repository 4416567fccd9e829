"""Bad input gets a clear error of ours (or a documented result), never a framework's message."""

from __future__ import annotations

import numpy as np
import pytest

import interp_core as ic
from interp_core.backend.layout import to_backend_layout
from interp_core.backend.registry import get_backend
from interp_core.datasets import make_shapes
from interp_core.datasets.demo import LAYER, demo_model
from tests.conftest import require_framework

FRAMEWORKS = {"torch": "torch", "tensorflow": "tensorflow", "jax": "jax"}


def _demo(backend: str):
    require_framework(backend, FRAMEWORKS[backend])
    model = demo_model(backend)
    x = to_backend_layout(make_shapes(3, seed=4).images, get_backend(backend), model)
    return model, x


# -- every adapter ---------------------------------------------------------------------------
@pytest.mark.parametrize("backend", sorted(FRAMEWORKS))
def test_empty_batch_is_a_value_error(backend):
    model, x = _demo(backend)
    with pytest.raises(ValueError, match="the batch is empty"):
        ic.GradCAM(model, LAYER)(x[:0])
    with pytest.raises(ValueError, match="the batch is empty"):
        ic.feature_maps(model, x[:0], LAYER)


@pytest.mark.parametrize("backend", sorted(FRAMEWORKS))
@pytest.mark.parametrize("dtype", [np.uint8, np.int64, np.bool_])
def test_integer_inputs_are_a_type_error_naming_the_fix(backend, dtype):
    model, x = _demo(backend)
    with pytest.raises(TypeError, match=r"dtype (uint8|int64|bool).*convert to float"):
        ic.GradCAM(model, LAYER)((x * 255).astype(dtype))


@pytest.mark.parametrize("backend", sorted(FRAMEWORKS))
def test_targets_as_numpy_ints_ranges_and_arrays(backend):
    model, x = _demo(backend)
    cam = ic.GradCAM(model, LAYER)
    want = cam(x, [0, 1, 2])
    np.testing.assert_allclose(cam(x, range(3)), want, atol=1e-6)
    np.testing.assert_allclose(cam(x, np.arange(3)), want, atol=1e-6)
    np.testing.assert_allclose(cam(x, [np.int64(0), np.int32(1), np.int16(2)]), want, atol=1e-6)
    np.testing.assert_allclose(cam(x, np.int64(4)), cam(x, 4), atol=1e-6)


@pytest.mark.parametrize("backend", sorted(FRAMEWORKS))
def test_wrong_channel_count_shows_the_shape_given(backend):
    model, x = _demo(backend)
    impl = get_backend(backend)
    axis = 1 if impl.input_layout == "channels_first" else -1
    four = np.concatenate([x, x[:, :1] if axis == 1 else x[..., :1]], axis=axis)
    shape = str(tuple(four.shape)).replace("(", r"\(").replace(")", r"\)")
    with pytest.raises(Exception, match=shape) as info:
        ic.GradCAM(model, LAYER)(four)
    assert isinstance(info.value, ValueError | RuntimeError)


# -- torch ------------------------------------------------------------------------------------
def test_torch_inference_mode_names_it_and_no_grad_works():
    torch = require_framework("torch", "torch")
    model, x = _demo("torch")
    cam = ic.GradCAM(model, LAYER)
    want = cam(x, [0, 1, 2])
    with torch.inference_mode(), pytest.raises(RuntimeError, match="inference_mode"):
        cam(x, [0, 1, 2])
    with torch.no_grad():
        np.testing.assert_allclose(cam(x, [0, 1, 2]), want, atol=1e-6)
    with torch.inference_mode():
        made_inside = torch.from_numpy(x).clone()
    np.testing.assert_allclose(cam(made_inside, [0, 1, 2]), want, atol=1e-6)
    assert torch.is_grad_enabled()


def test_torch_targets_as_tensors():
    torch = require_framework("torch", "torch")
    model, x = _demo("torch")
    cam = ic.GradCAM(model, LAYER)
    want = cam(x, [0, 1, 2])
    np.testing.assert_allclose(cam(x, torch.tensor([0, 1, 2])), want, atol=1e-6)
    np.testing.assert_allclose(cam(x, [torch.tensor(0), torch.tensor(1), torch.tensor(2)]),
                               want, atol=1e-6)


def test_torch_wrong_channel_count_names_the_expected_channels():
    require_framework("torch", "torch")
    model, x = _demo("torch")
    with pytest.raises(ValueError, match=r"takes 3 input channels.*\(N, 3, \*spatial\)"):
        ic.GradCAM(model, LAYER)(np.concatenate([x, x[:, :1]], axis=1))


def test_torch_input_of_the_wrong_size_names_the_size_not_the_channels():
    """The demo ViT takes 64x64 only (a fixed positional embedding): the error says so."""
    require_framework("torch", "torch")
    from interp_core.datasets.demo_vit import demo_vit_model

    x = np.random.default_rng(0).random((1, 3, 96, 96)).astype(np.float32)
    with pytest.raises(ValueError, match=r"has the 3 channels .* look at its size \(96, 96\)"):
        ic.AttentionRollout(demo_vit_model("torch"))(x)


def test_torch_layer_of_another_model_and_shared_module():
    torch = require_framework("torch", "torch")
    from torch import nn

    model, x = _demo("torch")
    other = demo_model("torch")
    with pytest.raises(ValueError, match="not a submodule of the model"):
        ic.GradCAM(model, other.block3)(x)

    class Shared(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3, padding=1)
            self.fc = nn.Linear(3, 2)

        def forward(self, t: torch.Tensor) -> torch.Tensor:
            t = self.conv(torch.relu(self.conv(t)))  # the same module twice
            return self.fc(t.mean(dim=(2, 3)))

    shared = Shared()
    with pytest.raises(ValueError, match="ran more than once in one forward pass"):
        ic.GradCAM(shared, "conv")(torch.randn(2, 3, 8, 8))
    assert all(len(m._forward_hooks) == 0 for m in shared.modules())


def test_tensorflow_wrong_shape_names_the_expected_shape():
    require_framework("tensorflow", "tensorflow")
    model, x = _demo("tensorflow")
    with pytest.raises(ValueError, match=r"has shape \(3, 64, 64, 4\).*expects \(N, \?, \?, 3\)"):
        ic.GradCAM(model, LAYER)(np.concatenate([x, x[..., :1]], axis=-1))
