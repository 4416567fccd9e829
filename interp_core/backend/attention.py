"""What every adapter's ``attention`` shares: the error for a model without global attention and
the checks of a capture (shapes, rows that sum to 1).

Imports no framework.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from interp_core.backend.protocol import AttentionCapture

#: Attention-layer class names of windowed (local) attention, named in the error.
WINDOWED_ATTENTION = ("WindowAttention", "SwinAttention", "SwinSelfAttention",
                      "ShiftedWindowAttention", "NeighborhoodAttention")


def no_attention_error(backend: str, model: object,
                       seen: Iterable[str] = ()) -> NotImplementedError:
    """The error for a model without a global self-attention layer that ``backend`` can read.

    ``seen``: class names of the model's layers, so that windowed attention is named.
    """
    windowed = sorted({name for name in seen if name in WINDOWED_ATTENTION})
    found = (f"its attention is windowed ({', '.join(windowed)}), so no token attends to "
             "the whole image" if windowed
             else "it has no global self-attention layer the adapter can read")
    return NotImplementedError(
        f"the {backend} backend cannot explain {type(model).__name__} with attention methods "
        f"(AttentionRollout, GradientRollout, LeGrad): {found}. Use token Grad-CAM instead: "
        "GradCAM on a token layer (layer=None finds one)"
    )


def check_capture(capture: AttentionCapture, n: int) -> AttentionCapture:
    """Raise a clear ``ValueError`` unless ``capture`` holds, per layer, ``(n, heads, T, T)``
    probabilities (and gradients of the same shapes where present)."""
    if not capture.blocks or len(capture.attentions) != len(capture.blocks):
        raise ValueError(
            f"an attention capture needs one (N, heads, T, T) array per layer, got "
            f"{len(capture.attentions)} arrays for layers {capture.blocks}"
        )
    for name, probs in zip(capture.blocks, capture.attentions, strict=True):
        if probs.ndim != 4 or probs.shape[0] != n or probs.shape[2] != probs.shape[3]:
            raise ValueError(
                f"attention of layer {name!r} has shape {probs.shape}; expected "
                f"({n}, heads, T, T)"
            )
    if capture.gradients is not None:
        for name, probs, grads in zip(capture.blocks, capture.attentions, capture.gradients,
                                      strict=True):
            if grads.shape != probs.shape:
                raise ValueError(
                    f"attention gradients of layer {name!r} have shape {grads.shape}, not the "
                    f"probabilities' {probs.shape}"
                )
    return capture


def stochastic_rows(probs: np.ndarray, atol: float = 1e-3) -> bool:
    """Whether every row of ``probs`` ``(..., T, T)`` is a probability distribution."""
    return bool(np.all(probs >= -atol) and np.allclose(probs.sum(-1), 1.0, atol=atol))
