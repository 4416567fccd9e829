"""Faithfulness, localisation and sanity metrics for saliency maps, framework-agnostic.

Modules: :mod:`~interp_core.metrics.faithfulness` (deletion, insertion, pixel-flipping,
Average Drop, Increase in Confidence), :mod:`~interp_core.metrics.correlation` (Faithfulness
Correlation), :mod:`~interp_core.metrics.regions` (region perturbation, AOPC),
:mod:`~interp_core.metrics.remove_debias` (ROAD), :mod:`~interp_core.metrics.localisation`
(pointing game, energy pointing game, Relevance Rank and Mass Accuracy),
:mod:`~interp_core.metrics.complexity` (Sparseness, Complexity, histogram entropy),
:mod:`~interp_core.metrics.sanity` (Spearman correlation, model randomisation, eMPRT).


Faithfulness metrics perturb the input where a map says it matters and score the perturbed
inputs with the backend's batched, forward-only ``predict`` (any adapter works); localisation
metrics compare maps with ground-truth boxes or masks and need no model; complexity metrics read
the maps alone. Every metric returns one value per sample.

Common arguments of the model-based metrics:

model, inputs
    The model and its native input ``(N, C, *S)`` or ``(N, *S, C)`` (a framework tensor or
    NumPy array); the channel axis is found as in
    :func:`interp_core.backend.layout.infer_layout`.
maps
    ``(N, *S)`` saliency maps at the input's spatial size, values in [0, 1] (``cam(x)``).
targets
    As for the methods (``None`` is each sample's top-1 class *on the unperturbed input*: the
    class is pinned, so perturbed inputs are scored for the same class).
backend, output
    As for the methods; ``backend=None`` detects it from the model.
batch_size
    Perturbed inputs per forward pass; memory holds at most that many copies of one input.
    Results do not depend on it.

Scores are whatever the target scores (logits for class targets). The papers use class
probabilities: give a model that ends in a softmax, or ``output=`` a callable that applies one
(torch: ``output=lambda o: o.softmax(-1)``).
"""

from interp_core.imaging import gaussian_blur
from interp_core.metrics._common import make_baseline
from interp_core.metrics.complexity import complexity, histogram_entropy, sparseness
from interp_core.metrics.correlation import faithfulness_correlation
from interp_core.metrics.faithfulness import (
    Curve,
    average_drop,
    deletion,
    deletion_curve,
    increase_in_confidence,
    insertion,
    insertion_curve,
    pixel_flipping,
    pixel_flipping_curve,
)
from interp_core.metrics.localisation import (
    energy_pointing_game,
    pointing_game,
    relevance_mass_accuracy,
    relevance_rank_accuracy,
)
from interp_core.metrics.regions import region_perturbation, region_perturbation_curve
from interp_core.metrics.remove_debias import noisy_linear_imputation, road, road_combined
from interp_core.metrics.sanity import efficient_mprt, model_randomization, spearman

__all__ = [
    "Curve", "average_drop", "complexity", "deletion", "deletion_curve", "efficient_mprt",
    "energy_pointing_game", "faithfulness_correlation", "gaussian_blur", "histogram_entropy",
    "increase_in_confidence", "insertion", "insertion_curve", "make_baseline",
    "model_randomization", "noisy_linear_imputation", "pixel_flipping", "pixel_flipping_curve",
    "pointing_game", "region_perturbation", "region_perturbation_curve",
    "relevance_mass_accuracy", "relevance_rank_accuracy", "road", "road_combined", "sparseness",
    "spearman",
]
