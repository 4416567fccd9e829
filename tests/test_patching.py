"""The core's patch-with-fallback mechanism (interp_core.backend.patching), with fake passes:
refusals remembered per (model, layer), thread-safe, dropped with the model; the shared loop
of the expanded pass; and policy.py's deprecated re-exports."""

from __future__ import annotations

import gc
import threading
from typing import Any

import numpy as np
import pytest

from interp_core.backend.patching import (
    ExpansionRefusedError,
    RefusalMemory,
    expanded_patch_rows,
    patch_with_fallback,
)


class Model:
    """A stand-in model: weak-referenceable, hashable by identity."""


class Passes:
    """Fake expanded and tiled passes that count their calls; ``refuse`` lists the layers
    whose expansion the model refuses."""

    def __init__(self, refuse: set[str] = frozenset()) -> None:  # type: ignore[assignment]
        self.refuse = set(refuse)
        self.expanded_calls: list[str] = []
        self.tiled_calls: list[str] = []
        self.lock = threading.Lock()

    def run(self, memory: RefusalMemory, model: Any, layer: str) -> np.ndarray:
        def expanded() -> np.ndarray:
            with self.lock:
                self.expanded_calls.append(layer)
            if layer in self.refuse:
                raise ExpansionRefusedError
            return np.zeros((2, 1), np.float32)

        def tiled() -> np.ndarray:
            with self.lock:
                self.tiled_calls.append(layer)
            return np.ones((2, 1), np.float32)

        return patch_with_fallback(model, layer, expanded, tiled, memory=memory)


def test_a_refusal_is_remembered_per_layer_not_per_model():
    memory, model, passes = RefusalMemory(), Model(), Passes(refuse={"a"})
    np.testing.assert_array_equal(passes.run(memory, model, "a"), 1)  # refused: tiled
    assert passes.expanded_calls == ["a"] and passes.tiled_calls == ["a"]
    assert memory.refused(model, "a") and not memory.refused(model, "b")
    np.testing.assert_array_equal(passes.run(memory, model, "a"), 1)
    assert passes.expanded_calls == ["a"]  # remembered: straight to the tiled pass
    np.testing.assert_array_equal(passes.run(memory, model, "b"), 0)  # another layer expands
    assert passes.expanded_calls == ["a", "b"] and passes.tiled_calls == ["a", "a"]
    other = Model()
    assert not memory.refused(other, "a")  # another model tries again
    memory.forget(model, "a")
    assert not memory.refused(model, "a")


def test_a_failing_tiled_pass_is_not_remembered_as_a_refusal():
    memory, model = RefusalMemory(), Model()

    def expanded() -> np.ndarray:
        raise ExpansionRefusedError

    def tiled() -> np.ndarray:
        raise ValueError("bad masks")

    with pytest.raises(ValueError, match="bad masks"):
        patch_with_fallback(model, "a", expanded, tiled, memory=memory)
    assert not memory.refused(model, "a")


def test_other_errors_of_the_expanded_pass_propagate():
    memory, model = RefusalMemory(), Model()

    def expanded() -> np.ndarray:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        patch_with_fallback(model, "a", expanded, lambda: np.zeros(1), memory=memory)
    assert not memory.refused(model, "a")


def test_concurrent_calls_from_8_threads():
    memory, passes = RefusalMemory(), Passes(refuse={"l0", "l2"})
    models = [Model() for _ in range(4)]
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            barrier.wait()
            for k in range(200):
                model, layer = models[(t + k) % 4], f"l{k % 4}"
                got = passes.run(memory, model, layer)
                assert float(got[0, 0]) == (1.0 if layer in ("l0", "l2") else 0.0)
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert not errors
    for model in models:
        assert memory.refused(model, "l0") and memory.refused(model, "l2")
        assert not memory.refused(model, "l1") and not memory.refused(model, "l3")
    # A refused (model, layer) expands at most once per thread that raced the first refusal.
    assert passes.expanded_calls.count("l0") <= 8 * 4
    assert passes.tiled_calls.count("l1") == 0 and len(memory) == 4


def test_a_collected_model_drops_its_memory():
    memory, passes = RefusalMemory(), Passes(refuse={"a"})
    model = Model()
    passes.run(memory, model, "a")
    assert len(memory) == 1
    del model
    gc.collect()
    assert len(memory) == 0


def test_models_that_cannot_be_weakly_referenced_are_kept_by_identity():
    memory = RefusalMemory()
    model = {"not": "hashable"}
    memory.refuse(model, "a")
    assert memory.refused(model, "a") and not memory.refused({"not": "hashable"}, "a")


def _fake_scorer(masks_seen: list[np.ndarray], plain: np.ndarray, wrong_ones: bool = False):
    """``sample_scorer`` of a linear fake model: sample ``i``'s score of mask ``m`` is
    ``plain[i] * m.mean()``."""
    def sample_scorer(i: int):
        def score(batch: np.ndarray) -> np.ndarray:
            masks_seen.append(batch)
            out = plain[i] * batch.mean(axis=1)
            if wrong_ones:
                out[-1] += 1
            return out.astype(np.float32)
        return score
    return sample_scorer


@pytest.mark.parametrize("pad, probes", [(True, 1), (False, 2)])
def test_expanded_patch_rows_checks_and_pads(pad, probes):
    rng = np.random.default_rng(0)
    masks = (rng.random((7, 4)) > 0.5).astype(np.float32)
    plain = np.array([2.0, -1.0, 3.0], np.float32)
    seen: list[np.ndarray] = []
    rows = expanded_patch_rows(masks, plain, 3, _fake_scorer(seen, plain), (ValueError,),
                               pad=pad, probes=probes)
    np.testing.assert_allclose(rows, plain[None] * masks.mean(axis=1)[:, None], rtol=1e-6)
    sizes = [len(b) for b in seen]
    if pad:  # every pass: 3 masks + all-ones rows up to 4
        assert sizes == [4] * 9
    else:  # only the first two passes of sample 0 carry one all-ones row
        assert sizes == [4, 4, 1, 3, 3, 1, 3, 3, 1]
    with pytest.raises(ExpansionRefusedError):
        expanded_patch_rows(masks, plain, 3, _fake_scorer([], plain, wrong_ones=True),
                            (ValueError,), pad=pad, probes=probes)


def test_expanded_patch_rows_refuses_on_a_model_error_of_a_probe_pass_only():
    masks = np.ones((5, 2), np.float32)
    plain = np.ones(2, np.float32)
    calls = []

    def failing(at: int):
        def sample_scorer(i: int):
            def score(batch: np.ndarray) -> np.ndarray:
                calls.append(1)
                if len(calls) == at:
                    raise ValueError("the model cannot take it")
                return np.ones(len(batch), np.float32)
            return score
        return sample_scorer

    with pytest.raises(ExpansionRefusedError):
        expanded_patch_rows(masks, plain, 2, failing(1), (ValueError,))
    calls.clear()
    with pytest.raises(ValueError, match="cannot take"):  # a later pass: a real error
        expanded_patch_rows(masks, plain, 2, failing(2), (ValueError,))
    calls.clear()
    with pytest.raises(ExpansionRefusedError):  # the second probe pass
        expanded_patch_rows(masks, plain, 2, failing(2), (ValueError,), pad=False, probes=2)
