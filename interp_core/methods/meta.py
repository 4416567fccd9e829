"""Methods made of another CAM method: its layer maps under another target (Finer-CAM) or
fused another way (RefineCAM).

:class:`BaseMethodCAM` runs the CAM pipeline of :class:`~interp_core.methods.base.CAMMethod`
(one capture, per-layer maps, post-processing) with each layer's evidence taken from a base
method (``base``: a CAM method class or name, Grad-CAM or Grad-CAM++ by default), so any CAM
method can be the base, as pytorch-grad-cam's ``base_method`` allows.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from interp_core.backend.protocol import GRADIENTS
from interp_core.backend.target_spec import TargetSpec, resolve_targets
from interp_core.methods.base import CAMMethod, LayerContext
from interp_core.methods.grad_cam import GradCAM, GradCAMPlusPlus
from interp_core.methods.method import Explanation, Fuse
from interp_core.targets import ContrastTarget

__all__ = ["BaseMethodCAM", "FinerCAM", "RefineCAM"]


class BaseMethodCAM(CAMMethod):
    """A CAM method whose layer maps (and channel weights) are those of a base method.

    Parameters
    ----------
    model, layer, **options
        As for every method; ``eigen_smooth`` is passed on to the base.
    base : CAMMethod subclass or str, optional
        The base method (default: the class's ``default_base``), built on the same model,
        layers, backend, ``reshape`` and ``output``.
    base_options : dict, optional
        The base method's own options (e.g. ``{"batch_size": 16}`` for Score-CAM).
    """

    #: The base method when ``base`` is not given.
    default_base: ClassVar[type[CAMMethod]] = GradCAM

    def __init__(self, model: Any, layer: Any = None, *, base: Any = None,
                 base_options: dict[str, Any] | None = None, **options: Any) -> None:
        super().__init__(model, layer, **options)
        cls = _base_class(self.default_base if base is None else base, type(self).__name__)
        self.base: CAMMethod = cls(model, layer, backend=self.backend,
                                   reshape=self.reshape, output=self.output,
                                   eigen_smooth=self.eigen_smooth, **(base_options or {}))
        # What the capture needs is what the base needs (a gradient-free base takes none).
        self.requires = self.base.requires  # type: ignore[misc]

    @classmethod
    def has_layer_terms(cls) -> bool:
        return cls.default_base.has_layer_terms()  # the base decides when it is built

    def layer_evidence(self, activations: np.ndarray, gradients: np.ndarray | None,
                       ctx: LayerContext) -> tuple[np.ndarray, np.ndarray | None]:
        return self.base.layer_evidence(activations, gradients, ctx)


def _base_class(base: Any, owner: str) -> type[CAMMethod]:
    """``base`` (a CAM method class or a method name) as a CAM method class."""
    if isinstance(base, str):
        from interp_core.methods import method_class  # the registry imports this module

        base = method_class(base)
    if not (isinstance(base, type) and issubclass(base, CAMMethod)):
        raise TypeError(
            f"{owner} base={base!r} must be a CAM method (a CAMMethod subclass such as "
            "GradCAM, or its name such as 'gradcam'), which makes maps from layers"
        )
    if issubclass(base, BaseMethodCAM):
        raise TypeError(f"{owner} base={base.__name__} is itself built on a base method; "
                        "pass that base instead")
    return base


class FinerCAM(BaseMethodCAM):
    """Finer-CAM (Zhang et al., "Finer-CAM: Spotting the difference reveals finer details for
    visual explanation", CVPR 2025): the base method (Grad-CAM) of the main class's logit
    against those of the classes it is most easily confused with.

    The score is :class:`~interp_core.targets.ContrastTarget`'s,
    ``sum_j p_j (o_main - alpha o_j) / (sum_j p_j + 1e-9)`` with ``p = softmax(o)``, over the
    comparison classes ``j``: by default the three classes whose logits are closest to the main
    class's, ranked in the same forward pass. Ranks beyond the model's classes are dropped (a
    3-class model compares with 2 classes); a single-logit model raises an error. As
    pytorch-grad-cam's ``FinerCAM``.

    Parameters
    ----------
    alpha : float
        Weight of the comparison logits (1: the plain difference).
    comparisons : int or sequence of int
        Ranks of the comparison classes in closeness to the main class's logit (1: the
        closest other class); an int ``k`` means ranks ``1..k``. Default ``(1, 2, 3)``.
    base, base_options
        The base method (default :class:`~interp_core.GradCAM`) and its own options.

    Notes
    -----
    ``targets`` name the main class (None: each sample's top-1; ints or
    :class:`~interp_core.ClassTarget`); a :class:`~interp_core.ContrastTarget` is used as it
    is, so explicit comparison classes work too. ``Explanation.targets`` are the main
    classes, ``Explanation.scores`` the contrast scores.
    """

    name = "finercam"
    requires = (GRADIENTS,)
    needs = "gradients"
    default_base = GradCAM

    def __init__(self, model: Any, layer: Any = None, *, alpha: float = 1.0,
                 comparisons: int | Any = (1, 2, 3), **options: Any) -> None:
        ranks = list(range(1, int(comparisons) + 1)) if isinstance(
            comparisons, int | np.integer) and not isinstance(comparisons, bool) else comparisons
        ContrastTarget(ranks=ranks, alpha=alpha)  # checks them, with their messages
        super().__init__(model, layer, **options)
        self.alpha = float(alpha)
        self.ranks = tuple(int(r) for r in ranks)

    def compute(self, x: Any, targets: TargetSpec) -> Explanation:
        return super().compute(x, self.contrast(targets))

    def contrast(self, spec: TargetSpec) -> TargetSpec:
        """The contrast targets of a batch whose main classes ``spec`` names."""
        if spec.kind == "contrast":
            return spec
        if spec.kind not in ("top1", "class"):
            raise ValueError(
                f"FinerCAM explains classes (None for each sample's top-1, ints, ClassTarget) "
                f"or a ContrastTarget, not {spec.kind!r} targets; use GradCAM for those"
            )
        mains = [None] * (spec.n or 0) if spec.kind == "top1" else [int(i) for i in spec.indices]
        return resolve_targets(
            [ContrastTarget(main, ranks=self.ranks, alpha=self.alpha) for main in mains],
            len(mains))


class RefineCAM(BaseMethodCAM):
    """RefineCAM (arXiv:2605.14641): the product over layers of the base method's (Grad-CAM++)
    finished map of each layer, min-max scaled; it keeps what every layer agrees on, which
    cleans the noisy maps of early layers.

    Each factor is the layer's map as the base method alone gives it (ReLU, min-max, resized to
    the input, min-max again); the product is min-max scaled once more: ``fuse="product"``
    (:func:`~interp_core.methods.postprocess.finish_maps`). This is what pytorch-grad-cam's
    ``RefineCAM`` computes: its loop meant to clip and rescale each layer's map assigns to the
    loop variable only and changes nothing, which is harmless, as each base map is already in
    [0, 1] with a maximum of 1.

    Parameters
    ----------
    layer : list of layers
        The layers whose maps multiply (one layer: the base method's map).
    base, base_options
        The base method (default :class:`~interp_core.GradCAMPlusPlus`) and its own options.
    fuse : str
        ``"product"`` by default; the other fusions of every method work too.
    """

    name = "refinecam"
    requires = (GRADIENTS,)
    needs = "gradients"
    default_base = GradCAMPlusPlus

    def __init__(self, model: Any, layer: Any = None, *, fuse: Fuse = "product",
                 **options: Any) -> None:
        super().__init__(model, layer, fuse=fuse, **options)
        # A target-free base (Eigen-CAM, FEM) makes the fusion of its maps target-free too.
        self.target_free = self.base.target_free  # type: ignore[misc]
