# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Writing a third-party adapter
#
# interp-core computes every method in NumPy; an *adapter* is the only code that knows a
# framework. It runs the model and hands back NumPy arrays: activations, gradients, scores.
# The PyTorch, TensorFlow and JAX adapters are registered exactly as yours will be, and they
# all pass the same **conformance suite**, shipped in the wheel as
# `interp_core.testing.conformance.BackendConformance`.
#
# This tutorial writes a complete adapter for a toy "framework": small sequential networks
# written in NumPy, with hand-written backward passes. The framework is a stand-in; the
# adapter is real, registered through the same hooks, and it passes the suite. The guide
# [Write an adapter](../adapters.md) is the reference for everything used here.

# %%
import inspect
import pathlib
import sys
import tempfile

import numpy as np
import pytest

import interp_core as ic
from interp_core.backend import (
    ACTIVATION_PATCH,
    GRADIENTS,
    LINEAR_WEIGHTS,
    BackendRegistration,
    Capture,
    LayerCapture,
    LayerOutput,
    LayerProbe,
    TargetSpec,
    default_layer,
    target_scores,
)
from interp_core.backend.layers import unknown_layer_error
from interp_core.testing import reference as ref
from interp_core.testing.conformance import BackendConformance

# %% [markdown]
# ## The "framework": sequential NumPy networks
#
# Each layer has a name, a `forward(x)` and a `backward(x, grad_out)` that returns the
# gradient with respect to its input (a vector-Jacobian product). Images are channels last,
# `(N, H, W, C)`. Four layer types are enough for the conformance suite's reference models:
# a 3 x 3 convolution followed by ReLU, global average pooling, flattening, and a dense layer
# over the last axis (on a feature map that is a 1 x 1 convolution).

# %%
class ConvReLU:
    """3x3 valid convolution, channels last, then ReLU. kernel (3, 3, C_in, C_out)."""

    def __init__(self, name, kernel, bias):
        self.name, self.kernel, self.bias = name, kernel, bias

    def forward(self, x):
        return np.maximum(ref.conv_valid(x, self.kernel, self.bias), 0.0)

    def backward(self, x, grad_out):
        pre = ref.conv_valid(x, self.kernel, self.bias)
        return ref.conv_valid_input_gradient(grad_out * (pre > 0), self.kernel)


class GlobalAvgPool:
    def __init__(self, name):
        self.name = name

    def forward(self, x):
        return x.mean(axis=(1, 2))

    def backward(self, x, grad_out):
        h, w = x.shape[1:3]
        return np.broadcast_to(grad_out[:, None, None, :] / (h * w), x.shape).copy()


class Flatten:
    def __init__(self, name):
        self.name = name

    def forward(self, x):
        return x.reshape(len(x), -1)

    def backward(self, x, grad_out):
        return grad_out.reshape(x.shape)


class Dense:
    """``x @ weight.T + bias`` over the last axis; weight (outputs, inputs)."""

    def __init__(self, name, weight, bias):
        self.name, self.weight, self.bias = name, weight, bias

    def forward(self, x):
        return x @ self.weight.T + self.bias

    def backward(self, x, grad_out):
        return grad_out @ self.weight


class Sequential:
    """The model: layers applied in order. ``model(x)`` is the output."""

    def __init__(self, *layers):
        self.layers = list(layers)

    def __call__(self, x):
        for layer in self.layers:
            x = layer.forward(x)
        return x


