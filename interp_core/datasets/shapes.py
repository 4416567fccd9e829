"""Deterministic "shapes" images: one object of a known class, box and mask on clutter.

Each image holds one object (circle, square, triangle, cross or ring) at a random position,
size and colour on a textured background (random plane waves, noise, and thin distractor
lines). The ground-truth box and mask make localisation measurable (pointing game, energy in
box). Everything is vectorised NumPy and seeded: the same ``seed`` gives the same images on
every machine.

>>> batch = make_shapes(8, seed=0)
>>> batch.images.shape, batch.labels.shape, batch.boxes.shape, batch.masks.shape
((8, 64, 64, 3), (8,), (8, 4), (8, 64, 64))
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CLASSES = ("circle", "square", "triangle", "cross", "ring")


@dataclass(frozen=True)
class ShapesBatch:
    """A batch of shapes images.

    Attributes
    ----------
    images : np.ndarray
        float32 ``(N, H, W, 3)`` in [0, 1], channels last.
    labels : np.ndarray
        int64 ``(N,)``, index into :data:`CLASSES`.
    boxes : np.ndarray
        int64 ``(N, 4)`` as ``(y0, x0, y1, x1)``, end-exclusive, tight around the mask.
    masks : np.ndarray
        bool ``(N, H, W)``, the object's pixels.
    """

    images: np.ndarray
    labels: np.ndarray
    boxes: np.ndarray
    masks: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def channels_first(self) -> np.ndarray:
        """Images as ``(N, 3, H, W)`` (torch layout)."""
        return np.ascontiguousarray(self.images.transpose(0, 3, 1, 2))


def _shape_masks(labels: np.ndarray, cy: np.ndarray, cx: np.ndarray, r: np.ndarray,
                 size: int) -> np.ndarray:
    grid = np.arange(size, dtype=np.float32)
    masks = np.zeros((len(labels), size, size), dtype=bool)
    for k in range(len(CLASSES)):
        chosen = np.flatnonzero(labels == k)
        if chosen.size == 0:
            continue
        dy = grid[None, :, None] - cy[chosen, None, None]
        dx = grid[None, None, :] - cx[chosen, None, None]
        rr = r[chosen, None, None]
        ady, adx = np.abs(dy), np.abs(dx)
        if k == 0:  # circle
            cond = dy * dy + dx * dx <= rr * rr
        elif k == 1:  # square
            cond = np.maximum(ady, adx) <= 0.8 * rr
        elif k == 2:  # triangle, apex up
            cond = (dy >= -rr) & (dy <= 0.7 * rr) & (adx <= (dy + rr) / 1.7)
        elif k == 3:  # cross
            arm = 0.3 * rr
            cond = ((adx <= arm) & (ady <= rr)) | ((ady <= arm) & (adx <= rr))
        else:  # ring
            dist2 = dy * dy + dx * dx
            cond = (dist2 <= rr * rr) & (dist2 >= (0.55 * rr) ** 2)
        masks[chosen] = cond
    return masks


def _boxes(masks: np.ndarray) -> np.ndarray:
    rows = masks.any(axis=2)
    cols = masks.any(axis=1)
    h, w = masks.shape[1:]
    y0 = rows.argmax(axis=1)
    y1 = h - rows[:, ::-1].argmax(axis=1)
    x0 = cols.argmax(axis=1)
    x1 = w - cols[:, ::-1].argmax(axis=1)
    return np.stack([y0, x0, y1, x1], axis=1).astype(np.int64)


def make_shapes(n: int, size: int = 64, seed: int = 0, clutter: bool = True,
                classes: int = len(CLASSES)) -> ShapesBatch:
    """Generate ``n`` images.

    Parameters
    ----------
    n : int
        Number of images.
    size : int
        Height and width in pixels (>= 32).
    seed : int
        Seed of the generator; batches with different seeds are disjoint draws.
    clutter : bool
        Textured background and distractor lines (True) or a flat background.
    classes : int
        Use the first ``classes`` shape classes (2..5).

    Returns
    -------
    ShapesBatch
    """
    if size < 32:
        raise ValueError(f"size={size} is too small for the shapes to be told apart; use >= 32")
    if not 2 <= classes <= len(CLASSES):
        raise ValueError(f"classes={classes} must be between 2 and {len(CLASSES)}")
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    r = rng.uniform(0.13, 0.25, n).astype(np.float32) * size
    cy = rng.uniform(r + 1, size - r - 2).astype(np.float32)
    cx = rng.uniform(r + 1, size - r - 2).astype(np.float32)
    masks = _shape_masks(labels, cy, cx, r, size)

    colour = rng.uniform(0.0, 1.0, (n, 3)).astype(np.float32)
    background = np.mod(colour + 0.5 + rng.uniform(-0.15, 0.15, (n, 3)), 1.0).astype(np.float32)
    images = np.broadcast_to(background[:, None, None, :], (n, size, size, 3)).copy()
    if clutter:
        grid = np.arange(size, dtype=np.float32)
        for _ in range(2):  # two plane waves of random direction, frequency and colour
            freq = rng.uniform(0.1, 0.6, (n, 2)).astype(np.float32)
            phase = rng.uniform(0, 2 * np.pi, n).astype(np.float32)
            wave = np.sin(freq[:, 0, None, None] * grid[None, :, None]
                          + freq[:, 1, None, None] * grid[None, None, :] + phase[:, None, None])
            tint = rng.uniform(-0.12, 0.12, (n, 3)).astype(np.float32)
            images += wave[..., None] * tint[:, None, None, :]
        # distractor lines: a horizontal and a vertical one per image, a random colour each
        for axis in (1, 2):
            pos = rng.integers(0, size, n)
            line = np.zeros((n, size, size), dtype=bool)
            idx = np.arange(n)
            if axis == 1:
                line[idx, pos, :] = True
            else:
                line[idx, :, pos] = True
            images[line] = np.repeat(rng.uniform(0, 1, (n, 3)).astype(np.float32),
                                     line.sum(axis=(1, 2)), axis=0)
        images += 0.04 * rng.standard_normal(images.shape, dtype=np.float32)
    images[masks] = np.repeat(colour, masks.sum(axis=(1, 2)), axis=0)
    np.clip(images, 0.0, 1.0, out=images)
    return ShapesBatch(images.astype(np.float32), labels.astype(np.int64), _boxes(masks), masks)
