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
# # The Grad-CAM family, compared (PyTorch)
#
# Eleven CAM methods answer the same question, "where is the evidence for this class?", with
# different evidence: gradients (Grad-CAM and its variants), the dense layer's weights (CAM),
# principal components (Eigen-CAM), or forward passes with channels masked or removed
# (Score-CAM, Ablation-CAM). This tutorial runs them side by side on one model and then asks
# which map is most *faithful* to the model and which *localises* the object best, with four
# metrics from `interp_core.metrics`:
#
# | metric | question | better |
# | --- | --- | --- |
# | deletion AUC | remove the most salient pixels first: how fast does the score fall? | lower |
# | insertion AUC | insert them first into a blurred image: how fast does it rise? | higher |
# | ROAD | remove pixels, most or least relevant first, and impute them | higher |
# | pointing game | is the map's hottest pixel on the object? | higher |
#
# The model is the bundled demo classifier of five shapes (`interp_core.datasets.demo`), built
# in PyTorch from weights shipped with the package; the images come with their object masks.

# %%
import time

import numpy as np
import torch
from IPython.display import Markdown
from PIL import Image

import interp_core as ic
from interp_core import metrics
from interp_core.datasets import CLASSES, make_shapes
from interp_core.datasets.demo import demo_model
from interp_core.methods import method_class

torch.manual_seed(0)
model = demo_model("torch").eval()
print(model)

# %% [markdown]
# ## The data and the model's answers
#
# `make_shapes` gives channels-last images in [0, 1]; torch wants `(N, 3, H, W)`, which
# `channels_first()` returns. Seed 7 is held out from the demo model's training data.

# %%
data = make_shapes(24, seed=7)
x = torch.from_numpy(data.channels_first())
with torch.no_grad():
    predicted = model(x).argmax(1).numpy()
print(f"accuracy on these {len(x)} images: {(predicted == data.labels).mean():.3f}")
print("first eight:", [CLASSES[k] for k in data.labels[:8]])

# %% [markdown]
# ## Every method, side by side
#
# The layer is `block3`, the last convolution (16 x 16 for a 64 x 64 input). Every method has
# the same constructor and returns `(N, 64, 64)` float32 maps in [0, 1]; `targets=None`
# explains each image's top-1 class. CAM needs to know the dense layer (`fc="fc"`).
# `method_class(name)` is the class behind a method name (`"gradcam"` is `ic.GradCAM`).

# %%
FAMILY = ["cam", "gradcam", "gradcam++", "xgradcam", "hirescam", "gradcam-elementwise",
          "layercam", "eigencam", "eigengradcam", "scorecam", "ablationcam"]
family = [name for name in FAMILY if name in ic.methods()]
options = {"cam": {"fc": "fc"}}

maps, seconds = {}, {}
for name in family:
    cam = method_class(name)(model, "block3", **options.get(name, {}))  # e.g. ic.GradCAM
    start = time.perf_counter()
    maps[name] = cam(x, targets=None)
    seconds[name] = time.perf_counter() - start
print({name: m.shape for name, m in list(maps.items())[:2]}, "...")

# %%
show = range(6)
tiles, labels = [], []
for i in show:
    tiles.append((data.images[i] * 255).astype(np.uint8))
    labels.append(CLASSES[data.labels[i]])
    for name in family:
        tiles.append(ic.overlay(data.images[i], maps[name][i]))
        labels.append(name)
Image.fromarray(ic.feature_grid(np.stack(tiles), ncols=len(family) + 1, scale=2,
                                labels=labels))

# %% [markdown]
# Some of these maps are not just similar but identical, and the reason is the architecture:
# block3 feeds global average pooling and then the dense layer, so the gradient of a class
# score with respect to block3 is the same at every position (`w_c / (16 * 16)`). Then CAM,
# Grad-CAM, XGrad-CAM and HiResCAM all weigh channel `c` by a positive multiple of `w_c`; and
# because block3 ends in a ReLU (`A >= 0`), element-wise Grad-CAM's `relu(G * A)` equals
# LayerCAM's `relu(G) * A`. On another architecture they part ways (the
# [conformance suite](third_party_adapter.md) checks that they do).

# %%
groups: list[list[str]] = []
for name in family:
    same = next((g for g in groups if np.abs(maps[g[0]] - maps[name]).max() < 1e-5), None)
    if same is None:
        groups.append([name])
    else:
        same.append(name)
for group in groups:
    print(" = ".join(group))

# %% [markdown]
# ## Which map is faithful, and which localises?
#
# The faithfulness metrics re-score perturbed copies of each image with the model, for the
# class the map explains. The papers use class probabilities, so the model output is passed
# through a softmax (`output=`). To keep this page fast, deletion and insertion move 128 pixels
# per step (32 steps), and ROAD, the slowest (its imputation solves a linear system per image,
# percentage and order), removes 20, 50 and 80 % of the pixels of the first 8 images (its
# default is 10, 20, ..., 90 %). A map that finds the object but not what the model uses
# scores well on the pointing game and badly on deletion; a good map does well on both.

# %%
def probabilities(output):
    return output.softmax(-1)


