"""The default layer (``layer=None``), chosen in the core for every adapter from one dry run.

:func:`default_layer` asks the adapter for one dry run of the model
(:meth:`~interp_core.backend.protocol.Backend.layer_outputs`: what each layer emitted, in the
order the layers finished, as :class:`~interp_core.backend.protocol.LayerOutput` entries of a
:class:`~interp_core.backend.protocol.LayerProbe`) and :func:`choose_layer` picks from those:

1. Candidates are layers that ran exactly once (a layer that runs twice in a pass has no single
   gradient), kept the batch axis, and whose output reads as a grid with the input's number of
   spatial axes and more than one position (:func:`~interp_core.backend.grids.grid_layout`:
   convolution outputs, token layers whose count fits the input, channels-last grids), and are
   no adaptive pooling (:data:`RESAMPLING`). A layer with fewer spatial axes than the input is
   never picked.
2. The last candidate whose grid reaches the score wins, as for CNNs (``layer4`` of a ResNet).
   "Reaches" is checked with one top-1 gradient pass on the first sample over the last few
   candidates (through the backend's ``capture``, or its optional ``gradient_probe``): a
   PiT's last stage emits a grid that only its class token leaves, and a ViT's last block
   emits patch tokens no later layer reads.
3. When the pick is a token layer, it moves to the last *norm* among the token layers that
   reach the score: the last block's first norm of a ViT (``blocks.11.norm1``), as the peer
   libraries recommend. Where the probe cannot tell (no top-1 class, an all-zero head), the
   first norm of the last module holding two or more norms is used
   (:func:`last_block_first_norm`).
4. No candidate: the error names the three most likely layers and why each was passed over.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from interp_core.backend.grids import GridLayout, grid_layout
from interp_core.backend.inputs import take
from interp_core.backend.protocol import LayerOutput, LayerProbe
from interp_core.backend.target_spec import TargetSpec

__all__ = ["PROBED", "RESAMPLING", "GradientProbe", "LayerOutput", "LayerProbe",
           "choose_layer", "default_layer", "deprecated_default_layer", "last_block_first_norm",
           "no_layer_error"]

#: ``gradient_probe(names)`` -> canonical gradients ``{name: (1, ...)}`` of a top-1 score.
GradientProbe = Callable[[list[str]], dict[str, np.ndarray]]

#: Layers checked with one gradient pass: the last candidates and the last token norms.
PROBED = 8

#: Layer types never picked: adaptive pooling to a fixed size (VGG's and AlexNet's ``avgpool``)
#: only repeats the previous layer's values when the input is small.
RESAMPLING = ("AdaptiveAvgPool", "AdaptiveMaxPool")


def default_layer(backend: Any, model: Any, inputs: Any) -> str:
    """The name of the layer ``layer=None`` explains: the module docstring's choice.

    Runs the adapter's dry run (:meth:`~interp_core.backend.protocol.Backend.layer_outputs`),
    then one top-1 gradient pass on the first sample over the last few candidates: the
    adapter's optional ``gradient_probe(model, sample, names)``
    (:class:`~interp_core.backend.protocol.GradientProbeBackend`), else its ordinary
    ``capture`` with a top-1 :class:`~interp_core.backend.target_spec.TargetSpec`.

    Parameters
    ----------
    backend : Backend
        The adapter that runs ``model``.
    model : object
        The model, as the adapter takes it.
    inputs : object
        The model's native input (a batch).

    Returns
    -------
    str
        The layer's name as ``layer=`` takes it.

    Raises
    ------
    ValueError
        No layer qualifies; the message names the three most likely ones.
    TypeError
        The adapter reports no layer outputs (neither ``layer_outputs`` nor the former
        ``default_layer``): pass ``layer=`` explicitly.
    """
    report = getattr(backend, "layer_outputs", None)
    if not callable(report):
        legacy = getattr(backend, "default_layer", None)
        if callable(legacy):  # an adapter written before layer_outputs (interp-core 0.1)
            warnings.warn(
                f"backend {getattr(backend, 'name', backend)!r} defines default_layer(model, "
                "inputs) but not layer_outputs(model, inputs); the core now chooses the "
                "default layer from layer_outputs (docs/adapters.md), and default_layer will "
                "no longer be called in the next release",
                DeprecationWarning, stacklevel=2)
            return str(legacy(model, inputs))
        raise TypeError(
            f"backend {getattr(backend, 'name', backend)!r} has no layer_outputs(model, "
            "inputs), so it cannot choose a default layer: pass layer= explicitly")
    probe: LayerProbe = report(model, inputs)
    if probe.only is not None:
        return probe.only
    sample = probe.sample if probe.sample is not None else take(inputs, slice(0, 1))
    custom = getattr(backend, "gradient_probe", None)

    def gradients(names: list[str]) -> dict[str, np.ndarray]:
        if callable(custom):
            return custom(model, sample, names)
        cap = backend.capture(model, sample, names, TargetSpec("top1", 1))
        return {name: c.gradients for name, c in cap.layers.items()}

    return choose_layer(probe.outputs, probe.input_spatial, probe.batch,
                        native_channels_first=probe.native_channels_first,
                        gradient_probe=gradients)


def deprecated_default_layer(backend: Any, model: Any, inputs: Any) -> str:
    """What a first-party adapter's former ``default_layer(model, inputs)`` method now does:
    warn, and give :func:`default_layer`'s answer. Kept for one release."""
    warnings.warn(
        f"{type(backend).__name__}.default_layer(model, inputs) is deprecated: the core chooses "
        "the default layer; call interp_core.backend.layer_choice.default_layer(backend, "
        "model, inputs)",
        DeprecationWarning, stacklevel=3)
    return default_layer(backend, model, inputs)


