"""Agreement with Quantus 0.6 (the ``quantus`` package, zoo venv) on the same maps and torch model.

Where the definitions match, the per-sample values agree to 1e-5. Quantus's own settings are
chosen to mean what ours do (its defaults, and where they differ, are in
docs/explanation/conventions.md, "Quantus"):

- its baseline ``"black"`` is each sample's minimum: ours is given that array;
- it draws Faithfulness Correlation's subsets from NumPy's global generator over input values:
  its draws are recorded and handed to ours as ``subsets=``, on a one-channel model (where a
  value is a pixel);
- its pixel-flipping counts values: ``features_in_step = channels * step``;
- its region-perturbation curve is the score drop ``f(x) - f(x_k)``, without ``k = 0``;
- eMPRT: Quantus randomises every module with ``reset_parameters`` bottom-up, each after
  ``torch.manual_seed(seed + 1)``; ours is given a ``randomize`` that does the same.
"""

from __future__ import annotations

import copy
import os

import numpy as np
import pytest

from tests.zoo_env import require

torch = require("torch", module_level=True)
# the zoo venv only (requirements-zoo-nodeps.txt): skips elsewhere, fails there if missing
quantus = require("quantus", module_level=True)

import interp_core as ic  # noqa: E402
from interp_core import metrics  # noqa: E402
from interp_core.datasets import make_shapes  # noqa: E402
from interp_core.datasets.demo import LAYER, demo_model  # noqa: E402

pytestmark = pytest.mark.skipif(
    not quantus.__version__.startswith("0.6."),
    reason=f"agreement is checked against quantus 0.6, found {quantus.__version__}")

QUIET = dict(disable_warnings=True, display_progressbar=False)


def softmax(out):
    """Quantus's PixelFlipping and RegionPerturbation score probabilities by default."""
    return out.softmax(-1)


@pytest.fixture(scope="module")
def demo():
    """The demo model (torch), 6 shapes images NCHW, Grad-CAM maps, top-1 classes."""
    model = demo_model("torch")
    x = np.ascontiguousarray(make_shapes(6, seed=4).images.transpose(0, 3, 1, 2))
    exp = ic.GradCAM(model, LAYER).explain(torch.from_numpy(x))
    return model, x, exp.maps, exp.targets.astype(np.int64)


def _black(x):
    """Quantus's "black" baseline: each sample's minimum over all its values."""
    return np.broadcast_to(x.min(axis=tuple(range(1, x.ndim)), keepdims=True), x.shape).copy()


def _random_maps(shape, seed):
    """Maps without ties (Quantus sorts with an unstable sort; ties would order differently)."""
    return np.random.default_rng(seed).random(shape).astype(np.float32)


def test_sparseness_and_complexity(demo):
    model, x, maps, y = demo
    for a in (maps, _random_maps(maps.shape, 1) - 0.3):  # CAMs, and signed maps
        want = quantus.Sparseness(**QUIET)(model=model, x_batch=x, y_batch=y, a_batch=a.copy())
        np.testing.assert_allclose(metrics.sparseness(a), want, rtol=1e-5, atol=1e-6)
        want = quantus.Complexity(**QUIET)(model=model, x_batch=x, y_batch=y, a_batch=a.copy())
        np.testing.assert_allclose(metrics.complexity(a), want, rtol=1e-5, atol=1e-6)


def test_relevance_rank_and_mass_accuracy(demo):
    model, x, maps, y = demo
    masks = make_shapes(6, seed=4).masks
    s = masks[:, None].astype(np.float32)
    a = _random_maps(maps.shape, 2) + 2.0 * masks  # informative, no ties
    for ours, theirs in ((metrics.relevance_rank_accuracy, quantus.RelevanceRankAccuracy),
                         (metrics.relevance_mass_accuracy, quantus.RelevanceMassAccuracy)):
        want = theirs(**QUIET)(model=model, x_batch=x, y_batch=y, a_batch=a.copy(), s_batch=s)
        np.testing.assert_allclose(ours(a, masks=masks), want, rtol=1e-5, atol=1e-6,
                                   err_msg=ours.__name__)


