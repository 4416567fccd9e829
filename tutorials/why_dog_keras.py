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
# # Why did my model say dog? (Keras 3)
#
# The classic way to learn class activation maps: take a network that already knows how to
# see, put a small new head on it for *your* question, train a few epochs, and watch *where*
# the model looks while it learns. The original version of this tutorial used a VGG base and
# cats and dogs; here everything runs in a minute on a CPU and downloads nothing:
#
# - the **data** are the bundled shapes images (`interp_core.datasets.make_shapes`), and the
#   question is binary: *is there a circle?* (our "dog");
# - the **frozen base** is the convolutional part of the bundled demo model, which was trained
#   to tell five shapes apart (`interp_core.datasets.demo`);
# - the **head** is global average pooling and one sigmoid unit;
# - **callbacks** from `interp_tensorflow.training` log Grad-CAM overlays and feature maps
#   after every epoch, to a folder and to Weights & Biases (offline).
#
# At the end we look at what CAM needs from the architecture (global average pooling right
# before the dense layer) and why Grad-CAM does not.

# %%
import json
import os
from pathlib import Path
from urllib.request import urlopen

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("WANDB_MODE", "offline")  # W&B writes locally; nothing leaves the machine

import keras
import numpy as np
from interp_tensorflow.training import CAMLogger, FeatureMapLogger
from PIL import Image

import interp_core as ic
from interp_core import metrics
from interp_core.datasets import make_shapes
from interp_core.datasets.demo import demo_model
from interp_core.logging.sinks import FolderSink, WandbSink
from interp_core.view import BackgroundServer

keras.utils.set_random_seed(0)
print("keras", keras.__version__, "| backends:", ic.backends())

# %% [markdown]
# ## The data: "circle" against everything else
#
# `make_shapes(n, seed=...)` draws images of one object (circle, square, triangle, cross or
# ring) on a cluttered background, with its class, box and mask. Circles are one class in
# five, so we keep all circles and as many other shapes, for a balanced binary task.

