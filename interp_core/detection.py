"""Detections from detector heads that return raw tensors: Ultralytics YOLO, Hugging Face DETR.

Pass one of these as a method's ``output=``; it turns the model's raw output into one
:class:`~interp_core.backend.detection.Detections` per image, which
:class:`~interp_core.targets.DetectionTarget` (and int or ``None`` targets) score as they score
torchvision's detections::

    cam = ic.GradCAM(yolo.model, "model.15", output=ic.detection.ultralytics_output)
    maps = cam(x, ic.DetectionTarget(label=0, box=[x1, y1, x2, y2]))

    cam = ic.GradCAM(detr, "model.backbone.conv_encoder.model.encoder.stages.3",
                     output=functools.partial(ic.detection.detr_output, image_size=(H, W)))

No non-maximum suppression runs: every anchor (YOLO) or query (DETR) is a candidate, and the
target picks its match (the candidate of the label whose box overlaps the target's most),
so the candidate a post-processed detection came from is found again from that detection's box.

Framework-neutral: which class each candidate has, and which candidate a target means, is
decided in NumPy on the values; the chosen score and box are then read from the model's own
tensors with integer indexing, slicing and arithmetic only (the softmax of DETR as
``math.e ** (logits - max)`` over a sum taken with the adapter's ``TensorOps.row_sum``), which
every framework's tensors support, so gradients reach the layers and no framework is imported.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from interp_core.backend.detection import Detections, values

__all__ = ["Detections", "DetrDetections", "UltralyticsDetections", "detr_output",
           "ultralytics_output"]


def _rank(t: Any) -> int:
    return len(getattr(t, "shape", ()))


def _ultralytics_head(raw: Any) -> tuple[Any, int]:
    """The ``(N, 4 + C + extra, A)`` prediction tensor of an eval-mode Ultralytics model's
    output, and how many mask coefficients its rows end with (segmentation: one per prototype
    mask)."""
    preds, masks = raw, 0
    while isinstance(preds, tuple | list) and preds:
        if (len(preds) == 2 and _rank(preds[0]) == 3 and _rank(preds[1]) == 4):
            masks = int(preds[1].shape[1])  # Segment: (predictions, prototype masks)
        preds = preds[0]
    if _rank(preds) != 3 or int(preds.shape[1]) < 5:
        what = (f"a dict with keys {sorted(raw)} (a head in training mode?)"
                if isinstance(raw, dict) else f"{type(raw).__name__} of shape "
                f"{tuple(getattr(preds, 'shape', ()))}")
        raise ValueError(
            f"ultralytics_output needs an eval-mode Ultralytics detection head's output "
            f"(N, 4 + classes, anchors), or a tuple starting with it; got {what}")
    return preds, masks


def ultralytics_output(raw: Any, *, num_classes: int | None = None,
                       min_score: float = 0.0) -> list[UltralyticsDetections]:
    """An Ultralytics YOLO model's raw output as one set of scored candidates per image.

    For ``output=``: ``ic.GradCAM(yolo.model, "model.15", output=ic.detection.ultralytics_output)``.
    Works for YOLOv8, YOLO11 (and other heads with Ultralytics' ``Detect`` output) and their
    segmentation models (``-seg``), whose mask coefficients after the classes are recognised
    from the prototype masks beside them.

    Parameters
    ----------
    raw : tensor or tuple
        What the ``DetectionModel`` / ``SegmentationModel`` returns in eval mode:
        ``(preds, extras)`` with ``preds`` ``(N, 4 + C (+ extra), A)``: box centre and size
        ``(cx, cy, w, h)`` in input pixels, then ``C`` per-class scores (sigmoid applied), for
        ``A`` anchor points; a segmentation model's is ``((preds, protos), extras)``.
    num_classes : int, optional
        ``C``. Default: every row after the four box rows (less a segmentation model's mask
        coefficients). Give it for heads with other rows after the classes (pose keypoints,
        oriented-box angles).
    min_score : float
        Anchors whose best class score is under it are no candidates (Ultralytics' ``conf``;
        0 keeps them all).

    Returns
    -------
    list of UltralyticsDetections
        One per image: ``A`` candidates (those above ``min_score``), each with the box in
        ``(x1, y1, x2, y2)`` input pixels, its best class as label and that class's score.

    Raises
    ------
    ValueError
        ``raw`` is not such an output, or the class rows hold values outside ``[0, 1]`` (not
        sigmoid scores: other rows counted as classes, pass ``num_classes``).
    """
    preds, masks = _ultralytics_head(raw)
    rows = int(preds.shape[1])
    classes = rows - 4 - masks if num_classes is None else int(num_classes)
    if not 1 <= classes <= rows - 4:
        raise ValueError(f"num_classes={classes} does not fit a head of {rows} rows: it must be "
                         f"in 1..{rows - 4} (4 box rows come first)")
    return [UltralyticsDetections(preds[i], classes, min_score) for i in range(int(
        preds.shape[0]))]


class UltralyticsDetections(Detections):
    """One image's anchors of an Ultralytics head ``(4 + C (+ extra), A)``, as candidates.

    Parameters
    ----------
    head : tensor
        ``(4 + C (+ extra), A)``: ``cx, cy, w, h`` in pixels, then ``C`` class scores.
    num_classes : int
        ``C``.
    min_score : float
        Least best-class score of a candidate.
    """

    def __init__(self, head: Any, num_classes: int, min_score: float = 0.0) -> None:
        self.head, self.like, self.num_classes = head, head, num_classes
        v = values(head)
        cls = v[4:4 + num_classes].astype(np.float64)
        if cls.size and (cls.min() < 0.0 or cls.max() > 1.0):
            raise ValueError(
                f"rows 4..{3 + num_classes} of the Ultralytics head hold values in "
                f"[{cls.min():.3g}, {cls.max():.3g}], not class scores in [0, 1]: rows after "
                "the classes (keypoints, angles) were counted as classes; pass num_classes= "
                "(the head's nc: yolo.model.model[-1].nc)")
        labels = cls.argmax(axis=0)
        scores = cls[labels, np.arange(cls.shape[1])]
        self.anchors = np.flatnonzero(scores >= min_score)
        # In the head's dtype, as box() computes them: a box copied from these is then on
        # the candidate's exactly, and the IoU's ties split as the framework splits them.
        cx, cy, w, h = v[:4, self.anchors]
        self.boxes = np.stack([cx - w * 0.5, cy - h * 0.5, cx + w * 0.5, cy + h * 0.5],
                              axis=1).astype(np.float64)
        self.labels = labels[self.anchors].astype(np.int64)
        self.scores = scores[self.anchors]

    def score(self, k: int, ops: Any) -> Any:
        return self.head[4 + int(self.labels[k]), int(self.anchors[k])]

    def box(self, k: int, ops: Any) -> Sequence[Any]:
        a = int(self.anchors[k])
        cx, cy, w, h = (self.head[j, a] for j in range(4))
        return (cx - w * 0.5, cy - h * 0.5, cx + w * 0.5, cy + h * 0.5)

    def total(self, chosen: np.ndarray, ops: Any) -> Any:
        cls = self.head[4:4 + self.num_classes]                         # (C, A)
        mask = np.zeros(tuple(int(d) for d in cls.shape), dtype=np.float32)
        mask[self.labels[chosen], self.anchors[chosen]] = 1.0
        return ops.row_sum(ops.flatten((cls * ops.const(mask, cls))[None]))[0]


def _field(raw: Any, key: str) -> Any:
    """``raw[key]`` of a mapping, else ``raw.key``; None where there is none."""
    return raw.get(key) if isinstance(raw, dict) else getattr(raw, key, None)


def detr_output(raw: Any, *, image_size: int | tuple[int, int],
                min_score: float = 0.0) -> list[DetrDetections]:
    """A DETR model's ``logits`` and ``pred_boxes`` as one set of scored candidates per image.

    For ``output=``, with the input's size bound:
    ``output=functools.partial(ic.detection.detr_output, image_size=(H, W))``. As Hugging
    Face's ``post_process_object_detection`` (Carion et al., 2020, "End-to-End Object
    Detection with Transformers"): a softmax over the classes and the no-object class (the
    last), each query's best real class its label and that probability its score; boxes from
    normalised ``(cx, cy, w, h)`` to ``(x1, y1, x2, y2)`` pixels.

    Parameters
    ----------
    raw : object or mapping
        With ``logits`` ``(N, Q, C + 1)`` and ``pred_boxes`` ``(N, Q, 4)`` (as attributes, as
        ``DetrObjectDetectionOutput`` has, or keys).
    image_size : int or (int, int)
        ``(H, W)`` of the input the boxes are relative to (an int: square).
    min_score : float
        Queries whose score is under it are no candidates (0 keeps them all).

    Returns
    -------
    list of DetrDetections
        One per image: ``Q`` candidates (those above ``min_score``).

    Raises
    ------
    ValueError
        ``raw`` has no ``logits``/``pred_boxes``, or their shapes do not fit.
    """
    logits, boxes = (_field(raw, key) for key in ("logits", "pred_boxes"))
    if logits is None or boxes is None:
        raise ValueError(f"detr_output needs an output with logits and pred_boxes (a DETR "
                         f"model's); got {type(raw).__name__}")
    if _rank(logits) != 3 or _rank(boxes) != 3 or tuple(boxes.shape[:2]) != tuple(
            logits.shape[:2]) or int(boxes.shape[2]) != 4 or int(logits.shape[2]) < 2:
        raise ValueError(f"detr_output needs logits (N, Q, classes + 1) and pred_boxes "
                         f"(N, Q, 4); got {tuple(logits.shape)} and {tuple(boxes.shape)}")
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if len(size) != 2 or min(size) <= 0:
        raise ValueError(f"image_size={image_size!r} must be (H, W), two positive numbers")
    return [DetrDetections(logits[i], boxes[i], (float(size[0]), float(size[1])), min_score)
            for i in range(int(logits.shape[0]))]


class DetrDetections(Detections):
    """One image's DETR queries as candidates.

    Parameters
    ----------
    logits : tensor
        ``(Q, C + 1)``, the last class "no object".
    boxes : tensor
        ``(Q, 4)`` normalised ``(cx, cy, w, h)``.
    image_size : (float, float)
        ``(H, W)`` in pixels.
    min_score : float
        Least score of a candidate.
    """

    def __init__(self, logits: Any, boxes: Any, image_size: tuple[float, float],
                 min_score: float = 0.0) -> None:
        self.logits, self.pred_boxes, self.like = logits, boxes, logits
        self.height, self.width = image_size
        v = values(logits).astype(np.float64)
        self.shift = v.max(axis=1, keepdims=True)       # softmax's max, a constant
        p = np.exp(v - self.shift)
        p /= p.sum(axis=1, keepdims=True)
        labels = p[:, :-1].argmax(axis=1)
        scores = p[np.arange(len(p)), labels]
        self.queries = np.flatnonzero(scores >= min_score)
        cx, cy, w, h = values(boxes)[self.queries].T      # in their dtype, as box() computes
        self.boxes = np.stack([(cx - w * 0.5) * self.width, (cy - h * 0.5) * self.height,
                               (cx + w * 0.5) * self.width, (cy + h * 0.5) * self.height],
                              axis=1).astype(np.float64)
        self.labels = labels[self.queries].astype(np.int64)
        self.scores = scores[self.queries]

    def _exp(self, rows: slice | np.ndarray, ops: Any) -> Any:
        """``exp(logits - max)`` of the rows, ``(R, C + 1)``."""
        return math.e ** (self.logits[rows] - ops.const(self.shift[rows], self.logits))

    def score(self, k: int, ops: Any) -> Any:
        q = int(self.queries[k])
        e = self._exp(slice(q, q + 1), ops)
        return e[0, int(self.labels[k])] / ops.row_sum(e)[0]

    def box(self, k: int, ops: Any) -> Sequence[Any]:
        q = int(self.queries[k])
        cx, cy, w, h = (self.pred_boxes[q, j] for j in range(4))
        return ((cx - w * 0.5) * self.width, (cy - h * 0.5) * self.height,
                (cx + w * 0.5) * self.width, (cy + h * 0.5) * self.height)

    def total(self, chosen: np.ndarray, ops: Any) -> Any:
        e = self._exp(slice(None), ops)                                 # (Q, C + 1)
        p = e / ops.row_sum(e)[:, None]
        mask = np.zeros(tuple(int(d) for d in p.shape), dtype=np.float32)
        mask[self.queries[chosen], self.labels[chosen]] = 1.0
        return ops.row_sum(ops.flatten((p * ops.const(mask, p))[None]))[0]
