"""What to explain: the target objects users pass.

Users pass ``targets`` as ``None`` (each sample's top-1 class), an ``int`` (one class for all), a
sequence of ints (one per sample) or these objects.
:func:`interp_core.backend.target_spec.resolve_targets` turns any of them into one batch-level
:class:`~interp_core.backend.target_spec.TargetSpec`, which every adapter scores with
:func:`interp_core.backend.scoring.target_scores`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
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


@dataclass(frozen=True, eq=False)
class DetectionTarget:
    """Score of one image's detections, for models that return per-image detections.

    The output is a list with one mapping per image holding ``"boxes"`` ``(K, 4)`` as
    ``(x1, y1, x2, y2)`` in input pixels, ``"labels"`` ``(K,)`` and ``"scores"`` ``(K,)`` (what
    torchvision's Faster R-CNN, RetinaNet, FCOS, SSD and Mask R-CNN return in eval mode), or
    what :mod:`interp_core.detection` reads from a raw head (``output=`` its
    ``ultralytics_output`` for YOLO, ``detr_output`` for DETR).

    - With ``box``: the detection of class ``label`` (any class when ``label`` is None) whose
      box overlaps ``box`` most, if that IoU is at least ``iou_threshold``; score = IoU + the
      detection's score, as pytorch-grad-cam's ``FasterRCNNBoxScoreTarget`` (the IoU term lets
      the box regression reach the map).
    - Without ``box``: the scores of all detections of class ``label`` summed (of all
      detections when ``label`` is None). A plain int target on a detection model means this.

    An image where nothing matches scores 0 (its map is empty); when no image of the batch
    matches, explaining raises an error that lists the detections found.

    Parameters
    ----------
    label : int, optional
        Class index, as in the model's ``"labels"``.
    box : sequence of 4 floats, optional
        ``(x1, y1, x2, y2)`` in the input's pixel coordinates.
    iou_threshold : float
        Least IoU for a detection to match ``box``.
    """

    label: int | None = None
    box: Any = None
    iou_threshold: float = 0.5

    def __post_init__(self) -> None:
        if self.box is not None:
            box = np.asarray(self.box, dtype=np.float64).ravel()
            if box.shape != (4,) or not np.isfinite(box).all() or not (
                    box[2] >= box[0] and box[3] >= box[1]):
                raise ValueError(
                    f"DetectionTarget box={self.box!r} must be 4 finite numbers "
                    "(x1, y1, x2, y2) with x2 >= x1 and y2 >= y1"
                )
        if self.label is not None and int(self.label) < 0:
            raise ValueError(f"DetectionTarget label={self.label} must be >= 0 or None")
        if not 0.0 <= float(self.iou_threshold) <= 1.0:
            raise ValueError(
                f"DetectionTarget iou_threshold={self.iou_threshold} must be in [0, 1]"
            )


@dataclass(frozen=True, eq=False)
class ContrastTarget:
    """Score of class ``main`` against the classes it is most easily confused with (Finer-CAM).

    With ``o`` the logits and ``p = softmax(o)``, over the comparison classes ``j``::

        score = sum_j p_j (o_main - alpha o_j) / (sum_j p_j + 1e-9)

    (Zhang et al., "Finer-CAM: Spotting the difference reveals finer details for visual
    explanation", CVPR 2025; pytorch-grad-cam's ``FinerWeightedTarget``). ``p`` is computed
    inside the forward pass, so gradients flow through the weights as well. Any gradient
    method explains it; :class:`~interp_core.FinerCAM` is Grad-CAM of it.

    Parameters
    ----------
    main : int, optional
        The class explained; None: each sample's top-1 class, chosen in the forward pass.
    comparisons : sequence of int, optional
        The comparison classes, explicitly (none of them ``main``).
    ranks : sequence of int
        Used when ``comparisons`` is None: the comparison classes by their rank in closeness
        to the main class's logit (``|o_j - o_main|``; rank 1 is the closest other class),
        ranked in the same forward pass. Ranks beyond the model's classes are dropped, as
        pytorch-grad-cam does; a model left with no comparison class is an error.
    alpha : float
        How much of the comparison logits is taken away (1: the plain difference; 0: the main
        logit alone, weighted).
    """

    main: int | None = None
    comparisons: Sequence[int] | None = None
    ranks: Sequence[int] = (1, 2, 3)
    alpha: float = 1.0

    def __post_init__(self) -> None:
        if self.main is not None and (isinstance(self.main, bool) or int(self.main) < 0):
            raise ValueError(f"ContrastTarget main={self.main!r} must be a class index >= 0 "
                             "or None (each sample's top-1 class)")
        if self.comparisons is not None:
            classes = _int_list(self.comparisons, "comparisons")
            if not classes or min(classes) < 0:
                raise ValueError(f"ContrastTarget comparisons={self.comparisons!r} must be a "
                                 "non-empty sequence of class indices >= 0")
            if self.main is not None and int(self.main) in classes:
                raise ValueError(f"ContrastTarget comparisons={classes} include the main "
                                 f"class {self.main}; compare it with other classes")
        else:
            ranks = _int_list(self.ranks, "ranks")
            if not ranks or min(ranks) < 1:
                raise ValueError(f"ContrastTarget ranks={self.ranks!r} must be a non-empty "
                                 "sequence of ranks >= 1 (1: the class whose logit is closest "
                                 "to the main class's)")
        if not np.isfinite(float(self.alpha)):
            raise ValueError(f"ContrastTarget alpha={self.alpha!r} must be a finite number")


def _int_list(values: Any, name: str) -> list[int]:
    """``values`` (an int or a sequence of ints) as a list of ints, or a TypeError."""
    items = [values] if isinstance(values, int | np.integer) else list(values)
    if any(isinstance(v, bool) or not isinstance(v, int | np.integer) for v in items):
        raise TypeError(f"ContrastTarget {name}={values!r} must hold ints")
    return [int(v) for v in items]


Target = (ClassTarget | BinaryTarget | SegmentationTarget | SimilarityTarget | OutputTarget
          | DetectionTarget | ContrastTarget)
