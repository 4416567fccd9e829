"""Target scores of detection outputs: per-image lists of boxes, labels and scores.

Detection models (torchvision's Faster R-CNN, RetinaNet, FCOS, SSD) return one mapping per
image with ``"boxes"`` ``(K, 4)``, ``"labels"`` ``(K,)`` and ``"scores"`` ``(K,)``, where ``K``
varies per image. Which detection a target means is a discrete choice made here in NumPy, from
the values; the score of that choice is then built from the framework tensors with plain
indexing and arithmetic (``boxes[k][0]``, ``+``, ``*``, ``/``), which every framework supports,
so its gradient reaches the layers. Where IoU needs ``min``/``max``, the branch is chosen in
NumPy at the current values: the gradient is the one the framework's own ``min``/``max`` gives.

Target kinds on a detection output:

- ``"detection"`` (:class:`~interp_core.targets.DetectionTarget`): with a box, IoU + score of the
  best-matching detection of the label (pytorch-grad-cam's ``FasterRCNNBoxScoreTarget``); without
  one, the label's scores summed;
- ``"class"`` (an int target): the class's scores summed;
- ``"top1"`` (no target): the most confident detection's score; its label is the sample's class.

Detectors whose head returns raw tensors rather than ready boxes (Ultralytics YOLO's dense
``(4 + classes, anchors)`` head, DETR's per-query logits and boxes) give one
:class:`Detections` per image instead of a plain mapping (:mod:`interp_core.detection` builds
them): the matching reads their NumPy values, and each computes the chosen detection's score
and box from the model's own tensors only when asked.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from interp_core.backend.target_spec import TargetSpec, is_per_image_mappings

#: The keys a per-image detection mapping must hold.
DETECTION_KEYS = ("boxes", "labels", "scores")


def is_detection_output(output: Any) -> bool:
    """Whether ``output`` is a list of per-image mappings with labels and scores."""
    return is_per_image_mappings(output) and all(
        "labels" in d and "scores" in d for d in output)


def values(t: Any) -> np.ndarray:
    """A framework tensor's values as NumPy, outside any gradient record (``detach`` where the
    tensor has one, as torch tensors do; TensorFlow and JAX arrays convert directly)."""
    for method in ("detach", "cpu"):
        f = getattr(t, method, None)
        if callable(f):
            t = f()
    return np.asarray(t)


def iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU ``(K,)`` of one box ``(4,)`` with each of ``boxes`` ``(K, 4)`` (x1, y1, x2, y2)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    lo = np.maximum(boxes[:, :2], box[:2])
    hi = np.minimum(boxes[:, 2:], box[2:])
    inter = np.prod(np.clip(hi - lo, 0.0, None), axis=1)
    area = np.prod(np.clip(boxes[:, 2:] - boxes[:, :2], 0.0, None), axis=1)
    union = area + np.prod(box[2:] - box[:2]) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def _iou_tensor(box: np.ndarray, pred: Any, pred_values: np.ndarray) -> Any:
    """IoU of the constant ``box`` with the tensor box ``pred`` ``(4,)``, differentiable in
    ``pred``; the ``min``/``max`` branches are those active at ``pred_values``. At a tie the
    gradient is split in half, as torch's and JAX's ``maximum``/``minimum`` do (a target box
    copied from a detection ties on all four sides)."""
    def pick(k: int, take_pred: bool, take_box: bool) -> Any:
        if take_pred and not take_box:
            return pred[k]
        if take_box and not take_pred:
            return float(box[k])
        return (pred[k] + float(box[k])) * 0.5

    def larger(k: int) -> Any:
        return pick(k, pred_values[k] >= box[k], pred_values[k] <= box[k])

    def smaller(k: int) -> Any:
        return pick(k, pred_values[k] <= box[k], pred_values[k] >= box[k])

    inter = (smaller(2) - larger(0)) * (smaller(3) - larger(1))
    area_pred = (pred[2] - pred[0]) * (pred[3] - pred[1])
    area_box = float((box[2] - box[0]) * (box[3] - box[1]))
    return inter / (area_pred + area_box - inter)


class Detections(Mapping[str, np.ndarray]):
    """One image's detections kept as the model's tensors and scored lazily.

    The base of detections read from a raw detector head (:mod:`interp_core.detection`). A
    subclass sets the NumPy values the matching reads and implements the three differentiable
    reads; it must use only indexing, slicing, arithmetic and ``ops`` on the tensors, so that
    it works on every framework's tensors. As a mapping it shows the values: ``"boxes"``,
    ``"labels"``, ``"scores"``.

    Attributes
    ----------
    boxes : np.ndarray
        float64 ``(K, 4)``, ``(x1, y1, x2, y2)`` in input pixels.
    labels : np.ndarray
        int64 ``(K,)``.
    scores : np.ndarray
        float64 ``(K,)``.
    like : tensor
        A tensor of the model output, whose dtype and device constants take.
    """

    boxes: np.ndarray
    labels: np.ndarray
    scores: np.ndarray
    like: Any

    def score(self, k: int, ops: Any) -> Any:
        """The score of detection ``k`` as a 0-d tensor."""
        raise NotImplementedError

    def box(self, k: int, ops: Any) -> Sequence[Any]:
        """The box of detection ``k``: four 0-d tensors ``(x1, y1, x2, y2)`` (or a ``(4,)``
        tensor)."""
        raise NotImplementedError

    def total(self, chosen: np.ndarray, ops: Any) -> Any:
        """The sum of the scores of detections ``chosen`` (int indices), a 0-d tensor."""
        raise NotImplementedError

    def __getitem__(self, key: str) -> np.ndarray:
        if key not in DETECTION_KEYS:
            raise KeyError(key)
        return getattr(self, key)  # type: ignore[no-any-return]

    def __iter__(self) -> Iterator[str]:
        return iter(DETECTION_KEYS)

    def __len__(self) -> int:
        return len(DETECTION_KEYS)

    def __repr__(self) -> str:
        return f"<{type(self).__name__}: {_describe(self.labels, self.scores)}>"


class _MappingDetections(Detections):
    """A plain mapping of tensors (torchvision's detections) read as :class:`Detections`."""

    def __init__(self, det: Mapping[str, Any]) -> None:
        self.det = det
        self.labels = values(det["labels"]).astype(np.int64).reshape(-1)
        self.scores = values(det["scores"]).astype(np.float64).reshape(-1)
        self.like = det["scores"]

    @property  # type: ignore[override]
    def boxes(self) -> np.ndarray:
        if "boxes" not in self.det:
            raise ValueError("DetectionTarget with a box needs a 'boxes' entry in the detections")
        return values(self.det["boxes"]).astype(np.float64).reshape(-1, 4)

    def score(self, k: int, ops: Any) -> Any:
        return self.det["scores"][k]

    def box(self, k: int, ops: Any) -> Any:
        return self.det["boxes"][k]

    def total(self, chosen: np.ndarray, ops: Any) -> Any:
        scores = self.det["scores"]
        total = scores[int(chosen[0])]
        for k in chosen[1:]:
            total = total + scores[int(k)]
        return total


def as_detections(det: Mapping[str, Any]) -> Detections:
    """``det`` as :class:`Detections` (a plain mapping of tensors is wrapped)."""
    return det if isinstance(det, Detections) else _MappingDetections(det)


def _describe(labels: np.ndarray, scores: np.ndarray, limit: int = 5) -> str:
    if not len(labels):
        return "no detections"
    order = np.argsort(-scores)[:limit]
    listed = ", ".join(f"label {int(labels[i])} score {float(scores[i]):.3g}" for i in order)
    more = f" and {len(labels) - limit} more" if len(labels) > limit else ""
    return f"{len(labels)} detections ({listed}{more})"


def _image_score(det: Detections, spec: TargetSpec, i: int,
                 ops: Any) -> tuple[Any, int, str]:
    """One image's score (a 0-d tensor, or None when nothing matches), its class, and what it
    found (for the error when no image matches)."""
    labels, scores_np = det.labels, det.scores
    found = _describe(labels, scores_np)
    if spec.kind == "top1":
        if not len(labels):
            return None, -1, found
        k = int(np.argmax(scores_np))
        return det.score(k, ops), int(labels[k]), found
    label = int(spec.indices[i])
    chosen = np.flatnonzero(labels == label) if label >= 0 else np.arange(len(labels))
    box = None if spec.boxes is None else spec.boxes[i]
    if box is None or np.isnan(box).any():
        if not len(chosen):
            return None, label, found
        return det.total(chosen, ops), label, found
    boxes_np = det.boxes
    overlaps = iou(box, boxes_np[chosen]) if len(chosen) else np.zeros(0)
    threshold = float(spec.thresholds[i]) if spec.thresholds is not None else 0.5
    if not len(chosen) or overlaps.max() < threshold:
        best = f"best IoU {overlaps.max():.3g}" if len(chosen) else "none of that label"
        return None, label, f"{found}; {best} with box {box.tolist()}"
    k = int(chosen[int(np.argmax(overlaps))])
    if overlaps.max() <= 0:  # iou_threshold=0 and no overlap: the IoU term is a constant 0
        return det.score(k, ops), label, found
    return _iou_tensor(box, det.box(k, ops), boxes_np[k]) + det.score(k, ops), label, found


def detection_scores(output: Sequence[Mapping[str, Any]], spec: TargetSpec,
                     ops: Any) -> tuple[Any, Any | None]:
    """Per-image target scores ``(N,)`` of a detection output (see the module docstring).

    Parameters
    ----------
    output : list of mappings
        One mapping per image with ``"labels"``, ``"scores"`` (and ``"boxes"`` for box targets),
        or one :class:`Detections` per image.
    spec : TargetSpec
        ``"top1"``, ``"class"`` or ``"detection"``.
    ops : TensorOps
        The adapter's tensor operations (``const``).

    Returns
    -------
    scores : tensor ``(N,)``
        Differentiable where an image matched; 0 where it did not.
    top1 : tensor ``(N,)`` or None
        For ``"top1"``, the label of each image's most confident detection (``-1``: none).

    Raises
    ------
    ValueError
        The batch size differs from the number of images, another target kind, or no image
        of the batch matches its target (the message lists what was detected).
    """
    if spec.kind not in ("top1", "class", "detection"):
        raise ValueError(
            f"a {spec.kind!r} target cannot score a detection output (a list of per-image "
            "boxes, labels and scores): use DetectionTarget, an int class, or None for each "
            "image's most confident detection"
        )
    n = len(output)
    if spec.n is not None and spec.n != n:
        raise ValueError(f"the model returned detections for {n} images, but the batch has "
                         f"{spec.n} samples")
    total = None
    classes = np.full(n, -1, dtype=np.int64)
    notes = []
    images = [as_detections(det) for det in output]
    for i, det in enumerate(images):
        score, classes[i], found = _image_score(det, spec, i, ops)
        notes.append(f"image {i}: {found}")
        if score is None:
            continue
        onehot = np.zeros(n, dtype=np.float32)
        onehot[i] = 1.0
        part = score * ops.const(onehot, det.like)
        total = part if total is None else total + part
    like = images[0].like
    if total is None:
        if spec.kind != "top1":
            raise ValueError(
                "no detection matches the targets: " + "; ".join(notes) + ". Lower the "
                "model's score threshold (torchvision: box_score_thresh= / score_thresh=), "
                "or the target's iou_threshold, or pick another label or box"
            )
        total = ops.const(np.zeros(n, dtype=np.float32), like)
    top1 = ops.const(classes, like) if spec.kind == "top1" else None
    return total, top1
