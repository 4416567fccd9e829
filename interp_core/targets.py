"""What to explain: the target objects users pass.

Users pass ``targets`` as ``None`` (each sample's top-1 class), an ``int`` (one class for all), a
sequence of ints (one per sample) or these objects.
:func:`interp_core.backend.target_spec.resolve_targets` turns any of them into one batch-level
:class:`~interp_core.backend.target_spec.TargetSpec`, which every adapter scores with
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


Target = (ClassTarget | BinaryTarget | SegmentationTarget | SimilarityTarget | OutputTarget
          | DetectionTarget)
