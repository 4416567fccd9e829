"""Loading torch model files and weights: the one place torch is imported for them, on demand
(see :mod:`interp_torch.plugin`).

Nothing here runs code from a file unless the user trusts it. ``.pt``/``.pth`` files are read
with ``torch.load(weights_only=True)``, which rebuilds tensors and plain containers only; a file
that pickles a whole module (``torch.save(model, path)``) or any other Python object is refused
unless ``trust=True`` (``--trust-model``), since unpickling it runs whatever code the pickle
names. ``torch.export`` archives (``.pt2``) are checked before loading for the parts that
``torch.export.load`` would unpickle or run (tensor subclasses, custom objects, AOTInductor
code, archives of the older format); an archive of plain tensors loads without trust. Weights
(:func:`load_weights`) come from ``.safetensors`` files or state dicts read with
``weights_only=True``.
"""

from __future__ import annotations

import io
import json
import pickle
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from interp_core.io.errors import ModelLoadError

#: TorchScript files: refused (PyTorch runs no Python hooks inside TorchScript).
TORCHSCRIPT_FILES = (".ts", ".jit")
#: State dicts saved with ``torch.save(model.state_dict(), path)``.
STATE_DICT_FILES = (".pt", ".pth", ".bin")
#: Weights saved with ``safetensors.torch.save_file`` / ``save_model``.
SAFETENSORS_FILES = (".safetensors",)

_GLOBAL = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")

_WEIGHTS_HINT = ("a .safetensors file (safetensors.torch.save_model(model, path)) or a state dict "
                 "(torch.save(model.state_dict(), path))")


# -- model files -------------------------------------------------------------------------------
def load_saved_module(path: Path, *, trust: bool = False) -> Any:
    """The ``torch.nn.Module`` in ``path``, on the CPU.

    Parameters
    ----------
    path : Path
        A ``.pt``/``.pth`` file saved with ``torch.save(model, path)``, or a ``.pt2`` program
        saved with ``torch.export.save``.
    trust : bool
        Allow unpickling Python objects (a whole module), which runs the code the pickle names.

    Raises
    ------
    interp_core.io.ModelLoadError
        The file pickles a module or other objects and ``trust`` is False; it holds weights
        only (a state dict: load it with ``weights=``); it holds a TorchScript module
        (PyTorch runs no Python hooks inside TorchScript, so layers cannot be captured); or
        torch cannot read it.
    """
    import torch

    suffix = path.suffix.lower()
    if suffix == ".pt2":
        return load_exported_program(path, trust=trust)
    if suffix in TORCHSCRIPT_FILES or _is_torchscript_archive(path):
        raise _torchscript_error(path)
    try:
        model = torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as exc:
        if not trust:
            raise _pickle_error(path, exc) from exc
        model = _load_trusted(path)
    except Exception as exc:
        raise _unreadable(path, exc) from exc
    if isinstance(model, torch.jit.ScriptModule):
        raise _torchscript_error(path)
    if isinstance(model, torch.nn.Module):
        return model
    if _is_state_dict(model):
        message = (f"{path} holds weights only (a state dict of {len(model)} tensors), not a "
                   "model: build the model in code and load these weights into it")
        raise ModelLoadError(
            f"{message}: load_model('module:factory', weights={str(path)!r})",
            cli=f"{message}: pass the model as module:factory --weights {path}",
        )
    if isinstance(model, Mapping):
        keys = ", ".join(repr(k) for k in list(model)[:6])
        raise ModelLoadError(
            f"{path} holds a dict with keys [{keys}] (a training checkpoint?), not a model: "
            "save the model's state_dict() on its own and load it with "
            "load_model('module:factory', weights=FILE)",
            cli=f"{path} holds a dict with keys [{keys}] (a training checkpoint?), not a model: "
                "save the model's state_dict() on its own and pass module:factory --weights FILE",
        )
    raise ModelLoadError(
        f"{path} holds a {type(model).__name__}, not a model: save the whole module with "
        "torch.save(model, path), export it with torch.export.save (.pt2), or build it in code "
        "(module:factory) and load its weights"
    )


def _load_trusted(path: Path) -> Any:
    """``torch.load(weights_only=False)``: the user trusts the file's pickle."""
    import torch

    try:
        return torch.load(path, weights_only=False, map_location="cpu")
    except Exception as exc:
        raise _unreadable(path, exc) from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}".rstrip(": ")


