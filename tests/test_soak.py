"""Long runs: resident memory stays flat over many explanations, per adapter (issue 11, item 5).

Each adapter runs ``benchmarks/soak.py`` in its own subprocess (one framework's memory does
not mix with another's, nor with this test process): 30 warm-up Grad-CAM calls of the demo
model, then 150 measured calls with new images and targets each time. The growth of resident
memory over those 150 calls, extrapolated to 1,000 calls, must stay below 50 MB.
"""

from __future__ import annotations

import functools
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.conftest import require_framework

SOAK_SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "soak.py"
WARMUP = 30
CALLS = 150
LIMIT_MB_PER_1000 = 50.0
FRAMEWORK_MODULE = {"torch": "torch", "tensorflow": "tensorflow", "jax": "jax"}


@functools.cache
def load_soak() -> ModuleType:
    """``benchmarks/soak.py`` as a module (benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location("interp_soak_benchmark", SOAK_SCRIPT)
    assert spec is not None and spec.loader is not None, f"cannot load {SOAK_SCRIPT}"
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("backend", sorted(FRAMEWORK_MODULE))
def test_memory_growth_per_1000_calls_is_below_50mb(backend):
    require_framework(backend, FRAMEWORK_MODULE[backend])
    soak = load_soak()
    # one OpenMP thread: on a busy CI machine torch's threads would wait on each other
    result = soak.soak_in_subprocess(backend, CALLS, WARMUP, batch=4, threads=1, timeout=300)
    assert result.calls == CALLS and result.backend == backend
    assert result.calls_per_s > 0
    assert result.growth_per_1000_mb < LIMIT_MB_PER_1000, (
        f"{backend}: resident memory grew {result.rss_end_mb - result.rss_after_warmup_mb:.1f} "
        f"MB over {CALLS} calls ({result.growth_per_1000_mb:.1f} MB per 1,000; limit "
        f"{LIMIT_MB_PER_1000}): {result}"
    )


def test_resident_memory_reading_sees_an_allocation():
    """The RSS reader is live: touching 64 MB shows up (so a flat reading means flat memory)."""
    soak = load_soak()
    before, source = soak.settled_mb()
    if "peak" in source:
        pytest.skip(f"only a peak reading is available here ({source})")
    block = bytearray(64 * 2**20)
    block[:: 4096] = b"\x01" * len(block[:: 4096])  # touch every page
    after, _ = soak.resident_mb()
    del block
    assert after - before > 48, f"{source}: {before:.1f} -> {after:.1f} MB"
