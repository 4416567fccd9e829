"""What every method is: :class:`Method`, the base of the CAM family and of the input attributions,
and the :class:`Explanation` it returns.

:class:`Method` owns what all methods share: the model, the backend (found from the model's
type, or named), the options every method takes, the check that the backend declares what the
method needs, the batch check, the resolution of ``targets`` and test-time augmentation
(``aug_smooth``). A family base implements one public hook, :meth:`Method.compute`, for a batch
whose targets are resolved:

- :class:`~interp_core.methods.base.CAMMethod`: maps from the activations (and gradients) of
  one or more layers; its own hooks are ``layer_map`` and
  :meth:`~interp_core.methods.base.ChannelWeightCAM.channel_weights`;
- :class:`~interp_core.methods.input_gradients.InputGradientMethod`: attributions to the input
  from the backend's input gradients; its hook is ``attribute``.

Each class *declares* what it needs, in class attributes that the registry reads
(:func:`~interp_core.methods.required_capabilities`, :func:`~interp_core.methods.method_table`)
instead of keeping a table of exceptions:

- ``requires``: the backend capabilities it calls (names from
  :mod:`interp_core.backend.protocol`, e.g. ``"gradients"``, ``"linear_weights"``,
  ``"activation_patch"``, ``"score_input_gradients"``);
- ``needs``: what that costs, by kind (one of :data:`~interp_core.methods.catalog.NEEDS`);
- ``takes_layer``: whether ``layer`` chooses what is explained (False: the method attributes to
  the input and ignores it);
- ``instead``: what to use where the backend lacks a capability;
- ``target_free``: the method explains no target (Eigen-CAM, KPCA-CAM, FEM): it never resolves
  ``targets``, so it runs on any output (a detector's raw head included).

``needs_gradients`` (whether the method uses gradients of the target score, at a layer or at
the input) follows from ``requires``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np

from interp_core.backend.inputs import check_batch
from interp_core.backend.protocol import (
    ACTIVATION_PATCH,
    ATTENTION,
    BIAS_GRADIENTS,
    GRADIENTS,
    GUIDED_BACKPROP,
    INPUT_GRADIENTS,
    LINEAR_WEIGHTS,
    SCORE_INPUT_GRADIENTS,
    Backend,
)
from interp_core.backend.registry import get_backend
from interp_core.backend.target_spec import TargetSpec, no_target, resolve_targets
from interp_core.methods.catalog import Needs
from interp_core.methods.smoothing import augmented_explanation

#: How the maps of several layers combine.
Fuse = Literal["mean", "max", "sum"]

#: The capabilities that give gradients of the target score (at a layer or at the input).
GRADIENT_CAPABILITIES = frozenset({GRADIENTS, SCORE_INPUT_GRADIENTS, GUIDED_BACKPROP,
                                   BIAS_GRADIENTS, INPUT_GRADIENTS})

#: What each capability gives a method, for the error that names a missing one.
CAPABILITY_USES: dict[str, str] = {
    GRADIENTS: "gradients of the target score at a layer",
    LINEAR_WEIGHTS: "linear_weights: the weights of the dense layer after pooling",
    ACTIVATION_PATCH: "patched_scores: run the model with a layer's output replaced",
    SCORE_INPUT_GRADIENTS: "gradients of the target score with respect to the input",
    GUIDED_BACKPROP: "guided gradients of the target score at the input",
    BIAS_GRADIENTS: "gradients at every biased layer",
    INPUT_GRADIENTS: "gradients of an objective with respect to the input",
    ATTENTION: "attention: the probabilities of every self-attention layer (and their gradients)",
}


@dataclass(frozen=True)
class Explanation:
    """Everything one explanation produced.

    Attributes
    ----------
    maps : np.ndarray
        float32 ``(N, *input_spatial)`` in [0, 1] (with the default options), as ``__call__``.
    raw : dict[str, np.ndarray]
        Per layer, the map before ReLU, resizing and normalisation, ``(N, *layer_spatial)``.
    scores : np.ndarray
        float32 ``(N,)`` target scores; empty, ``(0,)``, for target-free methods
        (``target_free``: Eigen-CAM, KPCA-CAM, FEM), which score no target.
    targets : np.ndarray
        int64 ``(N,)`` class explained per sample (``-1`` for non-class targets, and for every
        sample of a target-free method).
    layers : list[str]
        The layers the maps come from.
    method : str
        Method name (``"gradcam"``).
    backend : str
        Adapter name (``"torch"``).
    weights : dict[str, np.ndarray]
        Per layer, the channel weights ``(N, C)`` float32 of channel-weight methods (CAM,
        Grad-CAM, Grad-CAM++, XGrad-CAM, Score-CAM, Ablation-CAM); empty for the others.
    """

    maps: np.ndarray
    raw: dict[str, np.ndarray]
    scores: np.ndarray
    targets: np.ndarray
    layers: list[str]
    method: str
    backend: str
    weights: dict[str, np.ndarray] = field(default_factory=dict)


class Method:
    """Base class of every method. Subclasses declare ``name``, ``requires``, ``needs``,
    ``takes_layer`` (and ``instead``), and implement :meth:`compute`.

    Every method takes the same arguments, so that ``ic.explain``, the CLI and the audit can
    pass them to any of them. ``reshape``, ``fuse`` and ``eigen_smooth`` shape the layer
    pipeline (:class:`~interp_core.methods.base.CAMMethod`); methods that attribute to the
    input ignore ``layer``, ``reshape`` and ``fuse``, and refuse ``eigen_smooth=True``.

    Parameters
    ----------
    model : framework model
        torch ``nn.Module``, Keras 3 model, Flax NNX module or :class:`~interp_core.Split`.
    layer : str, layer object, list of them, or None
        Target layer(s); None picks the last layer with a spatial output (one dry run).
        Ignored by methods that attribute to the input (``takes_layer = False``).
    backend : str, optional
        Force an adapter (``"torch"``); default: detected from the model's type.
    reshape : callable, optional
        Turns a layer's native activations into ``(N, *spatial, C)`` (token layers), e.g.
        :func:`~interp_core.tokens_to_grid`.
    output : None, str, int or callable
        Which model output to explain (see :func:`~interp_core.backend.target_spec.select_output`).
    relu, normalize, upsample : bool
        Switch off the ReLU, min-max normalisation, or resizing to the input's size.
    fuse : {"mean", "max", "sum"}
        How maps of several layers combine (after each is min-max scaled and resized).
    aug_smooth : bool
        Test-time augmentation as pytorch-grad-cam's: the mean of the maps of the input
        flipped (off/on) and scaled by 0.9, 1 and 1.1, each map flipped back (six runs;
        :func:`~interp_core.methods.smoothing.augmented_explanation`).
    eigen_smooth : bool
        Each layer's map is the first principal component of its per-channel terms instead of
        their sum (pytorch-grad-cam's ``eigen_smooth``;
        :func:`~interp_core.methods.smoothing.principal_projection`). Methods without
        per-channel terms (:meth:`has_layer_terms`) refuse it.

    Raises
    ------
    NotImplementedError
        The backend does not declare a capability in ``requires`` (``"gradients"`` aside:
        every backend captures gradients where it can).
    TypeError
        An unknown option, or ``eigen_smooth=True`` for a method without per-channel terms.
    """

    #: The method's name (``ic.explain(..., method=name)``, ``ic.methods()``).
    name: ClassVar[str] = ""
    #: The backend capabilities the method calls (:mod:`interp_core.backend.protocol` names).
    requires: ClassVar[tuple[str, ...]] = ()
    #: What the method asks of the backend, by cost (the "needs" column of the method table).
    needs: ClassVar[Needs] = "activations"
    #: Whether ``layer`` chooses what is explained; False: attributions to the input.
    takes_layer: ClassVar[bool] = True
    #: What to use where the backend lacks a capability in ``requires``.
    instead: ClassVar[str] = "use GradCAM"
    #: Whether the method uses gradients of the target score: derived from ``requires``.
    needs_gradients: ClassVar[bool] = False
    #: Whether the method explains no target (its map depends on the input alone): ``targets``
    #: is ignored and never resolved, no output shape is checked, ``Explanation.scores`` is
    #: empty. Only methods that use no gradient may set it.
    target_free: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own = vars(cls)
        if "needs_gradients" in own and "requires" not in own:
            # A subclass written before ``requires`` existed says only whether it needs
            # gradients at its layer: that decides whether "gradients" is required.
            rest = tuple(c for c in cls.requires if c != GRADIENTS)
            cls.requires = (GRADIENTS, *rest) if own["needs_gradients"] else rest
        cls.needs_gradients = bool(GRADIENT_CAPABILITIES.intersection(cls.requires))
        if cls.target_free and cls.needs_gradients:
            raise TypeError(f"{cls.__name__} sets target_free but requires gradients of a "
                            f"target score ({cls.requires})")

    def __init__(
        self,
        model: Any,
        layer: Any = None,
        *,
        backend: str | None = None,
        reshape: Any = None,
        output: Any = None,
        relu: bool = True,
        normalize: bool = True,
        upsample: bool = True,
        fuse: Fuse = "mean",
        aug_smooth: bool = False,
        eigen_smooth: bool = False,
        **options: Any,
    ) -> None:
        if options:
            raise TypeError(
                f"{type(self).__name__} got unknown options {sorted(options)}; it takes "
                "backend, reshape, output, relu, normalize, upsample, fuse, aug_smooth, "
                "eigen_smooth"
            )
        if eigen_smooth and not self.has_layer_terms():
            raise TypeError(
                f"{type(self).__name__} has no per-channel terms to project, so eigen_smooth="
                "True does not apply; use it with a method whose map is a sum over channels "
                "(Grad-CAM, Grad-CAM++, XGrad-CAM, HiResCAM, LayerCAM, Score-CAM, ...)"
            )
        self.model = model
        self.layers_arg = layer
        self.backend: Backend = get_backend(backend if backend is not None else model)
        self.reshape = reshape
        self.output = output
        self.relu = relu
        self.normalize = normalize
        self.upsample = upsample
        self.fuse = fuse
        self.aug_smooth = bool(aug_smooth)
        self.eigen_smooth = bool(eigen_smooth)
        check_capabilities(self)

    # -- the pipeline -------------------------------------------------------------------
    def __call__(self, x: Any, targets: Any = None) -> np.ndarray:
        """Maps ``(N, *input_spatial)``, float32, in [0, 1] with the default options."""
        return self.explain(x, targets).maps

    def explain(self, x: Any, targets: Any = None) -> Explanation:
        """Run the method on a batch ``x`` and return an :class:`Explanation`.

        Parameters
        ----------
        x : native input
            A batch in the model's own layout (framework tensor or NumPy array).
        targets : None, int, sequence of int or target objects
            What to explain (None: each sample's top-1 prediction); see
            :func:`~interp_core.backend.target_spec.resolve_targets`. Ignored by target-free
            methods (``target_free``), which explain no target.
        """
        if self.aug_smooth:
            check_batch(x)
            return augmented_explanation(self._explain_once, x, targets, self.backend,
                                         self.model, self.upsample)
        return self._explain_once(x, targets)

    def _explain_once(self, x: Any, targets: Any = None) -> Explanation:
        """:meth:`explain` without test-time augmentation."""
        n = check_batch(x)
        if self.target_free:
            explanation = self.compute(x, no_target(n))
            return dataclasses.replace(explanation, scores=np.zeros(0, np.float32),
                                       targets=np.full(n, -1, np.int64))
        return self.compute(x, resolve_targets(targets, n))

    # -- what subclasses implement ------------------------------------------------------
    def compute(self, x: Any, targets: TargetSpec) -> Explanation:
        """The explanation of one batch.

        Parameters
        ----------
        x : native input
            The batch, checked (``N >= 1``), in the model's own layout.
        targets : TargetSpec
            The targets, resolved for the batch's ``N`` samples.

        Returns
        -------
        Explanation
            ``maps`` float32 ``(N, *spatial)``; ``method`` is :attr:`name`.
        """
        raise NotImplementedError

    @classmethod
    def has_layer_terms(cls) -> bool:
        """Whether the method's map is a sum of per-channel terms (``eigen_smooth`` applies)."""
        return False


def needed_capabilities(cls: type[Method]) -> tuple[str, ...]:
    """The capabilities in ``cls.requires`` beyond ``"gradients"``, in their declared order
    (what a backend must declare for the method to be built on it)."""
    return tuple(c for c in cls.requires if c != GRADIENTS)


def check_capabilities(method: Method, instead: str | None = None,
                       needs: str | None = None) -> None:
    """Raise NotImplementedError naming the capabilities the method needs that its backend
    does not declare.

    Parameters
    ----------
    method : Method
        A method whose ``backend`` is set; its needs are its class's ``requires`` (beyond
        ``"gradients"``, see :func:`needed_capabilities`).
    instead : str, optional
        What to use instead (default: the class's ``instead``).
    needs : str, optional
        What the missing capabilities give (default: from :data:`CAPABILITY_USES`).
    """
    missing = [c for c in needed_capabilities(type(method))
               if c not in method.backend.capabilities]
    if not missing:
        return
    if needs is None:
        needs = "; ".join(CAPABILITY_USES.get(c, c) for c in missing)
    names = ", ".join(repr(c) for c in missing)
    raise NotImplementedError(
        f"{type(method).__name__} needs the {names} capabilit"
        f"{'y' if len(missing) == 1 else 'ies'} ({needs}), which backend "
        f"{method.backend.name!r} does not declare; {instead or method.instead}"
    )
