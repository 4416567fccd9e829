"""What to explain: the target objects users pass.

Users pass ``targets`` as ``None`` (each sample's top-1 class), an ``int`` (one class for all), a
sequence of ints (one per sample) or these objects.
:func:`interp_core.backend.targets.resolve_targets` turns any of them into one batch-level
:class:`~interp_core.backend.targets.TargetSpec`, which every adapter scores with
:func:`interp_core.backend.scoring.target_scores`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class ClassTarget:
    """Score = the model output (logit) of class ``index``."""

    index: int


@dataclass(frozen=True)
class BinaryTarget:
    """Score of a single-logit (sigmoid) model: ``+logit`` (positive) or ``-logit`` (negative)."""

    positive: bool = True


@dataclass(frozen=True, eq=False)
class SegmentationTarget:
    """Score = sum over ``mask`` of the class-``category`` output of a segmentation model.

    ``mask`` has the output's spatial shape ``(H_out, W_out)``; the class axis is the output's
    channel axis (torch: 1, Keras/Flax: last).
    """

    category: int
    mask: np.ndarray


@dataclass(frozen=True, eq=False)
class SimilarityTarget:
    """Score = cosine similarity between the output vector and ``embedding`` ``(D,)``."""

    embedding: np.ndarray


@dataclass(frozen=True, eq=False)
class OutputTarget:
    """Score = ``fn(output)``: a framework-native callable returning one score per sample."""

    fn: Callable[[Any], Any]


Target = ClassTarget | BinaryTarget | SegmentationTarget | SimilarityTarget | OutputTarget
