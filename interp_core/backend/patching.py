"""Patched scores (ablation): one mechanism for every adapter.

An adapter's ``patched_scores`` has two framework-specific passes: the *expanded* pass (the
layer's output expanded to one copy per mask, so only the part of the model above the layer
runs on the copies) and the *tiled* pass (every copy of the input runs the whole network).
:func:`patch_with_fallback` runs the first and falls back to the second when the model refuses
the expansion (:class:`ExpansionRefusedError`); :data:`EXPANSION_REFUSED` remembers each
refusal per (model, layer), so later calls go straight to the tiled pass.
:func:`expanded_patch_rows` is the loop of the expanded pass over samples and chunks of masks,
with the all-ones check that proves the expansion right.

Imports no framework: the passes are the adapter's callables.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Hashable
from typing import Any

import numpy as np


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
                        model_errors: tuple[type[Exception], ...], *, pad: bool = True,
                        probes: int = 1) -> np.ndarray:
    """Patched scores ``(M, N)`` from passes that expand one sample's layer output per mask.

    Sample ``i``'s masks go in chunks of ``per_pass``, one pass each. A *checked* pass carries
    an all-ones row last, whose score must equal the unpatched score ``plain[i]``. With
    ``pad`` every pass is checked and padded with all-ones rows to ``per_pass + 1`` rows (one
    shape for a compiled function); without it, only the *probe* passes (the first ``probes``
    passes of the first sample) carry the all-ones row, and the others exactly their masks.

    Parameters
    ----------
    masks : np.ndarray
        float32 ``(M, C)``.
    plain : np.ndarray
        ``(N,)`` unpatched target scores of the samples.
    per_pass : int
        Masks per pass (:func:`mask_chunks` for one sample).
    sample_scorer : callable
        ``sample_scorer(i)`` prepares sample ``i`` and returns ``score(batch)``, which runs the
        expanded pass with the masks ``batch`` ``(k, C)`` and returns its scores as NumPy
        ``(k,)``; it is called once per pass of the sample, in order.
    model_errors : tuple of exception types
        What the framework raises when the model's code cannot take the expanded batch.
    pad : bool
        Pad every pass to ``per_pass + 1`` rows and check each (compiled adapters).
    probes : int
        How many of the first sample's passes may raise ``model_errors`` as a refusal (and,
        without ``pad``, are the checked passes).

    Raises
    ------
    ExpansionRefusedError
        When a probe pass raises one of ``model_errors``, or a checked pass's all-ones row does
        not reproduce the unpatched score (the caller then copies the input instead).
    """
    rows = np.empty((len(masks), len(plain)), dtype=np.float32)
    channels = masks.shape[1]
    for i in range(len(plain)):
        score = sample_scorer(i)
        for index, start in enumerate(range(0, len(masks), per_pass)):
            chunk = masks[start : start + per_pass]
            count = len(chunk)
            probe = i == 0 and index < probes
            checked = pad or probe
            if checked:
                extra = per_pass + 1 - count if pad else 1
                chunk = np.concatenate([chunk, np.ones((extra, channels), np.float32)])
            try:
                scores = score(chunk)
            except model_errors as exc:
                if probe:
                    raise ExpansionRefusedError from exc
                raise
            if checked and (scores.shape != (len(chunk),) or not np.allclose(
                    scores[-1], plain[i], rtol=1e-4, atol=1e-5)):
                raise ExpansionRefusedError
            rows[start : start + count, i] = scores[:count]
    return rows


# -- the mechanism: expanded pass, tiled fallback, one memory of refusals ----------------------
class RefusalMemory:
    """Which layers of which models refused the expanded pass; thread-safe.

    Models are held weakly (a garbage-collected model drops its entries); a model that cannot
    be weakly referenced is kept by identity, with a reference, for the life of the memory.
    Layers are the adapter's hashable layer keys (names or paths).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._weak: weakref.WeakKeyDictionary[Any, set[Hashable]] = weakref.WeakKeyDictionary()
        self._by_id: dict[int, tuple[Any, set[Hashable]]] = {}

    def _layers(self, model: Any, create: bool) -> set[Hashable] | None:
        """The refused layers of ``model`` (made when ``create``); call under the lock."""
        try:
            layers = self._weak.get(model)
            if layers is None and create:
                layers = self._weak[model] = set()
            return layers
        except TypeError:  # not weak-referenceable or not hashable
            entry = self._by_id.get(id(model))
            if entry is None or entry[0] is not model:
                if not create:
                    return None
                entry = self._by_id[id(model)] = (model, set())
            return entry[1]

    def refused(self, model: Any, layer: Hashable) -> bool:
        """Whether ``layer`` of ``model`` refused the expanded pass."""
        with self._lock:
            layers = self._layers(model, create=False)
            return layers is not None and layer in layers

    def refuse(self, model: Any, layer: Hashable) -> None:
        """Remember that ``layer`` of ``model`` refuses the expanded pass."""
        with self._lock:
            layers = self._layers(model, create=True)
            assert layers is not None
            layers.add(layer)

    def forget(self, model: Any, layer: Hashable | None = None) -> None:
        """Forget ``layer``'s refusal (every layer's, when None)."""
        with self._lock:
            layers = self._layers(model, create=False)
            if layers is not None:
                if layer is None:
                    layers.clear()
                else:
                    layers.discard(layer)

    def __len__(self) -> int:
        """How many models have a refused layer."""
        with self._lock:
            return (sum(1 for layers in self._weak.values() if layers)
                    + sum(1 for _, layers in self._by_id.values() if layers))


