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
# # Vision transformers and feature visualisation
#
# Two things that are not a plain convolutional layer:
#
# 1. **Token layers.** A vision transformer (ViT) turns an image into a sequence of patch
#    tokens plus a class token; its layers output `(N, tokens, channels)`, not
#    `(N, C, H, W)`. CAM methods need a spatial grid, so the patch tokens are put back on
#    their grid with `ic.tokens_to_grid(prefix=1)` (one prefix token: the class token).
# 2. **Feature visualisation.** What a layer *sees* (`ic.feature_maps`, its activations for an
#    image) and what its filters *like* (`ic.filter_patterns`, images that maximise a channel
#    found by gradient ascent), tiled into pictures with `ic.feature_grid`.
#
# We write a small ViT in PyTorch, train it for a minute on the bundled shapes data, and
# explain it; then we look inside the bundled CNN.

# %%
import time

import numpy as np
import torch
from PIL import Image
from torch import nn

import interp_core as ic
from interp_core import metrics
from interp_core.datasets import CLASSES, make_shapes
from interp_core.datasets.demo import demo_model

_ = torch.manual_seed(0)

# %% [markdown]
# ## A small vision transformer
#
# A ViT trained from scratch needs far more data and time than a tutorial has, so this one is
# a *hybrid* ViT, as in the original paper (Dosovitskiy et al., 2021), where a convolutional
# stem makes the patches: the first two blocks of the bundled demo CNN, frozen, turn the
# 64 x 64 image into a 16 x 16 feature map; a 2 x 2 patch embedding makes an 8 x 8 grid of 64
# tokens; a class token goes first. Three pre-norm blocks of attention and MLP follow, then
# the class token's vector is classified. The block layout (`norm1`, `attn`, `norm2`, `mlp`)
# is timm's and torchvision's.

