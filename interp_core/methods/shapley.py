"""ShapleyCAM: channel weights from the gradient and a Hessian-vector product of the score.

Cai et al., "CAMs as Shapley value-based explainers" (2025, arXiv:2501.06261) read a CAM as the
Shapley values of the layer's neurons for a second-order Taylor expansion of the target score
``S`` around the activations ``A``. With ``G = dS/dA`` and ``H = d^2 S/dA^2``, a neuron's
Shapley value in that expansion is ``A * (G - 0.5 * H A)`` (the cross terms of ``H`` shared
equally between each pair of neurons), so ShapleyCAM weighs the channels with the spatial mean
of ``G - 0.5 * H A`` as Grad-CAM does with that of ``G``:

    w_c = mean over space of (G - 0.5 * H A)_c,    map = sum_c w_c A_c.

``H A`` comes from the backend's optional ``"hvp"`` capability
(:class:`~interp_core.backend.protocol.HvpBackend`). Above a piecewise-linear part of a network
(ReLU, max-pooling, eval-mode batch norm, a linear head) and for a logit target, ``H A`` is
zero and ShapleyCAM equals Grad-CAM; it differs with smooth activations (SiLU, GELU) or a
target that is not linear in the output (a softmax probability). The numbers agree with
pytorch-grad-cam's ``ShapleyCAM`` (1.5.7).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from interp_core.backend.protocol import GRADIENTS, HVP
from interp_core.methods.base import ChannelWeightCAM, LayerContext, spatial_axes
from interp_core.methods.catalog import Needs


def shapleycam_weights(G: np.ndarray, HA: np.ndarray) -> np.ndarray:
    """ShapleyCAM's channel weights: ``w_c = mean over space of (G - 0.5 * HA)_c``.

    Parameters
    ----------
    G : np.ndarray
        float32 ``(N, *spatial, C)``: d(sum of target scores)/d(activations).
    HA : np.ndarray
        float32 ``(N, *spatial, C)``: the Hessian of the summed scores with respect to the
        activations, applied to the activations.

    Returns
    -------
    np.ndarray
        float32 ``(N, C)``.
    """
    if G.shape != HA.shape:
        raise ValueError(
            f"the Hessian-vector product has shape {HA.shape}, the gradients {G.shape}; the "
            "backend's capture_hvp must return both in one layout"
        )
    diff = G.astype(np.float64) - 0.5 * HA.astype(np.float64)
    return diff.mean(axis=spatial_axes(G)).astype(np.float32)


class ShapleyCAM(ChannelWeightCAM):
    """ShapleyCAM (Cai et al. 2025): Grad-CAM with weights from ``G - 0.5 * H A``.

    Needs the backend's ``"hvp"`` capability (the first-party torch, TensorFlow and JAX
    adapters have it): one forward pass and two backward passes down to the layer. Takes the
    options of every CAM method (``reshape``, ``output``, ``relu``, ``aug_smooth``,
    ``eigen_smooth``, ...).
    """

    name = "shapleycam"
    requires: ClassVar[tuple[str, ...]] = (GRADIENTS, HVP)
    needs: ClassVar[Needs] = "hessian-vector products"
    instead: ClassVar[str] = ("use GradCAM (which ShapleyCAM equals on piecewise-linear "
                              "networks with logit targets)")

    def channel_weights(self, activations: np.ndarray, gradients: np.ndarray | None,
                        ctx: LayerContext) -> np.ndarray:
        if gradients is None or ctx.hvp is None:
            raise ValueError(
                f"{type(self).__name__} needs the layer's gradients and Hessian-vector product "
                f"(Backend.capture_hvp); backend {ctx.backend.name!r} returned "
                f"{'no gradients' if gradients is None else 'no hvp'} for layer "
                f"{ctx.layer_name!r}"
            )
        return shapleycam_weights(gradients, ctx.hvp)
