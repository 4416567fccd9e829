"""Concurrent explanations of one model (a web server's worker pool) equal serial ones.

8 threads x 20 calls per adapter on the bundled demo model, every method in the mix, different
inputs and targets per call; afterwards the model's flags and hooks are as before.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from interp_core.backend.layout import to_backend_layout
from interp_core.backend.registry import get_backend
from interp_core.datasets import make_shapes
from interp_core.datasets.demo import FC, LAYER, demo_model
from interp_core.methods import METHODS, AttentionMethod
from tests.conftest import require_framework

THREADS = 8
CALLS = 20
FRAMEWORKS = {"torch": "torch", "tensorflow": "tensorflow", "jax": "jax"}
# Score-CAM and Ablation-CAM run one forward per channel: a smaller top_k / ratio keeps the
# test short without changing what it checks (the same calls serial and threaded).
OPTIONS = {
    "cam": {"fc": FC},
    "scorecam": {"top_k": 8, "batch_size": 8},
    "ablationcam": {"ratio_channels_to_ablate": 0.125, "batch_size": 16},
}

#: Every method that explains the demo CNN (the attention methods need a transformer).
CNN_METHODS = {name: cls for name, cls in METHODS.items()
               if not issubclass(cls, AttentionMethod)}


def _calls(n_images: int) -> list[tuple[str, np.ndarray, list[int]]]:
    """(method, image indices, targets) of every call, in a fixed order."""
    rng = np.random.default_rng(5)
    names = sorted(CNN_METHODS)
    calls = []
    for i in range(THREADS * CALLS):
        idx = rng.choice(n_images, size=2, replace=False)
        calls.append((names[i % len(names)], idx, rng.integers(0, 5, size=2).tolist()))
    return calls


@pytest.mark.parametrize("backend", sorted(FRAMEWORKS))
def test_threads_equal_serial_calls(backend):
    require_framework(backend, FRAMEWORKS[backend])
    model = demo_model(backend)
    impl = get_backend(backend)
    images = to_backend_layout(make_shapes(16, seed=21).images, impl, model)
    explainers = {name: cls(model, LAYER, backend=backend, **OPTIONS.get(name, {}))
                  for name, cls in CNN_METHODS.items()}
    calls = _calls(len(images))

    def run(call: tuple[str, np.ndarray, list[int]]) -> np.ndarray:
        name, idx, targets = call
        return explainers[name](images[idx], targets)

    before = _state(backend, model)
    serial = [run(c) for c in calls]
    with ThreadPoolExecutor(THREADS) as pool:
        threaded = list(pool.map(run, calls))
    for call, want, got in zip(calls, serial, threaded, strict=True):
        np.testing.assert_allclose(got, want, atol=1e-6, err_msg=f"{backend} {call[0]}")
    assert _state(backend, model) == before


def _state(backend: str, model) -> tuple:
    """What an explanation must leave as it found: training flags and hooks (torch), the
    trainable flags and weights' identity (Keras), the module's state (NNX)."""
    if backend == "torch":
        return tuple((m.training, len(m._forward_hooks), len(m._forward_pre_hooks),
                      len(m._backward_hooks)) for m in model.modules())
    if backend == "tensorflow":
        return (*((w.name, w.trainable) for w in model.weights), model.trainable)
    from flax import nnx

    state = nnx.state(model)
    return tuple(str(k) for k, _ in nnx.to_flat_state(state))  # structure unchanged
