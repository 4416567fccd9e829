"""The structure of a model: what the JAX backend asks of a model, whatever its kind.

:class:`ModelStructure` is the one protocol the backend calls; :func:`model_structure` looks at
the model once and returns the structure of its kind with the model's arrays:

- a Flax NNX module: :class:`~interp_jax.nnx_model.NNXStructure`, every submodule a layer;
- an :class:`interp_core.Split`: :class:`~interp_jax.split_model.SplitStructure`, one layer
  (the output of ``features``).

A structure is the static part of a model (its :attr:`~ModelStructure.key` is the compile-cache
key) and is closed over by cached compiled functions, so it holds none of the model's arrays;
the methods that read the model itself (its layers' types, weights, biases) take it as an
argument.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from interp_core.backend.protocol import InputSpec, LayerProbe
from interp_core.split import Split
from interp_jax import split_model
from interp_jax.layers import Handler

try:
    from flax import nnx

    from interp_jax import nnx_model
except ImportError:  # pragma: no cover - flax is a declared dependency
    nnx = None


class ModelStructure(Protocol):
    """What the backend needs of a model's structure (NNX module or Split).

    Attributes
    ----------
    key : hashable
        Equal for models that trace to the same program (the compile-cache key).
    """

    key: Hashable

    def layer_names(self) -> list[str]:
        """Every layer's name, in definition order."""
        ...

    def resolve(self, model: Any, layers: Sequence[Any]) -> list[str]:
        """The names of the requested ``layers`` (names or layer objects of ``model``);
        unknown ones raise ``ValueError`` listing close matches."""
        ...

    def forward(self, arrays: Any, inputs: Any, handlers: Mapping[str, Handler], *,
                probe: bool = False, output: Any = None) -> Any:
        """Run the model rebuilt from (traced) ``arrays`` on ``inputs`` with ``handlers`` on
        the named layers; the output ``output`` selects. Traced only."""
        ...

    def input_dtype(self, arrays: Any) -> Any:
        """The dtype floating-point inputs take (the model's), or None to keep theirs."""
        ...

    def input_spec(self, model: Any, layout: str) -> InputSpec | None:
        """The channels and spatial rank ``model`` takes in ``layout``, where it says."""
        ...

    def layer_probe(self, model: Any, arrays: Any, inputs: Any, *,
                    channels_first: bool) -> LayerProbe:
        """What every layer emits on ``inputs`` (prepared), for the core's default layer."""
        ...

    def bias_modules(self, model: Any) -> list[tuple[str, np.ndarray]]:
        """``(name, effective bias)`` of every biased layer (FullGrad); ``NotImplementedError``
        where the structure hides them."""
        ...

    def linear_weights(self, model: Any, fc: Any) -> np.ndarray:
        """The ``(outputs, inputs)`` weights of the dense layer ``fc`` (the last one if None)
        for CAM; ``ValueError`` where there is none or the structure hides it."""
        ...


def model_structure(model: Any) -> tuple[ModelStructure, Any]:
    """``(structure, arrays)`` of ``model``: the static part and the arrays to pass to jit.

    Raises
    ------
    TypeError
        ``model`` is neither a Flax NNX module nor an :class:`interp_core.Split`.
    """
    if isinstance(model, Split):
        return split_model.split_model(model)
    if nnx is not None and isinstance(model, nnx.Module):
        return nnx_model.split_model(model)
    raise TypeError(
        f"interp-jax explains Flax NNX modules and interp_core.Split(features, head), not "
        f"{type(model).__module__}.{type(model).__qualname__}; wrap plain functions, "
        "Equinox modules or Linen modules bound to their parameters as "
        "ic.Split(features_fn, head_fn)"
    )

