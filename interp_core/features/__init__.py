"""Feature visualisation: what a layer sees (feature maps) and what its filters like.

- :func:`feature_maps`: a layer's activations ``(N, C, *spatial)``, one forward pass.
- :func:`filter_patterns`: activation maximisation in NumPy; backends supply input gradients.
- :func:`feature_grid`: tile maps into one picture. :mod:`~interp_core.features.params` holds
  the image parametrisations (pixels, decorrelated Fourier/colour space).
"""

from interp_core.features.grids import feature_grid
from interp_core.features.maps import feature_maps
from interp_core.features.patterns import filter_patterns

__all__ = ["feature_grid", "feature_maps", "filter_patterns"]
