"""Target-free methods (Eigen-CAM, KPCA-CAM) run on any output and explain no target.

A detector's raw head (``(N, 4 + classes, anchors)``) is not a class output; Eigen-CAM needs no
target, so it must neither resolve one nor check the output's shape. Checked on every installed
framework with the demo model whose output is made 3-D by ``output=``: the maps equal those on
the plain classifier (the map depends on the layer alone), ``scores`` is empty, every target is
-1, and targets passed in are ignored.
"""

from __future__ import annotations

import numpy as np
import pytest

import interp_core as ic
from interp_core.backend.layout import to_backend_layout
from interp_core.backend.scoring import target_scores
from interp_core.backend.target_spec import TargetSpec, no_target
from interp_core.datasets import make_shapes
from interp_core.datasets.demo import LAYER, demo_model
from interp_core.methods import method_class
from tests.conftest import installed_frameworks

FRAMEWORKS = installed_frameworks(("torch", "tensorflow", "jax"))
TARGET_FREE = ("eigencam", "kpcacam")


def _three_d(output):
    """A classifier's ``(N, K)`` logits as ``(N, 1, K)``: no longer a class output."""
    return output[:, None, :]


@pytest.fixture(scope="module", params=FRAMEWORKS)
def demo(request):
    backend = request.param
    model = demo_model(backend)
    x = to_backend_layout(make_shapes(3, seed=4).images, ic.get_backend(backend))
    return backend, model, x


def test_class_targets_still_check_the_output(demo):
    backend, model, x = demo
    with pytest.raises(ValueError, match=r"class targets need a \(N, num_classes\) output"):
        ic.GradCAM(model, LAYER, backend=backend, output=_three_d)(x)


@pytest.mark.parametrize("name", TARGET_FREE)
def test_runs_on_any_output_and_scores_nothing(demo, name):
    backend, model, x = demo
    cls = method_class(name)
    assert cls.target_free and not cls.needs_gradients
    plain = cls(model, LAYER, backend=backend).explain(x)
    head = cls(model, LAYER, backend=backend, output=_three_d).explain(x)
    np.testing.assert_array_equal(head.maps, plain.maps)
    for exp in (plain, head):
        assert exp.scores.shape == (0,) and exp.scores.dtype == np.float32
        assert exp.targets.tolist() == [-1, -1, -1] and exp.targets.dtype == np.int64
        assert exp.maps.shape == (3, 64, 64) and exp.maps.max() > 0
    # targets are ignored, not resolved: even ones the output could not score
    given = cls(model, LAYER, backend=backend, output=_three_d).explain(x, [0, 1, 2])
    np.testing.assert_array_equal(given.maps, plain.maps)
    assert given.scores.shape == (0,)


def test_aug_smooth_keeps_no_scores(demo):
    backend, model, x = demo
    exp = ic.EigenCAM(model, LAYER, backend=backend, output=_three_d,
                      aug_smooth=True).explain(x)
    assert exp.scores.shape == (0,) and exp.maps.shape == (3, 64, 64)


def test_target_scores_of_no_target_are_zeros_of_any_output():
    class Ops:
        channel_axis = 1

        def const(self, array, like):
            return np.asarray(array, dtype=like.dtype)

    spec = no_target(2)
    for output in (np.ones((2, 84, 5), np.float32), np.ones((2,), np.float64),
                   [{"boxes": np.ones((0, 4), np.float32), "scores": np.ones(0, np.float32)}] * 2):
        scores, top1 = target_scores(output, spec, Ops())
        assert top1 is None and scores.tolist() == [0.0, 0.0]
    with pytest.raises(TypeError, match="holds no tensor"):
        target_scores(object(), spec, Ops())
    assert spec.resolved_indices().tolist() == [-1, -1]
    assert TargetSpec("none", 2).take(slice(0, 1)).n == 1


def test_a_target_free_method_may_not_require_gradients():
    with pytest.raises(TypeError, match="sets target_free but requires gradients"):
        type("Bad", (ic.GradCAM,), {"target_free": True, "name": "bad"})


def test_methods_details_name_what_each_needs():
    rows = {row.name: row for row in ic.methods(details=True)}
    assert sorted(rows) == ic.methods()
    assert rows["eigencam"].target_free and rows["kpcacam"].target_free
    assert not rows["gradcam"].target_free and rows["gradcam"].needs == "gradients"
    assert {name for name, row in rows.items() if row.target_free} == {
        name for name in ic.methods() if method_class(name).target_free}
