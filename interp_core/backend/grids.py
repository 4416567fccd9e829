"""Layer outputs as grids, found from the input's size: token layers need no hand-made reshape.

A CAM needs a layer's activations as ``(N, *grid, C)``, a grid with the input's number of
spatial axes. Most layers give that directly (the adapter turns a channels-first convolution's
``(N, C, H, W)`` into ``(N, H, W, C)``). Two kinds do not:

- **token layers** (ViT, DeiT, BEiT, LeViT, Swin in Hugging Face): ``(N, T, C)`` where the first
  ``prefix`` tokens are class / distillation / register tokens and the other ``T - prefix`` form
  the patch grid. The grid is found from the input's spatial shape: the smallest ``prefix``
  (one of :data:`PREFIXES`) whose remaining token count factors into a grid of the input's
  aspect (:func:`consistent_grid`), at a whole-number stride where one fits
  (:func:`integer_stride`);
- **channels-last grids in a channels-first framework** (Swin and ConvNeXt blocks in torch emit
  ``(N, H, W, C)``): the adapter's conversion moved the wrong axis; the layout whose spatial axes
  match the input's aspect is used instead.

Everything here reads shapes only; :meth:`GridLayout.apply` reshapes NumPy arrays.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: Token counts looked for before the patch tokens, smallest first: none (Swin, LeViT, Mixer),
#: a class token (ViT, BEiT), class + distillation (DeiT), 4 registers, class + 4 registers
#: (DINOv2). Other counts (8 or 16 registers) are not guessed, as a longer list starts to find
#: grids in detection heads' anchor counts: pass ``reshape=tokens_to_grid(prefix=...)``.
PREFIXES = (0, 1, 2, 4, 5)


def consistent_grid(grid: Sequence[int], input_spatial: Sequence[int]) -> bool:
    """Whether ``grid`` can be ``input_spatial`` seen at one common stride.

    Each grid size ``g`` of an input size ``S`` is ``S / s`` rounded some way (floor, round or
    ceil, as convolutions and patch embeddings with padding give), so ``s`` lies in
    ``(S / (g + 1), S / (g - 1))``; the grid is consistent when those intervals of all axes meet
    and the grid keeps the input's order (one rounding for all axes: equal input sizes give
    equal grid sizes, a longer side never a shorter grid side).

    Parameters
    ----------
    grid, input_spatial : sequence of int
        Equal lengths: the layer's spatial shape and the input's.
    """
    if len(grid) != len(input_spatial) or not grid:
        return False
    pairs = list(zip(grid, input_spatial, strict=True))
    for g1, s1 in pairs:
        for g2, s2 in pairs:
            if (s1 == s2 and g1 != g2) or (s1 < s2 and g1 > g2):
                return False
    lo, hi = 0.0, math.inf
    for g, size in pairs:
        if g < 1 or size < 1:
            return False
        lo = max(lo, size / (g + 1))
        hi = min(hi, size / (g - 1) if g > 1 else math.inf)
    return lo < hi


def _factorisations(count: int, parts: int) -> list[tuple[int, ...]]:
    """Every ordered way to write ``count`` as a product of ``parts`` positive ints."""
    if parts == 1:
        return [(count,)]
    found = []
    for d in range(1, count + 1):
        if count % d == 0:
            found += [(d, *rest) for rest in _factorisations(count // d, parts - 1)]
    return found


def _aspect_error(grid: Sequence[int], input_spatial: Sequence[int]) -> float:
    logs = [math.log(g / s) for g, s in zip(grid, input_spatial, strict=True)]
    return max(logs) - min(logs)


def integer_stride(grid: Sequence[int], input_spatial: Sequence[int]) -> bool:
    """Whether one whole-number stride ``s`` gives every grid size as ``floor`` or ``ceil`` of
    ``S / s`` (patch embeddings and stacks of strided layers do; a spurious factorisation of a
    token count rarely does)."""
    g0, size0 = grid[0], input_spatial[0]
    if g0 < 1:
        return False
    # Only strides that give the first axis g0 +- 1 need a look.
    first = max(1, size0 // (g0 + 1))
    last = max(input_spatial) if g0 == 1 else min(max(input_spatial), size0 // (g0 - 1) + 1)
    for stride in range(first, last + 1):
        if all(g in (size // stride, -(-size // stride))
               for g, size in zip(grid, input_spatial, strict=True)):
            return True
    return False


def _rank(grid: Sequence[int], input_spatial: Sequence[int]) -> tuple[bool, float]:
    """Sort key of candidate grids: whole-number strides first, then the closest aspect."""
    return not integer_stride(grid, input_spatial), _aspect_error(grid, input_spatial)


def token_grid(count: int, input_spatial: Sequence[int]) -> tuple[int, ...] | None:
    """The grid of ``count`` patch tokens for an input of spatial shape ``input_spatial``.

    Returns
    -------
    tuple of int or None
        The consistent factorisation (:func:`consistent_grid`), one with a whole-number
        stride (:func:`integer_stride`) first, then the closest to the input's aspect; None
        when none is consistent.
    """
    if count < 1 or not input_spatial:
        return None
    if len(input_spatial) == 2:  # the common case, without building every factorisation
        pairs = [(d, count // d) for d in range(1, count + 1) if count % d == 0]
    else:
        pairs = _factorisations(count, len(input_spatial))
    fits = [g for g in pairs if consistent_grid(g, input_spatial)]
    if not fits:
        return None
    return min(fits, key=lambda g: _rank(g, input_spatial))


@dataclass(frozen=True)
class GridLayout:
    """How one layer's canonical array becomes ``(N, *grid, C)``.

    Attributes
    ----------
    grid : tuple of int
        The spatial shape of the result.
    token_axis : int or None
        For token layers, the axis (1 or 2) of the canonical ``(N, A, B)`` array that holds the
        tokens; the other one holds the channels.
    prefix : int
        Tokens dropped before the grid (class, distillation, register tokens).
    move : tuple of int or None
        ``np.moveaxis(a, *move)`` turns a channels-last grid that the adapter took for
        channels-first (or the reverse) into ``(N, *grid, C)``.
    fits : bool
        False for a grid taken as it is although its aspect does not follow the input's (a
        crop, or no grid at all: an attention layer's ``(N, T, heads, C)``); never a default.
    """

    grid: tuple[int, ...]
    token_axis: int | None = None
    prefix: int = 0
    move: tuple[int, int] | None = None
    fits: bool = True

    @property
    def is_identity(self) -> bool:
        """True when the canonical array already is ``(N, *grid, C)``."""
        return self.token_axis is None and self.move is None

    @property
    def kind(self) -> str:
        """``"spatial"``, ``"tokens"`` or ``"channels-last"`` (for tables and messages)."""
        if self.token_axis is not None:
            return "tokens"
        return "spatial" if self.move is None else "channels-last"

    def describe(self) -> str:
        """A short note, e.g. ``"tokens: 1 prefix + 14x14"``."""
        grid = "x".join(str(g) for g in self.grid)
        if self.token_axis is not None:
            return f"tokens: {self.prefix} prefix + {grid}"
        return f"{self.kind} {grid}"

    def native_channel_axis(self, ndim: int, native_channels_first: bool) -> int:
        """The axis of the layer's native output that holds the channels (non-negative).

        Parameters
        ----------
        ndim : int
            Rank of the layer's output.
        native_channels_first : bool
            As for :func:`grid_layout`: the adapter made the canonical array by moving native
            axis 1 to the end.
        """
        if self.token_axis is not None:
            canonical = 3 - self.token_axis  # (N, A, B): the axis that is not the tokens
        elif self.move is not None:
            canonical = _moved_order(ndim, self.move)[-1]  # what ends up last after the move
        else:
            canonical = ndim - 1
        if not native_channels_first:
            return canonical
        return 1 if canonical == ndim - 1 else canonical + 1

    def apply(self, a: np.ndarray) -> np.ndarray:
        """``a`` (canonical, ``(N, ...)``) as ``(N, *grid, C)`` float32."""
        a = np.asarray(a)
        if self.move is not None:
            a = np.moveaxis(a, *self.move)
        elif self.token_axis is not None:
            if self.token_axis == 2:
                a = np.moveaxis(a, 2, 1)
            a = a[:, self.prefix :, :].reshape(a.shape[0], *self.grid, a.shape[2])
        return np.ascontiguousarray(a, dtype=np.float32)


def grid_layout(shape: Sequence[int], input_spatial: Sequence[int], *,
                native_channels_first: bool) -> GridLayout | None:
    """How to read a layer's canonical output of ``shape`` as a grid over the input.

    Parameters
    ----------
    shape : sequence of int
        The layer's output as the adapter hands it to the core, ``(N, ...)``.
    input_spatial : sequence of int
        The input's spatial shape, e.g. ``(224, 224)``.
    native_channels_first : bool
        Whether the adapter moved axis 1 to the end to make the canonical array (torch, and
        channels-first Keras and Flax models): native tokens ``(N, T, C)`` then arrive as
        ``(N, C, T)``, and native channels-last grids need the move undone.

    Returns
    -------
    GridLayout or None
        None when the shape has no reading with the input's number of spatial axes (a dense
        layer's ``(N, C)``, or tokens whose count fits no grid of the input's aspect).
    """
    shape = tuple(int(d) for d in shape)
    k = len(input_spatial)
    if k == 0:
        return None
    if len(shape) == k + 2:
        spatial = shape[1:-1]
        if k == 1 or consistent_grid(spatial, input_spatial):
            return GridLayout(spatial)
        undo, other = ((-1, 1), (1, -1)) if native_channels_first else ((1, -1), (-1, 1))
        for move in (undo, other):
            moved = _moved_shape(shape, move)
            if consistent_grid(moved[1:-1], input_spatial):
                return GridLayout(moved[1:-1], move=move)
        return GridLayout(spatial, fits=False)  # an odd grid (a crop): taken as it is
    if len(shape) == 3 and k >= 2:
        # Tokens sit on native axis 1 in every framework: (N, T, C). Of the prefixes whose
        # remaining tokens form a grid, one with a whole-number stride wins, then the smallest.
        axis = 2 if native_channels_first else 1
        found = []
        for prefix in PREFIXES:
            grid = token_grid(shape[axis] - prefix, input_spatial)
            if grid is not None and math.prod(grid) > 1:
                found.append((not integer_stride(grid, input_spatial), prefix, grid))
        if found:
            _, prefix, grid = min(found)
            return GridLayout(grid, token_axis=axis, prefix=prefix)
    return None


def _moved_order(ndim: int, move: tuple[int, int]) -> list[int]:
    """Which input axis each axis of ``np.moveaxis(a, *move)`` comes from."""
    order = list(range(ndim))
    source, destination = (m % ndim for m in move)
    order.insert(destination, order.pop(source))
    return order


def _moved_shape(shape: tuple[int, ...], move: tuple[int, int]) -> tuple[int, ...]:
    """The shape ``np.moveaxis`` with ``move`` gives, without making an array."""
    return tuple(shape[i] for i in _moved_order(len(shape), move))


def as_grid(acts: np.ndarray, grads: np.ndarray | None, input_spatial: Sequence[int], *,
            native_channels_first: bool) -> tuple[np.ndarray, np.ndarray | None, GridLayout | None]:
    """Canonical activations (and gradients) of one layer as ``(N, *grid, C)`` where a reading
    exists (:func:`grid_layout`); unchanged otherwise.

    Returns
    -------
    acts, grads : np.ndarray
        Reshaped alike.
    layout : GridLayout or None
        The reading used (None: none found, arrays unchanged).
    """
    layout = grid_layout(acts.shape, input_spatial, native_channels_first=native_channels_first)
    if layout is None or layout.is_identity:
        return acts, grads, layout
    return layout.apply(acts), None if grads is None else layout.apply(grads), layout
