"""Loading saved Keras models and weights: the one place Keras is imported for them, on demand
(see :mod:`interp_tensorflow.plugin`).

Models load in Keras's safe mode unless the user trusts the file: Keras then refuses to
deserialise a ``Lambda`` layer's Python function (arbitrary code), and the error says how to
load it anyway (``trust=True``, ``--trust-model``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from interp_core.io.errors import ModelLoadError

#: Files ``model.load_weights`` reads: ``.weights.h5`` (``model.save_weights``), legacy
#: ``.h5``/``.hdf5`` weights or whole models, and the weights of a ``.keras`` archive.
WEIGHT_FILES = (".weights.h5", ".h5", ".hdf5", ".keras")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}".rstrip(": ")


def load_keras_model(path: Path, *, trust: bool = False) -> Any:
    """The Keras model saved in ``path`` (``.keras``, or legacy ``.h5``/``.hdf5``), uncompiled:
    explaining needs no optimizer or loss.

    Parameters
    ----------
    path : Path
        The model file.
    trust : bool
        Load with ``safe_mode=False``: a ``Lambda`` layer's Python function is deserialised,
        which can run any code the file holds.

    Raises
    ------
    interp_core.io.ModelLoadError
        The file needs trust (a ``Lambda`` layer) and ``trust`` is False, holds weights only
        (``.weights.h5``), or Keras cannot load it.
    """
    import keras

    if path.name.lower().endswith(".weights.h5"):
        message = (f"{path} holds weights only (model.save_weights), not a model: build the "
                   "model in code and load these weights into it")
        raise ModelLoadError(
            f"{message}: load_model('module:factory', weights={str(path)!r})",
            cli=f"{message}: pass the model as module:factory --weights {path}",
        )
    try:
        return keras.models.load_model(path, compile=False, safe_mode=not trust)
    except Exception as exc:
        if not trust and "safe_mode" in str(exc):
            risk = (f"{path} holds a Keras Lambda layer (or another object Keras loads only "
                    "outside its safe mode): loading it would run the Python code stored in "
                    "the file")
            raise ModelLoadError(
                f"{risk}. If you trust the file's source, load it with trust=True; otherwise "
                "build the model in code and load its weights: load_model('module:factory', "
                "weights='model.weights.h5')",
                cli=f"{risk}. If you trust the file's source, pass --trust-model; otherwise "
                    "build the model in code and load its weights: module:factory --weights "
                    "model.weights.h5",
            ) from exc
        raise ModelLoadError(f"Keras cannot load {path}: {_first_line(exc)}") from exc


def load_weights(model: Any, path: Path) -> Any:
    """Load the weights in ``path`` into the Keras ``model`` (``model.load_weights``) and
    return it. Reading weights deserialises no layer, so no code from the file runs.

    Raises
    ------
    interp_core.io.ModelLoadError
        A file Keras does not read weights from, or weights that do not fit the model.
    """
    import keras

    if not isinstance(model, keras.layers.Layer):
        raise ModelLoadError(f"weights load into a Keras model, not a "
                             f"{type(model).__module__}.{type(model).__qualname__}")
    if not path.name.lower().endswith(WEIGHT_FILES):
        raise ModelLoadError(
            f"{path}: Keras weights load from {', '.join(WEIGHT_FILES)} files: save them with "
            "model.save_weights('model.weights.h5')"
        )
    try:
        model.load_weights(path)
    except Exception as exc:
        message = f"the weights in {path} do not fit the model: {_first_line(exc)}"
        raise ModelLoadError(
            f"{message}; model.summary() lists the layers it expects",
            cli=f"{message}; `interp layers MODEL` lists the model's layers",
        ) from exc
    return model
