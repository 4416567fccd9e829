"""``interp_core.Split(features, head)``: two JAX callables, the target layer between them.

Each callable is separated into arrays (passed to the jitted function, so new weights do not
recompile) and a static rest (the compile-cache key):

- an ``nnx.Module`` (or a bound method of one): as :mod:`interp_jax.nnx_model` splits a model,
  rebuilt in eval mode;
- a pytree such as an Equinox module, or a ``functools.partial`` over arrays (e.g.
  ``partial(linen_module.apply, variables)``): its array leaves;
- anything else (a plain function, a closure, a bound Linen module): kept as it is and keyed by
  identity; arrays it closes over are compiled in as constants.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np

from interp_core.backend.protocol import InputSpec, LayerProbe
from interp_core.backend.target_spec import select_output
from interp_core.split import Split
from interp_jax.layers import AdapterError, Handler, apply_handler, call_traced, describe

try:  # flax is optional for Split models
    from flax import nnx

    from interp_jax.nnx_model import set_eval_mode
    from interp_jax.nnx_model import structure_of as nnx_structure
except ImportError:  # pragma: no cover - flax is a declared dependency
    nnx = None

#: The one layer of a Split: the output of ``features``.
LAYER = "features"

_VALUE_TYPES = (int, float, complex, str, bytes, bool, type(None))


class Static:
    """A cache-key wrapper: equal by value for plain Python values, else by identity.

    It holds a strong reference, so an identity cannot be reused while the key is cached.
    """

    __slots__ = ("obj",)

    def __init__(self, obj: Any) -> None:
        self.obj = obj

    def __hash__(self) -> int:
        return hash(self.obj) if isinstance(self.obj, _VALUE_TYPES) else id(self.obj)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Static):
            return NotImplemented
        if self.obj is other.obj:
            return True
        return (isinstance(self.obj, _VALUE_TYPES) and type(self.obj) is type(other.obj)
                and self.obj == other.obj)


def _is_array(leaf: Any) -> bool:
    return isinstance(leaf, jax.Array | np.ndarray)


class Part:
    """The static side of one callable of a Split; :func:`partition` makes it.

    Attributes
    ----------
    key : hashable
        Equal for callables that trace to the same program.
    """

    def __init__(self, key: Any, *, module: Any = None, method: Any = None,
                 treedef: Any = None, statics: tuple[Any, ...] = (), fn: Any = None) -> None:
        self.key = key
        self._module, self._method = module, method
        self._treedef, self._statics, self._fn = treedef, statics, fn

    def rebuild(self, arrays: Any) -> Callable[..., Any]:
        """The callable, with ``arrays`` (traced) in place of its arrays."""
        if self._module is not None:  # an NNX module: an eval-mode copy
            module = self._module.rebuild(arrays)
            set_eval_mode(module)
            return module if self._method is None else self._method.__get__(module)
        if self._fn is not None:
            return self._fn
        it = iter(arrays)
        leaves = [next(it) if s is None else s.obj for s in self._statics]
        return jax.tree_util.tree_unflatten(self._treedef, leaves)


def partition(fn: Callable[..., Any]) -> tuple[Part, Any]:
    """``(part, arrays)``: a callable's static side and the arrays to pass to jit.

    The part holds no array of ``fn`` (so a cached compiled function does not keep a model's
    weights alive), except for callables that are opaque to jax (plain closures).
    """
    if not callable(fn):
        raise TypeError(f"Split parts must be callables, got {type(fn).__name__}")
    owner = getattr(fn, "__self__", None)
    if nnx is not None and (isinstance(fn, nnx.Module) or (
            inspect.ismethod(fn) and isinstance(owner, nnx.Module))):
        method = None if isinstance(fn, nnx.Module) else fn.__func__
        module, arrays = nnx_structure(fn if method is None else owner)
        return Part(("nnx", module.key, method), module=module, method=method), arrays
    tree = fn
    if isinstance(fn, functools.partial):
        tree = jax.tree_util.Partial(fn.func, *fn.args, **fn.keywords)
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    arrays = tuple(leaf for leaf in leaves if _is_array(leaf))
    statics = tuple(None if _is_array(leaf) else Static(leaf) for leaf in leaves)
    key = ("tree", treedef, statics)
    try:
        hash(key)
    except TypeError:  # an unhashable static inside the tree: key the callable by identity
        return Part(("object", Static(fn)), fn=fn), ()
    return Part(key, treedef=treedef, statics=statics), arrays


class SplitStructure:
    """The static part of a :class:`~interp_core.Split`: both parts' keys; the
    :class:`~interp_jax.structure.ModelStructure` of Splits, one layer (:data:`LAYER`)."""

    def __init__(self, features: Part, head: Part) -> None:
        self.features = features
        self.head = head
        self.key = ("split", features.key, head.key)
        self.paths = {LAYER: ()}

    def layer_names(self) -> list[str]:
        return [LAYER]

    def forward(self, arrays: Any, inputs: Any, handlers: Mapping[str, Handler], *,
                probe: bool = False, output: Any = None) -> Any:
        """``head(handler(features(inputs)))``, traced; errors name both shapes."""
        features = self.features.rebuild(arrays[0])
        head = self.head.rebuild(arrays[1])
        layers = [LAYER]
        feats = call_traced(features, inputs, what="the Split's features", layers=layers)
        handler = handlers.get(LAYER)
        if handler is not None:
            feats = handler(feats) if probe else apply_handler(feats, handler, LAYER)
        try:
            raw = head(feats)
        except AdapterError:
            raise
        except Exception as exc:
            raise ValueError(
                f"the Split's head does not accept the features' output: features(x) gave "
                f"{describe(feats)} for input {describe(inputs)}; head raised "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        return select_output(raw, output)

    def resolve(self, model: Split, layers: Sequence[Any]) -> list[str]:
        """:data:`LAYER` or the features callable (:func:`resolve_layers`)."""
        return resolve_layers(model, layers)

    def input_dtype(self, arrays: Any) -> Any:
        """None: plain functions declare no dtype, inputs keep theirs."""
        return None

    def input_spec(self, model: Split, layout: str) -> InputSpec | None:
        """None: plain functions declare nothing."""
        return None

    def layer_probe(self, model: Split, arrays: Any, inputs: Any, *,
                    channels_first: bool) -> LayerProbe:
        """No pass: a Split has one layer, its ``features``, which is taken as it is."""
        return LayerProbe((), (), 0, native_channels_first=channels_first, only=LAYER)

    def bias_modules(self, model: Split) -> list[tuple[str, np.ndarray]]:
        """Refused: a Split hides its biased layers inside its callables."""
        raise NotImplementedError(
            "FullGrad needs every biased layer of the model, which a Split hides inside "
            "its callables; explain the Flax NNX module itself, or use GradCAM"
        )

    def linear_weights(self, model: Split, fc: Any) -> np.ndarray:
        """Refused: a Split hides its dense layer inside ``head``."""
        raise ValueError(
            "a Split hides its dense layer inside head, so CAM cannot read its weights; use "
            "GradCAM, which equals CAM on global-average-pooling + dense heads"
        )


def split_model(model: Split) -> tuple[SplitStructure, Any]:
    """``(structure, arrays)`` of a Split."""
    features, feature_arrays = partition(model.features)
    head, head_arrays = partition(model.head)
    return SplitStructure(features, head), (feature_arrays, head_arrays)


def resolve_layers(model: Split, layers: Any) -> list[str]:
    """A Split has one layer, ``"features"`` (also reachable as the features callable)."""
    names = []
    for layer in layers:
        if (isinstance(layer, str) and layer == LAYER) or layer is model.features:
            if names:
                raise ValueError(f"layer {LAYER!r} is listed twice")
            names.append(LAYER)
        else:
            raise ValueError(
                f"unknown layer {layer!r}: a Split has one layer, {LAYER!r} (the output of its "
                "features callable); split the model where you want to explain it"
            )
    return names
