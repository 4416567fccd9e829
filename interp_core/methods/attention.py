"""Attention methods for vision transformers: attention rollout, gradient-weighted rollout and
LeGrad, computed here in NumPy from what the adapter's ``attention`` capability captures
(:meth:`~interp_core.backend.protocol.AttentionBackend.attention`): every global self-attention
layer's probabilities ``A_l`` ``(N, heads, T, T)`` and, for the gradient methods, their
gradients.

Every method gives a relevance per token, ``(N, T)`` (``Explanation.raw["tokens"]``, the
prefix tokens included); the patch tokens' relevance, on the patch grid, is the map (ReLU,
min-max, resized to the input as every map). The grid and the number of prefix tokens (class,
distillation, register tokens) are found from the token count and the input's shape, as the
default layer of token Grad-CAM finds them (:func:`~interp_core.backend.grids.grid_layout`);
``prefix=`` overrides.

Which token's view is read: the class token's row (``token="class"``), or for a model without a
class token (mean pooling) the mean over all rows (``token="mean"``). ``token="auto"`` takes the
class token where the model has prefix tokens and the mean otherwise, and warns once per model
when it falls back to the mean.
"""

from __future__ import annotations

import warnings
import weakref
from typing import Any, ClassVar, Literal

import numpy as np

from interp_core.backend.attention import check_capture
from interp_core.backend.grids import grid_layout
from interp_core.backend.inputs import check_batch_size
from interp_core.backend.protocol import ATTENTION, GRADIENTS, AttentionCapture
from interp_core.backend.target_spec import TargetSpec
from interp_core.methods.catalog import Needs
from interp_core.methods.input_gradients import channel_axis, check_single_input
from interp_core.methods.method import Explanation, Method
from interp_core.methods.postprocess import finish_maps

#: The key of the token relevance in ``Explanation.raw``.
TOKENS = "tokens"

Token = Literal["auto", "class", "mean"]
HeadFusion = Literal["mean", "max", "min"]

#: Models already warned about reading the mean over tokens (weakly held).
_WARNED_MEAN: weakref.WeakSet[Any] = weakref.WeakSet()


def _first_time(model: Any) -> bool:
    """Whether ``model`` has not been warned about yet (a model that cannot be weakly
    referenced, or hashed, is warned about every time)."""
    try:
        if model in _WARNED_MEAN:
            return False
        _WARNED_MEAN.add(model)
    except TypeError:
        pass
    return True


def _identity(n: int, t: int) -> np.ndarray:
    return np.broadcast_to(np.eye(t), (n, t, t)).copy()


def read_rows(matrix: np.ndarray, token: Literal["class", "mean"]) -> np.ndarray:
    """``(N, T)`` from ``(N, T, T)``: the class token's row (token 0), or the mean of the rows."""
    return matrix[:, 0, :] if token == "class" else matrix.mean(axis=1)


def check_rollout_options(head_fusion: str, discard_ratio: float) -> float:
    """``discard_ratio`` as a float, or a ``ValueError`` naming the bad option: ``head_fusion``
    must be ``"mean"``, ``"max"`` or ``"min"``, ``discard_ratio`` in [0, 1)."""
    if head_fusion not in ("mean", "max", "min"):
        raise ValueError(f"head_fusion={head_fusion!r} must be 'mean', 'max' or 'min'")
    if not 0.0 <= float(discard_ratio) < 1.0:
        raise ValueError(f"discard_ratio={discard_ratio} must be in [0, 1)")
    return float(discard_ratio)


