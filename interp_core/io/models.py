"""The model a run works on, from a spec: a saved model file or ``module:attribute``,
optionally with its weights from another file.

Files are loaded by the installed adapters (hooks ``interp_core_load_model`` and
``interp_core_load_weights``), so nothing here imports a framework. No code from a file runs
unless the user trusts it (``trust=True``; ``--trust-model`` on the command line): a pickled
torch module or a Keras ``Lambda`` layer is refused with an error that names the safe ways,
``module:factory`` with ``weights=`` (``--weights FILE``), a ``torch.export`` program (``.pt2``)
or a ``.keras`` file without Lambda layers. See ``docs/how-to/model-files.md``.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import inspect
import os
import sys
from pathlib import Path
from typing import Any

from interp_core.backend.registry import (
    KNOWN_FRAMEWORKS,
    backends,
    load_model_file,
    load_weights_file,
)
from interp_core.io.errors import ModelLoadError

__all__ = ["load_model", "load_weights"]

_FILES_HINT = ("a torch.export program (.pt2), a Keras file (.keras, .h5, .hdf5) or a module "
               "saved with torch.save (.pt, with trust)")


def load_model(spec: str | os.PathLike[str], *, trust: bool = False,
               weights: str | os.PathLike[str] | None = None) -> Any:
    """The model that ``spec`` names.

    Parameters
    ----------
    spec : str or path-like
        A model file that an installed adapter loads (``model.pt2``, ``model.keras``, a
        ``torch.save``'d ``model.pt`` with ``trust``), or ``module:attribute``: a model object
        or a zero-argument factory (function or class) in a module, named by a dotted import
        path (importable from the current folder) or a ``.py`` file (``nets.py:build``).
    trust : bool
        Let the adapter run code the file carries: unpickle a whole torch module, deserialise
        a Keras ``Lambda`` layer. Only for files from a source you trust; ``--trust-model`` on
        the command line.
    weights : str or path-like, optional
        A weights file to load into the model once it is built (``--weights FILE``): torch
        ``.safetensors`` or a ``state_dict`` saved as ``.pt``/``.pth``/``.bin``; Keras
        ``.weights.h5``. Typically with ``module:factory``, so that no code comes from a file.

    Returns
    -------
    object
        The model, as the adapter loaded or the factory built it.

    Raises
    ------
    interp_core.io.ModelLoadError
        The spec names no model, the file needs ``trust``, the weights do not fit; the message
        names the spec and what would work (:meth:`~interp_core.io.InputError.cli_message`
        gives it with the command line's flags).

    Examples
    --------
    >>> model = load_model("resnet.pt2")                                    # doctest: +SKIP
    >>> model = load_model("nets:resnet18", weights="resnet18.safetensors")  # doctest: +SKIP
    >>> model = load_model("trusted.pt", trust=True)                        # doctest: +SKIP
    """
    text = os.fsdecode(os.fspath(spec))
    if not text.strip():
        raise ModelLoadError("the model spec is empty: pass a model file or module:attribute",
                             cli="MODEL is empty: pass a model file or module:attribute")
    path = Path(text)
    model = None
    if path.is_file():
        model = _load_file(path, trust)
        if model is None and ":" not in text:
            raise _no_loader(path)
    elif path.is_dir():
        raise ModelLoadError(
            f"model spec {text!r} is a folder, not a model file: pass {_FILES_HINT}, or "
            "module:attribute",
            cli=f"MODEL {text!r} is a folder, not a model file: pass {_FILES_HINT}, or "
                "module:attribute",
        )
    if model is None:
        if ":" not in text:
            message = (f"is neither a model file nor module:attribute (no such file): pass "
                       f"{_FILES_HINT}, or module:attribute")
            raise ModelLoadError(f"model spec {text!r} {message}",
                                 cli=f"MODEL {text!r} {message}")
        model = _load_attribute(text)
    if weights is not None:
        model = _load_weights(model, Path(os.fsdecode(os.fspath(weights))), text)
    return model


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}".rstrip(": ")


def _reraise(exc: Exception, message: str) -> ModelLoadError:
    """An adapter's own :class:`ModelLoadError` as it is; anything else wrapped, naming the
    spec and the original error's first line."""
    if isinstance(exc, ModelLoadError):
        return exc
    return ModelLoadError(f"{message}: {_first_line(exc)}")


def _load_file(path: Path, trust: bool) -> Any:
    try:
        return load_model_file(path, trust=trust)
    except Exception as exc:
        raise _reraise(exc, f"cannot load the model file {str(path)!r}") from exc


def _no_loader(path: Path) -> ModelLoadError:
    suffix = path.suffix.lower()
    for known in KNOWN_FRAMEWORKS.values():
        if suffix in known.model_files:
            return ModelLoadError(f"no installed backend loads {suffix} files such as "
                                  f"{str(path)!r}: pip install {known.distribution}")
    return ModelLoadError(
        f"no installed backend loads {str(path)!r} (installed: {backends()}); pass "
        f"{_FILES_HINT}, or module:attribute"
    )


# -- module:attribute ---------------------------------------------------------------------
def _load_attribute(spec: str) -> Any:
    module_name, _, attr = spec.rpartition(":")
    if not module_name or not attr or not all(p.isidentifier() for p in attr.split(".")):
        raise ModelLoadError(
            f"model spec {spec!r} must look like 'package.module:attribute' or "
            "'file.py:attribute' (a model object or a factory that takes no arguments)",
            cli=f"MODEL {spec!r} must look like package.module:attribute or file.py:attribute "
                "(a model object or a factory that takes no arguments)",
        )
    module = _import_file(module_name, spec) if module_name.endswith(".py") else (
        _import_module(module_name, spec))
    obj: Any = module
    for i, part in enumerate(attr.split(".")):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            owner = ".".join([module_name, *attr.split(".")[:i]])
            close = difflib.get_close_matches(part, [n for n in dir(obj)
                                                     if not n.startswith("_")], n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ModelLoadError(f"{owner} has no attribute {part!r} (model spec {spec!r})"
                                 f"{hint}") from None
    if inspect.isfunction(obj) or inspect.isclass(obj):
        obj = _call_factory(obj, spec)
    return obj


def _import_file(file_name: str, spec: str) -> Any:
    file = Path(file_name)
    if not file.is_file():
        raise ModelLoadError(f"no such file: {file_name} (model spec {spec!r})")
    loader_spec = importlib.util.spec_from_file_location(file.stem, file)
    if loader_spec is None or loader_spec.loader is None:
        raise ModelLoadError(f"{file_name} cannot be imported as a Python module "
                             f"(model spec {spec!r})")
    module = importlib.util.module_from_spec(loader_spec)
    previous = sys.modules.get(file.stem)
    # Registered under its name while it runs, as an import would (dataclasses and pickling
    # look classes up there).
    sys.modules[file.stem] = module
    try:
        loader_spec.loader.exec_module(module)
    except BaseException:
        if previous is None:
            sys.modules.pop(file.stem, None)
        else:
            sys.modules[file.stem] = previous
        raise
    return module


def _import_module(module_name: str, spec: str) -> Any:
    cwd = str(Path.cwd())
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (module_name == exc.name
                                     or module_name.startswith(exc.name + ".")):
            raise ModelLoadError(
                f"no module named {exc.name!r} (model spec {spec!r}): name a module importable "
                "from the current folder, or a .py file (nets.py:build)"
            ) from exc
        raise ModelLoadError(f"importing {module_name} for model spec {spec!r} failed: "
                             f"{_first_line(exc)}") from exc


def _call_factory(factory: Any, spec: str) -> Any:
    try:
        inspect.signature(factory).bind()
    except TypeError as exc:
        raise ModelLoadError(
            f"{spec} needs arguments ({exc}): name a model object or a factory that takes "
            "none (def build(): return Net(...))"
        ) from None
    except ValueError:  # no signature to read (a builtin): just call it
        pass
    model = factory()
    if model is None:
        raise ModelLoadError(f"the factory {spec} returned None, not a model")
    return model


# -- weights ------------------------------------------------------------------------------
def _load_weights(model: Any, path: Path, spec: str) -> Any:
    if not path.is_file():
        what = "is a folder" if path.is_dir() else "does not exist"
        raise ModelLoadError(f"the weights file {str(path)!r} {what}",
                             cli=f"--weights {str(path)!r} {what}")
    try:
        loaded = load_weights_file(model, path)
    except Exception as exc:
        raise _reraise(exc, f"cannot load the weights in {str(path)!r} into the model of "
                            f"{spec!r}") from exc
    if loaded is not None:
        return loaded
    kind = f"{type(model).__module__}.{type(model).__qualname__}"
    for name, known in KNOWN_FRAMEWORKS.items():
        if known.recognises(model) and name not in backends():
            raise ModelLoadError(f"the model of {spec!r} ({kind}) is a {name} model but "
                                 f"{known.distribution} is not installed: pip install "
                                 f"{known.distribution}")
    raise ModelLoadError(
        f"no installed backend loads weights into the model of {spec!r} ({kind}): load "
        "them in the factory, and pass it without weights=",
        cli=f"no installed backend loads weights into the model of {spec!r} ({kind}): load "
            "them in the factory, and pass it without --weights",
    )


def load_weights(model: Any, weights: str | os.PathLike[str]) -> Any:
    """Load a weights file into a model already built (a factory's result): what
    ``load_model(spec, weights=...)`` does after building the model.

    Raises
    ------
    ModelLoadError
        A missing file, weights that do not fit, or no adapter that loads weights into it.
    """
    return _load_weights(model, Path(weights), f"<{type(model).__qualname__}>")
