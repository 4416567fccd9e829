"""FullGrad (Srinivas & Fleuret 2019), with pytorch-grad-cam's numerics.

The map sums the input-gradient term and one bias-gradient term per layer that adds a
per-channel bias to a spatial output (convolutions with a bias, batch normalisation):

    map = scale( sum_c scale(|x * dS/dx|_c) + sum_layers resize( sum_c scale(|b_c * dS/dz_c|) ) )

where ``z`` is the layer's output before any activation, ``b`` its effective bias (batch norm:
``beta - mean * gamma / sqrt(var + eps)``), and ``scale`` is pytorch-grad-cam's
``scale_cam_image`` applied to each sample's map (each channel's, inside the sums):
``(v - min) / (1e-7 + max - min)``. The adapter supplies the gradients and biases in one pass
(:meth:`~interp_core.backend.protocol.BiasGradientBackend.bias_gradients`, the optional
``"bias_gradients"`` capability); everything else is NumPy. Resizing is linear, so each layer's
channels are summed before it is resized (pytorch-grad-cam resizes every channel first; the
results agree to float rounding).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from interp_core.backend.protocol import BIAS_GRADIENTS
from interp_core.backend.target_spec import TargetSpec
from interp_core.methods.catalog import Needs
from interp_core.methods.input_gradients import INPUT, channel_axis, check_single_input
from interp_core.methods.method import Explanation, Method
from interp_core.methods.postprocess import resize_bilinear

#: pytorch-grad-cam's ``scale_cam_image`` epsilon.
SCALE_EPS = 1e-7


def scale_maps(maps: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """``(v - min) / (1e-7 + max - min)`` over ``axes`` (pytorch-grad-cam's scaling), float32."""
    v = np.asarray(maps, dtype=np.float32)
    v = v - v.min(axis=axes, keepdims=True)
    return (v / (np.float32(SCALE_EPS) + v.max(axis=axes, keepdims=True))).astype(np.float32)


def input_term(x: np.ndarray, grad: np.ndarray, axis: int | None) -> np.ndarray:
    """``sum_c scale(|x * g|_c)``: ``(N, *spatial)`` from native-layout input and gradient."""
    prod = np.abs(x.astype(np.float32) * grad.astype(np.float32))
    if axis is None:
        return scale_maps(prod, tuple(range(1, prod.ndim)))
    spatial = tuple(i for i in range(1, prod.ndim) if i != axis)
    return scale_maps(prod, spatial).sum(axis=axis)


def bias_term(bias: np.ndarray, grad: np.ndarray) -> np.ndarray:
    """``sum_c scale(|b_c * G_c|)``: ``(N, *spatial)`` from channels-last ``(N, *S, C)``."""
    prod = np.abs(np.asarray(grad, np.float32) * np.asarray(bias, np.float32))
    return scale_maps(prod, tuple(range(1, prod.ndim - 1))).sum(axis=-1)


class FullGrad(Method):
    """FullGrad: input-gradient and bias-gradient terms of every biased layer, summed.

    An attribution to the input (``takes_layer = False``) that is not an
    :class:`~interp_core.methods.input_gradients.InputGradientMethod`: its map is not a
    reduction of one input-shaped attribution, and one backend call gives every term.
    ``layer`` is ignored (as in pytorch-grad-cam): every convolution with a bias and every
    batch-norm layer with a spatial output is used. ``raw["input"]`` is ``x * dS/dx`` (native
    layout); ``raw[name]`` is each layer's term at its own resolution (before resizing).
    ``normalize=False`` returns the sum unscaled.

    Raises
    ------
    NotImplementedError
        The backend lacks the optional ``"bias_gradients"`` capability.
    """

    name = "fullgrad"
    requires: ClassVar[tuple[str, ...]] = (BIAS_GRADIENTS,)
    needs: ClassVar[Needs] = "input gradients"
    takes_layer: ClassVar[bool] = False
    instead: ClassVar[str] = "use GradCAM or IntegratedGradients"

    def compute(self, x: Any, targets: TargetSpec) -> Explanation:
        """The input term and every biased layer's term from one backend call, summed."""
        check_single_input(self, x)
        got = self.backend.bias_gradients(  # type: ignore[attr-defined]
            self.model, x, targets, output=self.output)
        x_np = np.asarray(self.backend.to_numpy(x), dtype=np.float32)
        g_in = np.asarray(got.input_gradients, dtype=np.float32)
        axis = channel_axis(x_np, self.backend, self.model)
        total = input_term(x_np, g_in, axis).astype(np.float64)
        size = total.shape[1:]
        raw: dict[str, np.ndarray] = {INPUT: x_np * g_in}
        for name, grad in got.gradients.items():
            term = bias_term(got.biases[name], grad)
            if term.ndim - 1 != len(size):
                continue  # a bias on a non-spatial output (a dense batch norm): no map
            raw[name] = term
            total += resize_bilinear(term, size) if term.shape[1:] != size else term
        total32 = np.nan_to_num(total.astype(np.float32))
        maps = scale_maps(total32, tuple(range(1, total32.ndim))) if self.normalize else total32
        return Explanation(
            maps=maps, raw=raw, scores=np.asarray(got.scores, np.float32),
            targets=np.asarray(got.targets, np.int64), layers=list(raw), method=self.name,
            backend=self.backend.name,
        )