def rollout(attentions: list[np.ndarray], *, head_fusion: HeadFusion = "mean",
            discard_ratio: float = 0.0) -> np.ndarray:
    """Attention rollout (Abnar & Zuidema, "Quantifying Attention Flow in Transformers",
    ACL 2020): ``R = prod_l normalise_rows((fuse_heads(A_l) + I) / 2)``, the later block on the
    left.

    Parameters
    ----------
    attentions : list of np.ndarray
        Per block ``(N, heads, T, T)``, in run order.
    head_fusion : {"mean", "max", "min"}
        How heads combine (the paper: mean).
    discard_ratio : float
        In [0, 1): per sample and block, that fraction of the fused attention's smallest
        entries is set to zero, never the class token's attention to itself (entry ``[0, 0]``),
        before the identity is added (jacobgil/vit-explain, whose default is 0.9).

    Returns
    -------
    np.ndarray
        float64 ``(N, T, T)``.
    """
    discard_ratio = check_rollout_options(head_fusion, discard_ratio)
    n, _, t, _ = attentions[0].shape
    result = _identity(n, t)
    for probs in attentions:
        if head_fusion == "mean":  # accumulated in float64 without a float64 copy of probs
            fused = np.mean(probs, axis=1, dtype=np.float64)
        else:
            reduce = np.max if head_fusion == "max" else np.min
            fused = reduce(probs, axis=1).astype(np.float64)
        count = int(t * t * discard_ratio)
        if count:
            flat = fused.reshape(n, -1)
            lowest = np.argpartition(flat, count - 1, axis=1)[:, :count]
            for i in range(n):
                drop = lowest[i][lowest[i] != 0]
                flat[i, drop] = 0.0
        step = (fused + np.eye(t)) / 2.0
        step /= step.sum(axis=-1, keepdims=True)
        result = step @ result
    return result


def gradient_rollout(attentions: list[np.ndarray], gradients: list[np.ndarray]) -> np.ndarray:
    """Gradient-weighted rollout (Chefer, Gur & Wolf, "Generic Attention-model Explainability
    for Interpreting Bi-Modal and Encoder-Decoder Transformers", ICCV 2021, eqs. 5-6 for
    self-attention): ``R = I``; per block, ``R += mean_h((dy/dA_l * A_l)^+) @ R``.

    Returns
    -------
    np.ndarray
        float64 ``(N, T, T)``.
    """
    n, _, t, _ = attentions[0].shape
    result = _identity(n, t)
    for probs, grads in zip(attentions, gradients, strict=True):
        weighted = np.maximum(np.multiply(grads, probs), 0)  # float32: exact to 1e-7
        result = result + weighted.mean(axis=1, dtype=np.float64) @ result
    return result


def legrad(gradients: list[np.ndarray]) -> np.ndarray:
    """LeGrad (Bousselham, Boggust, Chaybouti, Strobelt & Kuehne, "LeGrad: An Explainability
    Method for Vision Transformers via Feature Formation Sensitivity", 2024): per block ``l``,
    the gradient of the score that the model's head reads from block ``l``'s output with
    respect to block ``l``'s attention map (the adapter's ``"per_block"`` gradients),
    rectified and averaged over heads and query rows; then averaged over blocks.

    Returns
    -------
    np.ndarray
        float64 ``(N, T)``: relevance per key token.
    """
    per_block = [np.maximum(g, 0).mean(axis=(1, 2), dtype=np.float64) for g in gradients]
    return np.mean(per_block, axis=0)


