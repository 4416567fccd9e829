"""Tiling many small maps or images into one picture: :func:`feature_grid`."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from interp_core.methods.postprocess import normalize_minmax
from interp_core.viz import apply_colormap, to_uint8_image

_NORMALIZE = ("per-map", "global", "none")


def most_active(maps: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` maps with the largest mean value, most active first.

    ``maps``: ``(C, ...)``; returns int64 ``(min(k, C),)``. Ties keep the lower index first.
    """
    maps = np.asarray(maps)
    if k < 1:
        raise ValueError(f"top={k} must be >= 1")
    means = np.nan_to_num(maps.reshape(len(maps), -1).astype(np.float64).mean(axis=1), nan=-np.inf)
    return np.argsort(-means, kind="stable")[:k].astype(np.int64)


def feature_grid(
    maps: np.ndarray,
    ncols: int = 8,
    normalize: str | None = "per-map",
    *,
    colormap: str | None = None,
    labels: bool | Sequence[str] | None = None,
    top: int | None = None,
    scale: int = 1,
    pad: int = 1,
    pad_value: int = 255,
) -> np.ndarray:
    """Tile maps (one sample's feature maps, or filter patterns) into one RGB image.

    Parameters
    ----------
    maps : np.ndarray
        ``(C, H, W)`` single-channel maps, e.g. ``ic.feature_maps(model, x, layer)[i]``;
        ``(C, L)`` 1-D maps (shown as ``1 x L`` strips); or ``(C, H, W, 3)`` RGB tiles such as
        :func:`~interp_core.filter_patterns` output (floats in [0, 1] or uint8).
    ncols : int
        Tiles per row (fewer when there are fewer tiles).
    normalize : {"per-map", "global", "none"} or None
        Single-channel maps: min-max each map on its own, or all maps with one shared range,
        or none (values taken to be in [0, 1] and clipped). Constant maps become black.
        RGB tiles are never rescaled.
    colormap : str, optional
        Colour single-channel maps with this colormap (``"viridis"``, ``"jet"``, ...; see
        :func:`~interp_core.viz.colormap_table`); default grey.
    labels : True, sequence of str, or None
        A caption above each tile: True writes the channel index, a sequence gives one string
        per input map (``C`` of them; with ``top`` the chosen ones are used). Needs Pillow.
    top : int, optional
        Show only the ``top`` maps with the largest mean value, most active first.
    scale : int
        Enlarge every tile by this integer factor (nearest neighbour; small maps stay crisp).
    pad : int
        Width in pixels of the separators between tiles and around the grid.
    pad_value : int
        Grey level (0-255) of the separators.

    Returns
    -------
    np.ndarray
        uint8 ``(rows * (h + pad + label_h) + pad, cols * (w + pad) + pad, 3)``, where
        ``h, w`` are the tile size after ``scale``.
    """
    arr = np.asarray(maps)
    tiles, channel_index = _tiles(arr, normalize, colormap, top)
    if not isinstance(ncols, int | np.integer) or ncols < 1:
        raise ValueError(f"ncols={ncols!r} must be a positive int")
    if not isinstance(scale, int | np.integer) or scale < 1:
        raise ValueError(f"scale={scale!r} must be a positive int")
    if pad < 0 or not 0 <= pad_value <= 255:
        raise ValueError(f"pad={pad} must be >= 0 and pad_value={pad_value} in [0, 255]")
    if scale > 1:
        tiles = tiles.repeat(scale, axis=1).repeat(scale, axis=2)
    captions = _captions(labels, channel_index, len(arr))
    n, h, w, _ = tiles.shape
    cols = min(int(ncols), n)
    rows = -(-n // cols)
    label_h = _LABEL_HEIGHT if captions is not None else 0
    cell_h, cell_w = h + label_h + pad, w + pad
    grid = np.full((rows * cell_h + pad, cols * cell_w + pad, 3), pad_value, dtype=np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, cols)
        y, x = r * cell_h + pad + label_h, c * cell_w + pad
        grid[y : y + h, x : x + w] = tile
    if captions is not None:
        grid = _draw_captions(grid, captions, cols, cell_h, cell_w, pad, w, pad_value)
    return grid


def _tiles(arr: np.ndarray, normalize: str | None, colormap: str | None,
           top: int | None) -> tuple[np.ndarray, np.ndarray]:
    """uint8 ``(n, h, w, 3)`` tiles and the input index of each."""
    rgb = arr.ndim == 4 and arr.shape[-1] == 3
    if arr.ndim == 2:
        arr = arr[:, None, :]
    if arr.ndim == 4 and not rgb:
        raise ValueError(
            f"maps of shape {arr.shape} look like a batch (N, C, H, W): pass one sample, "
            "maps[i], or RGB tiles (C, H, W, 3)"
        )
    if arr.ndim not in (3, 4) or arr.shape[0] == 0:
        raise ValueError(
            f"maps must be (C, H, W), (C, L) or RGB tiles (C, H, W, 3) with C >= 1, got shape "
            f"{np.asarray(arr).shape}"
        )
    index = np.arange(len(arr)) if top is None else most_active(arr, int(top))
    arr = arr[index]
    if rgb:
        if colormap is not None:
            raise ValueError("colormap applies to single-channel maps, not to RGB tiles")
        return np.stack([to_uint8_image(t) for t in arr]), index
    key = "none" if normalize is None else normalize
    if key not in _NORMALIZE:
        raise ValueError(f"normalize={normalize!r} must be one of {_NORMALIZE} or None")
    values = np.nan_to_num(arr.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    if key == "per-map":
        values = normalize_minmax(values)
    elif key == "global":
        values = normalize_minmax(values[None])[0]
    else:
        values = np.clip(values, 0.0, 1.0)
    if colormap is not None:
        return apply_colormap(values, colormap), index
    grey = np.clip(np.round(values * 255), 0, 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=-1), index


_LABEL_HEIGHT = 12


def _captions(labels: bool | Sequence[str] | None, index: np.ndarray,
              count: int) -> list[str] | None:
    if labels is None or labels is False:
        return None
    if labels is True:
        return [str(int(i)) for i in index]
    if isinstance(labels, str):
        raise ValueError("labels must be True or a sequence of strings, one per map, not a str")
    labels = list(labels)
    if len(labels) != count:
        raise ValueError(f"labels has {len(labels)} entries but there are {count} maps")
    return [str(labels[int(i)]) for i in index]


def _draw_captions(grid: np.ndarray, captions: list[str], cols: int, cell_h: int, cell_w: int,
                   pad: int, tile_w: int, pad_value: int) -> np.ndarray:
    try:
        from PIL import Image, ImageDraw, ImageFont
    except ImportError:
        raise ImportError("feature_grid labels need Pillow: pip install pillow") from None
    image = Image.fromarray(grid, mode="RGB")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    ink = (0, 0, 0) if pad_value >= 128 else (255, 255, 255)
    for i, text in enumerate(captions):
        r, c = divmod(i, cols)
        x, y = c * cell_w + pad, r * cell_h + pad
        # Keep each caption inside its own column.
        while text and draw.textlength(text, font=font) > tile_w and len(text) > 1:
            text = text[:-1]
        draw.text((x, y - 1), text, fill=ink, font=font)
    return np.asarray(image, dtype=np.uint8).copy()
