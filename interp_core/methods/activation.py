"""Methods that read activations (and layer weights) rather than target gradients.

- :class:`CAM`: Zhou et al. 2016, the weights of the dense layer after global average pooling.
- :class:`EigenCAM`: the first principal component of the activations (Muhammad & Yeasin 2020).
- :class:`EigenGradCAM`: the same on ``G * A``.
- :class:`FEM`: channel weights from a k-sigma rule on the activations (Fuad et al. 2020).
- :class:`SegEigenCAM`: the first principal component of ``|G| * A``, its sign set by its
  extremes (Chung & Ying 2025).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from interp_core.backend.protocol import GRADIENTS, LINEAR_WEIGHTS
from interp_core.methods.base import CAMMethod, ChannelWeightCAM, LayerContext
from interp_core.methods.smoothing import first_component

__all__ = ["CAM", "FEM", "EigenCAM", "EigenGradCAM", "SegEigenCAM", "fem_weights",
           "first_component", "sign_corrected_component"]


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


def fem_weights(activations: np.ndarray, k: float = 2.0) -> np.ndarray:
    """FEM's channel weights: the share of each channel's positions above its k-sigma threshold.

    ``w_c = mean over positions of [A_c > mean(A_c) + k std(A_c)]`` with the population
    standard deviation (Fuad et al., "Features understanding in 3D CNNs for actions
    recognition in video", IPTA 2020). A constant channel has no position above its mean: its
    weight is 0.

    Parameters
    ----------
    activations : np.ndarray
        ``(N, *spatial, C)``.
    k : float
        How many standard deviations above the mean a position must be.

    Returns
    -------
    np.ndarray
        float32 ``(N, C)`` in [0, 1].
    """
    axes = tuple(range(1, activations.ndim - 1))
    a = activations.astype(np.float64)
    threshold = a.mean(axis=axes, keepdims=True) + k * a.std(axis=axes, keepdims=True)
    return (a > threshold).mean(axis=axes).astype(np.float32)


def sign_corrected_component(X: np.ndarray) -> np.ndarray:
    """The first principal component of ``X`` ``(N, *spatial, C)``, each sample's sign chosen
    so that its largest magnitude is positive: flipped where ``|min| > |max|`` (Seg-Eigen-CAM's
    sign correction, Chung & Ying 2025, eq. 13). ``(N, *spatial)`` float32."""
    proj = first_component(X, X.sum(axis=-1)).astype(np.float64)
    flat = proj.reshape(len(proj), -1)
    flip = np.abs(flat.min(axis=1)) > np.abs(flat.max(axis=1))
    return (proj * np.where(flip, -1.0, 1.0).reshape((-1,) + (1,) * (proj.ndim - 1))
            ).astype(np.float32)


class FEM(ChannelWeightCAM):
    """FEM, the Feature Explanation Method (Fuad et al., IPTA 2020): ``sum_c w_c A_c`` where
    ``w_c`` is the share of channel ``c``'s positions above ``mean + k std`` of the channel.

    Gradient-free and class-agnostic: it explains no target (``target_free``), so it runs on
    any model output (detectors' raw heads included). pytorch-grad-cam's ``FEM``.

    Parameters
    ----------
    k : float
        The k-sigma rule's factor (2 by default, as the paper and pytorch-grad-cam).
    """

    name = "fem"
    requires = ()
    needs = "activations"
    target_free = True

    def __init__(self, model: Any, layer: Any = None, *, k: float = 2.0, **kwargs: Any) -> None:
        if not np.isfinite(float(k)):
            raise ValueError(f"FEM k={k!r} must be a finite number of standard deviations")
        super().__init__(model, layer, **kwargs)
        self.k = float(k)

    def channel_weights(self, activations: np.ndarray, gradients: np.ndarray | None,
                        ctx: LayerContext) -> np.ndarray:
        return fem_weights(activations, self.k)


class SegEigenCAM(CAMMethod):
    """Seg-Eigen-CAM (Chung & Ying, "Seg-Eigen-CAM: Eigen-value-based visual explanations for
    semantic segmentation models", Applied Sciences 15(13) 7562, 2025): the first principal
    component of ``|G| * A`` (eq. 10-12), its sign set so that its largest magnitude is
    positive (eq. 13, :func:`sign_corrected_component`). pytorch-grad-cam's ``SegEigenCAM``.

    Unlike :class:`EigenGradCAM` the gradients' signs are dropped (positions where the score
    falls count as much as where it rises), and the sign comes from the map's extremes, not
    from a correlation.
    """

    name = "segeigencam"
    requires = (GRADIENTS,)
    needs = "gradients"

    def layer_map(self, activations: np.ndarray, gradients: np.ndarray | None,
                  ctx: LayerContext) -> np.ndarray:
        if gradients is None:
            raise ValueError("SegEigenCAM needs the layer's gradients")
        # float64: |G| * A of large float32 values overflows to inf (and the SVD fails)
        return sign_corrected_component(np.abs(gradients.astype(np.float64)) * activations)


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
