"""BatchNorm folding of the torch adapter (``interp_torch.folding``): the folded stand-in
gives the model's scores and input gradients, leaves the model alone, and is not used where it
would differ (a convolution's output read twice, hooks of the user's) or outside the block;
Score-CAM folds by default (the adapter's scoring session), only for its call."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from interp_core.backend.target_spec import resolve_targets
from interp_core.methods import METHODS
from tests.conftest import require_framework

torch = require_framework("torch", "torch")
nn = torch.nn

from interp_torch.folding import folded_batchnorm, scoring_model  # noqa: E402

import interp_core as ic  # noqa: E402

TARGETS = [0, 2, 1, 3, 0, 2]


class BNNet(nn.Module):
    """Conv-BN-ReLU stem, a residual block with a conv-BN shortcut, pooling, a dense head;
    ``reuse=True`` also adds the stem convolution's raw output back (folding must not apply)."""

    def __init__(self, reuse: bool = False) -> None:
        super().__init__()
        self.reuse = reuse
        self.conv1, self.bn1 = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.block = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1, bias=False),
                                   nn.BatchNorm2d(16), nn.ReLU(inplace=True),
                                   nn.Conv2d(16, 16, 1, bias=False), nn.BatchNorm2d(16))
        self.down = nn.Sequential(nn.Conv2d(8, 16, 1, bias=False), nn.BatchNorm2d(16))
        self.fc = nn.Linear(16, 4)

    def forward(self, x: Any) -> Any:
        c = self.conv1(x)
        h = torch.relu(self.bn1(c) + (c if self.reuse else 0))
        h = torch.relu(self.block(h) + self.down(h))
        return self.fc(h.mean((2, 3)))


def _model(reuse: bool = False) -> nn.Module:
    torch.manual_seed(0)
    model = BNNet(reuse)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return model.eval()


@pytest.fixture
def x() -> Any:
    return torch.rand(6, 3, 12, 12, generator=torch.Generator().manual_seed(1))


def _stand_in(model: nn.Module, x: Any) -> nn.Module:
    with torch.no_grad():
        return scoring_model(model, x, lambda m, b: m(b))


def _norms(model: nn.Module) -> int:
    return sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def test_folded_scores_and_gradients_equal_the_model_and_the_model_is_untouched(x):
    model, backend = _model(), ic.get_backend("torch")
    spec = resolve_targets(TARGETS, 6)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    modules = list(model.modules())
    plain = backend.predict(model, x, spec, batch_size=4)
    grads = backend.score_input_gradients(model, x, spec, batch_size=4)
    with folded_batchnorm():
        stand_in = _stand_in(model, x)
        assert stand_in is not model and _norms(stand_in) == 0 and _norms(model) == 4
        folded = backend.predict(model, x, spec, batch_size=4)
        folded_grads = backend.score_input_gradients(model, x, spec, batch_size=4)
        assert _stand_in(model, x) is stand_in  # kept for the block
    np.testing.assert_allclose(folded, plain, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(folded_grads.gradients, grads.gradients, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(folded_grads.scores, grads.scores, rtol=1e-5, atol=1e-6)
    assert list(model.modules()) == modules and not model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    assert _stand_in(model, x) is model  # outside the block: the model itself


@pytest.mark.parametrize("method", ["scorecam", "integratedgradients"])
def test_methods_give_the_same_maps_folded(x, method):
    model = _model()
    unfolded = {"fast_scoring": False} if method == "scorecam" else {}
    want = METHODS[method](model, "block", batch_size=5, **unfolded).explain(x, TARGETS)
    cam = METHODS[method](model, "block", batch_size=5)
    with folded_batchnorm():
        got = cam.explain(x, TARGETS)
    np.testing.assert_allclose(got.maps, want.maps, atol=1e-4)
    for key in want.raw:
        np.testing.assert_allclose(got.raw[key], want.raw[key], rtol=1e-3, atol=1e-5)


def test_no_folding_where_a_convolution_output_is_read_twice(x):
    model = _model(reuse=True)
    with folded_batchnorm():
        stand_in = _stand_in(model, x)
    # the stem's pair fails the check on the sample, so nothing is folded
    assert stand_in is model


def test_no_folding_for_models_with_hooks(x):
    model = _model()
    handle = model.block[0].register_forward_hook(lambda m, i, o: o * 2)
    try:
        with folded_batchnorm():
            assert _stand_in(model, x) is model
    finally:
        handle.remove()


def test_stand_in_follows_parameter_updates(x):
    model, backend = _model(), ic.get_backend("torch")
    spec = resolve_targets(TARGETS, 6)
    with folded_batchnorm():
        first = _stand_in(model, x)
        with torch.no_grad():
            model.bn1.running_mean.add_(0.3)
            model.block[0].weight.mul_(1.5)
        second = _stand_in(model, x)
        got = backend.predict(model, x, spec)
    assert second is not first
    np.testing.assert_allclose(got, backend.predict(model, x, spec), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("fast", [True, False])
def test_scorecam_folds_for_its_call_only(x, monkeypatch, fast):
    import interp_torch.folding as folding

    built: list[nn.Module] = []
    make = folding._stand_in
    monkeypatch.setattr(folding, "_stand_in", lambda *a: built.append(make(*a)) or built[-1])
    model = _model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    got = ic.ScoreCAM(model, "block", fast_scoring=fast).explain(x, TARGETS)
    want = ic.ScoreCAM(model, "block", fast_scoring=False).explain(x, TARGETS)
    assert len(built) == (1 if fast else 0)  # one stand-in for the whole call
    if fast:
        assert _norms(built[0]) == 0 and _norms(model) == 4
    np.testing.assert_allclose(got.maps, want.maps, atol=1e-5)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    assert folding._BLOCK.get() is None  # the block (and its stand-in) ended with the call
    assert _stand_in(model, x) is model


def test_scorecam_rejects_a_non_bool_fast_scoring():
    with pytest.raises(ValueError, match="fast_scoring must be True or False, got 'yes'"):
        ic.ScoreCAM(_model(), "block", fast_scoring="yes")


def test_adapters_without_a_scoring_session_get_an_empty_block():
    from interp_core.backend.protocol import scoring_session

    with scoring_session(object(), _model()) as entered:
        assert entered is None
    assert _norms(_model()) == 4
