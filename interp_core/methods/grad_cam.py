"""Gradient-weighted methods: Grad-CAM and its family (Grad-CAM++, XGrad-CAM, HiResCAM,
element-wise Grad-CAM, LayerCAM). Grad-CAM on guided gradients and Guided Grad-CAM are in
:mod:`~interp_core.methods.guided`.

Every class here needs gradients at the layer (``requires = ("gradients",)``, the
:class:`~interp_core.methods.base.CAMMethod` default). All functions take canonical arrays
``A`` (activations) and ``G`` (gradients of the summed target scores), float32
``(N, *spatial, C)``, and return a raw map ``(N, *spatial)`` before ReLU. The formulas follow
the papers and agree with pytorch-grad-cam's implementations.
"""

from __future__ import annotations

import numpy as np

from interp_core.methods.base import CAMMethod, ChannelWeightCAM, LayerContext, spatial_axes


def gradcam_weights(A: np.ndarray, G: np.ndarray) -> np.ndarray:
    """Grad-CAM (Selvaraju et al. 2017): ``w_c = mean over space of G_c``. ``(N, C)``."""
    return G.mean(axis=spatial_axes(G))


def gradcam_plus_plus_weights(A: np.ndarray, G: np.ndarray) -> np.ndarray:
    """Grad-CAM++ (Chattopadhay et al. 2018), eq. 19 with exponential-score simplification.

    ``alpha = G^2 / (2 G^2 + sum_ij(A) G^3)``; ``w_c = sum_ij alpha * relu(G)``. ``(N, C)``.
    """
    axes = spatial_axes(A)
    g2 = G * G
    g3 = g2 * G
    sum_a = A.sum(axis=axes, keepdims=True)
    alpha = g2 / (2.0 * g2 + sum_a * g3 + 1e-6)
    alpha = np.where(G != 0, alpha, 0.0)
    return (np.maximum(G, 0) * alpha).sum(axis=axes)


def xgradcam_weights(A: np.ndarray, G: np.ndarray) -> np.ndarray:
    """XGrad-CAM (Fu et al. 2020): ``w_c = sum(G_c * A_c) / sum(A_c)``. ``(N, C)``."""
    axes = spatial_axes(A)
    sum_a = A.sum(axis=axes, keepdims=True)
    return (G * A / (sum_a + 1e-7)).sum(axis=axes)


class GradientWeightCAM(ChannelWeightCAM):
    """A channel-weight method whose weights are a function of the layer's activations and
    gradients alone: a subclass names it in ``weights`` (``(A, G) -> (N, C)``)."""

    weights: staticmethod[[np.ndarray, np.ndarray], np.ndarray]

    def channel_weights(self, activations: np.ndarray, gradients: np.ndarray | None,
                        ctx: LayerContext) -> np.ndarray:
        if gradients is None:
            raise ValueError(f"{type(self).__name__} needs the layer's gradients")
        return self.weights(activations, gradients)


class GradCAM(GradientWeightCAM):
    """Grad-CAM: channel weights are the spatially averaged gradients."""

    name = "gradcam"
    weights = staticmethod(gradcam_weights)


class GradCAMPlusPlus(GradientWeightCAM):
    """Grad-CAM++: higher-order weights that handle several instances of a class better."""

    name = "gradcam++"
    weights = staticmethod(gradcam_plus_plus_weights)


class XGradCAM(GradientWeightCAM):
    """XGrad-CAM: activation-normalised gradient weights (axiom-based)."""

    name = "xgradcam"
    weights = staticmethod(xgradcam_weights)


class HiResCAM(CAMMethod):
    """HiResCAM (Draelos & Carin 2020): ``sum_c G_c * A_c`` element-wise, faithful to the score."""

    name = "hirescam"

    def layer_terms(self, activations: np.ndarray, gradients: np.ndarray | None,
                    ctx: LayerContext) -> np.ndarray:
        return gradients * activations

    def layer_map(self, activations: np.ndarray, gradients: np.ndarray | None,
                  ctx: LayerContext) -> np.ndarray:
        return (gradients * activations).sum(axis=-1)


class GradCAMElementWise(CAMMethod):
    """Element-wise Grad-CAM: ``sum_c relu(G_c * A_c)``."""

    name = "gradcam-elementwise"

    def layer_terms(self, activations: np.ndarray, gradients: np.ndarray | None,
                    ctx: LayerContext) -> np.ndarray:
        return np.maximum(gradients * activations, 0)

    def layer_map(self, activations: np.ndarray, gradients: np.ndarray | None,
                  ctx: LayerContext) -> np.ndarray:
        return np.maximum(gradients * activations, 0).sum(axis=-1)


class LayerCAM(CAMMethod):
    """LayerCAM (Jiang et al. 2021): ``sum_c relu(G_c) * A_c``; sharp on shallow layers."""

    name = "layercam"

    def layer_terms(self, activations: np.ndarray, gradients: np.ndarray | None,
                    ctx: LayerContext) -> np.ndarray:
        return np.maximum(gradients, 0) * activations

    def layer_map(self, activations: np.ndarray, gradients: np.ndarray | None,
                  ctx: LayerContext) -> np.ndarray:
        return (np.maximum(gradients, 0) * activations).sum(axis=-1)
