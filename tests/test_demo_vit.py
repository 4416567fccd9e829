"""The bundled demo ViT (``interp_core/data/demo_vit.npz``, scripts/train_demo_vit.py): its
weights load with the demo sizes, stay small, and classify held-out shapes images in every
installed framework (the same predictions everywhere)."""

from __future__ import annotations

from importlib import resources

import numpy as np
import pytest

import interp_core as ic
from interp_core.backend.layout import to_backend_layout
from interp_core.backend.target_spec import resolve_targets
from interp_core.datasets import CLASSES, make_shapes
from interp_core.datasets.demo_vit import (
    WEIGHTS_FILE,
    ViTConfig,
    demo_vit_model,
    demo_vit_weights,
    random_vit_weights,
)
from tests.conftest import require_framework

FRAMEWORKS = {"torch": "torch", "tensorflow": "tensorflow", "jax": "jax"}
HELD_OUT = make_shapes(300, seed=4242)  # not a seed the training script draws from
#: The torch model scores 0.957 on these 300 images (0.9585 on the training script's 2000
#: held-out images); the margin leaves room for weights retrained with another thread count.
MIN_ACCURACY = 0.93


def test_the_bundled_weights_have_the_demo_sizes_and_format() -> None:
    weights = demo_vit_weights()
    assert ViTConfig.of(weights) == ViTConfig()
    expected = random_vit_weights(ViTConfig())
    assert sorted(weights) == sorted(expected)
    for key, value in weights.items():
        assert value.shape == expected[key].shape, key
        assert value.dtype == np.float32 and np.isfinite(value).all(), key


def test_the_bundled_weights_are_small() -> None:
    ref = resources.files("interp_core") / "data" / WEIGHTS_FILE
    with resources.as_file(ref) as path:
        assert path.stat().st_size < 2 * 1024 * 1024


@pytest.fixture(scope="module")
def torch_predictions() -> np.ndarray:
    require_framework("torch", "torch")
    return _predictions("torch")


def _predictions(backend: str) -> np.ndarray:
    """The classes the bundled model in ``backend`` predicts for :data:`HELD_OUT`."""
    model = demo_vit_model(backend)
    adapter = ic.get_backend(backend)
    x = to_backend_layout(HELD_OUT.images, adapter, model)
    n = len(HELD_OUT)
    logits = np.stack([adapter.predict(model, x, resolve_targets([k] * n, n), batch_size=100)
                       for k in range(len(CLASSES))], axis=1)
    return logits.argmax(1)


def test_the_torch_model_classifies_held_out_images(torch_predictions: np.ndarray) -> None:
    accuracy = float((torch_predictions == HELD_OUT.labels).mean())
    assert accuracy >= MIN_ACCURACY, accuracy


@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_every_framework_predicts_what_torch_does(backend: str,
                                                  torch_predictions: np.ndarray) -> None:
    require_framework(backend, FRAMEWORKS[backend])
    np.testing.assert_array_equal(_predictions(backend), torch_predictions)
