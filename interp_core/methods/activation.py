"""Methods that read activations (and layer weights) rather than target gradients.

- :class:`CAM`: Zhou et al. 2016, the weights of the dense layer after global average pooling.
- :class:`EigenCAM`: the first principal component of the activations (Muhammad & Yeasin 2020).
- :class:`EigenGradCAM`: the same on ``G * A``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from interp_core.backend.protocol import LINEAR_WEIGHTS
from interp_core.methods.base import CAMMethod, ChannelWeightCAM, LayerContext


def first_component(X: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Projection of each sample's positions on its first principal component.

    Parameters
    ----------
    X : np.ndarray
        ``(N, *spatial, C)``; each sample's positions are the observations, channels the
        variables, centred per channel before the SVD (as pytorch-grad-cam does).
    reference : np.ndarray
        ``(N, *spatial)``; the sign of each projection is chosen so that it correlates
        positively with this map (the SVD alone leaves the sign arbitrary).

    Returns
    -------
    np.ndarray
        ``(N, *spatial)`` float32.
    """
    n, spatial, c = X.shape[0], X.shape[1:-1], X.shape[-1]
    flat = X.reshape(n, -1, c).astype(np.float64)
    flat = flat - flat.mean(axis=1, keepdims=True)
    # The projection on the first right-singular vector v1 is X v1 = s1 u1. Both come from the
    # eigen-decomposition of the smaller Gram matrix (positions or channels), batched: several
    # times faster than a full SVD and identical up to the sign, which is fixed below.
    if flat.shape[1] <= c:
        values, vectors = np.linalg.eigh(flat @ flat.transpose(0, 2, 1))
        proj = vectors[:, :, -1] * np.sqrt(np.maximum(values[:, -1:], 0.0))
    else:
        _, vectors = np.linalg.eigh(flat.transpose(0, 2, 1) @ flat)
        proj = (flat @ vectors[:, :, -1:])[..., 0]
    ref = reference.reshape(n, -1).astype(np.float64)
    corr = ((proj - proj.mean(1, keepdims=True)) * (ref - ref.mean(1, keepdims=True))).sum(1)
    proj *= np.where(corr < 0, -1.0, 1.0)[:, None]
    return proj.reshape((n, *spatial)).astype(np.float32)


class EigenCAM(CAMMethod):
    """Eigen-CAM: class-agnostic, the first principal component of the layer's activations."""

    name = "eigencam"
    needs_gradients = False

    def layer_map(self, activations: np.ndarray, gradients: np.ndarray | None,
                  ctx: LayerContext) -> np.ndarray:
        return first_component(activations, activations.mean(axis=-1))


class EigenGradCAM(CAMMethod):
    """Eigen-Grad-CAM: the first principal component of ``G * A`` (class-specific)."""

    name = "eigengradcam"

    def layer_map(self, activations: np.ndarray, gradients: np.ndarray | None,
                  ctx: LayerContext) -> np.ndarray:
        product = gradients * activations
        return first_component(product, product.sum(axis=-1))


class CAM(ChannelWeightCAM):
    """Class Activation Mapping (Zhou et al. 2016) from the dense layer after global pooling.

    ``map_k = sum_c W[k, c] A_c`` where ``W`` is the dense layer's ``(classes, channels)``
    weight matrix. On a GAP + dense model this equals Grad-CAM's map.

    Parameters
    ----------
    fc : str or layer object, optional
        The dense layer (torch ``nn.Linear``, Keras ``Dense``, ...). Default: the model's last
        dense layer.
    """

    name = "cam"
    needs_gradients = False

    def __init__(self, model: Any, layer: Any = None, *, fc: Any = None, **kwargs: Any) -> None:
        super().__init__(model, layer, **kwargs)
        if LINEAR_WEIGHTS not in self.backend.capabilities:
            raise NotImplementedError(
                f"backend {self.backend.name!r} cannot read dense-layer weights; use GradCAM "
                "(it equals CAM on global-average-pooling + dense models)"
            )
        self.fc = fc

    def channel_weights(self, activations: np.ndarray, gradients: np.ndarray | None,
                        ctx: LayerContext) -> np.ndarray:
        W = np.asarray(self.backend.linear_weights(self.model, self.fc), dtype=np.float32)
        if W.shape[1] != activations.shape[-1]:
            raise ValueError(
                f"the dense layer has {W.shape[1]} inputs but layer {ctx.layer_name!r} has "
                f"{activations.shape[-1]} channels: CAM needs the layer that feeds the global "
                "pooling before the dense layer"
            )
        spec = ctx.target
        if spec.kind == "binary":
            return W[0][None, :] * spec.signs[:, None]
        if spec.kind in ("top1", "class"):
            return W[ctx.capture.targets]
        raise ValueError(
            f"CAM explains class or binary targets, not {spec.kind!r} targets; use GradCAM "
            "for those"
        )
