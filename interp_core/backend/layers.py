"""Layer outputs and layer requests, the same in every adapter.

- Structured layer outputs: :func:`first_leaf` / :func:`replace_first`. A layer that returns
  a tuple, list, named tuple or dict is explained through its first tensor: the first value
  of a dict (insertion order), then the first element of a sequence (so a dict whose first
  value is a tuple gives that tuple's first element).
- Layer requests: :func:`resolve_layer_paths` (names or layer objects, each once);
  :func:`unknown_layer_error` (closest names), :func:`missing_layers_error`,
  :func:`layer_ran_twice_error`.

Imports no framework: every function takes the framework's tensor test as an argument.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping, Sequence
from typing import Any


# -- structured layer outputs -----------------------------------------------------------------
def first_leaf(out: Any, is_tensor: Callable[[Any], bool]) -> Any | None:
    """The tensor a layer output is explained through, or None when it has none.

    ``out`` itself if it is a tensor; else, for a dict, its first value (insertion order);
    then, for a tuple, list or named tuple, its first element. So a dict whose first value is
    a tuple gives that tuple's first element; a tuple inside a tuple gives None. Anything else
    (or an empty container) gives None.

    Parameters
    ----------
    out : object
        What the layer returned.
    is_tensor : callable
        The framework's tensor test (``torch.is_tensor``, ``tf.is_tensor``, ...).
    """
    if is_tensor(out):
        return out
    if isinstance(out, Mapping):
        out = next(iter(out.values()), None)
    if isinstance(out, tuple | list):
        out = out[0] if out else None
    return out if is_tensor(out) else None


def _with_first(out: Any, new: Any) -> Any:
    """``out`` (a tuple, list or named tuple) with its first element replaced by ``new``."""
    if hasattr(out, "_fields"):  # a named tuple: its constructor takes fields, not a sequence
        return out._replace(**{out._fields[0]: new})
    return type(out)([new, *out[1:]])


def replace_first(out: Any, new: Any, is_tensor: Callable[[Any], bool]) -> Any:
    """``out`` with the tensor :func:`first_leaf` reads replaced by ``new``.

    The container keeps its type (a dict's keys and their order, a named tuple's fields); the
    other entries are kept as they are.
    """
    if is_tensor(out):
        return new
    if isinstance(out, Mapping):
        key = next(iter(out))
        first = out[key]
        merged = {**out, key: _with_first(first, new) if isinstance(first, tuple | list)
                  else new}
        if type(out) is dict:
            return merged
        kind: Any = type(out)
        try:
            return kind(merged)
        except TypeError:  # a mapping type that is not built from a dict
            return merged
    return _with_first(out, new)


def not_a_tensor_error(name: str, out: Any) -> TypeError:
    """The error for a layer whose output has no tensor to explain."""
    return TypeError(
        f"layer {name!r} returned {type(out).__name__}, not a tensor; pick a layer whose output "
        "is a tensor (or a tuple or dict whose first entry is one)"
    )


# -- layer requests and errors ----------------------------------------------------------------
def resolve_layer_paths(layers: Sequence[Any], layer_type: type,
                        paths_by_id: Callable[[], Mapping[int, str]],
                        path_of_name: Callable[[str], str], *,
                        foreign_layer: Callable[[Any], str], expected: str) -> list[str]:
    """The path of each requested layer, given as a name or as a layer object of the model.

    Parameters
    ----------
    layers : sequence
        What the user asked for: names and layer objects.
    layer_type : type
        The framework's layer class; its instances are found by identity.
    paths_by_id : callable
        ``() -> {id(layer): path}`` over the model's layers, called at the first layer object.
    path_of_name : callable
        ``name -> path``; raises the adapter's unknown-layer error.
    foreign_layer : callable
        ``layer -> message`` for a layer object that is not part of the model.
    expected : str
        What a layer must be, for the error about anything else.

    Raises
    ------
    ValueError
        A layer object that is not part of the model, or a layer listed twice.
    TypeError
        Neither a name nor a ``layer_type``.
    """
    paths: list[str] = []
    by_id: Mapping[int, str] | None = None
    for layer in layers:
        if isinstance(layer, layer_type):
            by_id = paths_by_id() if by_id is None else by_id
            if id(layer) not in by_id:
                raise ValueError(foreign_layer(layer))
            path = by_id[id(layer)]
        elif isinstance(layer, str):
            path = path_of_name(layer)
        else:
            raise TypeError(f"layer {layer!r} must be {expected}")
        if path in paths:
            raise ValueError(f"layer {path!r} is listed twice")
        paths.append(path)
    return paths


class UnknownLayerError(ValueError):
    """A layer name the model does not have; ``close`` holds the closest names.

    ``cli_message()`` says the same in the ``interp`` command's words (``--layer``,
    ``interp layers MODEL``).
    """

    def __init__(self, name: str, close: Sequence[str], known: int, listing: str = "",
                 detail: str = "") -> None:
        how = f"; {listing} lists them" if listing else ""
        super().__init__(
            f"unknown layer {name!r}; closest names: {list(close) or 'none'} (the model has "
            f"{known} {detail or 'named layers'}{how})")
        self.name = name
        self.close = list(close)
        self.known = known

    def cli_message(self) -> str:
        guess = f"; did you mean {' or '.join(map(repr, self.close[:3]))}?" if self.close else ""
        return (f"unknown --layer {self.name!r}{guess} (`interp layers MODEL` lists all "
                f"{self.known})")


def unknown_layer_error(name: str, known: Sequence[str], listing: str = "", *,
                        close: Sequence[str] | None = None, detail: str = ""
                        ) -> UnknownLayerError:
    """The error for a layer name the model does not have, with the closest names.

    Parameters
    ----------
    name : str
        What the user asked for.
    known : sequence of str
        Every addressable layer name of the model.
    listing : str
        How the user can list them (``"get_backend('torch').layer_names(model)"``).
    close : sequence of str, optional
        The closest names, where the adapter finds them its own way (default: difflib).
    detail : str
        What the names are (default ``"named layers"``).
    """
    if close is None:
        close = difflib.get_close_matches(name, list(known), n=6, cutoff=0.5)
    return UnknownLayerError(name, close, len(known), listing, detail)


def missing_layers_error(missing: Sequence[str], how: str = "") -> ValueError:
    """The error for requested layers that never ran in the forward pass."""
    extra = f" ({how})" if how else ""
    return ValueError(
        f"layer(s) {list(missing)} never ran in the forward pass; pick layers that the model's "
        f"forward pass uses{extra}"
    )


def layer_ran_twice_error(name: str) -> ValueError:
    """The error for a layer that ran more than once in one pass (a shared module)."""
    return ValueError(
        f"layer {name!r} ran more than once in one forward pass (a shared module), so its "
        "activation and gradient are ambiguous; pick a layer that runs once"
    )
