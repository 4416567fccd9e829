"""Reading image files for the command line: discovery, decoding, resizing, normalising."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def find_images(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Image files named directly or found (recursively, sorted) in folders.

    Files named directly are kept whatever their suffix (a corrupt or non-image file is reported
    when it is read); in folders only files with an image suffix count.

    Raises
    ------
    FileNotFoundError
        A path that does not exist.
    ValueError
        A folder without a single image file.
    """
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            images = sorted(p for p in path.rglob("*")
                            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not images:
                raise ValueError(
                    f"folder {str(path)!r} has no image files ({', '.join(IMAGE_SUFFIXES)})"
                )
            found.extend(images)
        elif path.is_file():
            found.append(path)
        else:
            raise FileNotFoundError(f"no such file or folder: {str(path)!r}")
    return found


@dataclass(frozen=True)
class Preprocess:
    """How files become model inputs: resize to ``size``, scale to [0, 1], normalise."""

    size: tuple[int, int]
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)

    def load(self, path: Path) -> np.ndarray:
        """One file as float32 ``(H, W, 3)`` in [0, 1], resized (raises on unreadable files)."""
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as img:
                img = img.convert("RGB").resize((self.size[1], self.size[0]),
                                                Image.Resampling.BILINEAR)
                return np.asarray(img, dtype=np.float32) / 255.0
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            raise ValueError(f"cannot read {str(path)!r} as an image: {exc}") from exc

    def normalise(self, images: np.ndarray) -> np.ndarray:
        """``(images - mean) / std`` per channel, channels last."""
        mean = np.asarray(self.mean, dtype=np.float32)
        std = np.asarray(self.std, dtype=np.float32)
        return ((images - mean) / std).astype(np.float32)


def parse_size(text: str) -> tuple[int, int]:
    """``"224"`` -> (224, 224); ``"128x96"`` -> (128, 96) as (height, width)."""
    parts = text.lower().split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise ValueError(f"--size {text!r} must look like 224 or 224x160") from None
    if len(values) == 1:
        values *= 2
    if len(values) != 2 or min(values) < 1:
        raise ValueError(f"--size {text!r} must look like 224 or 224x160 (height x width)")
    return values[0], values[1]


def parse_triple(text: str, name: str) -> tuple[float, float, float]:
    """``"0.485,0.456,0.406"`` -> a 3-tuple; one number is used for all three channels."""
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise ValueError(
            f"--{name} {text!r} must be one number or three, comma-separated"
        ) from None
    if len(values) == 1:
        values *= 3
    if len(values) != 3:
        raise ValueError(f"--{name} {text!r} must be one number or three, comma-separated")
    return values[0], values[1], values[2]


def batches(items: Sequence[Path], size: int) -> Iterable[Sequence[Path]]:
    """Consecutive chunks of ``size`` items."""
    for start in range(0, len(items), size):
        yield items[start : start + size]
