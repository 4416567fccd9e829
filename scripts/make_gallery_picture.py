"""Make docs/images/demo_gallery.png: the `interp demo` gallery as one picture for the README.

    python scripts/make_gallery_picture.py [--backend torch] [--rows 4]

Runs `interp demo` into a temporary folder and tiles its first rows with the method names on
top, in bands: on the CNN, the CAM family (maps from one layer), then the methods that attribute
to the input (``needs == "input gradients"`` in ``interp_core.methods.method_table()``); then
the vision transformer's methods, where the backend builds it. Each band starts with the input
images.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from interp_core.cli import command as cli
from interp_core.cli.demo import DEMO_METHODS, VIT_METHODS
from interp_core.methods import method_table

OUT = Path(__file__).resolve().parents[1] / "docs" / "images" / "demo_gallery.png"
TILE = 128
LABEL = 18
GAP = 12


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="torch")
    parser.add_argument("--rows", type=int, default=4)
    args = parser.parse_args()
    needs = {m.name: m.needs for m in method_table()}
    with tempfile.TemporaryDirectory() as tmp:
        if cli.main(["demo", "--backend", args.backend, "--out", tmp]) != 0:
            raise SystemExit("interp demo failed")
        folder = Path(tmp)

        def shown(names: tuple[str, ...], prefix: str, label: str) -> list[tuple[str, str]]:
            """(label, file suffix) of each method with overlays in the folder."""
            files = [(label + m, f"_{prefix}{m.replace('+', 'p')}") for m in names]
            return [(t, f) for t, f in files if (folder / f"image_00{f}.png").exists()]

        cnn = shown(DEMO_METHODS, "", "")
        bands = [[c for c in cnn if needs[c[0]] != "input gradients"],
                 [c for c in cnn if needs[c[0]] == "input gradients"],
                 shown(VIT_METHODS, "vit_", "ViT ")]
        bands = [[("input", ""), *b] for b in bands if b]
        width = TILE * max(len(b) for b in bands)
        band_height = LABEL + TILE * args.rows
        canvas = Image.new("RGB", (width, band_height * len(bands) + GAP * (len(bands) - 1)),
                           "white")
        draw = ImageDraw.Draw(canvas)
        for b, columns in enumerate(bands):
            top = b * (band_height + GAP)
            for j, (label, suffix) in enumerate(columns):
                draw.text((j * TILE + 4, top + 3), label, fill="black")
                for i in range(args.rows):
                    tile = Image.open(folder / f"image_{i:02d}{suffix}.png").convert("RGB")
                    canvas.paste(tile.resize((TILE, TILE), Image.Resampling.BILINEAR),
                                 (j * TILE, top + LABEL + i * TILE))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(OUT, optimize=True)
    print(f"wrote {OUT} ({OUT.stat().st_size // 1024} KB, {np.asarray(canvas).shape})")


if __name__ == "__main__":
    main()