class _OneChannel(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(1, 8, 3, padding=1)
        self.fc = torch.nn.Linear(8 * 4, 5)

    def forward(self, x):
        h = torch.relu(self.conv(x))
        return self.fc(torch.nn.functional.adaptive_avg_pool2d(h, 2).flatten(1))


def _one_channel_case():
    model = _OneChannel().eval()
    x = np.random.default_rng(0).random((4, 1, 16, 16)).astype(np.float32)
    a = _random_maps((4, 16, 16), 3)
    with torch.no_grad():
        y = model(torch.from_numpy(x)).argmax(1).numpy()
    return model, x, a, y


def test_faithfulness_correlation_same_subsets(monkeypatch):
    model, x, a, y = _one_channel_case()
    drawn = []
    choice = np.random.choice

    def recording(*args, **kwargs):
        out = choice(*args, **kwargs)
        drawn.append(out)
        return out

    monkeypatch.setattr(np.random, "choice", recording)
    np.random.seed(0)
    fc = quantus.FaithfulnessCorrelation(nr_runs=12, subset_size=20, return_aggregate=False,
                                         **QUIET)
    want = fc(model=model, x_batch=x, y_batch=y, a_batch=a.copy(), device="cpu")
    monkeypatch.undo()
    subsets = np.stack(drawn).reshape(12, 4, 20).transpose(1, 0, 2)  # runs outer, samples inner
    got = metrics.faithfulness_correlation(model, torch.from_numpy(x), a, y.tolist(),
                                           subsets=subsets, baseline=_black(x))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_pixel_flipping():
    # Quantus checks that features_in_step divides the map's pixels but steps through the
    # input's values (C per pixel): only one-channel inputs satisfy both
    model, x, a, y = _one_channel_case()
    step = 16
    pf = quantus.PixelFlipping(features_in_step=step, **QUIET)
    want = np.asarray(pf(model=model, x_batch=x, y_batch=y, a_batch=a.copy(), device="cpu"))
    curve = metrics.pixel_flipping_curve(model, torch.from_numpy(x), a, y.tolist(), step=step,
                                         baseline=_black(x), output=softmax)
    np.testing.assert_allclose(curve.scores[:, 1:], want, rtol=1e-5, atol=1e-5)
    # (return_auc_per_sample=True calls np.trapz, which NumPy 2.4 removed: its AUC is
    # np.trapezoid(curve.scores[:, 1:], axis=1))


@pytest.mark.parametrize("size", [64, 60])  # 60: the grid overhangs by 4 px (2 each side)
def test_region_perturbation(demo, size):
    model, x, _, y = demo
    x = np.ascontiguousarray(x[:, :, :size, :size])
    a = _random_maps((len(x), size, size), 5)
    for order in ("morf", "lerf"):
        rp = quantus.RegionPerturbation(patch_size=8, regions_evaluation=10, order=order,
                                        **QUIET)
        want = np.asarray(rp(model=model, x_batch=x, y_batch=y, a_batch=a.copy(), device="cpu"))
        curve = metrics.region_perturbation_curve(model, torch.from_numpy(x), a, y.tolist(),
                                                  patch_size=8, regions=10, order=order,
                                                  baseline=_black(x), output=softmax)
        np.testing.assert_allclose(curve.scores[:, :1] - curve.scores[:, 1:], want, rtol=1e-5,
                                   atol=1e-5, err_msg=order)


def test_efficient_mprt(demo):
    model, x, _, y = demo
    seed = 42
    before = {k: v.clone() for k, v in model.state_dict().items()}

    def explain(model, inputs, targets, **kwargs):
        return ic.GradCAM(model, LAYER)(torch.from_numpy(np.asarray(inputs)),
                                        [int(t) for t in targets])

    def randomize(m):
        m = copy.deepcopy(m)
        for _, module in m.named_modules():
            if hasattr(module, "reset_parameters"):
                torch.manual_seed(seed + 1)
                module.reset_parameters()
        return m

    emprt = quantus.EfficientMPRT(seed=seed, **QUIET)
    want = emprt(model=model, x_batch=x, y_batch=y, a_batch=None, explain_func=explain,
                 device="cpu")
    got = metrics.efficient_mprt(model, torch.from_numpy(x), randomize, method="gradcam",
                                 layer=LAYER, targets=y.tolist())
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


@pytest.mark.skipif(not os.environ.get("INTERP_TEST_ZOO"), reason="zoo run only")
def test_pinned_version():
    assert quantus.__version__ == "0.6.0"
