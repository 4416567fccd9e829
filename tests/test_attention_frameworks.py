"""The attention methods agree across torch, TensorFlow and JAX, and with the NumPy reference, on
the demo ViT's architecture with the same weights; threads get the serial results.

Maps and token relevance to 1e-5 (max abs). Weights: seeded random weights of the demo
architecture with sharpened attention, and the bundled trained weights where they ship.
"""

from __future__ import annotations

import itertools
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import interp_core as ic
from interp_core.backend.layout import to_backend_layout
from interp_core.datasets import make_shapes
from interp_core.datasets.demo_vit import ViTConfig, demo_vit_model, random_vit_weights
from interp_core.methods import method_class
from interp_core.testing.reference_transformer import (
    ReferenceTransformer,
    ReferenceTransformerBackend,
)
from tests.conftest import installed_frameworks

ALL = ("torch", "tensorflow", "jax")
METHODS = ("attentionrollout", "gradientrollout", "legrad")
CONFIG = ViTConfig(blocks=2)  # the demo's sizes, two blocks: fast, and the same code paths


def _available() -> list[str]:
    return installed_frameworks(ALL)


def _weights() -> dict[str, np.ndarray]:
    weights = random_vit_weights(CONFIG, seed=5)
    return {k: v * 4.0 if "/query/" in k or "/key/" in k else v for k, v in weights.items()}


@pytest.fixture(scope="module")
def explanations() -> dict[str, dict[str, ic.Explanation]]:
    images = make_shapes(4, seed=77).images
    weights = _weights()
    found = {}
    for backend in _available():
        model = demo_vit_model(backend, weights)
        x = to_backend_layout(images, ic.get_backend(backend), model)
        found[backend] = {name: method_class(name)(model).explain(x, [0, 1, 2, 3])
                          for name in METHODS}
    reference = ReferenceTransformer(weights, CONFIG)
    found["numpy"] = {name: method_class(name)(reference,
                                                  backend=ReferenceTransformerBackend())
                      .explain(images, [0, 1, 2, 3]) for name in METHODS}
    return found


@pytest.mark.parametrize("method", METHODS)
def test_every_framework_gives_the_reference_maps(explanations, method) -> None:
    if len(explanations) < 2:
        pytest.skip("no framework installed")
    for a, b in itertools.combinations(sorted(explanations), 2):
        ea, eb = explanations[a][method], explanations[b][method]
        assert ea.maps.shape == eb.maps.shape == (4, 64, 64)
        np.testing.assert_allclose(ea.raw["tokens"], eb.raw["tokens"], atol=1e-5,
                                   err_msg=f"{method}: tokens {a} vs {b}")
        np.testing.assert_allclose(ea.maps, eb.maps, atol=1e-5,
                                   err_msg=f"{method}: maps {a} vs {b}")
        np.testing.assert_allclose(ea.scores, eb.scores, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", ALL)
def test_threads_get_the_serial_maps(backend) -> None:
    if backend not in _available():
        pytest.skip(f"{backend} is not installed")
    model = demo_vit_model(backend, _weights())
    images = to_backend_layout(make_shapes(8, seed=3).images, ic.get_backend(backend), model)
    explainers = [method_class(name)(model) for name in METHODS]
    calls = [(explainers[i % 3], i % 8) for i in range(12)]

    def run(call):
        explainer, i = call
        return explainer(images[i : i + 1], [i % 5])

    serial = [run(c) for c in calls]
    with ThreadPoolExecutor(4) as pool:
        threaded = list(pool.map(run, calls))
    for want, got in zip(serial, threaded, strict=True):
        np.testing.assert_allclose(got, want, atol=1e-6)
