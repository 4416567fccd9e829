"""Deprecated: moved to :mod:`interp_core.backend.grids` (layer outputs read as grids).

Kept for one release so that ``from interp_core.methods.tokens import ...`` still works;
importing it warns. Import from :mod:`interp_core.backend.grids` instead.
"""

import warnings

from interp_core.backend.grids import (  # noqa: F401
    PREFIXES,
    GridLayout,
    as_grid,
    consistent_grid,
    grid_layout,
    integer_stride,
    token_grid,
)

warnings.warn(
    "interp_core.methods.tokens moved to interp_core.backend.grids; import it from there "
    "(the old path goes away in the next release)",
    DeprecationWarning, stacklevel=2)
