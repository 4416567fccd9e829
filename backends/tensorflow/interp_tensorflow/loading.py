"""Loading a saved Keras model: the one place Keras is imported for it, on demand (see
:func:`interp_tensorflow.plugin.interp_core_load_model`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def load_keras_model(path: Path) -> Any:
    """The Keras model saved in ``path`` (``.keras`` or legacy ``.h5``), uncompiled: explaining
    needs no optimizer or loss."""
    import keras

    return keras.models.load_model(path, compile=False)