def _unreadable(path: Path, exc: BaseException) -> ModelLoadError:
    return ModelLoadError(f"torch cannot read {path}: {_first_line(exc)}")


def _pickle_error(path: Path, exc: BaseException) -> ModelLoadError:
    """The file pickles Python objects that ``weights_only=True`` refuses to rebuild."""
    names = _GLOBAL.findall(str(exc))
    if not names:  # no object refused: a file torch cannot read, or an odd pickle
        inner = exc.__context__ or exc.__cause__ or exc
        message = (f"torch.load(weights_only=True) cannot read {path} ({_first_line(inner)}): "
                   "it is not a torch file, or a pickle that loads only with trust")
        return ModelLoadError(f"{message} (trust=True, only if you trust its source)",
                              cli=f"{message} (--trust-model, only if you trust its source)")
    risk = (f"{path} is a pickled torch module or other Python objects (its pickle names "
            f"{names[0]}): loading it would run the code inside the pickle, which can do "
            "anything")
    return ModelLoadError(
        f"{risk}. If you trust the file's source, load it with trust=True; otherwise build the "
        "model in code and load only its weights: load_model('module:factory', "
        "weights='model.safetensors') (or a .pt state dict)",
        cli=f"{risk}. If you trust the file's source, pass --trust-model; otherwise build the "
            "model in code and load only its weights: module:factory --weights "
            "model.safetensors (or a .pt state dict)",
    )


def _torchscript_error(path: Path) -> ModelLoadError:
    return ModelLoadError(
        f"{path} is a TorchScript module: PyTorch does not run Python hooks inside "
        "TorchScript, so its layers cannot be captured; save the eager module with "
        "torch.save(model, path) or torch.export.save (.pt2), or pass module:attribute"
    )


