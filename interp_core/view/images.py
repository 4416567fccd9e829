"""PNG bytes for the viewer: a stored map in colour, a source image, a mask.

Source images go through the project's reader (:func:`interp_core.io.images.read_image`:
16-bit, grayscale, palette, CMYK, float TIFF; decompression bombs refused), then become an
8-bit RGB PNG as :func:`interp_core.io.images.display_rgb` and
:func:`interp_core.viz.to_uint8_image` make it. Pillow encodes.
"""

from __future__ import annotations

import io

import numpy as np

from interp_core.audit.results import decode_map
from interp_core.io.images import display_rgb, read_image, read_mask
from interp_core.viz import apply_colormap, to_uint8_image

COLORMAP = "jet"  # the colours of the audit's overlays


def png_bytes(pixels: np.ndarray) -> bytes:
    """uint8 ``(H, W, 3)`` or ``(H, W, 4)`` as PNG bytes."""
    from PIL import Image

    mode = "RGBA" if pixels.shape[-1] == 4 else "RGB"
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8), mode=mode).save(
        buffer, format="PNG", compress_level=3)
    return buffer.getvalue()


def map_png(blob: bytes, height: int, width: int, opaque: bool = False,
            colormap: str = COLORMAP) -> bytes:
    """A stored map (float16 bytes, values in [0, 1]) as an RGBA PNG of ``height x width``.

    The colour is the map's value in ``colormap``; the alpha is the value too (a map fades
    out where it is low), or 255 everywhere with ``opaque``.
    """
    values = np.clip(np.nan_to_num(decode_map(blob, height, width), nan=0.0), 0.0, 1.0)
    rgb = apply_colormap(values, colormap)
    alpha = (np.full(values.shape, 255, np.uint8) if opaque
             else np.round(values * 255).astype(np.uint8))
    return png_bytes(np.concatenate([rgb, alpha[..., None]], axis=-1))


def image_png(path: str) -> bytes:
    """The image file ``path`` as an 8-bit RGB PNG of its own size.

    Raises
    ------
    interp_core.io.errors.FileReadError
        The file is missing or not an image the reader decodes.
    """
    pixels = read_image(path).pixels
    return png_bytes(to_uint8_image(display_rgb(pixels)))


def mask_png(path: str, height: int, width: int) -> bytes:
    """A mask image as an RGBA PNG of ``height x width``: white where the object is,
    transparent elsewhere."""
    mask = read_mask(path, (height, width))
    out = np.zeros((*mask.shape, 4), np.uint8)
    out[mask] = (255, 255, 255, 255)
    return png_bytes(out)