# %% [markdown]
# ## The backend class
#
# The contract is `interp_core.backend.Backend`. The members that matter most:
#
# - `capture(model, x, layers, target, *, gradients)`: activations of `layers` and the
#   gradient of the **sum** of the per-sample target scores with respect to them (never the
#   batch mean, so each sample gets its own gradient), in the canonical channels-last layout,
#   as float32 NumPy, with the scores and the classes explained;
# - `predict(model, x, target, *, batch_size)`: scores only, batched;
# - `layer_names`, `to_numpy`, `from_numpy`;
# - `layer_outputs(model, x)`: one dry run reporting each layer's output shape (a
#   `LayerProbe`); the core picks the default layer (`layer=None`) from it, checking with one
#   top-1 `capture` which layers reach the score;
# - optional capabilities: `linear_weights` (CAM), `patched_scores` (Ablation-CAM),
#   `input_gradients` (filter patterns).
#
# Targets arrive resolved as a `TargetSpec`. The adapter never interprets them: it gives the
# model output to `target_scores(output, spec, ops)` with a small table of tensor operations
# (`NumpyOps` here; an adapter writes the same six functions for its framework), so every
# adapter means the same thing by a `ClassTarget`, `BinaryTarget`, `SegmentationTarget`,
# `SimilarityTarget` or `OutputTarget`. A real framework then differentiates those scores with
# its autograd; our toy has none, so it takes the closed-form gradient of the scores with
# respect to the output from the suite's own NumPy reference (`ref.score_gradient`) and
# back-propagates it through the layers by hand.

# %%
class ToyNumpyBackend:
    name = "toynumpy"
    capabilities = frozenset({GRADIENTS, LINEAR_WEIGHTS, ACTIVATION_PATCH})
    input_layout = "channels_last"

    # -- layers -------------------------------------------------------------------------
    def layer_names(self, model):
        return [layer.name for layer in model.layers]

    def _index(self, model, name):
        names = self.layer_names(model)
        if name not in names:
            raise unknown_layer_error(str(name), names, "interp layers")
        return names.index(name)

    def layer_outputs(self, model, inputs):
        """One dry run on the first sample: every layer's output shape, for the core's
        choice of the default layer (the last spatial map whose gradient reaches the score)."""
        x = np.asarray(inputs, np.float32)[:1]
        spatial, seen = x.shape[1:-1], []
        for layer in model.layers:
            x = layer.forward(x)
            seen.append(LayerOutput(layer.name, x.shape, type(layer).__name__))
        return LayerProbe(seen, spatial, batch=1, native_channels_first=False)

    # -- forward and backward -----------------------------------------------------------
    def _forward(self, model, x):
        """The input of every layer, and the model output."""
        inputs = []
        for layer in model.layers:
            inputs.append(x)
            x = layer.forward(x)
        return inputs, x

    def capture(self, model, inputs, layers, target: TargetSpec, *, gradients=True,
                output=None, native_layout=False):
        x = np.asarray(inputs, np.float32)
        wanted = sorted({self._index(model, name) for name in layers})
        layer_inputs, out = self._forward(model, x)
        scores, top1 = target_scores(out, target, ref.NUMPY_OPS)
        acts = {i: (layer_inputs[i + 1] if i + 1 < len(layer_inputs) else out) for i in wanted}
        grads = {}
        if gradients and wanted:
            grad = ref.score_gradient(out, target, top1)  # d(sum of scores)/d(output)
            for i in range(len(model.layers) - 1, wanted[0], -1):
                grad = model.layers[i].backward(layer_inputs[i], grad)  # now d/d(input of i)
                if i - 1 in acts:
                    grads[i - 1] = grad
        captured = {
            model.layers[i].name: LayerCapture(
                model.layers[i].name, acts[i].astype(np.float32),
                grads[i].astype(np.float32) if i in grads else None)
            for i in wanted
        }
        return Capture(layers=captured, scores=np.asarray(scores, np.float32),
                       targets=target.resolved_indices(top1), input_spatial=x.shape[1:3])

    def predict(self, model, inputs, target: TargetSpec, *, batch_size=32, output=None):
        x = np.asarray(inputs, np.float32)
        parts = [target_scores(model(x[i : i + batch_size]),
                               target.take(slice(i, i + batch_size)), ref.NUMPY_OPS)[0]
                 for i in range(0, len(x), batch_size)]
        return np.concatenate(parts).astype(np.float32) if parts else np.zeros(0, np.float32)

    # -- optional capabilities ----------------------------------------------------------
    def linear_weights(self, model, fc=None):
        dense = [layer for layer in model.layers if isinstance(layer, Dense)]
        if fc is not None:
            dense = [model.layers[self._index(model, fc)]]
        if not dense or not isinstance(dense[-1], Dense):
            raise ValueError(f"layer {fc!r} is not a dense layer with an (outputs, inputs) "
                             f"weight; dense layers: {[d.name for d in dense]}")
        return dense[-1].weight.astype(np.float32)

    def patched_scores(self, model, inputs, layer, channel_masks, target, *, batch_size=32,
                       output=None):
        """Scores with ``layer``'s output multiplied channel-wise by each mask: (M, N)."""
        index = self._index(model, layer)
        x = np.asarray(inputs, np.float32)
        for lay in model.layers[: index + 1]:
            x = lay.forward(x)
        masks = np.asarray(channel_masks, np.float32)
        if masks.ndim != 2 or masks.shape[1] != x.shape[-1]:
            raise ValueError(f"channel_masks must be (M, {x.shape[-1]}) for layer {layer!r} "
                             f"with {x.shape[-1]} channels, got {masks.shape}")
        rows = []
        for mask in masks:
            h = x * mask
            for lay in model.layers[index + 1 :]:
                h = lay.forward(h)
            rows.append(target_scores(h, target, ref.NUMPY_OPS)[0])
        return np.asarray(rows, np.float32).reshape(len(masks), len(x))

    # -- conversions --------------------------------------------------------------------
    def to_numpy(self, x):
        return np.asarray(x)

    def from_numpy(self, x, model):
        return np.asarray(x, np.float32)


