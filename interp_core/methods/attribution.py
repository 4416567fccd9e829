"""Deprecated: the input-gradient attributions moved to
:mod:`interp_core.methods.input_gradients` (their base is now ``InputGradientMethod``;
``InputAttribution`` is another name for it).

This module re-exports them for one release and warns (``DeprecationWarning``) when imported.
"""

from __future__ import annotations

import warnings

from interp_core.methods.input_gradients import (
    INPUT,
    REDUCTIONS,
    RULES,
    InputAttribution,
    InputGradientMethod,
    InputXGradient,
    IntegratedGradients,
    Reduce,
    Rule,
    Saliency,
    SmoothGrad,
    channel_axis,
    input_maps,
    integration_rule,
    noise_sigmas,
    reduce_channels,
)
from interp_core.methods.method import Explanation, check_capabilities

warnings.warn(
    "interp_core.methods.attribution is deprecated and will be removed in the next release: "
    "import from interp_core.methods.input_gradients, or from interp_core",
    DeprecationWarning, stacklevel=2,
)

__all__ = [
    "INPUT", "REDUCTIONS", "RULES", "Explanation", "InputAttribution", "InputGradientMethod",
    "InputXGradient", "IntegratedGradients", "Reduce", "Rule", "Saliency", "SmoothGrad",
    "channel_axis", "check_capabilities", "input_maps", "integration_rule", "noise_sigmas",
    "reduce_channels",
]