#: The one memory of refusals that every adapter's ``patched_scores`` shares.
EXPANSION_REFUSED = RefusalMemory()


def patch_with_fallback(model: Any, layer: Hashable, expanded: Callable[[], np.ndarray],
                        tiled: Callable[[], np.ndarray], *,
                        memory: RefusalMemory = EXPANSION_REFUSED) -> np.ndarray:
    """Patched scores from the expanded pass, or from the tiled pass where the model refuses.

    Parameters
    ----------
    model : object
        What identifies the model (held weakly by ``memory``).
    layer : hashable
        The adapter's key of the patched layer.
    expanded : callable
        ``() -> (M, N)`` scores from the expanded pass; raises :class:`ExpansionRefusedError`
        when the model cannot take the expansion (typically via :func:`expanded_patch_rows`).
    tiled : callable
        ``() -> (M, N)`` scores from copies of the input, each running the whole network.
    memory : RefusalMemory
        Where refusals are remembered (default: :data:`EXPANSION_REFUSED`).

    Notes
    -----
    A (model, layer) whose expansion was refused goes straight to the tiled pass in later
    calls; the refusal is remembered only once the tiled pass worked (a bad request, such as
    masks of the wrong width, is not a refusal). Other layers of the model still expand. The
    passes run outside the memory's lock.
    """
    refused_now = False
    if not memory.refused(model, layer):
        try:
            return expanded()
        except ExpansionRefusedError:
            refused_now = True
    rows = tiled()
    if refused_now:
        memory.refuse(model, layer)
    return rows


def refuse_channel_axis(backend: str, channel_axis: int | None) -> None:
    """For adapters whose ``patched_scores`` patches only the usual channel axis: a clear
    ``NotImplementedError`` when the core asks for another (see the protocol)."""
    if channel_axis is not None:
        raise NotImplementedError(
            f"the {backend} backend patches a layer's channels on its usual axis only, but "
            f"this layer holds them on axis {channel_axis}; use ScoreCAM or a gradient method "
            "on this layer"
        )


def channel_masks(masks: Any, channel_axis: int | None = None, *,
                  usual_axis_only: str | None = None) -> np.ndarray:
    """The ``channel_masks`` argument of ``patched_scores``, checked: float32 ``(M, C)``.

    Parameters
    ----------
    masks : array-like
        ``(M, C)``: one row of channel weights per patched pass.
    channel_axis : int or None
        The axis the core asks to patch (None: the layer's usual channel axis).
    usual_axis_only : str or None
        The name of an adapter that patches the usual axis only: then any ``channel_axis``
        raises :func:`refuse_channel_axis`'s ``NotImplementedError``.

    Raises
    ------
    ValueError
        ``masks`` is not two-dimensional.
    """
    if usual_axis_only is not None:
        refuse_channel_axis(usual_axis_only, channel_axis)
    checked = np.asarray(masks, dtype=np.float32)
    if checked.ndim != 2:
        raise ValueError(f"channel_masks must be (M, C), got shape {checked.shape}")
    return checked
