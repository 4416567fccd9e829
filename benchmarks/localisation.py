"""Localisation of every method on held-out shapes images, per backend.

Pointing game (the map's maximum falls inside the object's box) and energy-in-box (share of the
map's mass inside the box) on 500 generated images the demo model never saw, explaining the
true class. Prints one table per backend.

    python benchmarks/localisation.py [--n 500] [--backends torch,tensorflow,jax]
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

import interp_core as ic
from interp_core.backend.layout import to_backend_layout
from interp_core.datasets import make_shapes
from interp_core.datasets.demo import FC, LAYER, demo_model
from interp_core.methods import method_class
from interp_core.metrics import energy_pointing_game, pointing_game

HELD_OUT_SEED = 4242  # training used seeds 1000 (train) and 2000 (held-out accuracy)
FAST = ("cam", "gradcam", "gradcam++", "xgradcam", "hirescam", "gradcam-elementwise",
        "layercam", "eigencam", "eigengradcam")


def evaluate(backend: str, methods: list[str], n: int, batch: int) -> dict[str, tuple]:
    model = demo_model(backend)
    data = make_shapes(n, seed=HELD_OUT_SEED)
    x_all = to_backend_layout(data.images, ic.get_backend(backend))
    rows = {}
    for name in methods:
        options = {"fc": FC} if name == "cam" else {}
        cam = method_class(name)(model, LAYER, backend=backend, **options)
        start = time.perf_counter()
        maps = np.concatenate([
            cam(x_all[i : i + batch], data.labels[i : i + batch].tolist())
            for i in range(0, n, batch)
        ])
        elapsed = time.perf_counter() - start
        hits = pointing_game(maps, boxes=data.boxes)
        energy = energy_pointing_game(maps, boxes=data.boxes)
        rows[name] = (hits.mean(), energy.mean(), elapsed / n * 1000)
    return rows


def main() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--backends", default=",".join(ic.backends()))
    parser.add_argument("--methods", default=None,
                        help="comma-separated; default: every method (perturbation ones too)")
    args = parser.parse_args()
    methods = args.methods.split(",") if args.methods else [
        m for m in ic.methods() if m in FAST] + [m for m in ic.methods() if m not in FAST]
    data = make_shapes(args.n, seed=HELD_OUT_SEED)
    box_area = ((data.boxes[:, 2] - data.boxes[:, 0]) * (data.boxes[:, 3] - data.boxes[:, 1]))
    print(f"{args.n} held-out shapes images (seed {HELD_OUT_SEED}), layer {LAYER}, true class; "
          f"a uniform map would score energy-in-box {np.mean(box_area / 64**2):.3f}")
    for backend in args.backends.split(","):
        if backend not in ic.backends():
            print(f"\nbackend {backend}: not installed, skipped")
            continue
        print(f"\nbackend {backend}")
        print(f"  {'method':22s} {'pointing game':>14s} {'energy-in-box':>14s} {'ms/image':>9s}")
        for name, (hit, energy, ms) in evaluate(backend, methods, args.n, args.batch).items():
            print(f"  {name:22s} {hit:14.3f} {energy:14.3f} {ms:9.2f}")


if __name__ == "__main__":
    main()
