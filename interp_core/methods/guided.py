"""The guided methods: guided backpropagation, Guided Grad-CAM, Grad-CAM on guided gradients.

- :class:`GuidedBackprop` (Springenberg et al. 2015): the input gradient of the target score
  with the backward pass of every ReLU replaced by ``grad_in = grad_out * (x > 0) *
  (grad_out > 0)``. Adapters that declare ``"guided_backprop"`` do the swap inside one call
  without touching the model (torch: a thread-local function mode around the pass;
  TensorFlow: a gradient override of the ``Relu`` op in the compiled pass; JAX: a custom-vjp
  ReLU substituted in the traced copy). ``raw["input"]`` is the guided gradient, as Captum's
  ``GuidedBackprop``.
- :class:`GuidedGradCAM` (Selvaraju et al. 2017, sec. 3): guided backpropagation times the
  Grad-CAM map upsampled to the input, ``GB * up(relu(sum_c w_c A_c))``, computed here in NumPy
  from the two passes. With one layer and ``interpolation="nearest"`` this is Captum's
  ``GuidedGradCam``; the paper (and the default) upsamples bilinearly. With several layers the
  fused Grad-CAM map (in [0, 1]) is used.
- :class:`GuidedGradientsGradCAM`: Grad-CAM whose channel weights average "guided gradients"
  ``(A > 0) (G > 0) G`` at the layer (tf-explain's Grad-CAM); it needs layer gradients only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import numpy as np

from interp_core.backend.inputs import check_batch_size
from interp_core.backend.protocol import GRADIENTS, GUIDED_BACKPROP, SCORE_INPUT_GRADIENTS
from interp_core.backend.target_spec import TargetSpec, fixed_targets
from interp_core.methods.base import ChannelWeightCAM, LayerContext, spatial_axes
from interp_core.methods.catalog import Needs
from interp_core.methods.grad_cam import GradCAM
from interp_core.methods.input_gradients import (
    INPUT,
    InputGradientMethod,
    Reduce,
    channel_axis,
    check_reduce,
    check_single_input,
    input_maps,
)
from interp_core.methods.method import Explanation
from interp_core.methods.postprocess import relu, resize_linear

Interpolation = Literal["bilinear", "nearest"]


def nearest_indices(n_in: int, n_out: int) -> np.ndarray:
    """Source index of each output sample of a nearest resize, as torch's ``"nearest"``
    (``floor(i * n_in / n_out)``): ``(n_out,)`` int64."""
    scale = np.float32(n_in) / np.float32(n_out)
    return np.minimum((np.arange(n_out, dtype=np.float32) * scale).astype(np.int64), n_in - 1)


def resize_nearest(maps: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Nearest-neighbour resize of the trailing ``len(size)`` axes (torch ``"nearest"``)."""
    out = np.asarray(maps, dtype=np.float32)
    k = len(size)
    for i, n_out in enumerate(size):
        axis = out.ndim - k + i
        if out.shape[axis] != n_out:
            out = np.take(out, nearest_indices(out.shape[axis], int(n_out)), axis=axis)
    return np.ascontiguousarray(out)


def upsample(maps: np.ndarray, size: Sequence[int], how: Interpolation) -> np.ndarray:
    """``(N, *s)`` -> ``(N, *size)``: bilinear (half-pixel centres) or nearest."""
    if how == "nearest":
        return resize_nearest(maps, size)
    return resize_linear(maps, size)


def expand_to_input(maps: np.ndarray, axis: int | None) -> np.ndarray:
    """``(N, *spatial)`` maps broadcastable against the native input (a channel axis added)."""
    return maps if axis is None else np.expand_dims(maps, axis)


# -- at the layer: Grad-CAM on guided gradients ----------------------------------------------
def guided_gradient_weights(A: np.ndarray, G: np.ndarray) -> np.ndarray:
    """Grad-CAM with "guided gradients": ``w_c = mean over space of (A > 0) (G > 0) G``.

    The variant of the Grad-CAM callback in tf-explain (``GradCAM.compute_gradients`` in
    ``tf_explain/core/grad_cam.py``, from the original Keras Grad-CAM tutorials): only positive
    gradients at positions where the channel is active count. ``(N, C)``.
    """
    guided = np.where((A > 0) & (G > 0), G, 0.0)
    return guided.mean(axis=spatial_axes(G))


