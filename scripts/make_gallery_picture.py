"""Make docs/images/demo_gallery.png: the `interp demo` gallery as one picture for the README.

    python scripts/make_gallery_picture.py [--backend torch] [--rows 4]

Runs `interp demo` into a temporary folder and tiles its first rows (input, then one overlay
per method) with the method names on top.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from interp_core.cli import command as cli

OUT = Path(__file__).resolve().parents[1] / "docs" / "images" / "demo_gallery.png"
TILE = 128
LABEL = 18


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="torch")
    parser.add_argument("--rows", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if cli.main(["demo", "--backend", args.backend, "--out", tmp]) != 0:
            raise SystemExit("interp demo failed")
        folder = Path(tmp)
        methods = [m for m in cli.DEMO_METHODS
                   if (folder / f"image_00_{m.replace('+', 'p')}.png").exists()]
        columns = ["input", *methods]
        canvas = Image.new("RGB", (TILE * len(columns), LABEL + TILE * args.rows), "white")
        draw = ImageDraw.Draw(canvas)
        for j, name in enumerate(columns):
            draw.text((j * TILE + 4, 3), name, fill="black")
            for i in range(args.rows):
                suffix = "" if name == "input" else f"_{name.replace('+', 'p')}"
                tile = Image.open(folder / f"image_{i:02d}{suffix}.png").convert("RGB")
                canvas.paste(tile.resize((TILE, TILE), Image.Resampling.BILINEAR),
                             (j * TILE, LABEL + i * TILE))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(OUT, optimize=True)
    print(f"wrote {OUT} ({OUT.stat().st_size // 1024} KB, {np.asarray(canvas).shape})")


if __name__ == "__main__":
    main()
