"""Post-processing of raw maps: resize, normalise, fuse, and token-to-grid reshaping.

Everything is vectorised over the batch and written in NumPy: no OpenCV, no SciPy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np

#: A map whose range is below this fraction of its largest magnitude counts as constant.
RELATIVE_EPS = 1e-6


@lru_cache(maxsize=256)
def interpolation_matrix(n_in: int, n_out: int, align_corners: bool = False) -> np.ndarray:
    """Linear interpolation weights from ``n_in`` samples to ``n_out`` samples.

    Parameters
    ----------
    n_in, n_out : int
        Input and output lengths along one axis.
    align_corners : bool
        False: half-pixel centres (torch ``align_corners=False``, OpenCV ``INTER_LINEAR``).
        True: the first and last samples of input and output coincide.

    Returns
    -------
    np.ndarray
        float64 ``(n_out, n_in)``; each row sums to 1.
    """
    if n_in < 1 or n_out < 1:
        raise ValueError(f"lengths must be >= 1, got n_in={n_in}, n_out={n_out}")
    dst = np.arange(n_out, dtype=np.float64)
    if align_corners:
        src = dst * ((n_in - 1) / (n_out - 1)) if n_out > 1 else np.zeros(1)
    else:
        src = (dst + 0.5) * (n_in / n_out) - 0.5
    src = np.clip(src, 0.0, n_in - 1)
    lo = np.floor(src).astype(np.int64)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = src - lo
    weights = np.zeros((n_out, n_in), dtype=np.float64)
    rows = np.arange(n_out)
    np.add.at(weights, (rows, lo), 1.0 - frac)
    np.add.at(weights, (rows, hi), frac)
    weights.setflags(write=False)
    return weights


def resize_linear(
    maps: np.ndarray, size: Sequence[int], *, align_corners: bool = False
) -> np.ndarray:
    """(Bi/tri)linear resize of the trailing spatial axes, any number of them.

    Parameters
    ----------
    maps : np.ndarray
        ``(..., *spatial)`` with ``len(spatial) == len(size)``; leading axes (batch, channels)
        are untouched.
    size : sequence of int
        Output spatial shape.
    align_corners : bool
        See :func:`interpolation_matrix`.

    Returns
    -------
    np.ndarray
        ``(..., *size)``, float32.
    """
    size = tuple(int(s) for s in size)
    k = len(size)
    if maps.ndim < k:
        raise ValueError(f"maps of shape {maps.shape} have fewer than {k} spatial axes")
    out = np.asarray(maps, dtype=np.float32)
    for i, n_out in enumerate(size):
        axis = out.ndim - k + i
        n_in = out.shape[axis]
        if n_in == n_out:
            continue
        matrix = interpolation_matrix(n_in, n_out, align_corners).astype(np.float32)
        if axis == out.ndim - 1:  # matmul broadcasts over the leading axes: no transposes
            out = out @ matrix.T
        elif axis == out.ndim - 2:
            out = matrix @ out
        else:
            out = np.moveaxis(np.tensordot(out, matrix, axes=([axis], [1])), -1, axis)
    return np.ascontiguousarray(out, dtype=np.float32)


def resize_bilinear(maps: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Half-pixel linear resize of the trailing ``len(size)`` axes (see :func:`resize_linear`)."""
    return resize_linear(maps, size, align_corners=False)


def relu(maps: np.ndarray) -> np.ndarray:
    """``max(maps, 0)``, float32."""
    return np.maximum(maps, 0, dtype=np.float32)


