"""The demo vision transformer (:mod:`interp_core.datasets.demo_vit`) as a torch module.

Attention is ``nn.MultiheadAttention`` (batch first), the layer that torchvision's
``VisionTransformer`` uses too, so the adapter reads it the same way in both.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from interp_core.datasets.demo_vit import LN_EPS, ViTConfig


class Block(nn.Module):
    """``z + attn(norm1(z))``, then ``+ mlp(norm2(z))``: input and output ``(N, T, D)``."""

    def __init__(self, cfg: ViTConfig) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.dim, eps=LN_EPS)
        self.attn = nn.MultiheadAttention(cfg.dim, cfg.heads, batch_first=True)
        self.norm2 = nn.LayerNorm(cfg.dim, eps=LN_EPS)
        self.mlp = nn.Sequential(nn.Linear(cfg.dim, cfg.mlp), nn.GELU(),
                                 nn.Linear(cfg.mlp, cfg.dim))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.norm1(z)
        z = z + self.attn(h, h, h, need_weights=False)[0]
        return z + self.mlp(self.norm2(z))


class DemoViT(nn.Module):
    """Input ``(N, C, H, W)`` in [0, 1]; logits ``(N, classes)``. Names as in the core doc."""

    def __init__(self, config: ViTConfig | None = None) -> None:
        super().__init__()
        cfg = self.config = config or ViTConfig()
        self.patch_embed = nn.Conv2d(cfg.channels, cfg.dim, cfg.patch, stride=cfg.patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.dim)) if cfg.class_token else None
        self.registers = (nn.Parameter(torch.zeros(1, cfg.registers, cfg.dim))
                          if cfg.registers else None)
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.grid[0] * cfg.grid[1], cfg.dim))
        self.blocks = nn.ModuleList([Block(cfg) for _ in range(cfg.blocks)])
        self.norm = nn.LayerNorm(cfg.dim, eps=LN_EPS)
        self.head = nn.Linear(cfg.dim, cfg.classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        patches = self.patch_embed(x).flatten(2).transpose(1, 2) + self.pos_embed
        prefix = [t.expand(len(x), -1, -1) for t in (self.cls_token, self.registers)
                  if t is not None]
        z = torch.cat([*prefix, patches], dim=1)
        for block in self.blocks:
            z = block(z)
        z = self.norm(z)
        pooled = z[:, 0] if self.cls_token is not None else z[:, self.config.prefix:].mean(1)
        return self.head(pooled)

    def export_weights(self) -> dict[str, np.ndarray]:
        """Weights in the convention of :mod:`interp_core.datasets.demo_vit`."""
        state = {k: v.detach().cpu().numpy().astype(np.float32)
                 for k, v in self.state_dict().items()}
        return {key: np.ascontiguousarray(to_weights(state[name]))
                for key, name, _, to_weights in _layout(self.config)}


#: A weight's key in the core's format, its ``state_dict`` name here, and the conversions
#: (core -> torch, torch -> core).
Entry = tuple[str, str, Callable[[np.ndarray], np.ndarray], Callable[[np.ndarray], np.ndarray]]


def _same(a: np.ndarray) -> np.ndarray:
    return a


def _transposed(a: np.ndarray) -> np.ndarray:
    return a.T


def _layout(cfg: ViTConfig) -> list[Entry]:
    """Every weight of a :class:`DemoViT` of ``cfg`` but the attention's input projection
    (three core keys in one torch tensor: :func:`_in_projection`)."""
    d, h, dh = cfg.dim, cfg.heads, cfg.head_dim
    entries: list[Entry] = [
        ("patch_embed/kernel", "patch_embed.weight", lambda a: a.transpose(3, 2, 0, 1),
         lambda a: a.transpose(2, 3, 1, 0)),
        ("patch_embed/bias", "patch_embed.bias", _same, _same),
        ("pos_embed", "pos_embed", _same, _same),
        ("norm/scale", "norm.weight", _same, _same),
        ("norm/bias", "norm.bias", _same, _same),
        ("head/kernel", "head.weight", _transposed, _transposed),
        ("head/bias", "head.bias", _same, _same),
    ]
    entries += [(key, key, _same, _same) for key, present in
                (("cls_token", cfg.class_token), ("registers", cfg.registers > 0)) if present]
    for i in range(cfg.blocks):
        core, here = f"blocks/{i}/", f"blocks.{i}."
        entries += [
            (core + "norm1/scale", here + "norm1.weight", _same, _same),
            (core + "norm1/bias", here + "norm1.bias", _same, _same),
            (core + "norm2/scale", here + "norm2.weight", _same, _same),
            (core + "norm2/bias", here + "norm2.bias", _same, _same),
            (core + "attn/out/kernel", here + "attn.out_proj.weight",
             lambda a: a.reshape(d, d).T, lambda a: a.T.reshape(h, dh, d)),
            (core + "attn/out/bias", here + "attn.out_proj.bias", _same, _same),
            (core + "mlp/fc1/kernel", here + "mlp.0.weight", _transposed, _transposed),
            (core + "mlp/fc1/bias", here + "mlp.0.bias", _same, _same),
            (core + "mlp/fc2/kernel", here + "mlp.2.weight", _transposed, _transposed),
            (core + "mlp/fc2/bias", here + "mlp.2.bias", _same, _same),
        ]
        for j, proj in enumerate(("query", "key", "value")):
            entries += [
                (core + f"attn/{proj}/kernel", here + "attn.in_proj_weight",
                 lambda a: a.reshape(d, d).T,
                 lambda a, j=j: a[j * d : (j + 1) * d].T.reshape(d, h, dh)),
                (core + f"attn/{proj}/bias", here + "attn.in_proj_bias",
                 lambda a: a.ravel(), lambda a, j=j: a[j * d : (j + 1) * d].reshape(h, dh)),
            ]
    return entries


def build(weights: dict[str, np.ndarray], config: ViTConfig | None = None) -> DemoViT:
    """A :class:`DemoViT` in eval mode holding ``weights`` (sizes from ``config``, else read
    from the weights)."""
    cfg = config or ViTConfig.of(weights)
    model = DemoViT(cfg)
    parts: dict[str, list[np.ndarray]] = {}
    for key, name, to_torch, _ in _layout(cfg):  # query, key, value: one tensor, in order
        parts.setdefault(name, []).append(to_torch(np.asarray(weights[key], np.float32)))
    state = {name: torch.from_numpy(np.ascontiguousarray(np.concatenate(arrays)
                                                         if len(arrays) > 1 else arrays[0]))
             for name, arrays in parts.items()}
    model.load_state_dict(state)
    return model.eval()
