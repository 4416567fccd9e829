"""The user's model is left exactly as it was: after every operation, and after errors.

Needs the optional ``model_state`` hook (a snapshot function). Runs on the reference model and,
where the subclass provides one, on a ``stateful_model`` (batch norm, dropout, mixed flags).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import interp_core as ic
from interp_core.backend.layer_choice import default_layer
from interp_core.backend.protocol import ACTIVATION_PATCH, HVP, INPUT_GRADIENTS, LINEAR_WEIGHTS
from interp_core.backend.target_spec import resolve_targets
from interp_core.testing import reference as ref
from interp_core.testing.suite.fixtures import SuiteFixtures, require, require_hook

OPERATIONS = ("capture", "capture_without_gradients", "capture_hvp", "predict",
              "default_layer", "patched_scores", "input_gradients", "linear_weights", "gradcam",
              "scorecam", "eigencam")
ERRORS = ("class_out_of_range", "target_raises_in_capture", "target_raises_in_predict",
          "unknown_layer", "bad_channel_masks")
_NEEDS = {"patched_scores": ACTIVATION_PATCH, "input_gradients": INPUT_GRADIENTS,
          "linear_weights": LINEAR_WEIGHTS, "bad_channel_masks": ACTIVATION_PATCH,
          "capture_hvp": HVP}
_MESSAGE = "raised inside the forward pass"


def assert_same_state(before: Any, after: Any, path: str = "state") -> None:
    """Compare two snapshots (nested dicts, lists, tuples, arrays), naming the first change."""
    if isinstance(before, dict):
        assert isinstance(after, dict) and sorted(before) == sorted(after), (
            f"{path}: keys changed from {sorted(before)} to {sorted(after)}")
        for key in before:
            assert_same_state(before[key], after[key], f"{path}[{key!r}]")
    elif isinstance(before, list | tuple):
        assert isinstance(after, list | tuple) and len(before) == len(after), (
            f"{path}: {before!r} became {after!r}")
        for i, (b, a) in enumerate(zip(before, after, strict=True)):
            assert_same_state(b, a, f"{path}[{i}]")
    elif isinstance(before, np.ndarray):
        np.testing.assert_array_equal(after, before, err_msg=f"{path} changed")
    else:
        assert before == after, f"{path}: {before!r} became {after!r}"


def _raise_inside(output: Any) -> Any:
    raise RuntimeError(_MESSAGE)


def _channels(impl: Any, model: Any, layer: Any, x: Any) -> int:
    n = len(impl.to_numpy(x))
    cap = impl.capture(model, x, [layer], resolve_targets(0, n), gradients=False)
    return next(iter(cap.layers.values())).activations.shape[-1]


def _operation(name: str, impl: Any, model: Any, layer: Any, x: Any) -> Callable[[], Any]:
    if name in _NEEDS:
        require(impl, _NEEDS[name])
    n = len(impl.to_numpy(x))
    spec = resolve_targets(0, n)
    channels = _channels(impl, model, layer, x)
    masks = np.eye(channels, dtype=np.float32)[:3]
    ops: dict[str, Callable[[], Any]] = {
        "capture": lambda: impl.capture(model, x, [layer], spec),
        "capture_without_gradients": lambda: impl.capture(model, x, [layer], spec,
                                                          gradients=False),
        "capture_hvp": lambda: impl.capture_hvp(model, x, [layer], spec),
        "predict": lambda: impl.predict(model, x, spec, batch_size=3),
        "default_layer": lambda: default_layer(impl, model, x),
        "patched_scores": lambda: impl.patched_scores(model, x, layer, masks, spec),
        "input_gradients": lambda: impl.input_gradients(model, x, layer, np.zeros(n, int)),
        "linear_weights": lambda: impl.linear_weights(model),
        "gradcam": lambda: ic.GradCAM(model, layer, backend=impl)(x),
        "scorecam": lambda: ic.ScoreCAM(model, layer, backend=impl)(x, 0),
        "eigencam": lambda: ic.EigenCAM(model, layer, backend=impl)(x),
        "class_out_of_range": lambda: ic.GradCAM(model, layer, backend=impl)(x, 10_000),
        "target_raises_in_capture": lambda: ic.GradCAM(model, layer, backend=impl)(
            x, ic.OutputTarget(_raise_inside)),
        "target_raises_in_predict": lambda: impl.predict(
            model, x, resolve_targets(ic.OutputTarget(_raise_inside), n)),
        "unknown_layer": lambda: impl.capture(model, x, [layer, "featurez"], spec),
        "bad_channel_masks": lambda: impl.patched_scores(
            model, x, layer, np.ones((2, channels + 1), np.float32), spec),
    }
    return ops[name]


class HygieneTests(SuiteFixtures):
    @pytest.fixture(params=["reference", "stateful"])
    def subject(self, request: pytest.FixtureRequest, model: Any, x: Any,
                stateful_model: Any) -> tuple[Any, Any, Any]:
        """``(model, layer, native input)``: the reference model, or the adapter's own."""
        if request.param == "stateful":
            return require_hook(stateful_model, "stateful_model")
        return model, ref.LAYER, x

    @pytest.mark.parametrize("variant", ["flatten"])
    @pytest.mark.parametrize("operation", OPERATIONS)
    def test_model_state_untouched(self, impl: Any, subject: Any, model_state: Any,
                                   operation: str) -> None:
        snapshot = require_hook(model_state, "model_state")
        model, layer, x = subject
        run = _operation(operation, impl, model, layer, x)
        before = snapshot(model)
        run()
        assert_same_state(before, snapshot(model))
        run()  # and again: a second call (cached or compiled paths) changes nothing either
        assert_same_state(before, snapshot(model))

    @pytest.mark.parametrize("variant", ["flatten"])
    @pytest.mark.parametrize("error", ERRORS)
    def test_model_state_restored_after_errors(self, impl: Any, subject: Any,
                                               model_state: Any, error: str) -> None:
        snapshot = require_hook(model_state, "model_state")
        model, layer, x = subject
        run = _operation(error, impl, model, layer, x)
        before = snapshot(model)
        with pytest.raises(Exception) as info:
            run()
        if error.startswith("target_raises"):
            assert _MESSAGE in str(info.value), "the target's own error was lost"
        else:
            assert isinstance(info.value, ValueError | KeyError), repr(info.value)
        assert_same_state(before, snapshot(model))