def _rejection(out: LayerOutput, batch: int, layout: GridLayout | None,
               input_spatial: Sequence[int]) -> str | None:
    """Why ``out`` cannot be the default layer, or None when it can."""
    if out.calls != 1:
        return f"it ran {out.calls} times in one pass"
    if out.type_name.startswith(RESAMPLING):
        return f"a {out.type_name} resamples to a fixed size (at small inputs it repeats values)"
    if not out.shape:
        return "its output holds no tensor"
    if out.shape[0] != batch:
        return f"its first axis has {out.shape[0]} entries, not the batch's {batch}"
    if layout is None:
        if len(out.shape) == 3 and len(input_spatial) >= 2:
            return (f"its {out.shape[1]} or {out.shape[2]} tokens form no grid of the input's "
                    f"aspect {tuple(input_spatial)}")
        return f"it has fewer spatial axes than the input's {len(input_spatial)}"
    if math.prod(layout.grid) <= 1:
        return "it has one spatial position"
    if not layout.fits:
        return f"its grid {layout.grid} does not follow the input's aspect {tuple(input_spatial)}"
    return None


def choose_layer(outputs: Sequence[LayerOutput], input_spatial: Sequence[int], batch: int, *,
                 native_channels_first: bool,
                 gradient_probe: GradientProbe | None = None) -> str:
    """The default layer's name (see the module docstring).

    Parameters
    ----------
    outputs : sequence of LayerOutput
        Every layer of the dry run, in the order their outputs were produced.
    input_spatial : sequence of int
        The input's spatial shape.
    batch : int
        The dry run's batch size.
    native_channels_first : bool
        As for :func:`~interp_core.backend.grids.grid_layout`.
    gradient_probe : callable, optional
        Gradients of the top-1 score for a few layers (one pass); used to skip layers whose
        grid does not reach the score. Errors it raises are ignored.

    Raises
    ------
    ValueError
        No layer qualifies; the message names the three most likely ones.
    """
    layouts = {out.name: grid_layout(out.shape, input_spatial,
                                     native_channels_first=native_channels_first)
               for out in outputs if out.shape}
    candidates = [out for out in outputs
                  if _rejection(out, batch, layouts.get(out.name), input_spatial) is None]
    if not candidates:
        raise no_layer_error(outputs, input_spatial, batch, layouts)
    tokens = [c for c in candidates if layouts[c.name].kind == "tokens"]
    norms = [c for c in tokens if c.is_norm] or tokens
    probed = list({c.name: c for c in candidates[-PROBED:] + norms[-PROBED:]}.values())
    reached = _reaching_the_score(probed, layouts, gradient_probe)

    def reaches(out: LayerOutput) -> bool:
        # Layers before the probed ones are taken to reach the score (one pass checks a few).
        return reached is None or out.name in reached or out not in probed

    pick = next((c for c in reversed(candidates) if reaches(c)), candidates[-1])
    if layouts[pick.name].kind != "tokens":
        return pick.name
    if reached is None:
        return last_block_first_norm(norms)
    return next((c.name for c in reversed(norms) if reaches(c)), pick.name)


