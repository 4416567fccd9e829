"""Everything an adapter author needs, and nothing a user of the methods does.

- :mod:`~interp_core.backend.protocol`: the :class:`Backend` protocol, :class:`Capture`,
  :class:`LayerCapture`, capability names.
- :mod:`~interp_core.backend.hookspecs`: what a plugin is: the pluggy hooks,
  :class:`BackendRegistration`, and hook implementations built from values.
- :mod:`~interp_core.backend.registry`: how plugins are found (entry points) and asked:
  :func:`get_backend`, model files, install hints.
- :mod:`~interp_core.backend.target_spec` and :mod:`~interp_core.backend.scoring`: the batch-level
  :class:`TargetSpec` and the one definition of every target's score.
- :mod:`~interp_core.backend.layer_choice` and :mod:`~interp_core.backend.grids`: the default
  layer, chosen from an adapter's :class:`LayerProbe` (:func:`default_layer`), and layer outputs
  read as grids over the input (token layers, channels-last grids).
- :mod:`~interp_core.backend.layout`, :mod:`~interp_core.backend.inputs`: input layouts and
  batch helpers.
- Behaviour every adapter shares: :mod:`~interp_core.backend.layers` (structured layer outputs,
  layer requests and errors), :mod:`~interp_core.backend.compiled` (replaying recorded target
  constants in compiled functions), :mod:`~interp_core.backend.patching` (patched scores: the
  expanded pass with its tiled fallback), :mod:`~interp_core.backend.checks` (input checks,
  non-finite values), :mod:`~interp_core.backend.threads` (the per-model lock).
  (their former module, `interp_core.backend.policy`, re-exports them, deprecated, for one
  release.)

``docs/adapters.md`` walks through writing an adapter; ``docs/architecture.md`` shows where this
layer sits. Importing this package imports no framework.
"""

from interp_core.backend.hookspecs import (
    ENTRY_POINT_GROUP,
    BackendRegistration,
    defined_in,
    hookimpl,
    hookspec,
)
from interp_core.backend.inputs import batch_size_of, check_batch_size, chunks, first_input
from interp_core.backend.layer_choice import default_layer
from interp_core.backend.layout import (
    CHANNELS_FIRST,
    CHANNELS_LAST,
    NO_CHANNELS,
    declared_layout,
    infer_layout,
    input_layout,
)
from interp_core.backend.protocol import (
    ACTIVATION_PATCH,
    ALL_CAPABILITIES,
    GRADIENTS,
    INPUT_GRADIENTS,
    LINEAR_WEIGHTS,
    Backend,
    Capture,
    InputSpec,
    LayerCapture,
    LayerOutput,
    LayerProbe,
    input_spec,
)
from interp_core.backend.registry import (
    backends,
    get_backend,
    load_model_file,
    load_weights_file,
    register_backend,
    registrations,
    reset_registry,
)
from interp_core.backend.scoring import TensorOps, target_constants, target_scores
from interp_core.backend.target_spec import (
    TargetKind,
    TargetSpec,
    fixed_targets,
    resolve_targets,
    select_output,
)

__all__ = [
    "ACTIVATION_PATCH", "ALL_CAPABILITIES", "CHANNELS_FIRST", "CHANNELS_LAST", "ENTRY_POINT_GROUP",
    "GRADIENTS", "INPUT_GRADIENTS", "LINEAR_WEIGHTS", "NO_CHANNELS", "Backend",
    "BackendRegistration", "Capture", "InputSpec", "LayerCapture", "LayerOutput", "LayerProbe",
    "TargetKind", "TargetSpec", "TensorOps", "backends", "batch_size_of", "check_batch_size",
    "chunks", "declared_layout", "default_layer", "defined_in", "first_input", "fixed_targets",
    "get_backend", "hookimpl", "hookspec", "infer_layout", "input_layout", "input_spec",
    "load_model_file", "load_weights_file", "register_backend", "registrations", "reset_registry",
    "resolve_targets", "select_output", "target_constants", "target_scores"
]
