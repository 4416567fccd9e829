"""Behaviour every adapter shares, written once: the adapters keep only framework glue.

- Structured layer outputs: :func:`first_leaf` / :func:`replace_first` (a layer that returns a
  tuple is explained through its first tensor).
- Layer requests: :func:`resolve_layer_paths` (names or layer objects, each once);
  :func:`unknown_layer_error` (closest names), :func:`missing_layers_error`,
  :func:`layer_ran_twice_error`.
- Compiled adapters (``tf.function``, ``jax.jit``): :func:`plan_targets` records the constants
  that :func:`~interp_core.backend.scoring.target_scores` asks for, and :class:`ReplayOps`
  hands them back inside the compiled function, so new target values never recompile.
- Masked batches: :func:`mask_chunks` (how many masks share one forward pass) and
  :func:`expanded_patch_rows` (ablation from the layer on, checked against the unpatched score).
- Input gradients: :func:`channel_objective` (the objective of feature visualisation) and
  :func:`check_channels`.
- Non-finite values: :func:`non_finite_rows` and :func:`warn_non_finite`.
- Threads: :func:`model_lock`, one re-entrant lock per model object, for adapters whose
  framework keeps per-call state on the model (forward hooks, training flags).

Imports no framework: every function takes the framework's test or ops as an argument.
"""

from __future__ import annotations

import difflib
import threading
import warnings
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from interp_core.backend.scoring import TensorOps, target_constants, target_scores
from interp_core.backend.target_spec import TargetSpec


# -- structured layer outputs -----------------------------------------------------------------
def first_leaf(out: Any, is_tensor: Callable[[Any], bool]) -> Any | None:
    """``out`` if it is a tensor, else the first element of a tuple/list output, else None."""
    if is_tensor(out):
        return out
    if isinstance(out, tuple | list) and out and is_tensor(out[0]):
        return out[0]
    return None


def replace_first(out: Any, new: Any, is_tensor: Callable[[Any], bool]) -> Any:
    """``out`` with its tensor (the first element of a tuple/list) replaced by ``new``."""
    if is_tensor(out):
        return new
    return type(out)([new, *out[1:]])


def not_a_tensor_error(name: str, out: Any) -> TypeError:
    """The error for a layer whose output has no tensor to explain."""
    return TypeError(
        f"layer {name!r} returned {type(out).__name__}, not a tensor; pick a layer whose output "
        "is a tensor (or a tuple whose first element is one)"
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


# -- target constants for compiled adapters ---------------------------------------------------
@dataclass(frozen=True, eq=False)
class TargetPlan:
    """How a compiled function scores one batch's targets.

    Attributes
    ----------
    key : tuple
        Hashable; equal keys mean the same traced scoring (kind, batch size, constant shapes,
        and for ``OutputTarget`` the callables themselves).
    consts : tuple of np.ndarray
        The constants to pass to the compiled function (integers as ``int_dtype``, float32).
    spec : TargetSpec
        The spec itself (scored at trace time by the first call with this key).
    replay : bool
        Whether the traced function scores with :class:`ReplayOps` (else constants are baked,
        which is right for ``OutputTarget``, whose key holds the callables).
    """

    key: tuple[Any, ...]
    consts: tuple[np.ndarray, ...]
    spec: TargetSpec
    replay: bool

    def score(self, output: Any, consts: Sequence[Any], ops: TensorOps) -> tuple[Any, Any]:
        """:func:`target_scores` of ``output`` inside the traced function."""
        return target_scores(output, self.spec, ReplayOps(ops, consts) if self.replay else ops)


def needs_output_shape(spec: TargetSpec) -> bool:
    """Whether :func:`plan_targets` needs the model's output shape for ``spec``."""
    return spec.kind not in ("top1", "fn")


def plan_targets(spec: TargetSpec, output_shape: Sequence[int] | None, channel_axis: int = -1,
                 int_dtype: type = np.int64) -> TargetPlan:
    """Validate ``spec`` against the output shape and record its constants.

    Parameters
    ----------
    spec : TargetSpec
        The batch's resolved targets.
    output_shape : sequence of int or None
        Shape of the selected model output, batch axis included; only read when
        :func:`needs_output_shape` says so.
    channel_axis : int
        Class axis of dense (segmentation) outputs.
    int_dtype : type
        dtype of integer constants (``np.int32`` for JAX without x64).

    Raises
    ------
    ValueError
        The core's messages: class out of range, BinaryTarget on a multi-logit model, mask of
        the wrong shape, embedding of the wrong length.
    """
    if spec.kind == "top1":
        return TargetPlan(("top1", spec.n), (), spec, replay=True)
    if spec.kind == "fn":
        return TargetPlan(("fn", spec.n, spec.fns), (), spec, replay=False)
    if output_shape is None:
        raise ValueError(f"targets of kind {spec.kind!r} need the model's output shape")
    consts = tuple(target_constants(spec, tuple(output_shape), channel_axis, int_dtype))
    key = (spec.kind, spec.n, tuple((c.shape, c.dtype.str) for c in consts))
    return TargetPlan(key, consts, spec, replay=True)


class ReplayOps:
    """An adapter's :class:`TensorOps` whose ``const`` hands back recorded constants, in order.

    Inside a compiled function the constants are traced arguments, so new target values of
    the same shapes reuse the compiled function. Float constants take the dtype of the tensor
    they meet (``ops.cast_like``).
    """

    def __init__(self, ops: TensorOps, consts: Sequence[Any]) -> None:
        self.ops = ops
        self.channel_axis = ops.channel_axis
        self._consts = list(consts)
        self._next = 0

    def const(self, array: np.ndarray, like: Any) -> Any:
        if self._next >= len(self._consts):
            raise RuntimeError(
                "interp-core: target_scores asked for more constants than plan_targets "
                "recorded; the scoring of this target kind depends on more than its shapes"
            )
        value = self._consts[self._next]
        self._next += 1
        return self.ops.cast_like(value, like)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.ops, name)  # flatten, row_sum, argmax, pick, sqrt, ...