def _is_torchscript_archive(path: Path) -> bool:
    """A ``torch.jit.save`` archive, whatever its suffix (it has a ``constants.pkl`` record,
    as torch's own check reads it)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.partition("/")[2] == "constants.pkl" for name in archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def _is_state_dict(obj: Any) -> bool:
    import torch

    return isinstance(obj, Mapping) and bool(obj) and all(
        isinstance(k, str) and torch.is_tensor(v) for k, v in obj.items())


# -- torch.export programs ---------------------------------------------------------------------
def load_exported_program(path: Path, *, trust: bool = False) -> Any:
    """The module of a ``torch.export`` program saved with ``torch.export.save``, unflattened.

    ``torch.export.unflatten`` rebuilds the original module hierarchy (``layer4``,
    ``blocks.11.norm1``) as modules that forward hooks see, so layers are named and captured as
    in the eager model. The program runs at the input shapes it was exported for (unless it was
    exported with dynamic shapes).

    ``torch.export.load`` unpickles parts of some archives (tensor subclasses, custom and
    opaque objects, sample inputs that are not plain tensors, the weights of the older archive
    format) and loads AOTInductor's compiled code; without ``trust`` the archive is checked
    first (:func:`exported_program_risks`) and such an archive is refused. An export of an
    ordinary module holds none of them.

    Raises
    ------
    interp_core.io.ModelLoadError
        The archive needs trust and ``trust`` is False; the file holds no exported program, or
        its program cannot be unflattened.
    """
    import torch

    if not trust:
        risks = exported_program_risks(path)
        if risks:
            message = (f"{path} is a torch.export archive that holds {'; '.join(risks)}: "
                       "loading it would unpickle them (run the code inside the pickle) or "
                       "load compiled code")
            raise ModelLoadError(
                f"{message}. If you trust the file's source, load it with trust=True",
                cli=f"{message}. If you trust the file's source, pass --trust-model",
            )
    try:
        program = torch.export.load(path)
    except Exception as exc:
        raise ModelLoadError(
            f"{path} is not a torch.export program (torch.export.save(torch.export.export("
            f"model, (x,)), path)): {_first_line(exc)}"
        ) from exc
    try:
        return torch.export.unflatten(program)
    except Exception as exc:
        raise ModelLoadError(
            f"the torch.export program in {path} cannot be unflattened into its modules, so its "
            "layers cannot be hooked; export it with torch.export.export(model, args, "
            "preserve_module_call_signature=...) or save the eager module with torch.save: "
            f"{_first_line(exc)}"
        ) from exc


def exported_program_risks(path: Path) -> list[str]:
    """What in a ``torch.export.save`` archive ``torch.export.load`` would unpickle or run.

    Reads the archive's records and configuration (JSON) and, for the blobs that
    ``torch.export.load`` unpickles with a fallback to ``weights_only=False``, tries
    ``weights_only=True`` first: nothing in the file runs. An empty list means the archive
    holds plain tensors and graphs only. A file that is no zip archive gives an empty list
    (``torch.export.load`` then fails without unpickling anything).
    """
    import torch
    from torch.export.pt2_archive import PT2ArchiveReader
    from torch.export.pt2_archive import constants as pt2

    if not zipfile.is_zipfile(path):
        return []
    try:
        reader = PT2ArchiveReader(str(path))
        names = reader.get_file_names()
    except Exception:
        with zipfile.ZipFile(path) as archive:
            records = {name.partition("/")[2] for name in archive.namelist()}
        # torch.export.load reads an archive of the older format (a "version" record) with
        # torch.load, falling back to weights_only=False.
        return ["the older torch.export format (its weights are unpickled)"] if (
            "version" in records) else []
    try:
        return _archive_risks(reader, names, pt2, torch)
    except Exception as exc:  # a layout this check does not know: ask for trust
        return [f"records this check cannot read ({_first_line(exc)})"]


def _archive_risks(reader: Any, names: list[str], pt2: Any, torch: Any) -> list[str]:
    risks: list[str] = []

    def unsafe(data: bytes) -> bool:
        if not data:
            return False
        try:
            torch.load(io.BytesIO(data), weights_only=True)
        except Exception:
            return True
        return False

    def config(name: str) -> dict[str, Any]:
        return json.loads(reader.read_string(name)).get("config", {}) if name in names else {}

    if any(n.startswith(pt2.AOTINDUCTOR_DIR) for n in names):
        risks.append("AOTInductor compiled code")
    prefix, _, suffix = pt2.MODELS_FILENAME_FORMAT.partition("{}")
    models = [n[len(prefix):-len(suffix)] for n in names
              if n.startswith(prefix) and n.endswith(suffix)]
    for model in models:
        legacy = [f"{pt2.WEIGHTS_DIR}{model}.pt", f"{pt2.CONSTANTS_DIR}{model}.pt"]
        if any(n in names and unsafe(reader.read_bytes(n)) for n in legacy):
            risks.append("pickled weights or constants of the older format")
        weights = config(pt2.WEIGHTS_CONFIG_FILENAME_FORMAT.format(model))
        if any(meta.get("use_pickle") for meta in weights.values()):
            risks.append("pickled weights (tensor subclasses)")
        constants = config(pt2.CONSTANTS_CONFIG_FILENAME_FORMAT.format(model))
        if any(meta.get("use_pickle") or not str(meta.get("path_name", "")).startswith(
                pt2.TENSOR_CONSTANT_FILENAME_PREFIX) for meta in constants.values()):
            risks.append("pickled constants or custom objects")
        inputs = pt2.SAMPLE_INPUTS_FILENAME_FORMAT.format(model)
        if inputs in names and unsafe(reader.read_bytes(inputs)):
            risks.append("sample inputs that are not plain tensors")
    return list(dict.fromkeys(risks))


# -- weights ----------------------------------------------------------------------------------
def load_weights(model: Any, path: Path) -> Any:
    """Load the weights in ``path`` into the ``nn.Module`` ``model`` (strictly) and return it.

    ``.safetensors`` files are read with the optional ``safetensors`` package; ``.pt``,
    ``.pth`` and ``.bin`` state dicts with ``torch.load(weights_only=True)`` (no code runs).
    Every key must match: missing, unexpected or mis-shaped weights are refused with an error
    that names a few of them. Tied weights stored once (``safetensors.torch.save_model``) fill
    every name they are tied to. A model built on the ``meta`` device gets the file's tensors
    themselves (``load_state_dict(assign=True)``).

    Raises
    ------
    interp_core.io.ModelLoadError
        An unknown suffix, an unreadable file, a file of pickled objects, or weights that do
        not fit the model.
    """
    import torch

    if not isinstance(model, torch.nn.Module):
        raise ModelLoadError(f"weights load into a torch.nn.Module, not a "
                             f"{type(model).__module__}.{type(model).__qualname__}")
    suffix = path.suffix.lower()
    if suffix in SAFETENSORS_FILES:
        state = _read_safetensors(path)
    elif suffix in STATE_DICT_FILES:
        state = _read_state_dict(path)
    else:
        raise ModelLoadError(
            f"{path}: torch weights load from {', '.join(SAFETENSORS_FILES + STATE_DICT_FILES)} "
            f"files, not {suffix or 'a file without a suffix'}: save {_WEIGHTS_HINT}"
        )
    state = _fill_tied(model, state)
    meta = any(t.is_meta for t in (*model.parameters(), *model.buffers()))
    try:
        model.load_state_dict(state, strict=True, assign=meta)
    except RuntimeError as exc:
        raise _mismatch(model, state, path, exc) from exc
    return model


def _read_safetensors(path: Path) -> dict[str, Any]:
    try:
        from safetensors.torch import load_file
    except ImportError as exc:
        raise ModelLoadError(f"reading {path} needs the safetensors package: "
                             "pip install safetensors") from exc
    try:
        return load_file(str(path), device="cpu")
    except Exception as exc:
        raise ModelLoadError(f"{path} is not a readable .safetensors file: "
                             f"{_first_line(exc)}") from exc


def _read_state_dict(path: Path) -> dict[str, Any]:
    import torch

    if _is_torchscript_archive(path):
        raise ModelLoadError(f"{path} is a TorchScript archive, not a state dict: save "
                             f"{_WEIGHTS_HINT}")
    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as exc:
        names = _GLOBAL.findall(str(exc))
        what = f"pickled Python objects (it names {names[0]})" if names else "no state dict"
        raise ModelLoadError(
            f"{path} holds {what}, not a state dict of tensors: save {_WEIGHTS_HINT}"
        ) from exc
    except Exception as exc:
        raise _unreadable(path, exc) from exc
    if isinstance(state, torch.nn.Module):  # allowed by the user's torch safe globals
        return state.state_dict()
    if not _is_state_dict(state):
        keys = (f"a dict with keys [{', '.join(repr(k) for k in list(state)[:6])}]"
                if isinstance(state, Mapping) else f"a {type(state).__name__}")
        raise ModelLoadError(f"{path} holds {keys}, not a state dict of tensors (a training "
                             f"checkpoint?): save {_WEIGHTS_HINT}")
    return dict(state)


def _fill_tied(model: Any, state: dict[str, Any]) -> dict[str, Any]:
    """``state`` with the names of tied weights (one tensor under several names) filled from
    the one name the file stores."""
    groups: dict[int, list[str]] = {}
    for name, tensor in model.state_dict(keep_vars=True).items():
        groups.setdefault(id(tensor), []).append(name)
    filled = dict(state)
    for names in groups.values():
        present = [n for n in names if n in filled]
        if present and len(present) < len(names):
            for name in names:
                filled.setdefault(name, filled[present[0]])
    return filled


def _mismatch(model: Any, state: Mapping[str, Any], path: Path,
              exc: BaseException) -> ModelLoadError:
    """The weights do not fit the model: name a few missing, unexpected, mis-shaped keys."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [f"{k!r} {tuple(state[k].shape)} in the file, {tuple(expected[k].shape)} in the "
              "model" for k in expected if k in state and tuple(state[k].shape) != tuple(
                  expected[k].shape)]

    def few(keys: list[str]) -> str:
        more = f", ... ({len(keys)} in all)" if len(keys) > 3 else ""
        return ", ".join(repr(k) for k in keys[:3]) + more

    parts = []
    if missing:
        parts.append(f"missing {few(missing)}")
    if unexpected:
        parts.append(f"unexpected {few(unexpected)}")
    if shapes:
        parts.append("shapes differ for " + "; ".join(shapes[:3]))
    if not parts:
        parts.append(_first_line(exc))
    hint = ""
    if unexpected and all(k.startswith("module.") for k in unexpected):
        hint = " (saved from a DataParallel/DistributedDataParallel wrapper: strip 'module.')"
    message = f"the weights in {path} do not fit the model: {'; '.join(parts)}{hint}"
    return ModelLoadError(
        f"{message}; model.state_dict() lists the names and shapes it expects",
        cli=f"{message}; `interp layers MODEL` lists the model's layers",
    )
