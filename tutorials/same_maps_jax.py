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
# # The same maps in JAX / Flax NNX
#
# interp-core computes every method once, in NumPy; an adapter only hands it activations and
# gradients. So a model with the same weights gives the same maps in PyTorch, TensorFlow/Keras
# and JAX, up to float32 rounding. This tutorial shows it on the bundled demo model, built in
# Flax NNX, and checks it against the PyTorch and Keras builds of the same weights. Then it
# explains a model given as two plain JAX functions with `ic.Split`.

# %%
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from IPython.display import Markdown
from PIL import Image

import interp_core as ic
from interp_core.backend.layout import to_backend_layout
from interp_core.datasets import CLASSES, make_shapes
from interp_core.datasets.demo import demo_model
from interp_core.methods import method_class

print("jax", jax.__version__, "| devices:", jax.devices())
model = demo_model("jax")  # a Flax NNX module holding the bundled weights
print("an nnx.Module:", isinstance(model, nnx.Module),
      "| layers:", ic.get_backend(model).layer_names(model))

# %% [markdown]
# ## One Grad-CAM, in JAX
#
# The input is the model's own: channels last, `(N, 64, 64, 3)`, a NumPy array or a
# `jax.Array`. Layers of an NNX module are named by attribute path (`"block3"`, or
# `"blocks.2"` for a list). The adapter compiles the pass with `jax.jit` once per model, layer
# and input shape, so the second call is much faster than the first.

# %%
data = make_shapes(16, seed=11)
x_jax = jnp.asarray(data.images)
cam = ic.GradCAM(model, "block3")
for attempt in ("first call (traces and compiles)", "second call (compiled)"):
    start = time.perf_counter()
    maps_jax = cam(x_jax)
    print(f"{attempt}: {1000 * (time.perf_counter() - start):.0f} ms")
print(maps_jax.shape, maps_jax.dtype, float(maps_jax.min()), float(maps_jax.max()))

# %% [markdown]
# ## The same maps in PyTorch and Keras
#
# `demo_model(backend)` builds the same network from the same weights in each framework;
# `to_backend_layout` turns the channels-last images into each framework's layout (torch:
# `(N, 3, H, W)`). We explain the same images with every gradient method and CAM on all three
# and compare the maps.

# %%
METHODS = ["cam", "gradcam", "gradcam++", "xgradcam", "hirescam", "gradcam-elementwise",
           "layercam", "eigencam", "eigengradcam"]
frameworks = [b for b in ("jax", "torch", "tensorflow") if b in ic.backends()]
explanations = {}
for backend in frameworks:
    net = model if backend == "jax" else demo_model(backend)
    x = to_backend_layout(data.images, ic.get_backend(backend))
    explanations[backend] = {
        name: method_class(name)(net, "block3", **({"fc": "fc"} if name == "cam" else {}))
        .explain(x)
        for name in METHODS
    }
print("explained on", frameworks)

# %%
lines = ["| method | " + " | ".join(f"max \\|jax - {b}\\|" for b in frameworks[1:])
         + " | same top-1 class |", "| --- |" + " --- |" * len(frameworks)]
worst = 0.0
for name in METHODS:
    ref = explanations["jax"][name]
    diffs = [float(np.abs(ref.maps - explanations[b][name].maps).max()) for b in frameworks[1:]]
    same = all((ref.targets == explanations[b][name].targets).all() for b in frameworks[1:])
    worst = max([worst, *diffs])
    lines.append(f"| {name} | " + " | ".join(f"{d:.1e}" for d in diffs) + f" | {same} |")
Markdown("\n".join(lines))

# %%
print(f"largest difference over {len(METHODS)} methods x {len(data.images)} images x 64 x 64 "
      f"pixels: {worst:.1e} (maps are in [0, 1])")
assert worst < 1e-4, worst

# %% [markdown]
# The differences are float32 rounding: the convolutions sum in a different order in each
# framework. The target scores agree just as closely:

# %%
for backend in frameworks[1:]:
    diff = np.abs(explanations["jax"]["gradcam"].scores
                  - explanations[backend]["gradcam"].scores).max()
    print(f"max |score jax - score {backend}| = {diff:.1e}")

# %% [markdown]
# Side by side for four images, Grad-CAM in each framework:

# %%
tiles, labels = [], []
for i in range(4):
    for backend in frameworks:
        tiles.append(ic.overlay(data.images[i], explanations[backend]["gradcam"].maps[i]))
        labels.append(f"{backend}: {CLASSES[explanations[backend]['gradcam'].targets[i]]}")
Image.fromarray(ic.feature_grid(np.stack(tiles), ncols=len(frameworks) * 2, scale=2,
                                labels=labels))

# %% [markdown]
# ## Any two JAX functions: `ic.Split`
#
# A JAX model need not be an NNX module. Give the part up to the layer to explain and the part
# after it as two functions, `model(x) = head(features(x))`, and every method works on the
# output of `features`. Here the two halves are written by hand from the NNX module's pieces,
# as one would for an Equinox model or a plain function with a parameter pytree:

# %%
def features(x):
    h = model.pool1(model.block1(x))
    h = model.pool2(model.block2(h))
    return model.block3(h)


def head(activations):
    return model.fc(activations.mean(axis=(1, 2)))


split = ic.Split(features, head)
maps_split = ic.GradCAM(split)(x_jax)
print("backend:", ic.get_backend(split).name,
      "| max |Split - NNX module| =", float(np.abs(maps_split - maps_jax).max()))

# %% [markdown]
# ## Your own NNX module
#
# Nothing here is specific to the demo model. A module of your own is explained the same way;
# its layers are found by attribute path, and `layer=None` picks the last layer with a spatial
# output by one dry run. A small untrained example (random weights, so the map itself means
# nothing):

# %%
class TinyNet(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.stem = nnx.Conv(3, 8, (3, 3), rngs=rngs)
        self.body = nnx.Conv(8, 16, (3, 3), strides=2, rngs=rngs)
        self.out = nnx.Linear(16, 3, rngs=rngs)

    def __call__(self, x):
        h = nnx.relu(self.body(nnx.relu(self.stem(x))))
        return self.out(h.mean(axis=(1, 2)))


tiny = TinyNet(nnx.Rngs(0))
exp = ic.GradCAM(tiny).explain(x_jax[:2])
print("layer chosen:", exp.layers, "| maps:", exp.maps.shape, "| classes:", exp.targets)

# %% [markdown]
# The model is never changed: the adapter splits the module into its structure and its arrays
# (`nnx.split`), runs a fresh copy in eval mode inside the compiled function, and discards
# whatever the copy mutates (batch statistics, RNG counters).
# Next: [vision transformers and feature visualisation](vit_and_features.md).
