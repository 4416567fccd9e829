"""Gradient-weighted methods: Grad-CAM and its family.

All functions take canonical arrays ``A`` (activations) and ``G`` (gradients of the summed target
scores), float32 ``(N, *spatial, C)``, and return a raw map ``(N, *spatial)`` before ReLU.
The formulas follow the papers and agree with pytorch-grad-cam's implementations.
"""

from __future__ import annotations

from typing import ClassVar

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


def guided_gradient_weights(A: np.ndarray, G: np.ndarray) -> np.ndarray:
    """Grad-CAM with "guided gradients": ``w_c = mean over space of (A > 0) (G > 0) G``.

    The variant of the Grad-CAM callback in tf-explain (``GradCAM.compute_gradients`` in
    ``tf_explain/core/grad_cam.py``, from the original Keras Grad-CAM tutorials): only positive
    gradients at positions where the channel is active count. ``(N, C)``.
    """
    guided = np.where((A > 0) & (G > 0), G, 0.0)
    return guided.mean(axis=spatial_axes(G))


def xgradcam_weights(A: np.ndarray, G: np.ndarray) -> np.ndarray:
    """XGrad-CAM (Fu et al. 2020): ``w_c = sum(G_c * A_c) / sum(A_c)``. ``(N, C)``."""
    axes = spatial_axes(A)
    sum_a = A.sum(axis=axes, keepdims=True)
    return (G * A / (sum_a + 1e-7)).sum(axis=axes)


class _GradientWeightCAM(ChannelWeightCAM):
    """Channel weights computed from activations and gradients by ``weight_fn``."""

    weight_fn: ClassVar = staticmethod(gradcam_weights)

    def channel_weights(self, activations: np.ndarray, gradients: np.ndarray | None,
                        ctx: LayerContext) -> np.ndarray:
        return type(self).weight_fn(activations, gradients)


class GradCAM(_GradientWeightCAM):
    """Grad-CAM: channel weights are the spatially averaged gradients."""

    name = "gradcam"
    weight_fn = staticmethod(gradcam_weights)


class GuidedGradientsGradCAM(_GradientWeightCAM):
    """Grad-CAM on "guided gradients" ``(A > 0) (G > 0) G`` (tf-explain's Grad-CAM callback).

    Only positive gradients where the channel is active are averaged into the weights, so
    channels that suppress the class never get a negative weight.
    """

    name = "gradcam-guidedgrads"
    weight_fn = staticmethod(guided_gradient_weights)


class GradCAMPlusPlus(_GradientWeightCAM):
    """Grad-CAM++: higher-order weights that handle several instances of a class better."""

    name = "gradcam++"
    weight_fn = staticmethod(gradcam_plus_plus_weights)


class XGradCAM(_GradientWeightCAM):
    """XGrad-CAM: activation-normalised gradient weights (axiom-based)."""

    name = "xgradcam"
    weight_fn = staticmethod(xgradcam_weights)


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