# -- masked batches ---------------------------------------------------------------------------
def mask_chunks(n_masks: int, n_samples: int, batch_size: int) -> int:
    """How many masks go into one forward pass so that it holds at most ``batch_size`` samples
    (at least one mask, at most ``n_masks``)."""
    return max(1, min(batch_size // max(n_samples, 1), max(n_masks, 1)))


class ExpansionRefusedError(Exception):
    """The model's code above a layer cannot take a batch expanded at that layer (the adapter
    then patches copies of the whole input instead)."""


def expanded_patch_rows(masks: np.ndarray, plain: np.ndarray, per_pass: int,
                        sample_scorer: Callable[[int], Callable[[np.ndarray], np.ndarray]],
                        model_errors: tuple[type[Exception], ...]) -> np.ndarray:
    """Patched scores ``(M, N)`` from passes that expand one sample's layer output per mask.

    Each pass of sample ``i`` gets ``per_pass`` masks plus all-ones rows up to
    ``per_pass + 1``; the last row is always all ones, and its score must equal the unpatched
    score ``plain[i]``.

    Parameters
    ----------
    masks : np.ndarray
        float32 ``(M, C)``.
    plain : np.ndarray
        ``(N,)`` unpatched target scores of the samples.
    per_pass : int
        Masks per pass (:func:`mask_chunks` for one sample).
    sample_scorer : callable
        ``sample_scorer(i)`` prepares sample ``i`` and returns ``score(padded)``, which runs the
        expanded pass with masks ``(per_pass + 1, C)`` and returns its scores as NumPy
        ``(per_pass + 1,)``.
    model_errors : tuple of exception types
        What the framework raises when the model's code cannot take the expanded batch.

    Raises
    ------
    ExpansionRefusedError
        When the first pass raises one of ``model_errors``, or any pass's all-ones row does
        not reproduce the unpatched score (the caller then copies the input instead).
    """
    width = per_pass + 1
    rows = np.empty((len(masks), len(plain)), dtype=np.float32)
    for i in range(len(plain)):
        score = sample_scorer(i)
        for start in range(0, len(masks), per_pass):
            chunk = masks[start : start + per_pass]
            count = len(chunk)
            padded = np.concatenate([chunk, np.ones((width - count, masks.shape[1]),
                                                    np.float32)])
            try:
                scores = score(padded)
            except model_errors as exc:
                if start == 0 and i == 0:
                    raise ExpansionRefusedError from exc
                raise
            if scores.shape != (width,) or not np.allclose(scores[-1], plain[i],
                                                           rtol=1e-4, atol=1e-5):
                raise ExpansionRefusedError
            rows[start : start + count, i] = scores[:count]
    return rows


# -- input gradients --------------------------------------------------------------------------
def channel_objective(layer_output: Any, channels: Any, ops: TensorOps,
                      channel_axis: int) -> Any:
    """The objective of feature visualisation: the spatial mean of channel ``channels[n]`` of
    sample ``n``'s layer output, ``(N,)``, written with the adapter's ops
    (``ops.channel_means(x, axis) -> (N, C)`` and ``ops.pick``)."""
    return ops.pick(ops.channel_means(layer_output, channel_axis), channels)


def check_channels(channels: Any, n: int) -> np.ndarray:
    """``channels`` as int64 ``(n,)``, or a ``ValueError`` naming what is wrong."""
    idx = np.asarray(channels, dtype=np.int64).reshape(-1)
    if idx.shape != (n,):
        raise ValueError(f"channels has {idx.size} entries but the batch has {n} samples")
    if (idx < 0).any():
        raise ValueError(f"channel {int(idx.min())} is out of range: channels are >= 0")
    return idx


def check_channel_range(channels: np.ndarray, count: int, where: str = "the layer") -> None:
    """Raise when a channel index is not below ``count``, the channels ``where`` has."""
    if channels.size and int(channels.max()) >= count:
        raise ValueError(
            f"channel {int(channels.max())} is out of range: {where} has {count} channels "
            f"(valid: 0..{count - 1})"
        )


# -- non-finite values ------------------------------------------------------------------------
def non_finite_rows(*arrays: np.ndarray) -> np.ndarray:
    """bool ``(N,)``: samples with a NaN or infinity in any of ``arrays`` (each ``(N, ...)``)."""
    bad = np.zeros(len(arrays[0]), dtype=bool)
    for a in arrays:
        bad |= ~np.isfinite(np.asarray(a)).reshape(len(a), -1).all(axis=1)
    return bad


def warn_non_finite(what: str, *arrays: np.ndarray) -> np.ndarray:
    """Warn (``RuntimeWarning``) naming the samples of ``arrays`` that are not finite; returns
    the mask of :func:`non_finite_rows`."""
    bad = non_finite_rows(*arrays)
    if bad.any():
        warnings.warn(
            f"{what}: non-finite values for samples {np.flatnonzero(bad).tolist()}",
            RuntimeWarning, stacklevel=3,
        )
    return bad


# -- threads ----------------------------------------------------------------------------------
_MODEL_LOCKS: weakref.WeakKeyDictionary[Any, threading.RLock] = weakref.WeakKeyDictionary()
_MODEL_LOCKS_BY_ID: dict[int, tuple[Any, threading.RLock]] = {}
_MODEL_LOCKS_GUARD = threading.Lock()


def model_lock(model: Any) -> threading.RLock:
    """The re-entrant lock of ``model`` (one per model object, made on first use).

    An adapter holds it while it changes anything on the model for the duration of a call
    (hooks, training flags), so that concurrent explanations of one model from several threads
    give exactly what serial calls give. Models that cannot be weakly referenced are kept by
    id for the life of the process, together with a reference to the model.
    """
    with _MODEL_LOCKS_GUARD:
        try:
            lock = _MODEL_LOCKS.get(model)
            if lock is None:
                lock = _MODEL_LOCKS[model] = threading.RLock()
            return lock
        except TypeError:  # not weak-referenceable or not hashable
            entry = _MODEL_LOCKS_BY_ID.get(id(model))
            if entry is None or entry[0] is not model:
                entry = _MODEL_LOCKS_BY_ID[id(model)] = (model, threading.RLock())
            return entry[1]


def refuse_channel_axis(backend: str, channel_axis: int | None) -> None:
    """For adapters whose ``patched_scores`` patches only the usual channel axis: a clear
    ``NotImplementedError`` when the core asks for another (see the protocol)."""
    if channel_axis is not None:
        raise NotImplementedError(
            f"the {backend} backend patches a layer's channels on its usual axis only, but "
            f"this layer holds them on axis {channel_axis}; use ScoreCAM or a gradient method "
            "on this layer"
        )