class AttentionMethod(Method):
    """Base of the attention methods: the capture, the token reading, the grid and the maps.

    Subclasses set ``name``, ``gradients`` (what they ask the adapter for) and implement
    :meth:`relevance`.

    Parameters
    ----------
    model
        A vision transformer whose adapter declares the ``"attention"`` capability.
    layer : ignored
        Accepted for a uniform signature: every global self-attention layer is used (from
        ``start_block`` on).
    token : {"auto", "class", "mean"}
        Whose relevance is read (see the module docstring).
    prefix : int, optional
        Tokens before the patch grid (class, distillation, registers); default: found from
        the token count and the input's shape.
    start_block : int
        The first block used (negative: from the end), e.g. ``-2`` for the last two.
    batch_size : int
        Samples per pass.
    **kwargs
        ``backend``, ``output``, ``relu``, ``normalize``, ``upsample``, ``aug_smooth``: as for
        every method (:class:`~interp_core.methods.method.Method`).
    """

    requires: ClassVar[tuple[str, ...]] = (ATTENTION,)
    needs: ClassVar[Needs] = "attention"
    takes_layer: ClassVar[bool] = False
    instead: ClassVar[str] = "use GradCAM on a token layer (token Grad-CAM)"
    #: What the adapter differentiates (:class:`~interp_core.backend.protocol.AttentionBackend`).
    gradients: ClassVar[Literal["none", "output", "per_block"]] = "none"

    def __init__(self, model: Any, layer: Any = None, *, token: Token = "auto",
                 prefix: int | None = None, start_block: int = 0, batch_size: int = 32,
                 **kwargs: Any) -> None:
        super().__init__(model, layer, **kwargs)
        if token not in ("auto", "class", "mean"):
            raise ValueError(f"token={token!r} must be 'auto', 'class' or 'mean'")
        if prefix is not None and (isinstance(prefix, bool) or not isinstance(prefix, int)
                                   or prefix < 0):
            raise ValueError(f"prefix={prefix!r} must be a non-negative int or None")
        if isinstance(start_block, bool) or not isinstance(start_block, int):
            raise TypeError(f"start_block={start_block!r} must be an int")
        self.token: Token = token
        self.prefix = prefix
        self.start_block = start_block
        self.batch_size = check_batch_size(batch_size)

    # -- what subclasses implement ------------------------------------------------------
    def relevance(self, capture: AttentionCapture, token: Literal["class", "mean"]
                  ) -> np.ndarray:
        """``(N, T)`` relevance of every token, from the blocks in use."""
        raise NotImplementedError

    # -- the pipeline -------------------------------------------------------------------
    def compute(self, x: Any, targets: TargetSpec) -> Explanation:
        check_single_input(self, x)
        x_np = np.asarray(self.backend.to_numpy(x))
        axis = channel_axis(x_np, self.backend, self.model)
        spatial = tuple(d for i, d in enumerate(x_np.shape[1:], start=1) if i != axis)
        capture = self.backend.attention(  # type: ignore[attr-defined]
            self.model, x, targets, gradients=self.gradients, output=self.output,
            batch_size=self.batch_size)
        capture = self._blocks_in_use(check_capture(capture, len(x_np)))
        tokens = capture.attentions[0].shape[-1]
        prefix, grid = self._grid(tokens, spatial)
        relevance = self.relevance(capture, self._token(prefix)).astype(np.float32)
        patches = relevance[:, prefix:].reshape(len(relevance), *grid)
        maps = finish_maps([patches], spatial, relu=self.relu, normalize=self.normalize,
                           upsample=self.upsample)
        return Explanation(
            maps=maps, raw={TOKENS: relevance}, scores=np.asarray(capture.scores, np.float32),
            targets=np.asarray(capture.targets, np.int64), layers=list(capture.blocks),
            method=self.name, backend=self.backend.name,
        )

    def _blocks_in_use(self, capture: AttentionCapture) -> AttentionCapture:
        count = len(capture.blocks)
        if not -count <= self.start_block < count:
            raise ValueError(
                f"start_block={self.start_block} is outside the model's {count} attention "
                f"blocks: use 0..{count - 1} or -{count}..-1"
            )
        keep = slice(self.start_block, None)
        return AttentionCapture(
            blocks=capture.blocks[keep], attentions=capture.attentions[keep],
            gradients=None if capture.gradients is None else capture.gradients[keep],
            scores=capture.scores, targets=capture.targets)

    def _grid(self, tokens: int, spatial: tuple[int, ...]) -> tuple[int, tuple[int, ...]]:
        """The prefix count and the patch grid of ``tokens`` tokens over an input of
        ``spatial``."""
        if self.prefix is not None:
            layout = grid_layout((1, tokens - self.prefix, 1), spatial,
                                 native_channels_first=False)
            if layout is None or layout.prefix != 0 or self.prefix >= tokens:
                raise ValueError(
                    f"prefix={self.prefix} leaves {tokens - self.prefix} of the {tokens} "
                    f"tokens, which form no grid over an input of {spatial}"
                )
            return self.prefix, layout.grid
        layout = grid_layout((1, tokens, 1), spatial, native_channels_first=False)
        if layout is None or layout.token_axis is None:
            raise ValueError(
                f"the attention maps hold {tokens} tokens, which form no patch grid over an "
                f"input of {spatial} after 0, 1, 2, 4 or 5 prefix tokens; pass prefix= (the "
                "number of class, distillation and register tokens)"
            )
        return layout.prefix, layout.grid

    def _token(self, prefix: int) -> Literal["class", "mean"]:
        if self.token != "auto":
            return self.token
        if prefix > 0:
            return "class"
        if _first_time(self.model):
            warnings.warn(
                f"{type(self).__name__}: {type(self.model).__name__} has no class token (no "
                "tokens before the patch grid), so the relevance is read as the mean over all "
                "tokens' rows (token='mean'); pass token='mean' to silence this, or prefix= if "
                "the model does have a class token",
                UserWarning, stacklevel=4,
            )
        return "mean"