def last_block_first_norm(norms: Sequence[LayerOutput]) -> str:
    """Without gradients to tell: the first norm of the last module that holds two or more of
    them (a transformer block's ``norm1`` of ``norm1``/``norm2``), else the last norm."""
    by_parent: dict[str, list[str]] = {}
    for out in norms:
        by_parent.setdefault(_parent(out.name), []).append(out.name)
    blocks = [names for names in by_parent.values() if len(names) >= 2]
    if not blocks:
        return norms[-1].name
    return max(blocks, key=lambda names: max(_position(norms, n) for n in names))[0]


def _parent(name: str) -> str:
    for sep in (".", "/"):
        if sep in name:
            return name.rsplit(sep, 1)[0]
    return ""


def _position(outputs: Sequence[LayerOutput], name: str) -> int:
    return next(i for i, out in enumerate(outputs) if out.name == name)


def _reaching_the_score(layers: Sequence[LayerOutput], layouts: dict[str, GridLayout | None],
                        gradient_probe: GradientProbe | None) -> set[str] | None:
    """The names among ``layers`` whose grid positions (patch tokens, not the prefix) get a
    gradient of the top-1 score; None when the probe cannot tell (none given, it raised, or
    every gradient is zero, as with an all-zero head)."""
    if gradient_probe is None:
        return None
    names = [out.name for out in layers]
    try:
        grads = gradient_probe(names)
    except (ValueError, TypeError, RuntimeError, KeyError):
        return None  # e.g. a model whose output has no top-1 class
    reached = set()
    for name in names:
        grad, layout = grads.get(name), layouts[name]
        if grad is None or layout is None or not grad.size:
            continue
        on_grid = float(np.abs(layout.apply(grad)).max())
        if on_grid > 0 and on_grid > 1e-6 * float(np.abs(grad).max()):
            reached.add(name)
    return reached or None


def no_layer_error(outputs: Sequence[LayerOutput], input_spatial: Sequence[int], batch: int,
                   layouts: dict[str, GridLayout | None] | None = None) -> ValueError:
    """The error for a model with no qualifying layer: the three most likely layers, and why
    each was passed over."""
    if layouts is None:
        layouts = {out.name: grid_layout(out.shape, input_spatial, native_channels_first=False)
                   for out in outputs if out.shape}
    # Most likely: outputs with more axes, then later ones.
    ranked = sorted(range(len(outputs)), key=lambda i: (len(outputs[i].shape) >= 3, i),
                    reverse=True)
    notes = []
    for i in ranked[:3]:
        out = outputs[i]
        why = _rejection(out, batch, layouts.get(out.name), input_spatial) or "unknown"
        notes.append(f"{out.name!r} (output {out.shape}: {why})")
    listed = "; ".join(notes) if notes else "none (no layer ran)"
    return ValueError(
        "no layer of the model produced a spatial output with more than one position over the "
        f"input's {len(input_spatial)} spatial axes {tuple(input_spatial)}; the most likely "
        f"candidates: {listed}. Pass layer= explicitly (with reshape= for a token layer whose "
        "grid cannot be found)"
    )