# %%
class Block(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x):
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class TinyViT(nn.Module):
    def __init__(self, stem, classes=5, dim=64, depth=3, heads=4, grid=8):
        super().__init__()
        self.stem = stem  # (N, 3, 64, 64) -> (N, 32, 16, 16)
        self.patch_embed = nn.Conv2d(32, dim, 2, stride=2)  # -> (N, dim, 8, 8)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(0.02 * torch.randn(1, 1 + grid * grid, dim))
        self.blocks = nn.Sequential(*[Block(dim, heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        tokens = self.patch_embed(self.stem(x)).flatten(2).transpose(1, 2)  # (N, 64, dim)
        cls = self.cls_token.expand(len(x), -1, -1)
        tokens = torch.cat([cls, tokens], dim=1) + self.pos_embed  # (N, 65, dim)
        return self.head(self.norm(self.blocks(tokens))[:, 0])


trained = demo_model("torch")  # its first two blocks become the stem
stem = nn.Sequential(trained.block1, trained.pool1, trained.block2, trained.pool2)
stem.requires_grad_(False)
vit = TinyViT(stem)
trainable = sum(p.numel() for p in vit.parameters() if p.requires_grad)
print(f"{trainable:,} trainable parameters (the stem's are frozen)")

# %% [markdown]
# ## Training it (well under a minute on two CPU cores)

# %%
train = make_shapes(1500, seed=1000)
x_train = torch.from_numpy(train.channels_first())
y_train = torch.from_numpy(train.labels)
test = make_shapes(200, seed=7)
x_test = torch.from_numpy(test.channels_first())

optimizer = torch.optim.AdamW([p for p in vit.parameters() if p.requires_grad], lr=2e-3,
                              weight_decay=0.05)
epochs, batch = 3, 64
schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=2e-3,
                                               total_steps=epochs * -(-len(x_train) // batch))
start = time.perf_counter()
for epoch in range(epochs):
    vit.train()
    for i in torch.randperm(len(x_train)).split(batch):
        loss = nn.functional.cross_entropy(vit(x_train[i]), y_train[i])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    vit.eval()
    with torch.no_grad():
        accuracy = (vit(x_test).argmax(1).numpy() == test.labels).mean()
    print(f"epoch {epoch + 1}: loss {loss.item():.3f}, held-out accuracy {accuracy:.3f}")
print(f"trained in {time.perf_counter() - start:.0f} s")

# %% [markdown]
# ## Grad-CAM on a token layer
#
# Which layer? The class token reads the patch tokens only through attention. After the last
# block's attention nothing flows from the patch tokens to the class token any more, so the
# gradient of the class score with respect to the *output* of the last block is zero on every
# patch token. The usual choice (pytorch-grad-cam's, too) is the input of the last attention:
# the last block's first norm, `blocks.2.norm1`. Its output is `(N, 65, 64)`;
# `tokens_to_grid(prefix=1)` drops the class token and reshapes the 64 patch tokens to
# `(N, 8, 8, 64)`, which the methods treat like a convolutional layer's output.

# %%
x = x_test[:8]
reshape = ic.tokens_to_grid(prefix=1)
exp = ic.GradCAM(vit, "blocks.2.norm1", reshape=reshape).explain(x)
print("maps:", exp.maps.shape, "| raw map at the layer:", exp.raw["blocks.2.norm1"].shape)
print("predicted:", [CLASSES[k] for k in exp.targets])
print("true:     ", [CLASSES[k] for k in test.labels[:8]])

# %% [markdown]
# With `layer=None` the library makes the same choice by itself: it runs the model once, finds
# the layers whose token count fits the input's grid, strips the class token, and picks the
# last block's first norm.

# %%
auto = ic.GradCAM(vit).explain(x)
print("layer=None chose:", auto.layers,
      "| max difference from the explicit choice:", float(np.abs(auto.maps - exp.maps).max()))

# %% [markdown]
# The maps of the three blocks' first norms, for six images (the first column is the image):

# %%
layers = ["blocks.0.norm1", "blocks.1.norm1", "blocks.2.norm1"]
tiles, labels = [], []
for i in range(6):
    tiles.append((test.images[i] * 255).astype(np.uint8))
    labels.append(CLASSES[test.labels[i]])
    for layer in layers:
        m = ic.GradCAM(vit, layer, reshape=reshape)(x[i : i + 1])[0]
        tiles.append(ic.overlay(test.images[i], m))
        labels.append(layer.replace(".norm1", ""))
Image.fromarray(ic.feature_grid(np.stack(tiles), ncols=8, scale=2, labels=labels))

# %% [markdown]
# An 8 x 8 grid is coarse: each map is upsampled bilinearly from 8 x 8 to 64 x 64. How well
# do the maps localise? The pointing game and the share of the map inside the object, over
# the 200 held-out images, for the ViT and for the bundled CNN (a 16 x 16 layer):

# %%
vit_maps = ic.GradCAM(vit, "blocks.2.norm1", reshape=reshape)(x_test)
cnn = demo_model("torch").eval()
cnn_maps = ic.GradCAM(cnn, "block3")(x_test)
energy = {}
for name, maps in (("tiny ViT, blocks.2.norm1", vit_maps), ("demo CNN, block3", cnn_maps)):
    hits = metrics.pointing_game(maps, masks=test.masks).mean()
    energy[name] = metrics.energy_pointing_game(maps, masks=test.masks).mean()
    print(f"{name:26s} pointing game {hits:.3f}   energy in the object {energy[name]:.3f}")
area = test.masks.mean()
print(f"a uniform map would put {area:.3f} of its energy on the objects (their mean area)")

# %% [markdown]
# Both models classify these images almost perfectly, yet their maps differ in kind. The
# CNN's last block still sees the image locally (each position of block3 covers a small
# patch), so its evidence sits on the object. In the ViT, every attention block mixes every
# token with every other; by the last block the class is known to the background tokens too,
# and the gradient can find its evidence there (in the pictures above, the last block's maps
# often light up the background around the object). A map that does not point at the object
# is not a broken map: it says where *this* model's evidence is, and comparing the blocks
# shows where the mixing happens. Metrics such as these make the difference measurable
# rather than a matter of taste ([Metrics](../reference/metrics.md)).
#
# Other token layouts: `tokens_to_grid(prefix=2)` for DeiT (class and distillation tokens),
# `prefix=1 + registers` for models with register tokens, `height=`/`width=` for non-square
# grids. A layer that outputs `(N, H, W, C)` (Swin) or `(N, C, T)` needs your own `reshape`
# callable: any function from the layer's output (as NumPy) to `(N, *grid, C)`.
#
# ## What a layer sees: feature maps
#
# `ic.feature_maps(model, x, layer)` runs one forward pass (no gradients; the model is left as
# it was) and returns the layer's output as `(N, C, *spatial)` NumPy, channels first on every
# framework. `ic.feature_grid` tiles one sample's maps into a picture: here the 16 channels of
# the CNN's first block, and the 16 most active channels of its last block (`top=16`,
# labelled with their index), for a ring.

# %%
ring = int(np.flatnonzero(test.labels == CLASSES.index("ring"))[0])
sample = x_test[ring : ring + 1]
block1 = ic.feature_maps(cnn, sample, "block1")
block3 = ic.feature_maps(cnn, sample, "block3")
print("block1:", block1.shape, "| block3:", block3.shape)
Image.fromarray((test.images[ring] * 255).astype(np.uint8)).resize((128, 128))

# %%
Image.fromarray(ic.feature_grid(block1[0], ncols=8, colormap="viridis", scale=2))

# %%
Image.fromarray(ic.feature_grid(block3[0], ncols=8, colormap="viridis", top=16, labels=True,
                                scale=4))

# %% [markdown]
# Token layers work the same way with `reshape=`: the ViT's last block, as an 8 x 8 grid per
# channel.

# %%
tokens = ic.feature_maps(vit, sample, "blocks.2.norm1", reshape=reshape)
print("ViT blocks.2.norm1 as a grid:", tokens.shape)
Image.fromarray(ic.feature_grid(tokens[0], ncols=8, colormap="viridis", top=16, scale=8))

# %% [markdown]
# ## What its filters like: filter patterns
#
# `ic.filter_patterns(model, layer, channels, size)` starts from grey noise and climbs the
# gradient of each channel's mean activation with respect to the image, with the usual
# regularisers (jitter, blur, decay), all in NumPy: the backend only supplies input gradients,
# so the same seed gives the same patterns on every framework. All channels run as one batch.

# %%
start = time.perf_counter()
patterns = ic.filter_patterns(cnn, "block3", channels=range(16), size=(64, 64), steps=128)
print(patterns.shape, f"in {time.perf_counter() - start:.1f} s")
Image.fromarray(ic.feature_grid(patterns, ncols=8, labels=True, scale=2))

# %% [markdown]
# Most channels of this small network respond to oriented stripes of some period. The warning
# names the channels whose gradient was exactly zero at the grey starting image (a ReLU that is
# off everywhere there); the jitter and blur can still move them later, or not at all.

# %% [markdown]
# `decorrelate=True` optimises a Fourier, colour-decorrelated parametrisation (Lucid's)
# instead of the pixels: smoother, more natural patterns. With `layer=None` the objective is
# the model output, so the channels are the classes: images that raise the logit of circle,
# square, triangle, cross and ring as far as possible. Do not expect drawings of the shapes:
# activation maximisation exaggerates whatever raises the score (edges at some angles,
# colour contrasts, textures), everywhere in the image at once.

# %%
classes = ic.filter_patterns(cnn, None, channels=range(len(CLASSES)), size=(64, 64),
                             steps=128, decorrelate=True)
Image.fromarray(ic.feature_grid(classes, ncols=5, labels=list(CLASSES), scale=2))

# %% [markdown]
# More on the options, the input layout and the cross-framework agreement of filter patterns:
# [Feature visualisation](../features.md). Next:
# [writing a third-party adapter](third_party_adapter.md).