# %% [markdown]
# ## Registering it
#
# A distribution registers a *plugin module* under the entry point group
# `interp_core.backends` (see the guide); the module's hook returns a `BackendRegistration`
# whose `factory` is a string such as `"interp_toynumpy.backend:ToyNumpyBackend"`, imported
# only when a model of that framework is first used. In a notebook, `ic.register_backend` does
# the same in-process. `claim` tells the registry which models are ours (a real plugin names
# its framework's top-level modules in `frameworks=` instead, checked without importing them).

# %%
ic.register_backend(
    BackendRegistration(name="toynumpy", factory=ToyNumpyBackend,
                        install_hint="pip install interp-toynumpy"),
    claim=lambda model: isinstance(model, Sequential),
)
print(ic.backends())

# %% [markdown]
# Now every method works on our models. A model with the reference weights, on the
# reference inputs:

# %%
w = ref.reference_weights(variant="gap")
net = Sequential(ConvReLU("features", w.conv_kernel, w.conv_bias), GlobalAvgPool("gap"),
                 Dense("fc", w.fc_weight, w.fc_bias))
x = ref.reference_inputs(4)
print("backend:", ic.get_backend(net).name, "| default layer:",
      default_layer(ic.get_backend(net), net, x))
for method in ("gradcam", "hirescam", "scorecam", "ablationcam", "cam"):
    maps = ic.explain(net, x, method=method, layer="features", targets=[0, 3, 1, 4])
    print(f"{method:12s} maps {maps.shape}, first row of sample 0: {maps[0, 0, :5].round(3)}")

# %% [markdown]
# ## The conformance suite
#
# To test an adapter, subclass `BackendConformance` and give it three fixtures: the backend,
# a builder of the reference models in your framework from NumPy weights, and a conversion of
# NumPy channels-last input to your framework's input. The builder gets
# `ReferenceWeights` and a variant: `"gap"` (convolution, global average pooling, dense),
# `"flatten"` (convolution, flatten, dense: a gradient that varies over space and channels)
# and `"segmentation"` (convolution, then a 1 x 1 convolution per pixel). Sizes come from the
# weights: the suite also builds single-logit models for binary targets.

# %%
def reference_model(weights: ref.ReferenceWeights, variant: str) -> Sequential:
    features = ConvReLU(ref.LAYER, weights.conv_kernel, weights.conv_bias)
    fc = Dense(ref.FC, weights.fc_weight, weights.fc_bias)
    if variant == "gap":
        return Sequential(features, GlobalAvgPool("gap"), fc)
    if variant == "flatten":
        return Sequential(features, Flatten("flatten"), fc)
    return Sequential(features, fc)  # "segmentation": dense over channels = 1x1 convolution


