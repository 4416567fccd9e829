"""Mutation tests of the conformance suite: it must fail adapters that are subtly wrong.

Each mutant wraps the real torch adapter and bends one thing a buggy adapter could get wrong.
The suite (``BackendConformance``) runs once in a subprocess on the unmutated adapter and on
every mutant (one test class each, one torch import in all), restricted to its capture, target,
Ablation-CAM and hygiene tests to stay fast; the unmutated adapter must pass every one (the
whole suite runs on it in test_torch.py), and each mutant must fail at least one, for the
reason it was made.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import require_framework

torch = require_framework("torch", "torch")
from interp_torch.backend import TorchBackend  # noqa: E402

from interp_core.backend.protocol import Capture, LayerCapture  # noqa: E402
from interp_core.backend.target_spec import TargetSpec  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


# -- the mutants ----------------------------------------------------------------------------
class Mutant:
    """The real torch adapter, unchanged: every attribute is delegated to it."""

    def __init__(self) -> None:
        self._real = TorchBackend()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


class _CaptureMutant(Mutant):
    """A mutant that post-processes each captured layer."""

    def capture(self, model: Any, inputs: Any, layers: Any, target: TargetSpec,
                **kwargs: Any) -> Capture:
        cap = self._real.capture(model, inputs, layers, target, **kwargs)
        bent = {name: LayerCapture(name, *self.bend(layer.activations, layer.gradients))
                for name, layer in cap.layers.items()}
        return Capture(layers=bent, scores=cap.scores, targets=cap.targets,
                       input_spatial=cap.input_spatial)

    def bend(self, acts: np.ndarray, grads: np.ndarray | None
             ) -> tuple[np.ndarray, np.ndarray | None]:
        raise NotImplementedError


class SpatialMeanGradients(_CaptureMutant):
    """Averages the gradients over space (one value per channel, as Grad-CAM's weights)."""

    def bend(self, acts, grads):
        if grads is None or grads.ndim < 3:
            return acts, grads
        axes = tuple(range(1, grads.ndim - 1))
        return acts, np.broadcast_to(grads.mean(axis=axes, keepdims=True), grads.shape).copy()


class TransposedSpatialAxes(_CaptureMutant):
    """Swaps H and W of activations and gradients (a layout conversion gone wrong)."""

    def bend(self, acts, grads):
        def swap(a):
            return a if a is None or a.ndim != 4 else np.ascontiguousarray(a.swapaxes(1, 2))
        return swap(acts), swap(grads)


class BatchMeanGradients(_CaptureMutant):
    """Gradients of the batch mean of the scores instead of their sum."""

    def bend(self, acts, grads):
        return acts, None if grads is None else grads / len(grads)


def _rolled(target: TargetSpec) -> TargetSpec:
    n = target.n or 0
    return target if n < 2 else target.take(np.roll(np.arange(n), 1))


class RolledTargets(Mutant):
    """Drops the batch order of targets: sample i is scored with sample i-1's target."""

    def capture(self, model, inputs, layers, target, **kwargs):
        return self._real.capture(model, inputs, layers, _rolled(target), **kwargs)

    def predict(self, model, inputs, target, **kwargs):
        return self._real.predict(model, inputs, _rolled(target), **kwargs)

    def patched_scores(self, model, inputs, layer, channel_masks, target, **kwargs):
        return self._real.patched_scores(model, inputs, layer, channel_masks, _rolled(target),
                                         **kwargs)


class LeftoverHook(Mutant):
    """Leaves a forward hook registered on the model after each capture."""

    def capture(self, model, inputs, layers, target, **kwargs):
        cap = self._real.capture(model, inputs, layers, target, **kwargs)
        model.register_forward_hook(lambda module, args, out: None)
        return cap


class _HvpMutant(Mutant):
    """A mutant that post-processes each layer's Hessian-vector product."""

    def capture_hvp(self, model: Any, inputs: Any, layers: Any, target: TargetSpec,
                    **kwargs: Any) -> Capture:
        cap = self._real.capture_hvp(model, inputs, layers, target, **kwargs)
        bent = {name: LayerCapture(name, layer.activations, layer.gradients,
                                   self.bend_hvp(layer.hvp))
                for name, layer in cap.layers.items()}
        return Capture(layers=bent, scores=cap.scores, targets=cap.targets,
                       input_spatial=cap.input_spatial)

    def bend_hvp(self, hvp: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class HvpZeros(_HvpMutant):
    """Returns zeros for ``H A`` (a first backward pass without ``create_graph=True``: torch
    then finds nothing to differentiate and ``allow_unused`` hides it)."""

    def bend_hvp(self, hvp):
        return np.zeros_like(hvp)


class HvpNegated(_HvpMutant):
    """Returns ``-H A`` (``d(G . A)/dA`` mistaken for its negative)."""

    def bend_hvp(self, hvp):
        return -hvp


MUTANTS: dict[str, type[Mutant]] = {
    "unmutated": Mutant,
    "spatial_mean_gradients": SpatialMeanGradients,
    "transposed_spatial_axes": TransposedSpatialAxes,
    "batch_mean_gradients": BatchMeanGradients,
    "rolled_targets": RolledTargets,
    "leftover_hook": LeftoverHook,
    "hvp_zeros": HvpZeros,
    "hvp_negated": HvpNegated,
}

#: For each mutant, suite tests that must fail (the reason it was made) and, where it shows why
#: the second reference model exists, tests that still pass.
MUST_FAIL = {
    "spatial_mean_gradients": ["test_capture_matches_closed_form[flatten]",
                               "test_method_matches_oracle[flatten-hirescam]"],
    "transposed_spatial_axes": ["test_capture_matches_closed_form[flatten]",
                                "test_capture_matches_closed_form[gap]"],
    "batch_mean_gradients": ["test_capture_matches_closed_form[gap]"],
    "rolled_targets": ["test_capture_matches_closed_form[gap]", "test_predict[flatten]"],
    "leftover_hook": ["test_model_state_untouched[reference-capture-flatten]"],
    "hvp_zeros": ["test_hvp_matches_closed_form[gap]", "test_hvp_matches_closed_form[flatten]",
                  "test_hvp_batch_independence[flatten]",
                  "test_shapleycam_matches_oracle[flatten]"],
    "hvp_negated": ["test_hvp_matches_closed_form[flatten]",
                    "test_shapleycam_matches_oracle[flatten]"],
}
PASS_ANYWAY = {
    # on the old reference model alone (gradient constant over space) this mutant is invisible
    "spatial_mean_gradients": ["test_capture_matches_closed_form[gap]",
                               "test_method_matches_oracle[gap-hirescam]"],
    # with a logit target above an affine head H A is zero: the similarity targets catch it
    "hvp_zeros": ["test_hvp_of_logit_targets_is_zero[gap]",
                  "test_method_matches_oracle[flatten-shapleycam]"],
}

#: The suite tests run on every mutant (pytest -k).
SUBSET = ("closed_form or top1_targets or test_predict or batch_independence or binary_target "
          "or output_target or patched_scores or (method_matches_oracle and hirescam) "
          "or (model_state_untouched and capture) or hvp or shapleycam")

_SUITE_FILE = '''
import pytest
from interp_torch import testing as torch_testing

from interp_core.testing.conformance import ConformanceFromModule
from tests.test_conformance_mutants import MUTANTS


class _Torch(ConformanceFromModule, helpers=torch_testing):
    pass
'''

_CLASS = '''

class Test_{name}(_Torch):
    @pytest.fixture
    def backend(self):
        return MUTANTS[{name!r}]()
'''


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, str]]:
    """``{mutant: {test id: "passed" | "failed" | "skipped"}}`` of one run of the suite."""
    folder = tmp_path_factory.mktemp("mutants")
    suite = folder / "test_suite_on_mutants.py"
    suite.write_text(textwrap.dedent(_SUITE_FILE) + "".join(
        _CLASS.format(name=name) for name in MUTANTS))
    report = folder / "report.xml"
    run = subprocess.run(
        [sys.executable, "-m", "pytest", str(suite), "-q", "-p", "no:cacheprovider",
         "--rootdir", str(folder), "--junitxml", str(report), "-k", SUBSET],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert report.is_file(), run.stdout[-3000:] + run.stderr[-3000:]
    found: dict[str, dict[str, str]] = {name: {} for name in MUTANTS}
    for case in ET.parse(report).getroot().iter("testcase"):
        mutant = case.get("classname", "").rsplit(".Test_", 1)[-1]
        kinds = {child.tag for child in case}
        outcome = ("failed" if kinds & {"failure", "error"} else
                   "skipped" if "skipped" in kinds else "passed")
        found[mutant][case.get("name", "")] = outcome
    return found


def test_the_suite_passes_the_unmutated_adapter(outcomes):
    results = outcomes["unmutated"]
    assert len(results) >= 15, f"only {len(results)} suite tests ran"
    failed = sorted(t for t, o in results.items() if o == "failed")
    assert not failed, failed


@pytest.mark.parametrize("mutant", sorted(MUST_FAIL))
def test_the_suite_fails_each_mutant(outcomes, mutant):
    results = outcomes[mutant]
    failed = {t for t, o in results.items() if o == "failed"}
    assert failed, f"the suite passed the {mutant} mutant"
    missed = [t for t in MUST_FAIL[mutant] if t not in failed]
    assert not missed, f"{mutant}: expected failures that passed: {missed}"
    unexpected = [t for t in PASS_ANYWAY.get(mutant, []) if results.get(t) != "passed"]
    assert not unexpected, f"{mutant}: {unexpected} should pass on this mutant"
