"""The demo vision transformer (:mod:`interp_core.datasets.demo_vit`) as a torch module.

Attention is ``nn.MultiheadAttention`` (batch first), the layer that torchvision's
``VisionTransformer`` uses too, so the adapter reads it the same way in both.
"""

from __future__ import annotations

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
        cfg = self.config
        d, h, dh = cfg.dim, cfg.heads, cfg.head_dim

        def arr(t: torch.Tensor) -> np.ndarray:
            return t.detach().cpu().numpy().astype(np.float32).copy()

        out = {
            "patch_embed/kernel": arr(self.patch_embed.weight.permute(2, 3, 1, 0)),
            "patch_embed/bias": arr(self.patch_embed.bias),
            "pos_embed": arr(self.pos_embed),
            "norm/scale": arr(self.norm.weight), "norm/bias": arr(self.norm.bias),
            "head/kernel": arr(self.head.weight.T), "head/bias": arr(self.head.bias),
        }
        if self.cls_token is not None:
            out["cls_token"] = arr(self.cls_token)
        if self.registers is not None:
            out["registers"] = arr(self.registers)
        for i, block in enumerate(self.blocks):
            p = f"blocks/{i}/"
            for norm in ("norm1", "norm2"):
                out[p + f"{norm}/scale"] = arr(getattr(block, norm).weight)
                out[p + f"{norm}/bias"] = arr(getattr(block, norm).bias)
            weight = block.attn.in_proj_weight.reshape(3, d, d)
            bias = block.attn.in_proj_bias.reshape(3, h, dh)
            for j, proj in enumerate(("query", "key", "value")):
                out[p + f"attn/{proj}/kernel"] = arr(weight[j].T.reshape(d, h, dh))
                out[p + f"attn/{proj}/bias"] = arr(bias[j])
            out[p + "attn/out/kernel"] = arr(block.attn.out_proj.weight.T.reshape(h, dh, d))
            out[p + "attn/out/bias"] = arr(block.attn.out_proj.bias)
            out[p + "mlp/fc1/kernel"] = arr(block.mlp[0].weight.T)
            out[p + "mlp/fc1/bias"] = arr(block.mlp[0].bias)
            out[p + "mlp/fc2/kernel"] = arr(block.mlp[2].weight.T)
            out[p + "mlp/fc2/bias"] = arr(block.mlp[2].bias)
        return out


def build(weights: dict[str, np.ndarray], config: ViTConfig | None = None) -> DemoViT:
    """A :class:`DemoViT` in eval mode holding ``weights`` (sizes from ``config``, else read
    from the weights)."""
    cfg = config or ViTConfig.of(weights)
    model = DemoViT(cfg)
    d = cfg.dim

    def put(param: torch.Tensor, value: np.ndarray) -> None:
        param.copy_(torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32)))

    with torch.no_grad():
        put(model.patch_embed.weight, weights["patch_embed/kernel"].transpose(3, 2, 0, 1))
        put(model.patch_embed.bias, weights["patch_embed/bias"])
        put(model.pos_embed, weights["pos_embed"])
        if model.cls_token is not None:
            put(model.cls_token, weights["cls_token"])
        if model.registers is not None:
            put(model.registers, weights["registers"])
        for i, block in enumerate(model.blocks):
            p = f"blocks/{i}/"
            for norm in ("norm1", "norm2"):
                put(getattr(block, norm).weight, weights[p + f"{norm}/scale"])
                put(getattr(block, norm).bias, weights[p + f"{norm}/bias"])
            put(block.attn.in_proj_weight, np.concatenate(
                [weights[p + f"attn/{proj}/kernel"].reshape(d, d).T
                 for proj in ("query", "key", "value")]))
            put(block.attn.in_proj_bias, np.concatenate(
                [weights[p + f"attn/{proj}/bias"].ravel() for proj in ("query", "key", "value")]))
            put(block.attn.out_proj.weight, weights[p + "attn/out/kernel"].reshape(d, d).T)
            put(block.attn.out_proj.bias, weights[p + "attn/out/bias"])
            put(block.mlp[0].weight, weights[p + "mlp/fc1/kernel"].T)
            put(block.mlp[0].bias, weights[p + "mlp/fc1/bias"])
            put(block.mlp[2].weight, weights[p + "mlp/fc2/kernel"].T)
            put(block.mlp[2].bias, weights[p + "mlp/fc2/bias"])
        put(model.norm.weight, weights["norm/scale"])
        put(model.norm.bias, weights["norm/bias"])
        put(model.head.weight, weights["head/kernel"].T)
        put(model.head.bias, weights["head/bias"])
    return model.eval()
