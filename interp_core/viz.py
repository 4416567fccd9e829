"""Colormaps, heatmap overlays and PNG writing (NumPy; Pillow only to write files)."""

from __future__ import annotations

import os
from functools import lru_cache

import numpy as np

# Anchor colours (RGB in [0, 1]) sampled from the perceptually uniform maps; interpolated to
# 256 entries. matplotlib, when installed, supplies the exact tables and every other name.
_ANCHORS: dict[str, list[tuple[float, float, float]]] = {
    "viridis": [(0.267, 0.005, 0.329), (0.283, 0.141, 0.458), (0.254, 0.265, 0.530),
                (0.207, 0.372, 0.553), (0.164, 0.471, 0.558), (0.128, 0.567, 0.551),
                (0.135, 0.659, 0.518), (0.267, 0.749, 0.441), (0.478, 0.821, 0.318),
                (0.741, 0.873, 0.150), (0.993, 0.906, 0.144)],
    "inferno": [(0.001, 0.000, 0.014), (0.087, 0.045, 0.225), (0.258, 0.039, 0.406),
                (0.416, 0.090, 0.433), (0.578, 0.148, 0.404), (0.735, 0.216, 0.330),
                (0.865, 0.317, 0.226), (0.955, 0.468, 0.098), (0.988, 0.645, 0.040),
                (0.964, 0.843, 0.273), (0.988, 0.998, 0.645)],
    "hot": [(0.0, 0.0, 0.0), (1.0, 0.0, 0.0), (1.0, 1.0, 0.0), (1.0, 1.0, 1.0)],
    "gray": [(0.0, 0.0, 0.0), (1.0, 1.0, 1.0)],
}


@lru_cache(maxsize=32)
def colormap_table(name: str = "jet") -> np.ndarray:
    """A ``(256, 3)`` uint8 lookup table for colormap ``name``.

    ``jet`` (the CAM convention, matching OpenCV's ``COLORMAP_JET`` closely), ``viridis``,
    ``inferno``, ``hot`` and ``gray`` are built in; any other matplotlib name works when
    matplotlib is installed.
    """
    x = np.linspace(0.0, 1.0, 256)
    if name == "jet":
        rgb = np.stack([np.clip(1.5 - np.abs(4 * x - c), 0, 1) for c in (3, 2, 1)], axis=1)
    elif name in _ANCHORS:
        anchors = np.asarray(_ANCHORS[name])
        pos = np.linspace(0.0, 1.0, len(anchors))
        rgb = np.stack([np.interp(x, pos, anchors[:, i]) for i in range(3)], axis=1)
    else:
        try:
            import matplotlib
        except ImportError:
            raise ValueError(
                f"colormap {name!r} is not built in (jet, viridis, inferno, hot, gray); "
                "install matplotlib for the others"
            ) from None
        try:
            rgb = matplotlib.colormaps[name](x)[:, :3]
        except KeyError:
            raise ValueError(f"unknown colormap {name!r}") from None
    table = np.round(rgb * 255).astype(np.uint8)
    table.setflags(write=False)
    return table


def apply_colormap(heatmap: np.ndarray, colormap: str = "jet") -> np.ndarray:
    """Colour a map with values in [0, 1]: ``(*S)`` -> uint8 ``(*S, 3)``."""
    values = np.nan_to_num(np.asarray(heatmap, dtype=np.float32), nan=0.0)
    index = np.clip(np.round(values * 255), 0, 255).astype(np.uint8)
    return colormap_table(colormap)[index]


def to_uint8_image(image: np.ndarray) -> np.ndarray:
    """An image as uint8 ``(H, W, 3)``.

    Accepts ``(H, W)``, ``(H, W, 1|3|4)`` or channels-first ``(1|3, H, W)``; floats are taken
    to be in [0, 1], integers in [0, 255].
    """
    img = np.asarray(image)
    if img.ndim == 3 and img.shape[0] in (1, 3) and img.shape[-1] not in (1, 3, 4):
        img = np.moveaxis(img, 0, -1)
    if img.ndim == 2:
        img = img[..., None]
    if img.ndim != 3 or img.shape[-1] not in (1, 3, 4):
        raise ValueError(
            f"image of shape {np.asarray(image).shape} is not (H, W), (H, W, C) or (C, H, W) "
            "with 1, 3 or 4 channels"
        )
    img = img[..., :3]
    if img.shape[-1] == 1:
        img = np.repeat(img, 3, axis=-1)
    if img.dtype == np.uint8:
        return img
    if np.issubdtype(img.dtype, np.integer):
        return np.clip(img, 0, 255).astype(np.uint8)
    return np.clip(np.round(np.nan_to_num(img.astype(np.float32)) * 255), 0, 255).astype(np.uint8)


def overlay(
    image: np.ndarray, heatmap: np.ndarray, alpha: float = 0.5, colormap: str = "jet"
) -> np.ndarray:
    """Blend a coloured heatmap onto an image.

    Parameters
    ----------
    image : np.ndarray
        ``(H, W, 3)``, ``(H, W)`` or ``(3, H, W)``; float in [0, 1] or uint8.
    heatmap : np.ndarray
        ``(h, w)`` in [0, 1]; resized (bilinear) to ``(H, W)`` when it differs.
    alpha : float
        Weight of the heatmap, in [0, 1].
    colormap : str
        See :func:`colormap_table`.

    Returns
    -------
    np.ndarray
        uint8 ``(H, W, 3)``.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha={alpha} must be in [0, 1]")
    base = to_uint8_image(image)
    heat = np.asarray(heatmap, dtype=np.float32)
    if heat.ndim != 2:
        raise ValueError(f"heatmap must be 2-D (H, W), got shape {heat.shape}")
    if heat.shape != base.shape[:2]:
        from interp_core.methods.postprocess import resize_bilinear

        heat = resize_bilinear(heat, base.shape[:2])
    colored = apply_colormap(heat, colormap).astype(np.float32)
    blended = (1.0 - alpha) * base.astype(np.float32) + alpha * colored
    return np.clip(np.round(blended), 0, 255).astype(np.uint8)


def save_png(path: str | os.PathLike[str], array: np.ndarray) -> str:
    """Write an image array as PNG (needs Pillow); returns the path written.

    ``array``: uint8 or float in [0, 1]; ``(H, W)``, ``(H, W, 3)``, ``(H, W, 4)`` or ``(3, H, W)``.
    Parent folders are created.
    """
    try:
        from PIL import Image
    except ImportError:
        raise ImportError("save_png needs Pillow: pip install pillow") from None
    arr = np.asarray(array)
    if arr.ndim == 3 and arr.shape[-1] == 4:
        data = arr if arr.dtype == np.uint8 else np.clip(np.round(arr * 255), 0, 255)
        image = Image.fromarray(np.asarray(data, dtype=np.uint8), mode="RGBA")
    elif arr.ndim == 2:
        image = Image.fromarray(to_uint8_image(arr)[..., 0], mode="L")
    else:
        image = Image.fromarray(to_uint8_image(arr), mode="RGB")
    path = os.fspath(path)
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    image.save(path, format="PNG")
    return path
