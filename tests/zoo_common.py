"""What the model sweeps share, framework-free: the per-model result, the comparison with a
hand-written reference, timing, and the result files for ``scripts/make_models_table.py``.

``tests/zoo_torch.py`` and ``tests/zoo_keras.py`` supply the models and the references (each in
its framework's autograd); ``tests/test_zoo_torch.py`` and ``tests/test_zoo_keras.py`` run them.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

#: Largest difference allowed between interp-core's maps and the reference's (maps in [0, 1]);
#: raw maps: this fraction of their largest magnitude.
ATOL = 2e-3

#: ``reference(relu=...) -> (maps (N, H, W) in [0, 1], raw map (N, h, w) before ReLU)``.
Reference = Callable[..., tuple[np.ndarray, np.ndarray]]


@dataclasses.dataclass
class Result:
    """One model's outcome, for the test and the compatibility table (one JSON line)."""

    case: str
    family: str
    source: str
    default_layer: str = ""
    reshape: str = ""
    named_layer: str = ""
    default_ok: bool = False
    named_ok: bool = False
    error: str = ""
    seconds: float = 0.0
    cpu_seconds: float = 0.0


@contextmanager
def timed(result: Result) -> Iterator[None]:
    """Time the block into ``result`` (wall and CPU seconds); an exception in it becomes
    ``result.error`` (its first line) instead of propagating: the table lists the failure, the
    test (:func:`assert_passed`) raises it."""
    start, cpu = time.perf_counter(), time.process_time()
    try:
        yield
    except Exception as exc:
        result.error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
    finally:
        result.seconds = round(time.perf_counter() - start, 2)
        result.cpu_seconds = round(time.process_time() - cpu, 2)


def informative(maps: np.ndarray) -> bool:
    """A map that spans [0, 1] with some spread (not all zeros, not one hot pixel)."""
    return float(maps.max()) > 0.99 and float(maps.std()) > 0.02


def agrees(case_id: str, layer: str, got_raw: np.ndarray, got_maps: np.ndarray,
           reference: Reference, maps_without_relu: Callable[[], np.ndarray]) -> bool:
    """interp-core's raw map and maps at ``layer`` equal the reference's, or AssertionError.

    Where ReLU leaves nothing of the top-1 map (random weights), the maps are compared with
    ``relu=False`` instead (``maps_without_relu()``: interp-core's, ``reference(relu=False)``),
    so every model is checked on an informative map. Min-max scaling magnifies float32
    round-off by ``max|raw| / span``: the maps' tolerance grows with it.
    """
    relu = True
    expected, raw = reference(relu=True)
    scale = float(np.abs(raw).max())
    if got_raw.shape != raw.shape or not scale > 0:
        raise AssertionError(f"{case_id} at {layer!r}: raw map {got_raw.shape} vs reference "
                             f"{raw.shape}, reference scale {scale:.3g}")
    raw_diff = float(np.abs(got_raw - raw).max()) / scale
    if raw_diff > ATOL:
        raise AssertionError(f"{case_id} at {layer!r}: raw maps differ by {raw_diff:.3g} of "
                             "their scale")
    maps = got_maps
    if not informative(expected):
        relu = False
        expected, _ = reference(relu=False)
        maps = maps_without_relu()
    if not informative(expected):
        raise AssertionError(f"{case_id} at {layer!r}: the reference map is degenerate even "
                             f"without ReLU (max {expected.max():.3g}, std {expected.std():.3g})")
    kept = (np.maximum(raw, 0) if relu else raw).reshape(len(raw), -1)
    span = float((kept.max(1) - kept.min(1)).min())
    tolerance = ATOL * max(1.0, scale / span)
    diff = float(np.abs(maps - expected).max())
    if diff > tolerance:
        raise AssertionError(f"{case_id} at {layer!r}: maps differ from the reference by "
                             f"{diff:.3g} (> {tolerance:.3g})")
    return True


def record(result: Result, sweep: str) -> None:
    """Append ``result`` to ``$INTERP_ZOO_RESULTS/{sweep}.jsonl`` when that is set."""
    folder = os.environ.get("INTERP_ZOO_RESULTS")
    if folder:
        path = Path(folder) / f"{sweep}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(dataclasses.asdict(result)) + "\n")


def param(case: Any) -> Any:
    """``case`` as a pytest parameter, marked ``slow`` where ``case.slow``."""
    return pytest.param(case, id=case.id, marks=[pytest.mark.slow] if case.slow else [])


def assert_passed(result: Result) -> None:
    """The test's verdict on one model (after :func:`record`, so failures reach the table)."""
    assert not result.error, result.error
    assert result.default_ok and result.named_ok, result
