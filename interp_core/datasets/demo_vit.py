"""The bundled demo vision transformer: a small ViT for the shapes data, the same weights in
every framework, and the architecture that the conformance suite's reference transformer
(:mod:`interp_core.testing.reference_transformer`) instantiates at a tiny size.

Architecture (channels-last shapes for the demo size: ``D=64``, 4 heads of 16, 4 blocks, MLP
128, patches of 8 on 64x64 inputs; layer names are the same in every adapter)::

    input            (N, 64, 64, 3) images in [0, 1]  (torch: (N, 3, 64, 64))
    "patch_embed"    Conv PxP, stride P, no padding, bias, 3 -> D   -> (N, 8, 8, D) -> (N, 64, D)
                     tokens = [cls_token, registers..., patches + pos_embed]   -> (N, T, D)
    "blocks.{i}"     z = z + attn(norm1(z));  z = z + mlp(norm2(z))
       .norm1, .norm2   LayerNorm over D, eps 1e-6, scale and bias
       .attn            multi-head self-attention, H heads of Dh, softmax(q k^T / sqrt(Dh)),
                        query/key/value/out projections with bias (no dropout)
       .mlp             Dense D -> M, GELU (exact, erf), Dense M -> D
    "norm"           LayerNorm, eps 1e-6
    pooling          the class token (``zf[:, 0]``), or, for a model without one, the mean of
                     the patch tokens (``zf[:, prefix:].mean(1)``)
    "head"           Dense D -> classes                             -> logits (N, classes)

Weights (``interp_core/data/demo_vit.npz``), float32, Keras/Flax conventions:

=================================  ====================  =========================================
key                                shape                 note
=================================  ====================  =========================================
``patch_embed/kernel``             ``(P, P, C, D)``      torch: ``permute(3, 2, 0, 1)``
``patch_embed/bias``               ``(D,)``
``cls_token``                      ``(1, 1, D)``         absent: mean pooling, no class token
``registers``                      ``(1, R, D)``         optional register tokens (DINOv2)
``pos_embed``                      ``(1, G, D)``         patch tokens only, row-major grid order
``blocks/{i}/norm1/scale``, ``bias``  ``(D,)``
``blocks/{i}/attn/query/kernel``   ``(D, H, Dh)``        also ``key``, ``value``
``blocks/{i}/attn/query/bias``     ``(H, Dh)``           also ``key``, ``value``
``blocks/{i}/attn/out/kernel``     ``(H, Dh, D)``
``blocks/{i}/attn/out/bias``       ``(D,)``
``blocks/{i}/norm2/scale``, ``bias``  ``(D,)``
``blocks/{i}/mlp/fc1/kernel``      ``(D, M)``            ``fc1/bias`` ``(M,)``
``blocks/{i}/mlp/fc2/kernel``      ``(M, D)``            ``fc2/bias`` ``(D,)``
``norm/scale``, ``norm/bias``      ``(D,)``
``head/kernel``                    ``(D, classes)``      ``head/bias`` ``(classes,)``
=================================  ====================  =========================================

A torch ``nn.MultiheadAttention`` takes ``in_proj_weight = concat([Wq, Wk, Wv])`` with
``Wq = query/kernel.reshape(D, H * Dh).T`` and ``out_proj.weight = out/kernel.reshape(H * Dh,
D).T``; Keras ``MultiHeadAttention`` and Flax ``nnx.MultiHeadAttention`` take the kernels as
they are. The token order is ``[class, registers, patches]``; the patch tokens run row by row.

Each adapter names a ``demo_vit`` builder in its
:class:`~interp_core.backend.BackendRegistration` (``build(weights) -> native model``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from interp_core.datasets.demo import build_bundled, bundled_weights
from interp_core.datasets.shapes import CLASSES

WEIGHTS_FILE = "demo_vit.npz"
IMAGE_SIZE = 64
LN_EPS = 1e-6


@dataclass(frozen=True)
class ViTConfig:
    """The sizes of a ViT of this architecture (the demo: the defaults).

    Attributes
    ----------
    patch : int
        Patch size ``P`` (pixels, square).
    grid : tuple[int, int]
        Patch grid ``(rows, cols)`` of the input the positional embedding is for.
    channels : int
        Input channels ``C``.
    dim, heads, blocks, mlp : int
        ``D``, ``H`` (``Dh = D // H``), the number of blocks, ``M``.
    classes : int
        Outputs of the head.
    class_token : bool
        Whether a class token leads the sequence (pooling reads it); False: mean pooling.
    registers : int
        Register tokens after the class token.
    """

    patch: int = 8
    grid: tuple[int, int] = (8, 8)
    channels: int = 3
    dim: int = 64
    heads: int = 4
    blocks: int = 4
    mlp: int = 128
    classes: int = len(CLASSES)
    class_token: bool = True
    registers: int = 0

    @property
    def head_dim(self) -> int:
        return self.dim // self.heads

    @property
    def prefix(self) -> int:
        """Tokens before the patch tokens (class token and registers)."""
        return int(self.class_token) + self.registers

    @property
    def input_size(self) -> tuple[int, int]:
        return (self.grid[0] * self.patch, self.grid[1] * self.patch)

    @classmethod
    def of(cls, weights: dict[str, np.ndarray]) -> ViTConfig:
        """The sizes that ``weights`` hold (the grid is read back as a square where it is one,
        else as given by ``pos_embed``'s count and the patch kernel: pass the config instead)."""
        kernel = weights["patch_embed/kernel"]
        query = weights["blocks/0/attn/query/kernel"]
        count = int(weights["pos_embed"].shape[1])
        side = math.isqrt(count)
        grid = (side, side) if side * side == count else (1, count)
        return cls(
            patch=int(kernel.shape[0]), grid=grid, channels=int(kernel.shape[2]),
            dim=int(kernel.shape[3]), heads=int(query.shape[1]),
            blocks=sum(1 for k in weights if k.endswith("/norm1/scale")),
            mlp=int(weights["blocks/0/mlp/fc1/kernel"].shape[1]),
            classes=int(weights["head/bias"].shape[0]),
            class_token="cls_token" in weights,
            registers=int(weights["registers"].shape[1]) if "registers" in weights else 0,
        )


def random_vit_weights(config: ViTConfig | None = None, seed: int = 0) -> dict[str, np.ndarray]:
    """Seeded truncated-normal (std 0.02, as timm's ViT) weights of ``config``: the same seed
    gives the same weights on every machine."""
    cfg = config or ViTConfig()
    rng = np.random.default_rng(seed)
    d, h, dh, m = cfg.dim, cfg.heads, cfg.head_dim, cfg.mlp

    def normal(*shape: int, std: float = 0.02) -> np.ndarray:
        return np.clip(rng.normal(0.0, std, shape), -2 * std, 2 * std).astype(np.float32)

    weights = {
        "patch_embed/kernel": normal(cfg.patch, cfg.patch, cfg.channels, d,
                                     std=(1.0 / (cfg.patch * cfg.patch * cfg.channels)) ** 0.5),
        "patch_embed/bias": np.zeros(d, np.float32),
        "pos_embed": normal(1, cfg.grid[0] * cfg.grid[1], d),
    }
    if cfg.class_token:
        weights["cls_token"] = normal(1, 1, d)
    if cfg.registers:
        weights["registers"] = normal(1, cfg.registers, d)
    for i in range(cfg.blocks):
        p = f"blocks/{i}/"
        for norm in ("norm1", "norm2"):
            weights[p + f"{norm}/scale"] = np.ones(d, np.float32)
            weights[p + f"{norm}/bias"] = np.zeros(d, np.float32)
        for proj in ("query", "key", "value"):
            weights[p + f"attn/{proj}/kernel"] = normal(d, h, dh, std=(1.0 / d) ** 0.5)
            weights[p + f"attn/{proj}/bias"] = normal(h, dh)
        weights[p + "attn/out/kernel"] = normal(h, dh, d, std=(1.0 / d) ** 0.5)
        weights[p + "attn/out/bias"] = np.zeros(d, np.float32)
        weights[p + "mlp/fc1/kernel"] = normal(d, m, std=(1.0 / d) ** 0.5)
        weights[p + "mlp/fc1/bias"] = np.zeros(m, np.float32)
        weights[p + "mlp/fc2/kernel"] = normal(m, d, std=(1.0 / m) ** 0.5)
        weights[p + "mlp/fc2/bias"] = np.zeros(d, np.float32)
    weights["norm/scale"] = np.ones(d, np.float32)
    weights["norm/bias"] = np.zeros(d, np.float32)
    weights["head/kernel"] = normal(d, cfg.classes, std=(1.0 / d) ** 0.5)
    weights["head/bias"] = np.zeros(cfg.classes, np.float32)
    return weights


def demo_vit_weights() -> dict[str, np.ndarray]:
    """The bundled trained weights (``interp_core/data/demo_vit.npz``) as float32 arrays."""
    return bundled_weights(WEIGHTS_FILE, "scripts/train_demo_vit.py")


def demo_vit_model(backend: str | None = None,
                   weights: dict[str, np.ndarray] | None = None) -> Any:
    """The demo ViT in ``backend``'s framework (default: the first installed backend that
    builds one), from the bundled weights or ``weights``."""
    return build_bundled("demo_vit", "the demo ViT", backend,
                         demo_vit_weights() if weights is None else weights)
