"""The input attributions through the torch adapter against Captum, on a torch test model.

Guided backpropagation and Guided Grad-CAM agree to 1e-5; Saliency, Input x Gradient and
Integrated Gradients (same steps and rule) to 1e-4. Captum is a test dependency
(requirements-dev.txt); the module skips without it unless CI names torch.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import require_framework

torch = require_framework("torch", "torch")
captum_attr = pytest.importorskip("captum.attr")

import interp_core as ic  # noqa: E402
from interp_core.methods import (  # noqa: E402
    GuidedBackprop,
    GuidedGradCAM,
    InputXGradient,
    IntegratedGradients,
    Saliency,
)
from interp_core.methods.input_gradients import integration_rule  # noqa: E402

nn = torch.nn
TARGETS = [0, 3, 1, 4]


class Net(nn.Module):
    """Conv/BN/ReLU blocks with max pooling, global average pooling and a dense head; every
    ReLU a module (Captum overrides only ``nn.ReLU`` modules)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(),
            nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.features(x)).flatten(1))


@pytest.fixture(scope="module")
def model() -> Net:
    torch.manual_seed(0)
    net = Net()
    with torch.no_grad():
        bn = net.features[1]
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.2, 0.2)
        for conv in (net.features[0], net.features[4], net.features[6]):
            conv.weight.mul_(3.0)  # attributions of order 0.1..1, so 1e-4 means something
        net.fc.weight.mul_(10.0)
    return net.eval()


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(3).random((4, 3, 16, 16), dtype=np.float32))


def _captum(attr: torch.Tensor) -> np.ndarray:
    return attr.detach().numpy()


def _check(ours: np.ndarray, theirs: np.ndarray, atol: float) -> None:
    assert ours.shape == theirs.shape
    assert np.abs(theirs).max() > 10 * atol, "attributions too small to compare"
    np.testing.assert_allclose(ours, theirs, atol=atol, rtol=0)


def test_guided_backprop_equals_captum(model, x):
    ours = GuidedBackprop(model).explain(x, TARGETS)
    theirs = captum_attr.GuidedBackprop(model).attribute(x, target=TARGETS)
    _check(ours.raw["input"], _captum(theirs), 1e-5)
    plain = captum_attr.Saliency(model).attribute(x, target=TARGETS, abs=False)
    assert np.abs(ours.raw["input"] - _captum(plain)).max() > 1e-3  # the ReLUs were guided
    assert ours.maps.shape == (4, 16, 16) and ours.maps.min() >= 0 and ours.maps.max() <= 1


@pytest.mark.parametrize("layer", ["features.7", "features.5"])
def test_guided_gradcam_equals_captum(model, x, layer):
    ours = GuidedGradCAM(model, layer, interpolation="nearest").explain(x, TARGETS)
    module = dict(model.named_modules())[layer]
    theirs = captum_attr.GuidedGradCam(model, module).attribute(x, target=TARGETS)
    _check(ours.raw["input"], _captum(theirs), 1e-5)
    assert ours.layers == [layer] and ours.weights[layer].shape == (4, 16)


def test_saliency_and_input_x_gradient_equal_captum(model, x):
    _check(Saliency(model).explain(x, TARGETS).raw["input"],
           _captum(captum_attr.Saliency(model).attribute(x, target=TARGETS)), 1e-4)
    _check(InputXGradient(model).explain(x, TARGETS).raw["input"],
           _captum(captum_attr.InputXGradient(model).attribute(x, target=TARGETS)), 1e-4)


@pytest.mark.parametrize("rule", ["gausslegendre", "riemann_left", "riemann_right",
                                  "riemann_middle"])
def test_integrated_gradients_equal_captum(model, x, rule):
    baseline = torch.full_like(x, 0.25)
    ours = IntegratedGradients(model, steps=16, rule=rule, baseline=baseline).explain(
        x, TARGETS)
    theirs, delta = captum_attr.IntegratedGradients(model).attribute(
        x, baselines=baseline, target=TARGETS, n_steps=16, method=rule,
        return_convergence_delta=True)
    _check(ours.raw["input"], _captum(theirs), 1e-4)
    np.testing.assert_allclose(ours.raw["convergence_delta"], _captum(delta), atol=1e-4)


def test_integrated_gradients_trapezoid_is_captums_rescaled(model, x):
    """Captum's "riemann_trapezoid" weighs the points by 1/n (halved at the ends), so its sum
    is (n - 1)/n times the trapezoidal rule's; ours is the trapezoidal rule."""
    steps = 12
    ours = IntegratedGradients(model, steps=steps, rule="trapezoid").explain(x, TARGETS)
    theirs = captum_attr.IntegratedGradients(model).attribute(
        x, target=TARGETS, n_steps=steps, method="riemann_trapezoid")
    _check(ours.raw["input"] * (steps - 1) / steps, _captum(theirs), 1e-4)
    alphas, weights = integration_rule("trapezoid", steps)
    assert np.isclose(weights.sum(), 1.0) and alphas[0] == 0 and alphas[-1] == 1


def test_top1_targets_as_captum(model, x):
    top1 = model(x).argmax(1).tolist()
    ours = Saliency(model).explain(x)
    np.testing.assert_array_equal(ours.targets, top1)
    _check(ours.raw["input"],
           _captum(captum_attr.Saliency(model).attribute(x, target=top1)), 1e-4)


def test_guided_relus_leave_the_model_as_it_was(model, x):
    before = [(m.training, len(m._forward_hooks), len(m._backward_hooks),
               len(m._forward_pre_hooks)) for m in model.modules()]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    ic.explain(model, x, method="guidedgradcam", layer="features.7", targets=TARGETS)
    after = [(m.training, len(m._forward_hooks), len(m._backward_hooks),
              len(m._forward_pre_hooks)) for m in model.modules()]
    assert before == after
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k])
    # outside the call, ReLUs have their ordinary gradient again
    leaf = x.clone().requires_grad_(True)
    model(leaf)[:, 0].sum().backward()
    plain = captum_attr.Saliency(model).attribute(x, target=0, abs=False)
    np.testing.assert_allclose(leaf.grad.numpy(), _captum(plain), atol=1e-6)