# %%
def circle_or_not(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Balanced images (N, 64, 64, 3), labels (N,) 1 = circle, and the object masks."""
    batch = make_shapes(n, seed=seed)
    circle = batch.labels == 0
    keep = np.concatenate([np.flatnonzero(circle), np.flatnonzero(~circle)[: circle.sum()]])
    keep = np.random.default_rng(seed).permutation(keep)
    return batch.images[keep], circle[keep].astype("float32"), batch.masks[keep]


x_train, y_train, _ = circle_or_not(3000, seed=11)
x_val, y_val, masks_val = circle_or_not(600, seed=12)
print("train", x_train.shape, "circles:", int(y_train.sum()),
      "| validation", x_val.shape, "circles:", int(y_val.sum()))
Image.fromarray(ic.feature_grid(x_val[:8], ncols=8, scale=2,
                                labels=["circle" if y else "not" for y in y_val[:8]]))

# %% [markdown]
# ## A transfer-style model: frozen base, global average pooling, one sigmoid unit
#
# The base is the demo model up to its last convolution, `block3` (16 x 16 x 64 features for a
# 64 x 64 image). It is frozen: only the new head learns. Keras names the nested layers
# `"base/block3"`, and that is how we address them below.
#
# The sigmoid unit is a `Dense(1)` whose output is the *logit*; the sigmoid is applied in the
# loss (`from_logits=True`) and when we read off probabilities. This matters for explanations:
# a confident model's probability is 1.0 in float32, where the sigmoid is flat and every
# gradient is exactly zero, so a gradient method would see nothing. Explain logits.

# %%
demo = demo_model("tensorflow")  # the bundled weights, no download
image = keras.Input((64, 64, 3), name="image")
hidden = image
for name in ("block1", "pool1", "block2", "pool2", "block3"):
    hidden = demo.get_layer(name)(hidden)  # the trained layers, reused with their weights
base = keras.Model(image, hidden, name="base")
base.trainable = False

inputs = keras.Input((64, 64, 3), name="image")
features = base(inputs)
pooled = keras.layers.GlobalAveragePooling2D(name="gap")(features)
outputs = keras.layers.Dense(1, name="circle")(pooled)  # the logit of "circle"
model = keras.Model(inputs, outputs, name="circle_detector")
LOSS = keras.losses.BinaryCrossentropy(from_logits=True)
ACCURACY = keras.metrics.BinaryAccuracy(threshold=0.0)  # logit > 0 means probability > 0.5
model.compile(optimizer=keras.optimizers.Adam(3e-3), loss=LOSS, metrics=[ACCURACY])
for layer in model.layers[1:]:
    print(f"{layer.name:7s} {type(layer).__name__:24s} -> {tuple(layer.output.shape)}")
trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
print(f"{model.count_params():,} parameters, {trainable} of them trainable (the head)")

# %% [markdown]
# ## Callbacks that log explanations during training
#
# `CAMLogger` explains a fixed set of samples after every epoch and sends the overlays to a
# *sink*; `FeatureMapLogger` does the same with a grid of one layer's feature maps. A sink is
# anything with `log_images(tag, images, step)` and `close()`: `FolderSink` writes PNGs and an
# `index.html`, `TensorBoardSink` an event file, `WandbSink` a W&B run. To write to a folder
# *and* to W&B, a four-line sink that forwards to both is enough.
#
# The single sigmoid unit is explained with `ic.BinaryTarget()`: the score is the positive
# class (`BinaryTarget(positive=False)` would explain "not a circle").

# %%
class Both:
    """A sink that forwards every call to several sinks."""

    def __init__(self, *sinks):
        self.sinks = sinks

    def log_images(self, tag, images, step):
        for sink in self.sinks:
            sink.log_images(tag, images, step)

    def close(self):
        for sink in self.sinks:
            sink.close()


sink = Both(FolderSink("runs/circle"), WandbSink(project="why-dog", dir="runs"))
show = x_val[:6]
loggers = [
    CAMLogger(show, layer="base/block3", method="gradcam", targets=ic.BinaryTarget(),
              sink=sink),
    FeatureMapLogger(show[:1], layer="base/block3", sink=sink, max_channels=16),
]

# %% [markdown]
# ## Training: the head first, then fine-tuning the last block
#
# Three epochs train the head on the frozen base. Then, as in every transfer-learning recipe,
# the last block is unfrozen and fine-tuned with a small learning rate for three more epochs:
# now the feature maps themselves change, not only the weights that combine them.

# %%
history = model.fit(x_train, y_train, validation_data=(x_val, y_val), epochs=3,
                    batch_size=64, callbacks=loggers, verbose=2)

base.trainable = True
for layer in base.layers:
    layer.trainable = layer.name == "block3"
model.compile(optimizer=keras.optimizers.Adam(3e-4), loss=LOSS, metrics=[ACCURACY])
history_ft = model.fit(x_train, y_train, validation_data=(x_val, y_val), epochs=6,
                       initial_epoch=3, batch_size=64, callbacks=loggers, verbose=2)
sink.close()

# %% [markdown]
# ## How the maps evolve, epoch by epoch
#
# `FolderSink` keeps a `log.json` of what it wrote (and an `index.html` that shows the same
# table in a browser). Each row below is one validation image, each column one epoch: the
# Grad-CAM overlay of "circle". After the first epoch the head is still close to its random
# start and the maps are spread over the clutter; within a couple of epochs they settle on the
# circles. On an image without a circle, the map of "circle" shows what the model finds most
# circle-like there: evidence *for* an answer it does not give.

# %%
log = json.loads(Path("runs/circle/log.json").read_text())
cam_tag = "gradcam/base/block3"
steps = sorted({e["step"] for e in log if e["tag"] == cam_tag})
by_key = {(e["tag"], e["name"], e["step"]): e["path"] for e in log}
tiles, labels = [], []
for name in sorted({e["name"] for e in log if e["tag"] == cam_tag}):
    for step in steps:
        tiles.append(np.asarray(Image.open(Path("runs/circle") / by_key[cam_tag, name, step])))
        labels.append(f"epoch {step + 1}")
print("rows, top to bottom:", ", ".join("circle" if y else "not a circle" for y in y_val[:6]))
Image.fromarray(ic.feature_grid(np.stack(tiles), ncols=len(steps), scale=2, labels=labels))

# %% [markdown]
# And the first 16 feature maps of `block3` for the first image. They stay the same while the
# base is frozen (epochs 1-3) and change once `block3` is fine-tuned (epochs 4-6):

# %%
fm_tag = "features/base/block3"
grids = [np.asarray(Image.open(Path("runs/circle") / by_key[fm_tag, "sample_000", s]))
         for s in steps]
Image.fromarray(ic.feature_grid(np.stack(grids), ncols=3, labels=[f"epoch {s + 1}"
                                                                   for s in steps]))

# %%
changes = [float(np.abs(grids[i + 1].astype(int) - grids[i].astype(int)).mean())
           for i in range(len(grids) - 1)]
print("mean pixel change of the feature-map grid from one epoch to the next:")
for step, change in zip(steps[1:], changes, strict=True):
    print(f"  epoch {step} -> {step + 1}: {change:6.2f}")

# %% [markdown]
# The same images went to W&B: the offline run lives under `runs/wandb/` and can be uploaded
# later with `wandb sync`. Each tag is plotted against its own step metric (`interp/step`), so
# the images line up with the epochs even when other loggers advance W&B's global step.

# %%
runs = sorted(Path("runs/wandb").glob("offline-run-*"))
print(len(runs), "offline W&B run:", runs[-1].name if runs else None)
images = sorted(runs[-1].glob("files/media/images/**/*.png"))
print(len(images), "images, e.g.", images[0].relative_to(runs[-1]) if images else None)

# %% [markdown]
# ## Is the model right for the right reasons?
#
# A quick check on the whole validation set: where is the hottest pixel of each Grad-CAM map?
# The *pointing game* counts a hit when it lies on the object (its mask). We look at the
# circles, the class the map explains.

# %%
cam = ic.GradCAM(model, "base/block3")
circles = y_val == 1
maps = cam(x_val[circles], targets=ic.BinaryTarget())
hits = metrics.pointing_game(maps, masks=masks_val[circles])
accuracy = float(((model.predict(x_val, verbose=0)[:, 0] > 0) == circles).mean())
print(f"validation accuracy {accuracy:.3f}; pointing game on {circles.sum()} circles: "
      f"{hits.mean():.3f}")

# %% [markdown]
# ## What CAM needs, and what Grad-CAM does not
#
# CAM (Zhou et al., 2016) reads the class's weights of the dense layer that follows global
# average pooling: `map = sum_c w_c A_c`. Our head is exactly that, so CAM works, and on such a
# model it equals Grad-CAM (the gradient of the logit with respect to `A_c` is `w_c / (H W)`
# at every position: a positive factor away from CAM's weights, which the min-max
# normalisation removes).

# %%
x_show = x_val[:6]
cam_maps = ic.CAM(model, "base/block3", fc="circle")(x_show, targets=ic.BinaryTarget())
gradcam_maps = ic.GradCAM(model, "base/block3")(x_show, targets=ic.BinaryTarget())
print(f"largest |CAM - Grad-CAM| over 6 maps: {np.abs(cam_maps - gradcam_maps).max():.1e}")
overlays = [ic.overlay(x, m) for x, m in zip(x_show, cam_maps, strict=True)]
overlays += [ic.overlay(x, m) for x, m in zip(x_show, gradcam_maps, strict=True)]
Image.fromarray(ic.feature_grid(np.stack(overlays), ncols=6, scale=2,
                                labels=["CAM"] * 6 + ["Grad-CAM"] * 6))

# %% [markdown]
# Replace global average pooling by `Flatten` and the dense layer's weights no longer have one
# weight per channel: there is one per (position, channel), so there is no CAM. The library
# says so, naming what is wrong:

# %%
flat_head = keras.layers.Dense(1, name="circle")(
    keras.layers.Flatten(name="flatten")(base(inputs)))
flat_model = keras.Model(inputs, flat_head, name="circle_flatten")
try:
    ic.CAM(flat_model, "base/block3", fc="circle")(x_show, targets=ic.BinaryTarget())
except ValueError as error:
    print("ValueError:", error)

# %% [markdown]
# Grad-CAM only needs the gradient of the score with respect to the layer's activations, which
# every differentiable head has, so it runs on the flatten head too. It takes each channel's
# weight as the *spatial mean* of that gradient, though, while a flatten head has a different
# weight at every position. HiResCAM (Draelos & Carin, 2020) multiplies gradient and
# activation position by position instead. Train the flatten head for two epochs on the same
# frozen base and compare:

# %%
flat_model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=LOSS,
                   metrics=[keras.metrics.BinaryAccuracy(threshold=0.0)])
flat_model.fit(x_train, y_train, epochs=2, batch_size=64, verbose=0)
flat_accuracy = float(((flat_model.predict(x_val, verbose=0)[:, 0] > 0) == circles).mean())
print(f"flatten head: validation accuracy {flat_accuracy:.3f}")
tiles, labels = [], []
for method in (ic.GradCAM, ic.HiResCAM):
    cam = method(flat_model, "base/block3")
    hits = metrics.pointing_game(cam(x_val[circles], targets=ic.BinaryTarget()),
                                 masks=masks_val[circles])
    print(f"{method.__name__:9s} pointing game on the circles: {hits.mean():.3f}")
    shown = cam(x_show, targets=ic.BinaryTarget())
    tiles += [ic.overlay(x, m) for x, m in zip(x_show, shown, strict=True)]
    labels += [method.__name__] * len(x_show)
Image.fromarray(ic.feature_grid(np.stack(tiles), ncols=6, scale=2, labels=labels))

# %% [markdown]
# Both find the circles; HiResCAM's maps are finer, because they keep the head's weight at
# each position. On this head HiResCAM is also exactly *faithful*: the logit is
# `sum over positions and channels of W * A` plus the bias, and the gradient of the logit is
# `W`, so HiResCAM's raw map (before ReLU and normalisation, `Explanation.raw`) sums to the
# logit minus the bias. Grad-CAM's raw map has no such relation to the score:

# %%
logits = flat_model.predict(x_show, verbose=0)[:, 0]
bias = float(flat_model.get_layer("circle").bias.numpy()[0])
for method in (ic.HiResCAM, ic.GradCAM):
    raw = method(flat_model, "base/block3").explain(x_show, targets=ic.BinaryTarget()).raw
    total = next(iter(raw.values())).sum(axis=(1, 2))
    print(f"{method.__name__:9s} max |sum of raw map - (logit - bias)| = "
          f"{np.abs(total - (logits - bias)).max():.2e}")

# %% [markdown]
# ## What to take away
#
# - On a GAP + dense head, CAM, Grad-CAM and HiResCAM are the same map. Grad-CAM runs on any
#   differentiable head and any layer; on a head that weighs positions differently
#   (flatten + dense) HiResCAM's map adds up to the score, and Grad-CAM's does not.
# - Explain logits, not saturated probabilities.
# - Logging explanations during training costs one explanation pass per logged epoch, and
#   shows *when* the model starts looking at the object, not only *whether* it does.
# - The loggers never change the model: weights, trainable flags and the optimizer are as
#   training left them.

# %% [markdown]
# ## The same log in the browser: `interp view`
#
# The folder the callbacks wrote is also a page to play with. In a terminal:
#
# ```bash
# pip install 'interp-core[view]'
# interp view runs/circle
# ```
#
# opens it on `http://127.0.0.1:PORT/` (this machine only, read-only): for each logged image,
# its Grad-CAM overlay and its `block3` feature maps, an epoch slider and play / pause, the
# experiment tracker's view without an account or a network.
#
# ![interp view runs/circle: overlays and feature maps, epoch by epoch](../images/view_training.png)
#
# Here, without a browser, the server runs for a moment in the background and answers what the
# page would show ([Look at an audit in the browser](../how-to/view.md) has the other views):

# %%
with BackgroundServer(["runs/circle"]) as url, urlopen(url + "api/training") as response:
    training = json.loads(response.read())
print(len(training["samples"]), "samples,", len(training["steps"]), "epochs, tracks:",
      ", ".join(training["tags"]))

# %% [markdown]
# Next: [the Grad-CAM family compared](gradcam_family_torch.md), or
# [the training-logger guide](../how-to/training-loggers.md) for PyTorch and Lightning.
