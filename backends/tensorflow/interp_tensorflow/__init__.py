"""TensorFlow / Keras 3 adapter for interp-core.

Importing this package does not import TensorFlow: the adapter lives in
:mod:`interp_tensorflow.backend`, the training callbacks in :mod:`interp_tensorflow.training`.
"""

__version__ = "0.1.0"
