"""What every method is, what it needs from a backend and what it costs: the "choosing a method"
table (``interp_core.methods.method_table()``; ``docs/methods.md`` is generated from it by
:func:`methods_markdown`).

What a method needs (``needs``, ``requires``, ``takes_layer``) is declared by its class
(:class:`~interp_core.methods.method.Method`) and read from there; this module holds the prose
of each row (:data:`NOTES`: what the map is, what it costs, when it is faithful, the source).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

#: What a method asks of the backend, by cost: activations only (one forward pass), gradients
#: at the layer (one forward and a backward down to the layer), a forward pass per channel of
#: the layer, or gradients at the input (a backward pass through the whole network, possibly
#: for many copies of the input).
Needs = Literal["activations", "gradients", "forward per channel", "input gradients",
                "attention", "attention gradients"]
NEEDS: tuple[str, ...] = ("activations", "gradients", "forward per channel", "input gradients",
                          "attention", "attention gradients")


@dataclass(frozen=True)
class MethodInfo:
    """One row of the method table.

    Attributes
    ----------
    name : str
        The method name (``ic.explain(..., method=name)``).
    description : str
        One line: what the map is.
    needs : str
        One of :data:`NEEDS` (the class's ``needs``).
    cost : str
        Passes per input.
    faithful : str
        When the map reflects what the model computes, and its known failure modes.
    source : str
        The paper (and the implementation our numbers are checked against).
    requires : tuple of str
        The backend capabilities the method calls (the class's ``requires``).
    takes_layer : bool
        Whether ``layer`` chooses what is explained (the class's ``takes_layer``); False for
        attributions to the input.
    target_free : bool
        Whether the method explains no target (the class's ``target_free``): it runs on any
        model output, and its ``Explanation.scores`` is empty.
    """

    name: str
    description: str
    needs: Needs
    cost: str
    faithful: str
    source: str
    requires: tuple[str, ...] = ()
    takes_layer: bool = True
    target_free: bool = False


@dataclass(frozen=True)
class MethodNotes:
    """The prose of one row of the method table (the rest comes from the method's class)."""

    name: str
    description: str
    cost: str
    faithful: str
    source: str


_LAYER = "1 forward + backward down to the layer"
_INPUT = "1 forward + backward to the input"

#: The prose of every registered method's row, alphabetical.
NOTES: tuple[MethodNotes, ...] = (
    MethodNotes("ablationcam", "channel weights = relative score drop when the channel is "
                "zeroed", "1 forward + C ablated copies run from the layer on",
                "measures each channel's effect on the score; misses interactions between "
                "channels", "Desai & Ramaswamy, WACV 2020; pytorch-grad-cam AblationCAM"),
    MethodNotes("attentionrollout", "attention of every block, heads averaged and the residual "
                "added, multiplied through the blocks; the class token's row", "1 forward",
                "class-agnostic: shows where information flows, not what decides the class",
                "Abnar & Zuidema, ACL 2020; jacobgil/vit-explain (discard_ratio)"),
    MethodNotes("cam", "the dense layer's class weights applied to the channels before global "
                "average pooling", "1 forward",
                "exact for global-average-pooling + dense heads (equals Grad-CAM there); "
                "undefined for other heads", "Zhou et al., CVPR 2016"),
    MethodNotes("eigencam", "first principal component of the activations (class-agnostic)",
                "1 forward", "shows what the layer responds to most, not why a class was chosen",
                "Muhammad & Yeasin, IJCNN 2020; pytorch-grad-cam EigenCAM"),
    MethodNotes("eigengradcam", "first principal component of gradient x activation", _LAYER,
                "class-specific Eigen-CAM; sign chosen by correlation",
                "pytorch-grad-cam EigenGradCAM"),
    MethodNotes("fullgrad", "input-gradient term plus the bias-gradient terms of every "
                "biased layer",
                "1 forward + backward to the input (gradients kept at every biased layer)",
                "complete for piecewise-linear networks: input and bias terms add up to the "
                "output; needs the optional bias_gradients capability",
                "Srinivas & Fleuret, NeurIPS 2019; pytorch-grad-cam FullGrad"),
    MethodNotes("gradientrollout", "rollout of the attention weighted by the target's "
                "gradient, rectified: R += mean_h((grad * A)+) R; the class token's row",
                "1 forward + backward to the first block",
                "class-specific; among the best localisers on ViTs",
                "Chefer, Gur & Wolf, ICCV 2021 (generic attention explainability)"),
    MethodNotes("gradcam", "channel weights = spatial mean of the gradients", _LAYER,
                "exact on global-average-pooling + linear heads, a first-order "
                "approximation elsewhere; layer resolution",
                "Selvaraju et al., ICCV 2017; pytorch-grad-cam GradCAM"),
    MethodNotes("gradcam++", "channel weights from second-order terms (paper eq. 19)", _LAYER,
                "better for several instances of a class; same first-order basis as Grad-CAM",
                "Chattopadhay et al., WACV 2018"),
    MethodNotes("gradcam-elementwise", "sum over channels of relu(gradient x activation)",
                _LAYER, "position-specific weights; drops negative evidence",
                "pytorch-grad-cam GradCAMElementWise"),
    MethodNotes("gradcam-guidedgrads", "Grad-CAM on guided gradients (A > 0)(G > 0)G", _LAYER,
                "never gives a channel a negative weight, so suppressing channels are ignored",
                "tf-explain GradCAM (the Keras Grad-CAM tutorials)"),
    MethodNotes("guidedbackprop", "input gradient with every ReLU's backward pass guided "
                "(only positive signals pass)", _INPUT,
                "sharp but barely class- or weight-dependent (fails the model-randomisation "
                "sanity check)", "Springenberg et al., ICLR-W 2015; Captum GuidedBackprop"),
    MethodNotes("guidedgradcam", "guided backpropagation x upsampled Grad-CAM",
                "1 forward + backward to the layer, then 1 forward + guided backward to the "
                "input", "class-discriminative at pixel resolution; inherits guided backprop's "
                "insensitivity in the detail", "Selvaraju et al., ICCV 2017; Captum GuidedGradCam"),
    MethodNotes("hirescam", "sum over channels of gradient x activation", _LAYER,
                "faithful to the score's first-order term at each position",
                "Draelos & Carin 2020; pytorch-grad-cam HiResCAM"),
    MethodNotes("inputxgradient", "input x input gradient", _INPUT,
                "exact for linear models; first-order elsewhere",
                "Shrikumar et al. 2016; Captum InputXGradient"),
    MethodNotes("integratedgradients", "(x - baseline) x gradients integrated along the "
                "straight path", "steps forwards + backwards to the input",
                "complete: attributions sum to F(x) - F(baseline) up to the quadrature error "
                "(raw['convergence_delta']); depends on the baseline",
                "Sundararajan et al., ICML 2017; Captum IntegratedGradients"),
    MethodNotes("kpcacam", "first kernel principal component of the activations "
                "(class-agnostic)", "1 forward",
                "like Eigen-CAM with a nonlinear kernel; not class-specific",
                "Karmani et al. 2024; pytorch-grad-cam KPCA_CAM"),
    MethodNotes("legrad", "per block, the gradient of the score the head reads from that "
                "block with respect to its attention, rectified, averaged over heads, rows and "
                "blocks", "1 forward + backward (the head once per block)",
                "class-specific, reads every block's own evidence; sharp on ViTs",
                "Bousselham et al., 2024 (LeGrad)"),
    MethodNotes("layercam", "sum over channels of relu(gradient) x activation", _LAYER,
                "position-specific; good on shallow layers",
                "Jiang et al., TIP 2021; pytorch-grad-cam LayerCAM"),
    MethodNotes("saliency", "largest |input gradient| over channels", _INPUT,
                "local sensitivity only; noisy", "Simonyan et al., ICLR-W 2014; Captum "
                "Saliency"),
    MethodNotes("scorecam", "channel weights = softmax of the scores of inputs masked by each "
                "channel", "C forwards of masked inputs",
                "measured, gradient-free; costly; softmax over raw scores",
                "Wang et al., CVPR-W 2020; pytorch-grad-cam ScoreCAM"),
    MethodNotes("smoothgrad", "input gradient averaged over noisy copies of the input",
                "n_samples forwards + backwards to the input",
                "less noisy than Saliency; still local", "Smilkov et al. 2017"),
    MethodNotes("xgradcam", "channel weights = sum(G A) / sum(A)", _LAYER,
                "axiom-based (sensitivity, conservation) first-order weights",
                "Fu et al., BMVC 2020; pytorch-grad-cam XGradCAM"),
)


def method_info(cls: Any) -> MethodInfo:
    """The row of method class ``cls``: its declarations (``name``, ``needs``, ``requires``,
    ``takes_layer``) with its :data:`NOTES`."""
    notes = _NOTES[cls.name]
    return MethodInfo(cls.name, notes.description, cls.needs, notes.cost, notes.faithful,
                      notes.source, requires=tuple(cls.requires), takes_layer=cls.takes_layer,
                      target_free=bool(cls.target_free))


_NOTES = {notes.name: notes for notes in NOTES}


def methods_markdown(table: Sequence[MethodInfo] | None = None) -> str:
    """The "choosing a method" table as Markdown (``docs/methods.md`` embeds it).

    ``table`` defaults to every registered method's row
    (:func:`~interp_core.methods.method_table`).
    """
    if table is None:
        from interp_core.methods import method_table

        table = method_table()
    order = {kind: i for i, kind in enumerate(NEEDS)}
    rows = sorted(table, key=lambda m: (order[m.needs], m.name))
    lines = ["| method | what the map is | needs | cost per input | faithful when | source |",
             "| --- | --- | --- | --- | --- | --- |"]
    lines += [f"| `{m.name}` | {m.description} | {m.needs}"
              f"{', no target' if m.target_free else ''} | {m.cost} | {m.faithful} | "
              f"{m.source} |" for m in rows]
    return "\n".join(lines) + "\n"
