"""Threads: :func:`model_lock`, one re-entrant lock per model object, for adapters whose
framework keeps per-call state on the model (forward hooks, training flags)."""

from __future__ import annotations

import threading
import weakref
from typing import Any

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
