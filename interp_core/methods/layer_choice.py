"""Deprecated: moved to :mod:`interp_core.backend.layer_choice` (the default layer's choice).

Kept for one release so that ``from interp_core.methods.layer_choice import ...`` still works;
importing it warns. Import from :mod:`interp_core.backend.layer_choice` instead.
"""

import warnings

from interp_core.backend.layer_choice import (  # noqa: F401
    PROBED,
    RESAMPLING,
    GradientProbe,
    LayerOutput,
    LayerProbe,
    choose_layer,
    default_layer,
    last_block_first_norm,
    no_layer_error,
)

warnings.warn(
    "interp_core.methods.layer_choice moved to interp_core.backend.layer_choice; import it "
    "from there (the old path goes away in the next release)",
    DeprecationWarning, stacklevel=2)
