"""Render the pictures of docs/features.md from the bundled demo model.

Feature grids of a few shapes images and filter patterns of ``block3`` channels and of the five
classes, written as small PNGs under ``docs/images/``. On one machine and backend the same
weights and seeds give the same files (other backends give visually the same patterns; see
"The same pattern on every backend" in docs/features.md).

    python scripts/make_feature_docs.py [--backend torch] [--out docs/images] [--steps 256]
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np

import interp_core as ic
from interp_core.backend.layout import input_layout
from interp_core.datasets.demo import CLASSES, LAYER, demo_model
from interp_core.datasets.shapes import make_shapes


def native(images: np.ndarray, layout: str) -> np.ndarray:
    """Channels-last images in the model's layout."""
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2) if layout == "channels_first"
                                else images)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", default=None, help="default: the first installed")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "docs"
                                             / "images"))
    parser.add_argument("--steps", type=int, default=256)
    args = parser.parse_args()
    out = Path(args.out)
    model = demo_model(args.backend)
    layout = input_layout(ic.get_backend(model), model)

    batch = make_shapes(4, seed=7)
    written = [ic.save_png(out / "features_inputs.png", ic.feature_grid(
        batch.images, ncols=4, labels=[CLASSES[k] for k in batch.labels], scale=2))]
    maps = {layer: ic.feature_maps(model, native(batch.images, layout), layer)
            for layer in ("block1", LAYER)}
    written.append(ic.save_png(out / "feature_maps_block1.png", ic.feature_grid(
        maps["block1"][0], ncols=8, colormap="viridis", labels=True)))
    written.append(ic.save_png(out / "feature_maps_block3_top16.png", ic.feature_grid(
        maps[LAYER][0], ncols=8, colormap="viridis", labels=True, top=16, scale=4)))

    channels = list(range(16))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # channels silent on grey stay noise
        pixel = ic.filter_patterns(model, LAYER, channels, (64, 64), steps=args.steps)
        smooth = ic.filter_patterns(model, LAYER, channels, (64, 64), steps=args.steps,
                                    decorrelate=True)
        classes = ic.filter_patterns(model, None, range(len(CLASSES)), (64, 64),
                                     steps=args.steps, decorrelate=True)
    written.append(ic.save_png(out / "filter_patterns_block3.png",
                               ic.feature_grid(pixel, ncols=8, labels=True)))
    written.append(ic.save_png(out / "filter_patterns_block3_decorrelated.png",
                               ic.feature_grid(smooth, ncols=8, labels=True)))
    written.append(ic.save_png(out / "filter_patterns_classes.png",
                               ic.feature_grid(classes, ncols=5, labels=list(CLASSES))))
    for path in written:
        print(path)


if __name__ == "__main__":
    main()
