"""Pieces of the one-line summaries that ``interp explain`` and ``interp audit`` print."""

from __future__ import annotations

from collections.abc import Sequence


def layer_phrase(used: Sequence[str], requested: str | Sequence[str] | None) -> str:
    """Which layer(s) the explanations came from, for a summary line.

    Parameters
    ----------
    used : sequence of str
        The layers actually used (``Explanation.layers``); empty when nothing was explained.
    requested : str, sequence of str or None
        What the user asked for; None means the default layer was chosen.

    Returns
    -------
    str
        ``"layer block3"``, ``"layer block3 (the default)"``, ``"layers a, b"``, or, when
        nothing was explained, what was asked for (``"the default layer"`` for None).
    """
    if not used:
        if requested is None:
            return "the default layer"
        names = [requested] if isinstance(requested, str) else list(requested)
        return ("layer " if len(names) == 1 else "layers ") + ", ".join(names)
    text = ("layer " if len(used) == 1 else "layers ") + ", ".join(used)
    return text + " (the default)" if requested is None else text