class TestToyNumpy(BackendConformance):
    @pytest.fixture
    def backend(self):
        return "toynumpy"

    @pytest.fixture
    def reference_model(self):
        return reference_model

    @pytest.fixture
    def to_input(self):
        return lambda images: images  # our framework takes NumPy (N, H, W, 3) as it is


# %% [markdown]
# pytest collects tests from files, so we write a two-line test module that imports the class
# from this notebook's namespace, and run pytest on it in this process. (In a package, the
# class lives in `tests/test_toynumpy.py` and `pytest` finds it by itself.)

# %%
folder = pathlib.Path(tempfile.mkdtemp())
(folder / "test_toynumpy.py").write_text(
    "import __main__\nTestToyNumpy = __main__.TestToyNumpy\n")
sys.modules["__main__"].TestToyNumpy = TestToyNumpy
code = pytest.main([str(folder), "-q", "-p", "no:cacheprovider", "--no-header", "-rs",
                    "-W", "ignore::pytest.PytestAssertRewriteWarning"])
print("pytest exit code:", int(code))
assert code == 0

# %% [markdown]
# The skipped tests name what they need: optional capabilities such as `input_gradients`
# (filter patterns) and those of the input-attribution methods, and the optional hooks
# `model_state` (a snapshot of everything the adapter must leave unchanged: the model-hygiene
# tests), `stateful_model` and `structured_output_model`.
# Each is a fixture to add to the subclass; `interp_torch.testing`, `interp_tensorflow.testing`
# and `interp_jax.testing` show them for real frameworks.
#
# ## The suite catches real bugs
#
# What makes the suite worth passing is that wrong gradients fail it. A classic Keras example
# bug is to average the gradient over the batch instead of taking the gradient of the sum of
# per-sample scores; another is to average the gradient over space before returning it. Both
# still give plausible-looking maps. Subclass the backend with the first bug and run one test:

# %%
class BatchMeanBackend(ToyNumpyBackend):
    name = "toynumpy-batchmean"

    def capture(self, *args, **kwargs):
        cap = super().capture(*args, **kwargs)
        for layer in cap.layers.values():
            if layer.gradients is not None:
                layer.gradients[:] = layer.gradients.mean(axis=0, keepdims=True)
        return cap


class TestBatchMean(TestToyNumpy):
    @pytest.fixture
    def backend(self):
        return BatchMeanBackend()  # a Backend instance works as well as a registered name


sys.modules["__main__"].TestBatchMean = TestBatchMean
mutant = folder / "mutant"  # a new module name: pytest keeps the first one imported
mutant.mkdir()
(mutant / "test_batchmean.py").write_text(
    "import __main__\nTestBatchMean = __main__.TestBatchMean\n")
code = pytest.main([str(mutant), "-q", "-p", "no:cacheprovider", "--no-header", "-x",
                    "--tb=line", "-k", "batch_independence",
                    "-W", "ignore::pytest.PytestAssertRewriteWarning"])
print("pytest exit code:", int(code), "(1: the bug was caught)")
assert code == 1

# %% [markdown]
# ## From notebook to package
#
# 1. Put `ToyNumpyBackend` in `interp_toynumpy/backend.py` (the module that may import the
#    framework), and a light `interp_toynumpy/plugin.py` that never imports it:

# %%
print(inspect.cleandoc('''
    from interp_core.backend import BackendRegistration, hookimpl

    @hookimpl
    def interp_core_register_backends():
        return [BackendRegistration(
            name="toynumpy",
            factory="interp_toynumpy.backend:ToyNumpyBackend",
            frameworks=("toynumpy",),          # models whose type comes from this package
            install_hint="pip install interp-toynumpy",
        )]
'''))

# %% [markdown]
# 2. Register the plugin in `pyproject.toml`:
#
# ```toml
# [project.entry-points."interp_core.backends"]
# toynumpy = "interp_toynumpy.plugin"
# ```
#
# 3. Ship `reference_model` in `interp_toynumpy/testing.py` and the `TestToyNumpy` class in
#    your tests. After `pip install interp-toynumpy`, `interp backends --verbose` lists it with
#    its distribution, version and capabilities, and `ic.GradCAM(model)` finds it from the
#    model's type.
