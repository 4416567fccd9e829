"""The contract between the NumPy core and a framework adapter.

An adapter turns a framework model into NumPy arrays: activations and gradients of chosen layers
(:meth:`Backend.capture`), target scores without gradients (:meth:`Backend.predict`), and, where
it declares the capability, dense-layer weights, activation patching and input gradients. The
core never sees a framework tensor.

Canonical layout: every array in a :class:`Capture` is float32 NumPy, channels last,
``(N, *spatial, C)``. The adapter converts (torch ``(N, C, H, W)`` -> ``(N, H, W, C)``).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

from interp_core.backend.layout import LAYOUTS
from interp_core.backend.target_spec import TargetSpec

#: Capability names an adapter may declare in :attr:`Backend.capabilities`.
GRADIENTS = "gradients"  # capture(..., gradients=True)
INPUT_GRADIENTS = "input_gradients"  # input_gradients(...): feature visualisation
ACTIVATION_PATCH = "activation_patch"  # patched_scores(...): Ablation-CAM
LINEAR_WEIGHTS = "linear_weights"  # linear_weights(...): CAM from the dense layer
SCORE_INPUT_GRADIENTS = "score_input_gradients"  # score_input_gradients(...): Saliency, IG, ...
GUIDED_BACKPROP = "guided_backprop"  # score_input_gradients(..., guided=True)
BIAS_GRADIENTS = "bias_gradients"  # bias_gradients(...): FullGrad
ATTENTION = "attention"  # attention(...): attention rollout, gradient-weighted rollout, LeGrad
HVP = "hvp"  # capture_hvp(...): Hessian-vector products at layers (ShapleyCAM)

#: Every capability above. The first-party adapters declare all of them, so a capability added
#: here is claimed by each, and the conformance suite's tests for it run on each.
ALL_CAPABILITIES = frozenset({
    GRADIENTS, INPUT_GRADIENTS, ACTIVATION_PATCH, LINEAR_WEIGHTS, SCORE_INPUT_GRADIENTS,
    GUIDED_BACKPROP, BIAS_GRADIENTS, ATTENTION, HVP,
})


@dataclass(frozen=True)
class LayerCapture:
    """What one layer produced during a capture.

    Attributes
    ----------
    name : str
        The layer's name as the adapter spells it (``"layer4.1.conv2"``, ``"base/block5_conv3"``).
    activations : np.ndarray
        float32, ``(N, *spatial, C)`` (canonical) or the layer's native layout when the capture
        was asked for ``native_layout=True`` (token layers, reshaped by the core).
    gradients : np.ndarray or None
        d(sum of target scores)/d(activations), same shape and layout; None without gradients.
    hvp : np.ndarray or None
        The Hessian-vector product ``H A`` of the summed target scores at this layer, where
        ``H = d^2(sum of scores)/dA^2`` is the Hessian with respect to this layer's activations
        alone (the other layers held fixed), applied to the activations ``A`` themselves; same
        shape and layout as ``gradients``. Only :meth:`HvpBackend.capture_hvp` fills it; None
        otherwise.
    """

    name: str
    activations: np.ndarray
    gradients: np.ndarray | None = None
    hvp: np.ndarray | None = None


@dataclass(frozen=True)
class Capture:
    """Result of one forward (and backward) pass.

    Attributes
    ----------
    layers : dict[str, LayerCapture]
        Per requested layer, in the order requested.
    scores : np.ndarray
        float32 ``(N,)``, the target score of each sample.
    targets : np.ndarray
        int64 ``(N,)``, the class index each score is of (``-1`` where the target is not a
        class, e.g. :class:`~interp_core.targets.OutputTarget`).
    input_spatial : tuple[int, ...]
        Spatial shape of the input (``(H, W)`` for images), the size maps are resized to.
    """

    layers: dict[str, LayerCapture]
    scores: np.ndarray
    targets: np.ndarray
    input_spatial: tuple[int, ...]


@dataclass(frozen=True)
class LayerOutput:
    """What a dry run saw of one layer (an entry of :attr:`LayerProbe.outputs`).

    Attributes
    ----------
    name : str
        The layer's name as ``layer=`` takes it.
    shape : tuple of int
        Shape of its (first) output tensor as the adapter hands it to the core (canonical
        layout); ``()`` when the output holds no tensor.
    type_name : str
        The layer's class name (``"LayerNorm"``).
    calls : int
        How many times it ran in the pass.
    """

    name: str
    shape: tuple[int, ...]
    type_name: str = ""
    calls: int = 1

    @property
    def is_norm(self) -> bool:
        return "norm" in self.type_name.lower()


@dataclass(frozen=True)
class LayerProbe:
    """What :meth:`Backend.layer_outputs` reports: one dry run of the model over its layers.

    The core picks the default layer (``layer=None``) from it
    (:func:`interp_core.backend.layer_choice.default_layer`).

    Attributes
    ----------
    outputs : sequence of LayerOutput
        Every layer that ran, in the order their outputs were produced.
    input_spatial : tuple of int
        The input's spatial shape (``(H, W)`` for images).
    batch : int
        The batch size of the dry run (the first axis a layer output must keep).
    native_channels_first : bool
        Whether the adapter made the canonical arrays by moving native axis 1 to the end
        (torch, and channels-first Keras and Flax models); see
        :func:`interp_core.backend.grids.grid_layout`.
    sample : object, optional
        The first sample of the inputs, as :meth:`Backend.capture` takes it: the top-1
        gradient probe runs on it. None: the core takes ``inputs[:1]``
        (:func:`interp_core.backend.inputs.take`).
    only : str, optional
        For a model with exactly one explainable layer (JAX's ``ic.Split``): its name, taken
        without a choice; ``outputs`` may then be empty.
    """

    outputs: Sequence[LayerOutput]
    input_spatial: tuple[int, ...]
    batch: int
    native_channels_first: bool
    sample: Any = None
    only: str | None = None


@runtime_checkable
class Backend(Protocol):
    """What an adapter implements. See ``docs/adapters.md`` for a worked example.

    ``layers``/``layer`` arguments are names or layer objects; ``target`` is a resolved
    :class:`~interp_core.backend.target_spec.TargetSpec`, scored with
    :func:`interp_core.backend.scoring.target_scores`; ``output`` selects the tensor to explain
    from a tuple/dict/structured model output
    (:func:`interp_core.backend.target_spec.select_output`). Inputs are the model's native
    input (framework tensor or NumPy array in the model's layout).
    Methods whose capability is not in :attr:`capabilities` may be absent.
    """

    name: str
    capabilities: frozenset[str]

    def layer_names(self, model: Any) -> list[str]:
        """All addressable layer names of ``model``, in definition order."""
        ...

    def layer_outputs(self, model: Any, inputs: Any) -> LayerProbe:
        """One dry run of ``model`` on ``inputs``: what every layer emitted, in order.

        The core chooses the default layer (``layer=None``) from it and from one top-1
        gradient pass through :meth:`capture` (or :meth:`GradientProbeBackend.gradient_probe`
        where the adapter defines it): :func:`interp_core.backend.layer_choice.default_layer`.
        Shapes only matter: an adapter may run the pass abstractly (``jax.eval_shape``) or on
        the first sample alone. The model must be left as it was.
        """
        ...

    def capture(
        self,
        model: Any,
        inputs: Any,
        layers: Sequence[Any],
        target: TargetSpec,
        *,
        gradients: bool = True,
        output: Any = None,
        native_layout: bool = False,
    ) -> Capture:
        """Run the model; activations (and gradients of the summed scores) of ``layers``."""
        ...

    def predict(
        self, model: Any, inputs: Any, target: TargetSpec, *, batch_size: int = 32,
        output: Any = None,
    ) -> np.ndarray:
        """Target scores ``(N,)`` float32, forward only (no gradient tracking), batched."""
        ...

    def to_numpy(self, x: Any) -> np.ndarray:
        """A framework tensor (or array-like) as a NumPy array, layout unchanged."""
        ...

    def from_numpy(self, x: np.ndarray, model: Any) -> Any:
        """A NumPy array (native layout) as the model's input tensor (device, dtype)."""
        ...


class GradientProbeBackend(Protocol):
    """Optional, no capability name: an adapter may define ``gradient_probe`` to take the
    default layer's top-1 gradient pass its own way (TensorFlow: eagerly, so that choosing a
    layer traces no compiled function). Without it the core calls :meth:`Backend.capture`
    with a top-1 :class:`~interp_core.backend.target_spec.TargetSpec`; third-party adapters need
    not implement it."""

    def gradient_probe(self, model: Any, inputs: Any,
                       names: Sequence[str]) -> dict[str, np.ndarray]:
        """Gradients of the summed top-1 scores of ``model(inputs)`` at the layers ``names``:
        ``{name: array}`` in the canonical layout (as :attr:`LayerCapture.gradients`).

        ``inputs`` is :attr:`LayerProbe.sample` (or the first sample of the inputs). Raise
        ``ValueError`` (or ``TypeError``, ``RuntimeError``, ``KeyError``) when the model's
        output has no top-1 class: the core then chooses without the probe.
        """
        ...


class HvpBackend(Protocol):
    """Capability ``"hvp"`` (ShapleyCAM). Optional; third-party adapters need not implement it.

    Where ``G = d(S)/dA`` is the gradient of the summed target scores ``S`` at a layer's
    activations ``A``, the Hessian-vector product is ``H A = d(G . stop_gradient(A))/dA``: one
    forward pass, a backward pass that is itself recorded, and a second backward pass through
    it (torch ``autograd.grad(..., create_graph=True)`` then ``autograd.grad`` of that,
    TensorFlow second-order symbolic ``tf.gradients``, JAX ``linearize`` of ``grad``). For
    networks that are piecewise linear above the layer (ReLU, max-pooling, eval-mode batch
    norm) and a target linear in the output (a logit), ``H A`` is
    zero; it is not with smooth activations (SiLU, GELU) or a softmax target.
    """

    def capture_hvp(
        self, model: Any, inputs: Any, layers: Sequence[Any], target: TargetSpec, *,
        output: Any = None, native_layout: bool = False,
    ) -> Capture:
        """:meth:`Backend.capture` with gradients, each layer's ``hvp`` also set.

        Parameters
        ----------
        model, inputs, layers, target, output, native_layout
            As for :meth:`Backend.capture` (which this equals, ``gradients=True``, in
            ``activations``, ``gradients``, ``scores`` and ``targets``).

        Returns
        -------
        Capture
            Every :class:`LayerCapture` carries ``hvp``, float32 in the layout of its
            ``gradients``: ``H_l A_l`` of layer ``l`` alone, never ``sum_m H_lm A_m`` across
            the requested layers. Samples are independent (the model runs in inference
            mode), so sample ``n``'s product is that of its own score. Zeros where the
            gradient does not depend on the activations (a piecewise-linear network).
        """
        ...


class LinearWeightsBackend(Protocol):
    """Capability ``"linear_weights"`` (CAM)."""

    def linear_weights(self, model: Any, fc: Any = None) -> np.ndarray:
        """The dense layer's weight matrix as float32 ``(outputs, inputs)``.

        ``fc``: a layer name or object; None means the model's last dense layer.
        """
        ...


class ActivationPatchBackend(Protocol):
    """Capability ``"activation_patch"`` (Ablation-CAM)."""

    def patched_scores(
        self, model: Any, inputs: Any, layer: Any, channel_masks: np.ndarray,
        target: TargetSpec, *, batch_size: int = 32, output: Any = None,
        channel_axis: int | None = None,
    ) -> np.ndarray:
        """Target scores with ``layer``'s output multiplied channel-wise by each mask.

        Parameters
        ----------
        channel_masks : np.ndarray
            float32 ``(M, C)``; ``C`` is the layer's channel count, 1 keeps a channel and 0
            ablates it.
        channel_axis : int, optional
            The axis of the layer's native output that holds the channels, passed only where
            it is not the framework's usual one (a token layer ``(N, T, C)`` or a
            channels-last grid in a channels-first framework). An adapter that cannot patch
            another axis raises ``NotImplementedError``.

        Returns
        -------
        np.ndarray
            float32 ``(M, N)``: row ``m`` holds every sample's score under mask ``m``.
            Forward only, batched so that at most ``batch_size`` samples run at once.
        """
        ...


class InputGradientBackend(Protocol):
    """Capability ``"input_gradients"`` (feature visualisation)."""

    def input_gradients(
        self, model: Any, inputs: Any, layer: Any, channels: np.ndarray, *, output: Any = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Gradient of a per-sample objective with respect to the input.

        The objective of sample ``n`` is the spatial mean of channel ``channels[n]`` of
        ``layer``'s output; with ``layer=None`` it is the model output ``[:, channels[n]]``.

        Returns
        -------
        values : np.ndarray
            float32 ``(N,)``, the objectives.
        gradients : np.ndarray
            float32, the input's shape and native layout: d(sum of objectives)/d(input).
        """
        ...


@dataclass(frozen=True)
class InputGradients:
    """Gradients of the target scores with respect to the input.

    Attributes
    ----------
    scores : np.ndarray
        float32 ``(N,)``, the target score of each sample.
    targets : np.ndarray
        int64 ``(N,)``, the class each score is of (``-1`` for non-class targets).
    gradients : np.ndarray
        float32, the input's shape and native layout: d(sum of scores)/d(input); with
        ``guided=True``, the guided-backpropagation signal instead (every ReLU's backward
        passes only positive gradients where its input was positive).
    """

    scores: np.ndarray
    targets: np.ndarray
    gradients: np.ndarray


@dataclass(frozen=True)
class BiasGradients:
    """What FullGrad needs from one forward and backward pass.

    Attributes
    ----------
    scores, targets : np.ndarray
        As in :class:`InputGradients`.
    input_gradients : np.ndarray
        float32, the input's shape and native layout: d(sum of scores)/d(input).
    biases : dict[str, np.ndarray]
        Per layer that adds a per-channel bias to a spatial output (convolutions with a bias,
        batch normalisation in inference mode), its effective bias, float32 ``(C,)``: for batch
        norm ``beta - mean * gamma / sqrt(var + eps)``.
    gradients : dict[str, np.ndarray]
        Per such layer, d(sum of scores)/d(the layer's output *before* any activation the layer
        applies itself), float32 channels-last ``(N, *spatial, C)``.
    """

    scores: np.ndarray
    targets: np.ndarray
    input_gradients: np.ndarray
    biases: dict[str, np.ndarray]
    gradients: dict[str, np.ndarray]


class ScoreInputGradientBackend(Protocol):
    """Capability ``"score_input_gradients"`` (Saliency, SmoothGrad, Integrated Gradients,
    Input x Gradient) and, with ``"guided_backprop"`` also declared, guided backpropagation."""

    def score_input_gradients(
        self, model: Any, inputs: Any, target: TargetSpec, *, batch_size: int = 32,
        output: Any = None, guided: bool = False,
    ) -> InputGradients:
        """d(sum of target scores)/d(input), batched so that at most ``batch_size`` samples
        run at once.

        ``guided=True`` (only where ``"guided_backprop"`` is declared) replaces the backward
        pass of every ReLU of the forward pass by the guided rule of Springenberg et al.
        (2015): ``grad_in = grad_out * (x > 0) * (grad_out > 0)``; the forward pass and the
        user's model are unchanged.
        """
        ...


class BiasGradientBackend(Protocol):
    """Capability ``"bias_gradients"`` (FullGrad). Optional; third-party adapters need not
    implement it."""

    def bias_gradients(
        self, model: Any, inputs: Any, target: TargetSpec, *, output: Any = None,
    ) -> BiasGradients:
        """Input gradients and, for every layer with a per-channel bias on a spatial output,
        the bias and the gradient of the summed scores at that layer's pre-activation output,
        from one forward and backward pass."""
        ...


class ScoringSessionBackend(Protocol):
    """Optional, no capability name: an adapter may define ``scoring_session`` to prepare a
    faster equivalent of a model for many forward-only scorings (Score-CAM's masked inputs).
    Methods call it where it exists and simply use :meth:`Backend.predict` where it does not;
    third-party adapters need not implement it."""

    def scoring_session(self, model: Any) -> AbstractContextManager[None]:
        """A block inside which :meth:`Backend.predict` on ``model`` may run a stand-in that
        computes the same function to float32 rounding (torch: BatchNorms folded into the
        convolutions before them). The model itself must not change, and anything the block
        built is dropped when it ends."""
        ...


def scoring_session(backend: Any, model: Any) -> AbstractContextManager[None]:
    """``backend.scoring_session(model)`` where the adapter defines it, else an empty block."""
    session = getattr(backend, "scoring_session", None)
    return session(model) if callable(session) else nullcontext()


@dataclass(frozen=True)
class InputSpec:
    """What a model declares it takes, as far as its first layer or declared input tells.

    Attributes
    ----------
    channels : int or None
        The input's channel count (1 for a grayscale model, 3 for RGB); None when the model
        declares the rank but not the channels.
    spatial_dims : int or None
        How many spatial axes the input has: 1 (signals), 2 (images), 3 (volumes).
    layout : str
        ``"channels_first"`` or ``"channels_last"``: where the backend expects the channel axis
        (:mod:`interp_core.backend.layout`).
    """

    channels: int | None
    spatial_dims: int | None
    layout: str

    def __post_init__(self) -> None:
        for what, value in (("channels", self.channels), ("spatial_dims", self.spatial_dims)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or value < 1):
                raise ValueError(f"InputSpec {what}={value!r} must be a positive int or None")
        if self.layout not in LAYOUTS:
            raise ValueError(f"InputSpec layout={self.layout!r} must be one of {LAYOUTS}")


class InputSpecBackend(Protocol):
    """Optional, no capability name: an adapter may define ``input_spec`` to say what a model
    takes, so that applications can prepare inputs to fit (the ``interp`` command converts
    images to the model's channel count). Third-party adapters need not implement it;
    :func:`input_spec` gives None where it is absent."""

    def input_spec(self, model: Any) -> InputSpec | None:
        """What the model declares it takes: the channel count and number of spatial axes of
        its first convolution or declared input shape; None when it cannot tell (a model
        whose first layer is dense or an embedding, or that declares nothing)."""
        ...


def input_spec(backend: Any, model: Any) -> InputSpec | None:
    """``backend.input_spec(model)`` where the adapter defines it, else None."""
    method = getattr(backend, "input_spec", None)
    return method(model) if callable(method) else None


#: What :meth:`AttentionBackend.attention` differentiates (see there).
AttentionGradients = Literal["none", "output", "per_block"]


@dataclass(frozen=True)
class AttentionCapture:
    """The attention probabilities of every global self-attention layer of a transformer.

    Attributes
    ----------
    blocks : list[str]
        The attention layers' names as the adapter spells them, in the order they run.
    attentions : list[np.ndarray]
        Per layer, float32 ``(N, heads, T, T)``: the softmax probabilities (each row, a query
        token, sums to 1 over the key tokens), after any mask, before dropout.
    gradients : list[np.ndarray] or None
        Per layer, float32 ``(N, heads, T, T)``, the gradient of a target score with respect
        to that layer's probabilities (which score: :meth:`AttentionBackend.attention`); None
        when none were asked for.
    scores : np.ndarray
        float32 ``(N,)``, the target score of each sample (of the model's output).
    targets : np.ndarray
        int64 ``(N,)``, the class each score is of (``-1`` for non-class targets).
    """

    blocks: list[str]
    attentions: list[np.ndarray]
    gradients: list[np.ndarray] | None
    scores: np.ndarray
    targets: np.ndarray


class AttentionBackend(Protocol):
    """Capability ``"attention"`` (attention rollout, gradient-weighted rollout, LeGrad).
    Optional; third-party adapters need not implement it."""

    def attention(
        self, model: Any, inputs: Any, target: TargetSpec, *,
        gradients: AttentionGradients = "none", output: Any = None, batch_size: int = 32,
    ) -> AttentionCapture:
        """The attention probabilities of every global self-attention layer, in run order.

        Parameters
        ----------
        gradients : {"none", "output", "per_block"}
            ``"none"``: probabilities only (forward passes, no gradient tracking).
            ``"output"``: also d(sum of target scores)/d(probabilities of each layer).
            ``"per_block"``: for each layer ``l``, d(sum of target scores of the model's
            output *as read from block l*)/d(probabilities of layer ``l``), where the block
            of a layer is the residual unit that holds it, and *read from block l* means the
            part of the model after its last block (final norm, pooling, head) applied to
            block ``l``'s output tokens instead of the last block's (LeGrad). One way, in one
            backward pass: stop the gradient at every block's input, run the part after the
            last block on the outputs of all blocks stacked along the batch, and
            differentiate the sum of their target scores.

        Raises
        ------
        NotImplementedError
            The model has no global self-attention layer the adapter can read (windowed
            attention such as Swin's): :func:`interp_core.backend.attention.no_attention_error`.

        The model must come back as it was (flags, fused-attention switches, hooks), also
        after an error.
        """
        ...
