"""Reading image files for the command line: discovery, decoding, resizing, normalising."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


#: Images with more pixels than this are refused before decoding (Pillow's own default
#: limit, about 0.25 GiB of RGB): a small file can claim a huge image (a decompression bomb).
MAX_PIXELS = 89_478_485
#: Modes with more than 8 bits per sample that Pillow's RGB conversion would clip at 255:
#: 16-bit grayscale (PNG, TIFF) and 32-bit integers, read as 16-bit values.
_WIDE_INTEGER_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")


class UnreadableImageError(ValueError):
    """A file that is not a readable image; ``reason`` says why in a few words."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"cannot read {str(path)!r} as an image: {reason}")
        self.path = path
        self.reason = reason


@dataclass(frozen=True)
class Preprocess:
    """How files become model inputs: resize to ``size``, scale to [0, 1], normalise."""

    size: tuple[int, int]
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    max_pixels: int = MAX_PIXELS

    def load(self, path: Path) -> np.ndarray:
        """One file as float32 ``(H, W, 3)`` in [0, 1], resized.

        Any mode Pillow reads works: grayscale and palette images are expanded to RGB, alpha
        is dropped, CMYK is converted, 16-bit images keep their range (65535 is white); an
        animated image gives its first frame.

        Raises
        ------
        UnreadableImageError
            An empty, truncated or unrecognised file, one that claims more than
            ``max_pixels`` pixels, or any other decoding failure.
        """
        from PIL import Image, UnidentifiedImageError

        try:
            if path.stat().st_size == 0:
                raise UnreadableImageError(path, "empty file (0 bytes)")
            with warnings.catch_warnings():
                # Pillow warns between its limit and twice it, and raises above: refuse both.
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(path) as img:
                    width, height = img.size
                    if width * height > self.max_pixels:
                        raise UnreadableImageError(
                            path, f"its header claims {width}x{height} pixels, more than the "
                            f"limit of {self.max_pixels:,} (a decompression bomb?)")
                    img.load()  # decode now: a truncated file fails here
                    return self._to_array(img)
        except UnreadableImageError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise UnreadableImageError(path, f"refused as a decompression bomb: {exc}") from exc
        except UnidentifiedImageError as exc:
            raise UnreadableImageError(path, "not an image format Pillow recognises") from exc
        except Exception as exc:  # decoders raise many kinds; a bad file must not stop a run
            raise UnreadableImageError(path, f"{type(exc).__name__}: {exc}") from exc

    def _to_array(self, img: Any) -> np.ndarray:
        from PIL import Image

        size = (self.size[1], self.size[0])
        if img.mode in _WIDE_INTEGER_MODES or img.mode == "F":
            scale = 65535.0 if img.mode != "F" else 1.0
            gray = np.clip(np.asarray(img, dtype=np.float32) / scale, 0.0, 1.0)
            resized = Image.fromarray(gray).resize(size, Image.Resampling.BILINEAR)
            return np.repeat(np.asarray(resized, dtype=np.float32)[..., None], 3, axis=-1)
        rgb = img.convert("RGB").resize(size, Image.Resampling.BILINEAR)
        return np.asarray(rgb, dtype=np.float32) / 255.0

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