kwargs = {"targets": predicted.tolist(), "output": probabilities, "batch_size": 128}
ROAD_IMAGES = 8
rows = []
for group in groups:  # one row per distinct map
    m = maps[group[0]]
    start = time.perf_counter()
    rows.append({
        "method": " = ".join(group),
        "deletion": metrics.deletion(model, x, m, step=128, **kwargs).mean(),
        "insertion": metrics.insertion(model, x, m, step=128, **kwargs).mean(),
        "road": metrics.road_combined(model, x[:ROAD_IMAGES], m[:ROAD_IMAGES],
                                      targets=predicted[:ROAD_IMAGES].tolist(),
                                      output=probabilities, batch_size=8,
                                      percentages=(20, 50, 80)).mean(),
        "pointing": metrics.pointing_game(m, masks=data.masks).mean(),
        "energy": metrics.energy_pointing_game(m, masks=data.masks).mean(),
        "map_s": seconds[group[0]],
        "metric_s": time.perf_counter() - start,
    })

# %%
def table(rows):
    best = {"deletion": min(r["deletion"] for r in rows),
            "insertion": max(r["insertion"] for r in rows),
            "road": max(r["road"] for r in rows),
            "pointing": max(r["pointing"] for r in rows),
            "energy": max(r["energy"] for r in rows)}

    def cell(row, key):
        text = f"{row[key]:.3f}"
        return f"**{text}**" if np.isclose(row[key], best[key]) else text

    lines = ["| method | deletion ↓ | insertion ↑ | ROAD (8 images) ↑ | pointing game ↑ "
             "| energy in mask ↑ | map time (24 images) |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for row in rows:
        lines.append(f"| {row['method']} | " + " | ".join(
            cell(row, k) for k in ("deletion", "insertion", "road", "pointing", "energy"))
            + f" | {row['map_s'] * 1000:.0f} ms |")
    return Markdown("\n".join(lines))


table(rows)

# %% [markdown]
# Bold marks the best value in each column; the time is that of the first method of the row.
# The winners, computed from the table:

# %%
for key, better, label in (("deletion", min, "deletion (lower is better)"),
                           ("insertion", max, "insertion"), ("road", max, "ROAD"),
                           ("pointing", max, "pointing game"),
                           ("energy", max, "energy in the mask")):
    value = better(r[key] for r in rows)
    winners = [r["method"] for r in rows if np.isclose(r[key], value)]
    print(f"{label:28s} {value:.3f}  {' | '.join(winners)}")

# %% [markdown]
# How to read it:
#
# - **Pointing game and energy in the mask** measure localisation against the ground truth.
#   Class-agnostic Eigen-CAM can localise well on data like this, with one object per image,
#   while saying nothing about the class: localisation is not faithfulness.
# - **Deletion, insertion and ROAD** measure faithfulness: whether the pixels a map calls
#   important are the ones the model needs. They need not agree with localisation, nor with
#   each other: deletion to black creates images unlike any training image, which ROAD's
#   imputation was designed to avoid.
# - **Time**: the gradient methods cost one forward and one backward pass; Score-CAM one
#   forward per channel of the layer (64 here), Ablation-CAM one per channel too (batched);
#   Eigen-CAM a forward pass and an SVD.
#
# No method wins everywhere; on a different model or layer the ranking changes, and these
# numbers from 24 images of one synthetic data set are a way to *compare*, not a verdict.
# [Choose a method](../methods.md) sums up what each costs and when each is faithful.

# %% [markdown]
# ## Deletion and insertion curves
#
# The AUCs above summarise curves: the class probability as pixels are removed (deletion) or
# inserted (insertion), in the order each map gives. Here for Grad-CAM and Eigen-CAM, averaged
# over the images, drawn with NumPy into a small picture.

# %%
def plot(curves, colours, size=(160, 320)):
    """Curves (fractions, mean scores) as a uint8 picture, x from 0 to 1, y from 0 to 1."""
    h, w = size
    picture = np.full((h, w, 3), 255, np.uint8)
    picture[[0, -1], :] = 128
    picture[:, [0, -1]] = 128
    for (fractions, values), colour in zip(curves, colours, strict=True):
        xs = np.linspace(0, 1, 4 * w)
        ys = np.interp(xs, fractions, values)
        cols = np.clip((xs * (w - 1)).round().astype(int), 0, w - 1)
        rows_ = np.clip(((1 - ys) * (h - 1)).round().astype(int), 0, h - 1)
        for dy in (-1, 0, 1):
            picture[np.clip(rows_ + dy, 0, h - 1), cols] = colour
    return picture


pictures, captions = [], []
for kind, curve_fn in (("deletion", metrics.deletion_curve),
                       ("insertion", metrics.insertion_curve)):
    curves = []
    for name in ("gradcam", "eigencam"):
        c = curve_fn(model, x, maps[name], step=128, **kwargs)
        curves.append((c.fractions, c.scores.mean(0)))
    pictures.append(plot(curves, [(220, 40, 40), (40, 90, 220)]))
    captions.append(f"{kind}: red Grad-CAM, blue Eigen-CAM")
Image.fromarray(ic.feature_grid(np.stack(pictures), ncols=2, labels=captions, pad=4))

# %% [markdown]
# ## Raw maps and channel weights
#
# `cam.explain(x)` returns an `ic.Explanation` with more than the maps: the target scores,
# the class explained per image, the raw map per layer (before ReLU, resizing and
# normalisation, at the layer's 16 x 16 resolution), and the channel weights of the methods
# that have them.

# %%
exp = ic.GradCAM(model, "block3").explain(x[:4])
print("targets:", [CLASSES[k] for k in exp.targets], "| scores:", exp.scores.round(2))
print("raw:", {k: v.shape for k, v in exp.raw.items()},
      "| weights:", {k: v.shape for k, v in exp.weights.items()})
print("method:", exp.method, "| backend:", exp.backend, "| layers:", exp.layers)
