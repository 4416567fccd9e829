"""PyTorch adapter for interp-core. Importing this package does not import torch; the adapter
class lives in :mod:`interp_torch.backend`."""

__version__ = "0.1.0"
