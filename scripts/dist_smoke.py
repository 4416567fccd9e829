"""Smoke test of the built wheels, run by scripts/check_dist.sh inside its fresh venv.

Run from outside the repository (the script's own folder is the only one it adds to
``sys.path``), so every import below comes from the installed wheels. Arguments: the backends
that must be installed (default: torch). Each one explains the bundled demo CNN and demo ViT.
"""

from __future__ import annotations

import sys
import sysconfig
from importlib import metadata, resources
from pathlib import Path

import numpy as np

import interp_core as ic
from interp_core.datasets import make_shapes
from interp_core.datasets.demo import LAYER, demo_model
from interp_core.datasets.demo_vit import demo_vit_model

EXPECTED = sys.argv[1:] or ["torch"]
ADAPTERS = {"torch": "interp_torch", "tensorflow": "interp_tensorflow", "jax": "interp_jax"}
DISTRIBUTIONS = {"interp_core": "interp-core", "interp_torch": "interp-torch",
                 "interp_tensorflow": "interp-tensorflow", "interp_jax": "interp-jax"}


def installed_from_wheel(package: str) -> None:
    """``package`` lives in this venv's site-packages, with py.typed, not in a checkout."""
    site = Path(sysconfig.get_paths()["purelib"]).resolve()
    module = __import__(package)
    where = Path(module.__file__).resolve()
    assert where.is_relative_to(site), f"{package} imported from {where}, not from {site}"
    assert (resources.files(package) / "py.typed").is_file(), f"{package}: no py.typed"
    dist = metadata.distribution(DISTRIBUTIONS[package])
    assert dist.metadata["License-Expression"] == "Apache-2.0", dist.metadata["License-Expression"]
    direct_url = dist.read_text("direct_url.json") or ""
    assert '"editable": true' not in direct_url, f"{package} is an editable install"


installed_from_wheel("interp_core")
assert ic.__version__ == metadata.version("interp-core"), ic.__version__
assert {"cam", "gradcam", "gradcam++", "scorecam"} <= set(ic.methods()), ic.methods()
assert set(EXPECTED) <= set(ic.backends()), (EXPECTED, ic.backends())

batch = make_shapes(4, seed=0)
for backend in EXPECTED:
    installed_from_wheel(ADAPTERS[backend])
    model = demo_model(backend)
    x = batch.channels_first() if backend == "torch" else batch.images
    maps = ic.GradCAM(model, layer=LAYER)(x, targets=batch.labels.tolist())
    assert maps.shape == (4, 64, 64) and maps.dtype == np.float32, (maps.shape, maps.dtype)
    assert np.isfinite(maps).all() and maps.min() >= 0.0 and maps.max() <= 1.0
    assert maps.max() > 0.0, "all-zero maps"
    print(f"{backend}: GradCAM on the demo model, maps {maps.shape} in [0, 1]")
    vit = demo_vit_model(backend)  # the bundled trained weights, read from the wheel
    rollout = ic.explain(vit, x, method="attentionrollout")
    assert rollout.shape == (4, 64, 64) and np.isfinite(rollout).all(), rollout.shape
    print(f"{backend}: attention rollout on the demo ViT, maps {rollout.shape}")
print(f"interp-core {ic.__version__}: wheels installed and working ({', '.join(EXPECTED)})")