class AttentionRollout(AttentionMethod):
    """Attention rollout (Abnar & Zuidema, ACL 2020): the attention, heads fused and the
    residual added as the identity, multiplied through the blocks; the class token's row
    (:func:`rollout`). Forward passes only, class-agnostic (``targets`` only pick the scores
    reported).

    Parameters
    ----------
    head_fusion : {"mean", "max", "min"}
        How heads combine (default: the paper's mean).
    discard_ratio : float
        Fraction of the smallest fused attention entries zeroed per block (jacobgil/vit-explain
        uses 0.9); 0 (default) is the paper's rollout.
    **kwargs
        As :class:`AttentionMethod`.
    """

    name = "attentionrollout"

    def __init__(self, model: Any, layer: Any = None, *, head_fusion: HeadFusion = "mean",
                 discard_ratio: float = 0.0, **kwargs: Any) -> None:
        super().__init__(model, layer, **kwargs)
        self.discard_ratio = check_rollout_options(head_fusion, discard_ratio)
        self.head_fusion: HeadFusion = head_fusion

    def relevance(self, capture: AttentionCapture, token: Literal["class", "mean"]
                  ) -> np.ndarray:
        return read_rows(rollout(capture.attentions, head_fusion=self.head_fusion,
                                 discard_ratio=self.discard_ratio), token)


class AttentionGradientMethod(AttentionMethod):
    """An attention method that also needs gradients of the target score at the attention."""

    requires = (ATTENTION, GRADIENTS)
    needs = "attention gradients"


class GradientRollout(AttentionGradientMethod):
    """Gradient-weighted attention rollout (Chefer, Gur & Wolf, ICCV 2021): each block's
    attention weighted by the target score's gradient, rectified, averaged over heads and
    accumulated as ``R += Ā R`` (:func:`gradient_rollout`); the class token's row. One forward
    and one backward pass."""

    name = "gradientrollout"
    gradients = "output"

    def relevance(self, capture: AttentionCapture, token: Literal["class", "mean"]
                  ) -> np.ndarray:
        assert capture.gradients is not None
        return read_rows(gradient_rollout(capture.attentions, capture.gradients), token)


class LeGrad(AttentionGradientMethod):
    """LeGrad (Bousselham et al., 2024): per block, the gradient of the score the model's
    final norm and head read from that block's output (the class token, or the pooled tokens)
    with respect to the block's attention map, rectified, averaged over heads, query rows and
    blocks (:func:`legrad`). One forward and one backward pass (the head runs once per
    block)."""

    name = "legrad"
    gradients = "per_block"

    def relevance(self, capture: AttentionCapture, token: Literal["class", "mean"]
                  ) -> np.ndarray:
        assert capture.gradients is not None
        return legrad(capture.gradients)
