"""The pipeline of the CAM family: capture, per-layer map, post-processing.

:class:`CAMMethod` is the :class:`~interp_core.methods.method.Method` whose evidence is one or
more layers. A subclass declares what it needs (``requires``, ``needs``) and how one layer's
activations (and gradients) become a raw map (:meth:`CAMMethod.layer_map`, or
:meth:`ChannelWeightCAM.channel_weights`); :class:`CAMMethod` does the rest the same way for
all of them:

    map = minmax(fuse_over_layers(resize(minmax(relu(raw_layer_map)))))

Each layer's map is min-max scaled at its own resolution, then resized (the order of
pytorch-grad-cam, so multi-layer maps agree with it); for one layer this equals
``minmax(resize(relu(raw)))``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, cast

import numpy as np

from interp_core.backend.grids import as_grid
from interp_core.backend.layer_choice import default_layer
from interp_core.backend.layout import CHANNELS_FIRST, declared_layout
from interp_core.backend.protocol import GRADIENTS, HVP, Backend, Capture, HvpBackend
from interp_core.backend.target_spec import TargetSpec
from interp_core.methods.catalog import Needs
from interp_core.methods.method import Explanation, Fuse, Method
from interp_core.methods.postprocess import finish_maps
from interp_core.methods.smoothing import principal_projection

__all__ = ["CAMMethod", "ChannelWeightCAM", "Explanation", "Fuse", "LayerContext",
           "spatial_axes", "weighted_sum"]


@dataclass
class LayerContext:
    """What a method's :meth:`CAMMethod.layer_map` may use beyond the layer's arrays."""

    backend: Backend
    model: Any
    inputs: Any
    target: TargetSpec
    capture: Capture
    layer: Any
    layer_name: str
    #: The axis of the layer's native output that holds its channels where it is not the
    #: framework's usual one (a token layer ``(N, T, C)`` or a channels-last grid in torch);
    #: None otherwise. Methods that patch the layer's output pass it on to the backend.
    native_channel_axis: int | None = None
    #: The layer's Hessian-vector product ``H A`` (:attr:`LayerCapture.hvp
    #: <interp_core.backend.protocol.LayerCapture.hvp>`) in the layout of the activations
    #: ``(N, *spatial, C)``, for methods whose ``requires`` has ``"hvp"``; None otherwise.
    hvp: np.ndarray | None = None


class CAMMethod(Method):
    """Base class of the CAM family: maps from the activations (and gradients) of layers.

    Subclasses set ``name`` and their declarations (``requires``: ``("gradients",)`` by default,
    ``()`` for a method that reads activations only; ``needs``), and implement
    :meth:`layer_map` (or, for a map ``sum_c w_c A_c``, subclass :class:`ChannelWeightCAM`).
    :meth:`compute` captures the layers (with gradients where ``requires`` has
    ``"gradients"``; through the backend's ``capture_hvp``, with each layer's Hessian-vector
    product in :attr:`LayerContext.hvp`, where it has ``"hvp"``), calls the hook per layer,
    and post-processes (:meth:`postprocess`).

    Parameters
    ----------
    model, layer, **options
        As for every method (:class:`~interp_core.methods.method.Method`): ``backend``,
        ``reshape``, ``output``, ``relu``, ``normalize``, ``upsample``, ``fuse``,
        ``aug_smooth``, ``eigen_smooth``.
    """

    requires: ClassVar[tuple[str, ...]] = (GRADIENTS,)
    needs: ClassVar[Needs] = "gradients"
    takes_layer: ClassVar[bool] = True
    #: The layer ``layer=None`` resolved to, found by one dry run on the first batch.
    _default_layer: str | None = None

    # -- the pipeline -------------------------------------------------------------------
    def compute(self, x: Any, targets: TargetSpec) -> Explanation:
        """Capture the layers, one raw map per layer (:meth:`layer_map`), post-process.

        ``raw`` holds each layer's map before ReLU, resizing and normalisation; ``weights``
        each layer's channel weights where the method has them.
        """
        layers = self._layers(x)
        native_layout = self.reshape is not None
        if HVP in self.requires:  # the optional capability: gradients and H A in one pass
            capture = cast(HvpBackend, self.backend).capture_hvp(
                self.model, x, layers, targets, output=self.output, native_layout=native_layout)
        else:
            capture = self.backend.capture(
                self.model, x, layers, targets, gradients=GRADIENTS in self.requires,
                output=self.output, native_layout=native_layout)
        raw: dict[str, np.ndarray] = {}
        weights: dict[str, np.ndarray] = {}
        for layer, (name, layer_capture) in zip(layers, capture.layers.items(), strict=True):
            acts, grads, hvp, channel_axis = self._canonical(
                name, layer_capture.activations, layer_capture.gradients, capture.input_spatial,
                layer_capture.hvp)
            ctx = LayerContext(self.backend, self.model, x, targets, capture, layer, name,
                               channel_axis, hvp)
            raw[name], layer_weights = self._checked_map(name, acts, grads, ctx)
            if layer_weights is not None:
                weights[name] = layer_weights
        maps = self.postprocess(list(raw.values()), capture.input_spatial)
        return Explanation(
            maps=maps, raw=raw, scores=capture.scores, targets=capture.targets,
            layers=list(raw), method=self.name, backend=self.backend.name, weights=weights,
        )

    def postprocess(self, raw_maps: Sequence[np.ndarray], size: Sequence[int]) -> np.ndarray:
        """Each layer's map ``(N, *layer_spatial)`` made the method's maps ``(N, *size)``:
        :func:`~interp_core.methods.postprocess.finish_maps` with the method's options."""
        return finish_maps(raw_maps, size, relu=self.relu, normalize=self.normalize,
                           upsample=self.upsample, fuse=self.fuse)

    # -- what subclasses implement ------------------------------------------------------
    def layer_map(
        self, activations: np.ndarray, gradients: np.ndarray | None, ctx: LayerContext
    ) -> np.ndarray:
        """Raw map ``(N, *spatial)`` of one layer from ``(N, *spatial, C)`` arrays."""
        raise NotImplementedError

    def layer_evidence(
        self, activations: np.ndarray, gradients: np.ndarray | None, ctx: LayerContext
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """The raw map ``(N, *spatial)`` and, for channel-weight methods, the weights ``(N, C)``.

        The default is :meth:`layer_map` with no weights (with ``eigen_smooth``, the principal
        projection of :meth:`layer_terms`); :class:`ChannelWeightCAM` overrides it.
        """
        if self.eigen_smooth:
            return principal_projection(self.layer_terms(activations, gradients, ctx)), None
        return self.layer_map(activations, gradients, ctx), None

    def layer_terms(
        self, activations: np.ndarray, gradients: np.ndarray | None, ctx: LayerContext
    ) -> np.ndarray:
        """Per-channel terms ``(N, *spatial, C)`` whose sum over channels is the raw map, for
        methods that have them (what ``eigen_smooth`` projects)."""
        raise NotImplementedError

    @classmethod
    def has_layer_terms(cls) -> bool:
        """Whether the method's map is a sum of per-channel terms (``eigen_smooth`` applies)."""
        return cls.layer_terms is not CAMMethod.layer_terms

    # -- helpers ------------------------------------------------------------------------
    def _layers(self, x: Any) -> list[Any]:
        arg = self.layers_arg
        if arg is None:
            if self._default_layer is None:
                self._default_layer = default_layer(self.backend, self.model, x)
            return [self._default_layer]
        if isinstance(arg, list | tuple):
            if not arg:
                raise ValueError("layer=[] names no layer; pass a name, a list of names or None")
            return list(arg)
        return [arg]

    def _canonical(
        self, name: str, acts: np.ndarray, grads: np.ndarray | None,
        input_spatial: Sequence[int] | None = None, hvp: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None, int | None]:
        """The layer's arrays (activations, gradients, Hessian-vector product) as
        ``(N, *spatial, C)``, all read alike, and the native channel axis where it is not the
        framework's usual one (see :class:`LayerContext`)."""
        channel_axis = None
        native_first = declared_layout(self.backend, self.model) == CHANNELS_FIRST
        if self.reshape is not None:
            if native_first and acts.ndim == 3:  # tokens (N, T, C), as tokens_to_grid reads them
                channel_axis = 2
            reshape = self.reshape
            acts = np.asarray(reshape(acts), dtype=np.float32)
            grads, hvp = (None if a is None else np.asarray(reshape(a), dtype=np.float32)
                          for a in (grads, hvp))
        elif input_spatial is not None:
            # Token layers (N, T, C) and channels-last grids become (N, *grid, C) on their own.
            ndim = acts.ndim
            acts, grads, layout = as_grid(acts, grads, input_spatial,
                                          native_channels_first=native_first)
            if layout is not None and not layout.is_identity:
                hvp = None if hvp is None else layout.apply(hvp)
                axis = layout.native_channel_axis(ndim, native_first)
                usual = 1 if native_first else ndim - 1
                channel_axis = None if axis == usual else axis
        if acts.ndim < 3:
            raise ValueError(
                f"layer {name!r} has output shape {acts.shape} with no spatial axes; "
                f"{type(self).__name__} needs a layer with a spatial output (N, *spatial, C), "
                "e.g. a convolution block, or reshape=tokens_to_grid(...) for token layers"
            )
        return acts, grads, hvp, channel_axis

    def _checked_map(
        self, name: str, acts: np.ndarray, grads: np.ndarray | None, ctx: LayerContext
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """The layer's raw map (and weights) with non-finite samples zeroed, and a warning."""
        bad = ~np.isfinite(acts).reshape(len(acts), -1).all(axis=1)
        if grads is not None:
            bad |= ~np.isfinite(grads).reshape(len(grads), -1).all(axis=1)
        if bad.any():
            warnings.warn(
                f"layer {name!r}: non-finite activations or gradients for samples "
                f"{np.flatnonzero(bad).tolist()}; their maps are set to zeros",
                RuntimeWarning, stacklevel=3,
            )
            acts = np.where(bad.reshape((-1,) + (1,) * (acts.ndim - 1)), 0.0, acts)
            if grads is not None:
                grads = np.where(bad.reshape((-1,) + (1,) * (grads.ndim - 1)), 0.0, grads)
        with np.errstate(all="ignore"):
            raw, weights = self.layer_evidence(acts, grads, ctx)
        raw = np.asarray(raw, dtype=np.float32)
        raw[bad] = 0.0
        raw = np.nan_to_num(raw, nan=0.0, posinf=0.0, neginf=0.0)
        if weights is not None:
            weights = np.array(weights, dtype=np.float32)
            weights[bad] = 0.0
            weights = np.nan_to_num(weights, nan=0.0, posinf=0.0, neginf=0.0)
        return raw, weights


class ChannelWeightCAM(CAMMethod):
    """Methods whose map is ``sum_c w[n, c] A[n, ..., c]``: CAM, Grad-CAM, Grad-CAM++,
    XGrad-CAM, Score-CAM, Ablation-CAM.

    Subclasses implement :meth:`channel_weights`; the base does the weighted sum and fills
    :attr:`Explanation.weights` with each layer's ``(N, C)`` weights.
    """

    def channel_weights(
        self, activations: np.ndarray, gradients: np.ndarray | None, ctx: LayerContext
    ) -> np.ndarray:
        """Per-sample channel weights ``(N, C)`` from ``(N, *spatial, C)`` arrays."""
        raise NotImplementedError

    def layer_map(self, activations: np.ndarray, gradients: np.ndarray | None,
                  ctx: LayerContext) -> np.ndarray:
        return self.layer_evidence(activations, gradients, ctx)[0]

    def layer_evidence(
        self, activations: np.ndarray, gradients: np.ndarray | None, ctx: LayerContext
    ) -> tuple[np.ndarray, np.ndarray]:
        weights = np.asarray(self.channel_weights(activations, gradients, ctx), dtype=np.float32)
        if self.eigen_smooth:
            return principal_projection(activations * weights.reshape(
                (len(weights),) + (1,) * (activations.ndim - 2) + (-1,))), weights
        return weighted_sum(weights, activations), weights

    @classmethod
    def has_layer_terms(cls) -> bool:
        return True  # w_c * A_c


def spatial_axes(a: np.ndarray) -> tuple[int, ...]:
    """The spatial axes of a canonical ``(N, *spatial, C)`` array."""
    return tuple(range(1, a.ndim - 1))


def weighted_sum(weights: np.ndarray, activations: np.ndarray) -> np.ndarray:
    """``sum_c w[n, c] * A[n, ..., c]``: ``(N, C)`` x ``(N, *S, C)`` -> ``(N, *S)`` float32.

    Summed in float64: the terms can cancel (large weights of both signs), and float32 sums
    taken in different orders at different positions (BLAS kernels treat the last rows apart)
    would then differ by more than rounding, so a layer that is constant over space would not
    give a constant map.
    """
    total = np.einsum("n...c,nc->n...", activations.astype(np.float64, copy=False),
                      weights.astype(np.float64, copy=False), optimize=True)
    return total.astype(np.float32)