def normalize_minmax(maps: np.ndarray, spatial_ndim: int | None = None) -> np.ndarray:
    """Min-max scale each map to [0, 1]; constant maps become zeros, never NaN.

    Parameters
    ----------
    maps : np.ndarray
        ``(N, *spatial)``; each sample is scaled on its own.
    spatial_ndim : int, optional
        Number of trailing axes that make one map (default: all but the first).

    Returns
    -------
    np.ndarray
        float32, same shape, values in [0, 1]. Non-finite entries become 0.
    """
    out = np.array(maps, dtype=np.float32)  # a copy: the caller's array is left alone
    if out.size == 0:
        return out
    if not np.isfinite(out).all():
        np.nan_to_num(out, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
    k = out.ndim - 1 if spatial_ndim is None else spatial_ndim
    axes = tuple(range(out.ndim - k, out.ndim))
    lo = out.min(axis=axes, keepdims=True)
    hi = out.max(axis=axes, keepdims=True)
    with np.errstate(over="ignore"):
        span = hi - lo
    if not np.isfinite(span).all():  # a range wider than float32 (max - min overflows)
        wide = (out.astype(np.float64) - lo) / (hi.astype(np.float64) - lo)
        return np.clip(wide, 0.0, 1.0).astype(np.float32)
    flat = (span == 0) | (span <= RELATIVE_EPS * np.maximum(np.abs(hi), np.abs(lo)))
    out -= lo
    out /= np.where(flat, np.float32(1.0), span)  # (x - lo) <= span: no overflow, even denormal
    out *= ~flat
    return np.clip(out, 0.0, 1.0, out=out)


def fuse_layers(maps: Sequence[np.ndarray],
                how: Literal["mean", "max", "sum", "product"] = "mean") -> np.ndarray:
    """Combine per-layer maps of one shape ``(N, *spatial)`` into one.

    ``how``: ``"mean"`` (pytorch-grad-cam's default), ``"max"``, ``"sum"`` or ``"product"``
    (RefineCAM's: a position stays only where every layer's map has it).
    """
    stack = np.stack(list(maps), axis=0)
    if how == "mean":
        return stack.mean(axis=0)
    if how == "max":
        return stack.max(axis=0)
    if how == "sum":
        return stack.sum(axis=0)
    if how == "product":
        return stack.prod(axis=0)
    raise ValueError(f"fuse={how!r} is not one of 'mean', 'max', 'sum', 'product'")


@dataclass(frozen=True)
class TokenGrid:
    """Reshape token activations ``(N, prefix + H*W, C)`` into ``(N, H, W, C)``.

    Made by :func:`tokens_to_grid`. Channels-first token layouts ``(N, C, T)`` are not supported:
    transpose them with your own ``reshape`` callable.
    """

    prefix: int = 1
    height: int | None = None
    width: int | None = None

    def __call__(self, tokens: np.ndarray) -> np.ndarray:
        if tokens.ndim != 3:
            raise ValueError(
                f"tokens_to_grid expects (N, tokens, channels), got shape {tokens.shape}"
            )
        n, t, c = tokens.shape
        patches = tokens[:, self.prefix :, :]
        count = t - self.prefix
        h, w = self.height, self.width
        if h is None and w is None:
            h = w = round(count**0.5)
        elif h is None:
            h = count // w
        elif w is None:
            w = count // h
        if h * w != count:
            raise ValueError(
                f"{count} patch tokens (after {self.prefix} prefix tokens) do not form a "
                f"{h}x{w} grid: pass height= and width="
            )
        return patches.reshape(n, h, w, c)


def tokens_to_grid(
    prefix: int = 1, height: int | None = None, width: int | None = None
) -> TokenGrid:
    """A ``reshape`` for transformer layers: drop ``prefix`` tokens (CLS, registers), make a grid.

    Examples
    --------
    >>> reshape = tokens_to_grid(prefix=1)
    >>> cam = GradCAM(vit, layer="blocks.11.norm1", reshape=reshape)  # doctest: +SKIP
    """
    return TokenGrid(prefix, height, width)


#: :func:`relu`, under a name that the ``relu`` option of :func:`finish_maps` leaves free.
_rectify = relu


def finish_maps(raw_maps: Sequence[np.ndarray], size: Sequence[int], *, relu: bool = True,
                normalize: bool = True, upsample: bool = True, fuse: str = "mean") -> np.ndarray:
    """ReLU and normalise each map at its resolution, resize, fuse, normalise: the last steps
    of every method that makes maps on a grid (the CAM family, the attention methods).

    Parameters
    ----------
    raw_maps : sequence of np.ndarray
        One ``(N, *grid)`` map per layer.
    size : sequence of int
        The input's spatial shape.
    relu, normalize, upsample : bool
        The methods' options of those names.
    fuse : {"mean", "max", "sum", "product"}
        How several maps combine (:func:`fuse_layers`). With ``"product"`` each layer's map is
        min-max scaled again after resizing (a resized map need not reach 0 and 1), so the
        factors are the layers' finished maps, as RefineCAM multiplies them.

    Returns
    -------
    np.ndarray
        float32 ``(N, *size)`` (``(N, *grid)`` with ``upsample=False``).
    """
    per_layer = []
    for m in raw_maps:
        m = _rectify(m) if relu else m.astype(np.float32)
        if normalize:
            m = normalize_minmax(m)
        if upsample and tuple(m.shape[1:]) != tuple(size):
            if m.ndim - 1 != len(size):
                raise ValueError(
                    f"a map with {m.ndim - 1} spatial axes {m.shape[1:]} cannot be resized "
                    f"to the input's {len(size)} spatial axes {tuple(size)}; for token "
                    "layers pass reshape=tokens_to_grid(...), else upsample=False"
                )
            m = resize_bilinear(m, size)
            if normalize and fuse == "product":
                m = normalize_minmax(m)
        per_layer.append(m)
    if len(per_layer) == 1:
        fused = per_layer[0]
    else:
        shapes = {p.shape for p in per_layer}
        if len(shapes) > 1:
            raise ValueError(
                f"layer maps of shapes {sorted(shapes)} cannot be fused; keep upsample=True"
            )
        fused = fuse_layers(per_layer, fuse)
    return normalize_minmax(fused) if normalize else fused.astype(np.float32)
