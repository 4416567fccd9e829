"""Localisation of every method on held-out shapes images, per backend and demo model.

Pointing game (the map's maximum falls inside the object's box) and energy-in-box (share of the
map's mass inside the box) on 500 generated images the demo models never saw, explaining the
true class. Prints one table per backend and model: the demo CNN (every method) and the demo
vision transformer (``--models vit``: token Grad-CAM, the three attention methods, Saliency and
Integrated Gradients), each with a random-map baseline row (uniform noise maps, seeded).

    python benchmarks/localisation.py [--n 500] [--backends torch,tensorflow,jax]
                                      [--models cnn,vit] [--markdown]
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
from interp_core.datasets.demo_vit import demo_vit_model
from interp_core.methods import AttentionMethod, method_class
from interp_core.metrics import energy_pointing_game, pointing_game

HELD_OUT_SEED = 4242  # training used seeds 1000 (train) and 2000 (held-out accuracy)
FAST = ("cam", "gradcam", "gradcam++", "xgradcam", "hirescam", "gradcam-elementwise",
        "layercam", "eigencam", "eigengradcam")
#: What runs on the vision transformer: token Grad-CAM (``layer=None`` finds the token layer),
#: the attention methods and two input-gradient methods.
VIT_METHODS = ("gradcam", "attentionrollout", "gradientrollout", "legrad", "saliency",
               "integratedgradients")
RANDOM = "random map"


def evaluate(backend: str, model_kind: str, methods: list[str], n: int,
             batch: int) -> dict[str, tuple]:
    """``{method: (pointing game, energy-in-box, ms per image)}``, plus the random baseline."""
    model = demo_model(backend) if model_kind == "cnn" else demo_vit_model(backend)
    layer = LAYER if model_kind == "cnn" else None
    data = make_shapes(n, seed=HELD_OUT_SEED)
    x_all = to_backend_layout(data.images, ic.get_backend(backend))
    rows = {}
    for name in methods:
        options = {"fc": FC} if name == "cam" else {}
        explainer = method_class(name)(model, layer, backend=backend, **options)
        start = time.perf_counter()
        maps = np.concatenate([
            explainer(x_all[i : i + batch], data.labels[i : i + batch].tolist())
            for i in range(0, n, batch)
        ])
        elapsed = time.perf_counter() - start
        rows[name] = (*_scores(maps, data.boxes), elapsed / n * 1000)
    noise = np.random.default_rng(0).random((n, *data.images.shape[1:3])).astype(np.float32)
    rows[RANDOM] = (*_scores(noise, data.boxes), 0.0)
    return rows


def _scores(maps: np.ndarray, boxes: np.ndarray) -> tuple[float, float]:
    return (float(pointing_game(maps, boxes=boxes).mean()),
            float(energy_pointing_game(maps, boxes=boxes).mean()))


def main() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--backends", default=",".join(ic.backends()))
    parser.add_argument("--methods", default=None,
                        help="comma-separated, for the CNN; default: every method that runs "
                             "on it (perturbation ones too)")
    parser.add_argument("--models", default="cnn,vit", help="cnn, vit or both")
    parser.add_argument("--markdown", action="store_true", help="Markdown tables")
    args = parser.parse_args()
    cnn_methods = [m for m in ic.methods()
                   if not issubclass(method_class(m), AttentionMethod)]
    methods = {"cnn": args.methods.split(",") if args.methods else
               [m for m in cnn_methods if m in FAST] + [m for m in cnn_methods if m not in FAST],
               "vit": list(VIT_METHODS)}
    data = make_shapes(args.n, seed=HELD_OUT_SEED)
    box_area = ((data.boxes[:, 2] - data.boxes[:, 0]) * (data.boxes[:, 3] - data.boxes[:, 1]))
    print(f"{args.n} held-out shapes images (seed {HELD_OUT_SEED}), CNN layer {LAYER}, ViT layer "
          f"found by layer=None (token Grad-CAM), true class; "
          f"a uniform map would score energy-in-box {np.mean(box_area / 64**2):.3f}")
    for backend in args.backends.split(","):
        if backend not in ic.backends():
            print(f"\nbackend {backend}: not installed, skipped")
            continue
        for kind in args.models.split(","):
            rows = evaluate(backend, kind, methods[kind], args.n, args.batch)
            print(f"\nbackend {backend}, demo {kind.upper()}")
            if args.markdown:
                print("\n| method | pointing game | energy-in-box | ms/image |\n|---|---|---|---|")
                for name, (hit, energy, ms) in rows.items():
                    print(f"| {name} | {hit:.3f} | {energy:.3f} | {ms:.2f} |")
                continue
            print(f"  {'method':22s} {'pointing game':>14s} {'energy-in-box':>14s} "
                  f"{'ms/image':>9s}")
            for name, (hit, energy, ms) in rows.items():
                print(f"  {name:22s} {hit:14.3f} {energy:14.3f} {ms:9.2f}")


if __name__ == "__main__":
    main()
