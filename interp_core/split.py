"""``Split``: a model given as two callables, ``model(x) = head(features(x))``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Split:
    """A model split at the layer to explain.

    The target layer is the output of ``features``; ``head`` maps it to the model output.
    Used by the JAX adapter for plain functions, Equinox modules or bound Flax modules.

    Parameters
    ----------
    features : callable
        ``features(x) -> activations``.
    head : callable
        ``head(activations) -> output``.
    """

    features: Callable[[Any], Any]
    head: Callable[[Any], Any]

    def __call__(self, x: Any) -> Any:
        return self.head(self.features(x))
