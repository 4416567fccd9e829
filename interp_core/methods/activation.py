"""Methods that read activations (and layer weights) rather than target gradients.

- :class:`CAM`: Zhou et al. 2016, the weights of the dense layer after global average pooling.
- :class:`EigenCAM`: the first principal component of the activations (Muhammad & Yeasin 2020).
- :class:`EigenGradCAM`: the same on ``G * A``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from interp_core.backend.protocol import GRADIENTS, LINEAR_WEIGHTS
from interp_core.methods.base import CAMMethod, ChannelWeightCAM, LayerContext
from interp_core.methods.smoothing import first_component

__all__ = ["CAM", "EigenCAM", "EigenGradCAM", "first_component"]


class EigenCAM(CAMMethod):
    """Eigen-CAM: class-agnostic, the first principal component of the layer's activations."""

    name = "eigencam"
    requires = ()
    needs = "activations"
    target_free = True

    def layer_terms(self, activations: np.ndarray, gradients: np.ndarray | None,
                    ctx: LayerContext) -> np.ndarray:
        return activations  # eigen_smooth gives Eigen-CAM itself

    def layer_map(self, activations: np.ndarray, gradients: np.ndarray | None,
                  ctx: LayerContext) -> np.ndarray:
        return first_component(activations, activations.mean(axis=-1))


class EigenGradCAM(CAMMethod):
    """Eigen-Grad-CAM: the first principal component of ``G * A`` (class-specific)."""

    name = "eigengradcam"
    requires = (GRADIENTS,)
    needs = "gradients"

    def layer_terms(self, activations: np.ndarray, gradients: np.ndarray | None,
                    ctx: LayerContext) -> np.ndarray:
        return gradients * activations  # eigen_smooth gives Eigen-Grad-CAM itself

    def layer_map(self, activations: np.ndarray, gradients: np.ndarray | None,
                  ctx: LayerContext) -> np.ndarray:
        # float64: G * A of large float32 values overflows to inf (and the SVD fails)
        product = gradients.astype(np.float64) * activations
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
    requires = (LINEAR_WEIGHTS,)
    needs = "activations"
    instead = "use GradCAM (it equals CAM on global-average-pooling + dense models)"

    def __init__(self, model: Any, layer: Any = None, *, fc: Any = None, **kwargs: Any) -> None:
        super().__init__(model, layer, **kwargs)
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