class GuidedGradientsGradCAM(ChannelWeightCAM):
    """Grad-CAM on "guided gradients" ``(A > 0) (G > 0) G`` (tf-explain's Grad-CAM callback).

    Only positive gradients where the channel is active are averaged into the weights, so
    channels that suppress the class never get a negative weight.
    """

    name = "gradcam-guidedgrads"

    def channel_weights(self, activations: np.ndarray, gradients: np.ndarray | None,
                        ctx: LayerContext) -> np.ndarray:
        return guided_gradient_weights(activations, gradients)


# -- at the input: guided backpropagation -----------------------------------------------------
class GuidedBackprop(InputGradientMethod):
    """Guided backpropagation: the ReLU-guided input gradient of the target score.

    Sharp, high-resolution, but not class-discriminative on its own (Adebayo et al. 2018 show
    it barely depends on the upper layers' weights); combine it with Grad-CAM
    (:class:`GuidedGradCAM`) for class-specific detail.
    """

    name = "guidedbackprop"
    default_reduce = "max-abs"
    requires = (SCORE_INPUT_GRADIENTS, GUIDED_BACKPROP)

    def attribute(self, x: Any, x_np: np.ndarray, spec: TargetSpec
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        got = self.gradients(x, spec, guided=True)
        return got.gradients, got.scores, got.targets, {}


class GuidedGradCAM(GradCAM):
    """Guided Grad-CAM: guided backpropagation times the upsampled Grad-CAM map.

    ``raw["input"]`` is the input-shaped product ``GB * up(relu(cam))`` (native layout); the
    layer's raw Grad-CAM map and channel weights are in ``raw[layer]`` and ``weights[layer]``.
    The map reduces ``raw["input"]`` over channels (``reduce``), then ReLU and min-max.

    Parameters
    ----------
    layer
        The Grad-CAM layer(s), as for :class:`~interp_core.GradCAM`.
    interpolation : {"bilinear", "nearest"}
        How the one-layer Grad-CAM map is upsampled: bilinear as the paper, or nearest as
        Captum's ``GuidedGradCam`` (``interpolate_mode="nearest"``).
    reduce : {"max-abs", "sum-abs", "sum"}
        Channel reduction of the input-shaped product.
    batch_size : int
        Inputs per guided-backpropagation pass.
    """

    name = "guidedgradcam"
    requires: ClassVar[tuple[str, ...]] = (GRADIENTS, SCORE_INPUT_GRADIENTS, GUIDED_BACKPROP)
    needs: ClassVar[Needs] = "input gradients"
    instead: ClassVar[str] = "use GradCAM"

    def __init__(self, model: Any, layer: Any = None, *,
                 interpolation: Interpolation = "bilinear", reduce: Reduce = "max-abs",
                 batch_size: int = 32, **kwargs: Any) -> None:
        super().__init__(model, layer, **kwargs)
        if interpolation not in ("bilinear", "nearest"):
            raise ValueError(
                f"interpolation={interpolation!r} is not one of 'bilinear', 'nearest'")
        if not self.upsample:
            raise ValueError("GuidedGradCAM multiplies at the input's resolution; keep "
                             "upsample=True")
        self.interpolation: Interpolation = interpolation
        self.reduce: Reduce = check_reduce(reduce)  # type: ignore[assignment]
        self.batch_size = check_batch_size(batch_size)

    def compute(self, x: Any, targets: TargetSpec) -> Explanation:
        """Grad-CAM (the :class:`~interp_core.methods.base.CAMMethod` pipeline), then one guided
        backpropagation pass for the classes it explained; their product."""
        check_single_input(self, x)
        cam = super().compute(x, targets)
        size = cam.maps.shape[1:]
        if len(cam.layers) == 1:
            layer_map = cam.raw[cam.layers[0]]
            cam_up = upsample(relu(layer_map), size, self.interpolation)
        else:
            cam_up = cam.maps
        spec = fixed_targets(targets, cam.targets)
        guided = self.backend.score_input_gradients(  # type: ignore[attr-defined]
            self.model, x, spec, batch_size=self.batch_size, output=self.output, guided=True)
        x_np = np.asarray(self.backend.to_numpy(x))
        axis = channel_axis(x_np, self.backend, self.model)
        product = (np.asarray(guided.gradients, np.float32)
                   * expand_to_input(cam_up, axis)).astype(np.float32)
        maps = input_maps(product, axis, self.reduce, relu=self.relu, normalize=self.normalize)
        return Explanation(
            maps=maps, raw={**cam.raw, INPUT: product}, scores=cam.scores, targets=cam.targets,
            layers=cam.layers, method=self.name, backend=self.backend.name, weights=cam.weights,
        )
