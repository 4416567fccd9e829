"""The bundled demo model: a small shapes classifier, the same weights in every framework.

Architecture (layer names are the same in every adapter; channels-last shapes shown)::

    input          (N, 64, 64, 3) images in [0, 1]  (torch: (N, 3, 64, 64))
    "block1"       Conv 3x3, 3 -> 16, stride 1, padding 1 ("same"), bias, then ReLU
    "pool1"        MaxPool 2x2, stride 2                           -> (N, 32, 32, 16)
    "block2"       Conv 3x3, 16 -> 32, padding 1, bias, then ReLU
    "pool2"        MaxPool 2x2, stride 2                           -> (N, 16, 16, 32)
    "block3"       Conv 3x3, 32 -> 64, padding 1, bias, then ReLU  -> (N, 16, 16, 64)  CAM layer
    "gap"          global average pooling                          -> (N, 64)
    "fc"           Dense 64 -> 5, bias                             -> logits (N, 5)

Weights (``interp_core/data/demo_shapes.npz``), float32, channels-last conventions:
``block{i}/kernel`` ``(3, 3, C_in, C_out)``, ``block{i}/bias`` ``(C_out,)``,
``fc/kernel`` ``(64, 5)`` (inputs, outputs), ``fc/bias`` ``(5,)``. A torch builder transposes
kernels to ``(C_out, C_in, 3, 3)`` and ``fc/kernel`` to ``(5, 64)``.

Each adapter names a ``demo`` builder in its :class:`~interp_core.backend.BackendRegistration`
(``build(weights: dict[str, np.ndarray]) -> native model``); :func:`demo_model` reaches it
through the plugin registry, so the core never imports an adapter.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

import numpy as np

from interp_core.backend.registry import backends, load_attribute, registrations
from interp_core.datasets.shapes import CLASSES as CLASSES  # the demo model's outputs, in order

LAYER = "block3"
FC = "fc"
IMAGE_SIZE = 64
WEIGHTS_FILE = "demo_shapes.npz"


def demo_weights() -> dict[str, np.ndarray]:
    """The bundled weights as a dict of float32 arrays (see the module docstring)."""
    return bundled_weights(WEIGHTS_FILE, "scripts/train_demo_model.py")


def demo_model(backend: str | None = None, weights: dict[str, np.ndarray] | None = None) -> Any:
    """The demo model in ``backend``'s framework (default: the first installed backend that
    provides one), built from the bundled weights or ``weights``."""
    return build_bundled("demo", "the demo model", backend,
                         demo_weights() if weights is None else weights)


def bundled_weights(file_name: str, script: str) -> dict[str, np.ndarray]:
    """``interp_core/data/<file_name>`` as a dict of float32 arrays (``script`` makes it)."""
    ref = resources.files("interp_core") / "data" / file_name
    if not ref.is_file():
        raise FileNotFoundError(f"{file_name} is missing from the package; run {script}")
    with resources.as_file(ref) as path, np.load(path) as data:
        return {k: data[k].astype(np.float32) for k in data.files}


def build_bundled(field: str, what: str, backend: str | None,
                  weights: dict[str, np.ndarray]) -> Any:
    """A bundled model in ``backend``'s framework, by the builder its registration names in
    ``field`` (``"demo"``, ``"demo_vit"``); default: the first installed backend with one."""
    regs = registrations()
    able = [name for name in backends() if getattr(regs[name], field) is not None]
    if backend is None:
        if not able:
            raise ValueError(
                f"no installed backend provides {what} (installed: {backends()}); "
                "pip install interp-torch, interp-tensorflow or interp-jax"
            )
        backend = able[0]
    if backend not in regs:
        raise ValueError(f"backend {backend!r} is not installed; installed: {backends()}")
    if backend not in able:
        raise ValueError(f"backend {backend!r} does not provide {what}; these do: {able}")
    reg = regs[backend]
    return load_attribute(reg, getattr(reg, field))(weights)


def random_demo_weights(seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded He-initialised weights of the demo architecture (the model before training).

    Same keys and shapes as :func:`demo_weights`; the same seed gives the same weights on
    every machine.
    """
    rng = np.random.default_rng(seed)
    weights = {}
    for i, (cin, cout) in enumerate([(3, 16), (16, 32), (32, 64)], start=1):
        weights[f"block{i}/kernel"] = (rng.normal(0, 1, (3, 3, cin, cout))
                                       * np.sqrt(2 / (9 * cin))).astype(np.float32)
        weights[f"block{i}/bias"] = rng.normal(0, 0.01, cout).astype(np.float32)
    weights["fc/kernel"] = rng.normal(0, 0.1, (64, len(CLASSES))).astype(np.float32)
    weights["fc/bias"] = np.zeros(len(CLASSES), np.float32)
    return weights
