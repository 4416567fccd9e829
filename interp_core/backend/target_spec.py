"""Targets as adapters see them: one :class:`TargetSpec` per batch, and output selection.

:func:`resolve_targets` turns what a user passes (``None``, ints, target objects of
:mod:`interp_core.targets`) into a :class:`TargetSpec`; adapters score it with
:func:`interp_core.backend.scoring.target_scores`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

import interp_core.targets as user_targets
from interp_core.targets import ClassTarget, OutputTarget, Target

#: What a :class:`TargetSpec` scores.
TargetKind = Literal["top1", "class", "binary", "segmentation", "similarity", "fn", "detection",
                     "none"]


@dataclass(frozen=True, eq=False)
class TargetSpec:
    """One batch's targets, in the form adapters score.

    Attributes
    ----------
    kind : str
        ``"top1"`` (argmax of the output, chosen inside the forward pass), ``"class"``,
        ``"binary"``, ``"segmentation"``, ``"similarity"``, ``"fn"``, ``"detection"``, or
        ``"none"``: no target at all (target-free methods, ``Method.target_free``); every
        score is 0 and the output's shape is never checked, so any output works.
    indices : np.ndarray or None
        int64 ``(N,)`` class indices (``class`` and ``segmentation``; ``detection``: ``-1``
        for any class).
    signs : np.ndarray or None
        float32 ``(N,)``, +1 or -1 (``binary``).
    masks : np.ndarray or None
        float32 ``(N, *out_spatial)`` (``segmentation``).
    embeddings : np.ndarray or None
        float32 ``(N, D)`` unit vectors (``similarity``).
    fns : tuple of callables or None
        One ``fn(output) -> (N,)`` per sample (``fn``); adapters call each distinct callable
        once on the whole output and pick the sample's score.
    boxes : np.ndarray or None
        float64 ``(N, 4)`` boxes ``(x1, y1, x2, y2)`` to match, NaN rows for none
        (``detection``).
    thresholds : np.ndarray or None
        float64 ``(N,)`` least IoU of a match (``detection``).
    """

    kind: TargetKind
    n: int | None = None
    indices: np.ndarray | None = None
    signs: np.ndarray | None = None
    masks: np.ndarray | None = None
    embeddings: np.ndarray | None = None
    fns: tuple[Callable[[Any], Any], ...] | None = None
    boxes: np.ndarray | None = None
    thresholds: np.ndarray | None = None

    def resolved_indices(self, top1: np.ndarray | None = None) -> np.ndarray:
        """Class index per sample, ``-1`` where the target is not a class; ``(N,)`` int64."""
        if self.kind == "top1":
            if top1 is None:
                raise ValueError("top-1 targets need the argmax of the model output")
            return np.asarray(top1, dtype=np.int64)
        if self.indices is not None:
            return self.indices
        if self.kind == "binary":
            return np.where(self.signs > 0, 1, 0).astype(np.int64)
        return np.full(self.n or 0, -1, dtype=np.int64)

    def tile(self, times: int) -> TargetSpec:
        """The spec repeated ``times``, sample order kept within each repeat (``(times * N,)``,
        mask-major): the targets of a batch of ``times`` masked copies of the inputs."""
        return self.take(np.tile(np.arange(self.n or 0), times))

    def take(self, index: slice | np.ndarray) -> TargetSpec:
        """The spec for a sub-batch (batched prediction)."""
        pick = (lambda a: None if a is None else a[index])  # noqa: E731
        fns = None if self.fns is None else tuple(np.asarray(self.fns, dtype=object)[index])
        n = None if self.n is None else len(np.arange(self.n)[index])
        return TargetSpec(
            self.kind, n, pick(self.indices), pick(self.signs), pick(self.masks),
            pick(self.embeddings), fns, pick(self.boxes), pick(self.thresholds),
        )


def no_target(n: int) -> TargetSpec:
    """The spec of a batch of ``n`` samples explained without a target (kind ``"none"``):
    what target-free methods (Eigen-CAM, KPCA-CAM, FEM) capture with."""
    return TargetSpec("none", n)


def _as_target(t: Any) -> Target:
    if isinstance(t, Target):
        return t
    if isinstance(t, bool):
        raise TypeError(f"target {t!r} is a bool; use BinaryTarget(positive={t}) instead")
    if not isinstance(t, int | np.integer) and hasattr(t, "__array__") and not callable(t):
        scalar = np.asarray(t)
        if scalar.ndim == 0 and np.issubdtype(scalar.dtype, np.integer):
            t = int(scalar)  # a 0-d framework tensor or NumPy array holding a class index
    if isinstance(t, int | np.integer):
        return ClassTarget(int(t))
    if callable(t):
        return OutputTarget(t)
    raise TypeError(
        f"target {t!r} of type {type(t).__name__} is not understood: use an int class index, "
        "ClassTarget, BinaryTarget, SegmentationTarget, SimilarityTarget, DetectionTarget or "
        "OutputTarget"
    )


def _class_spec(items: list[Any]) -> TargetSpec:
    idx = np.array([t.index for t in items], dtype=np.int64)
    if (idx < 0).any():
        raise ValueError(f"class indices must be >= 0, got {idx[idx < 0].tolist()}")
    return TargetSpec("class", len(items), indices=idx)


def _binary_spec(items: list[Any]) -> TargetSpec:
    signs = np.array([1.0 if t.positive else -1.0 for t in items], dtype=np.float32)
    return TargetSpec("binary", len(items), signs=signs)


def _segmentation_spec(items: list[Any]) -> TargetSpec:
    idx = np.array([t.category for t in items], dtype=np.int64)
    masks = np.stack([np.asarray(t.mask, dtype=np.float32) for t in items])
    return TargetSpec("segmentation", len(items), indices=idx, masks=masks)


def _similarity_spec(items: list[Any]) -> TargetSpec:
    emb = np.stack([np.asarray(t.embedding, dtype=np.float32).ravel() for t in items])
    norms = np.linalg.norm(emb, axis=1, keepdims=True)
    if (norms == 0).any():
        raise ValueError("SimilarityTarget embedding has zero norm")
    return TargetSpec("similarity", len(items), embeddings=emb / norms)


def _detection_spec(items: list[Any]) -> TargetSpec:
    n = len(items)
    labels = np.array([-1 if t.label is None else int(t.label) for t in items], dtype=np.int64)
    boxes = np.array([np.full(4, np.nan) if t.box is None
                      else np.asarray(t.box, dtype=np.float64).ravel() for t in items])
    thresholds = np.array([float(t.iou_threshold) for t in items], dtype=np.float64)
    return TargetSpec("detection", n, indices=labels, boxes=boxes.reshape(n, 4),
                      thresholds=thresholds)


def _fn_spec(items: list[Any]) -> TargetSpec:
    return TargetSpec("fn", len(items), fns=tuple(t.fn for t in items))


#: One batch of targets of one type -> its spec.
_SPEC_OF: dict[type, Callable[[list[Any]], TargetSpec]] = {
    user_targets.ClassTarget: _class_spec,
    user_targets.BinaryTarget: _binary_spec,
    user_targets.SegmentationTarget: _segmentation_spec,
    user_targets.SimilarityTarget: _similarity_spec,
    user_targets.DetectionTarget: _detection_spec,
    user_targets.OutputTarget: _fn_spec,
}


def resolve_targets(targets: Any, n: int) -> TargetSpec:
    """Turn the user's ``targets`` into one :class:`TargetSpec` for a batch of ``n`` samples.

    Parameters
    ----------
    targets : None, int, target object, or sequence of them
        ``None``: top-1 class of each sample. A single int or target: the same for every sample.
        A sequence (list, tuple, ``range``, NumPy array, or a framework tensor of ints): one per
        sample (its length must be ``n``).
    n : int
        Batch size.

    Raises
    ------
    ValueError
        A sequence of the wrong length, or targets of different kinds in one batch.
    """
    if targets is None:
        return TargetSpec("top1", n)
    if not isinstance(targets, np.ndarray) and hasattr(targets, "__array__") \
            and not callable(targets):
        targets = np.asarray(targets)  # a framework tensor of class indices
    if isinstance(targets, np.ndarray) and targets.ndim == 0:
        targets = int(targets)
    if isinstance(targets, Sequence | np.ndarray) and not isinstance(targets, str):
        items = [_as_target(t) for t in targets]
        if len(items) != n:
            raise ValueError(
                f"targets has {len(items)} entries but the batch has {n} samples: pass one "
                "target per sample, a single target for all, or None for each sample's top-1"
            )
    else:
        items = [_as_target(targets)] * n
    if n == 0:
        return TargetSpec("top1", 0)
    kinds = {type(t) for t in items}
    if len(kinds) != 1:
        names = sorted(k.__name__ for k in kinds)
        raise ValueError(f"targets in one batch must be of one kind, got {names}")
    first = items[0]
    build = next(spec for cls, spec in _SPEC_OF.items() if isinstance(first, cls))
    return build(items)


def check_class_range(spec: TargetSpec, num_outputs: int) -> None:
    """Raise a clear error when a class index is outside ``[0, num_outputs)``."""
    if spec.indices is None or spec.kind not in ("class", "segmentation"):
        return
    bad = spec.indices[(spec.indices < 0) | (spec.indices >= num_outputs)]
    if bad.size:
        raise ValueError(
            f"target class {int(bad[0])} is out of range: the model has {num_outputs} "
            f"outputs, so valid classes are 0..{num_outputs - 1}"
        )


def check_binary_output(num_outputs: int) -> None:
    """Raise unless the output has exactly one logit (what :class:`BinaryTarget` explains)."""
    if num_outputs != 1:
        raise ValueError(
            f"BinaryTarget explains a single sigmoid logit, but the model has {num_outputs} "
            "outputs: use ClassTarget/int targets for multi-class models"
        )


def select_output(raw: Any, output: Any = None) -> Any:
    """Pick the tensor to explain from a model's raw output.

    Parameters
    ----------
    raw : tensor, tuple, list, dict, or object with attributes
        What the model returned.
    output : None, str, int or callable
        ``None``: ``raw.logits`` / ``raw["logits"]`` when present; a list or tuple of
        per-image mappings (detections, as torchvision detection models return) as it is;
        else the first element of a tuple/list/dict, else ``raw`` itself. ``str``: that key
        or attribute. ``int``: that position. ``callable``: ``output(raw)``.
    """
    if callable(output):
        return output(raw)
    if isinstance(output, str):
        if isinstance(raw, dict):
            if output not in raw:
                raise KeyError(f"output={output!r} not in the model's outputs {sorted(raw)}")
            return raw[output]
        if hasattr(raw, output):
            return getattr(raw, output)
        raise KeyError(f"output={output!r}: the model output of type {type(raw).__name__} "
                       "has no such key or attribute")
    if isinstance(output, int):
        if isinstance(raw, dict):
            return list(raw.values())[output]
        return raw[output]
    if output is not None:
        raise TypeError(f"output={output!r} must be None, a str key, an int index or a callable")
    if isinstance(raw, dict):
        return raw["logits"] if "logits" in raw else next(iter(raw.values()))
    if isinstance(raw, tuple | list):
        return raw if is_per_image_mappings(raw) else raw[0]
    if hasattr(raw, "logits") and not hasattr(raw, "shape"):
        return raw.logits
    return raw


def is_per_image_mappings(raw: Any) -> bool:
    """Whether ``raw`` is a non-empty list/tuple of mappings, one per image (detections)."""
    return isinstance(raw, list | tuple) and bool(raw) and all(
        isinstance(r, Mapping) for r in raw)


def fixed_targets(spec: TargetSpec, classes: np.ndarray) -> TargetSpec:
    """``spec`` with top-1 targets pinned to ``classes`` (the unperturbed input's argmax).

    A perturbed input must be scored for the class explained, not for its own top-1.
    """
    if spec.kind != "top1":
        return spec
    return TargetSpec("class", len(classes), indices=np.asarray(classes, dtype=np.int64))
