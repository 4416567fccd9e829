"""Files to model inputs: the one path every entry point reads through.

An :class:`InputFormat` says what the model takes (spatial size, channels, normalisation);
:meth:`InputFormat.load` reads one file (image, array, NIfTI volume, DICOM) into it.
:func:`input_format` builds one for a model: the channel count and the number of spatial axes
come from the model where its adapter can tell (``input_spec``: the first convolution, the
declared input shape), so a grayscale model gets one channel with no flag.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from interp_core.backend.protocol import input_spec
from interp_core.io.errors import FileReadError, InputError
from interp_core.io.images import MAX_PIXELS, display_rgb, read_image, to_channels

DEFAULT_CHANNELS = 3  # RGB, when the model does not say
DEFAULT_SPATIAL_DIMS = 2


@dataclass(frozen=True)
class LoadedInput:
    """One file as a model input, before normalisation.

    Attributes
    ----------
    pixels : np.ndarray
        float32 ``(*size, C)``, channels last.
    shape : tuple of int
        The spatial shape stored in the file (``(height, width)`` for an image).
    display : np.ndarray
        float32 ``(H, W, 3)`` in [0, 1] to draw the overlay on (a volume's middle slice).
    is_array : bool
        Read from an array file (``.npy``, ``.npz``, NIfTI, DICOM): its map is saved as an
        array too.
    """

    pixels: np.ndarray
    shape: tuple[int, ...]
    display: np.ndarray
    is_array: bool = False

    @property
    def width(self) -> int:
        return int(self.shape[-1])

    @property
    def height(self) -> int:
        return int(self.shape[-2]) if len(self.shape) > 1 else 1


@dataclass(frozen=True)
class InputFormat:
    """What a model takes, and how files become that.

    Attributes
    ----------
    size : tuple of int
        The spatial size, ``(H, W)`` or ``(D, H, W)``; inputs are resized to it.
    channels : int
        Channels the model takes; images are converted (gray, RGB, RGBA).
    mean, std : tuple of float
        Normalisation after scaling to [0, 1]: one number for every channel, or one each.
    max_pixels : int
        The pixel budget of an image (checked from its header before decoding).
    """

    size: tuple[int, ...]
    channels: int = DEFAULT_CHANNELS
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    max_pixels: int = MAX_PIXELS

    def __post_init__(self) -> None:
        if not self.size or min(self.size) < 1:
            raise InputError(f"size={self.size!r} must be positive integers")
        if self.channels < 1:
            raise InputError(f"channels={self.channels!r} must be a positive integer",
                             cli=f"--channels {self.channels} must be a positive integer")
        for name in ("mean", "std"):
            values = getattr(self, name)
            if len(values) not in (1, self.channels):
                raise InputError(
                    f"{name} has {len(values)} numbers and the model takes {self.channels} "
                    f"channel(s): give one number, or {self.channels}",
                    cli=f"--{name} has {len(values)} numbers and the model takes "
                        f"{self.channels} channel(s): give one number, or {self.channels} "
                        "(or set --channels)")
        if any(s == 0 for s in self.std):
            raise InputError(f"std={self.std!r} has a zero", cli=f"--std {self.std} has a zero")

    def load(self, path: str | os.PathLike[str]) -> LoadedInput:
        """One file as a model input.

        Raises
        ------
        FileReadError
            Any file that cannot be read as this input (the reason names what would work).
        """
        from interp_core.io.volumes import is_array_file

        if is_array_file(path):
            return self._load_array(Path(path))
        if len(self.size) != 2:
            raise FileReadError(
                path, f"an image is 2-D and the model takes {len(self.size)}-D inputs: give "
                ".npy, .npz or NIfTI volumes")
        image = read_image(path, (self.size[0], self.size[1]), max_pixels=self.max_pixels)
        pixels = to_channels(image.pixels, self.channels, path)
        return LoadedInput(pixels, (image.height, image.width), display_rgb(image.pixels))

    def _load_array(self, path: Path) -> LoadedInput:
        from interp_core.io.volumes import (
            arrange,
            display_image,
            middle_slice,
            read_array,
            resize_volume,
        )

        if len(self.size) < 2:  # before reading: the file would be read for nothing
            raise FileReadError(path, "1-D inputs have no overlay picture")
        stored = read_array(path, max_elements=self.max_pixels * 4)
        arranged = arrange(stored, spatial_dims=len(self.size), channels=self.channels,
                           path=path)
        pixels = resize_volume(arranged, self.size)
        return LoadedInput(pixels, tuple(arranged.shape[:-1]),
                           display_image(middle_slice(pixels)), is_array=True)

    def normalise(self, batch: np.ndarray) -> np.ndarray:
        """``(batch - mean) / std`` per channel, float32; ``batch`` is ``(N, *size, C)``."""
        mean = np.asarray(self.mean, dtype=np.float32)
        std = np.asarray(self.std, dtype=np.float32)
        return ((batch - mean) / std).astype(np.float32)


def input_format(backend: Any, model: Any, *, size: Sequence[int] | int,
                 channels: int | None = None, mean: Sequence[float] | float = 0.0,
                 std: Sequence[float] | float = 1.0, max_pixels: int = MAX_PIXELS
                 ) -> InputFormat:
    """The :class:`InputFormat` of ``model``.

    Parameters
    ----------
    backend, model
        The adapter and the model; ``backend.input_spec(model)`` gives the channels and
        spatial axes where the adapter has it.
    size : int or sequence of int
        One number (used on every spatial axis) or one per axis.
    channels : int, optional
        Overrides what the model declares (default: the model's, else 3).
    mean, std : float or sequence of float
        One number, or one per channel.
    """
    spec = input_spec(backend, model)
    declared_channels = spec.channels if spec is not None else None
    declared_dims = spec.spatial_dims if spec is not None else None
    sizes = (size,) if isinstance(size, int) else tuple(int(s) for s in size)
    dims = declared_dims or (len(sizes) if len(sizes) > 1 else DEFAULT_SPATIAL_DIMS)
    if len(sizes) == 1:
        sizes *= dims
    elif len(sizes) != dims:
        raise InputError(
            f"size {sizes} has {len(sizes)} numbers and the model takes {dims}-D inputs",
            cli=f"--size has {len(sizes)} numbers and the model takes {dims}-D inputs: give "
                f"one number or {dims} (e.g. {'x'.join(['64'] * dims)})")
    return InputFormat(
        size=sizes, channels=int(channels or declared_channels or DEFAULT_CHANNELS),
        mean=_numbers(mean), std=_numbers(std), max_pixels=max_pixels)


def _numbers(value: Sequence[float] | float) -> tuple[float, ...]:
    if isinstance(value, int | float):
        return (float(value),)
    return tuple(float(v) for v in value)


def parse_size(text: str) -> tuple[int, ...]:
    """``"224"`` -> (224,); ``"128x96"`` -> (128, 96) (height x width); ``"32x64x64"`` ->
    (32, 64, 64) (depth x height x width)."""
    try:
        values = tuple(int(p) for p in text.lower().split("x"))
    except ValueError:
        values = ()
    if not 1 <= len(values) <= 3 or min(values) < 1:
        raise InputError(f"size {text!r} must look like 224, 224x160 or 32x64x64",
                         cli=f"--size {text!r} must look like 224, 224x160 (height x width) "
                             "or 32x64x64 (depth x height x width)")
    return values


def parse_numbers(text: str, name: str) -> tuple[float, ...]:
    """``"0.485,0.456,0.406"`` -> a tuple; one number means the same for every channel."""
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise InputError(f"{name} {text!r} must be comma-separated numbers",
                         cli=f"--{name} {text!r} must be one number, or one per channel, "
                             "comma-separated") from None
    return values
