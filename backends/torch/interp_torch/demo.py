"""The demo shapes classifier (:mod:`interp_core.datasets.demo`) as a torch module."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class DemoNet(nn.Module):
    """Input ``(N, 3, 64, 64)`` in [0, 1]; logits ``(N, 5)``. Layer names as in the core doc."""

    def __init__(self, classes: int = 5) -> None:
        super().__init__()
        self.block1 = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU())
        self.pool1 = nn.MaxPool2d(2)
        self.block2 = nn.Sequential(nn.Conv2d(16, 32, 3, padding=1), nn.ReLU())
        self.pool2 = nn.MaxPool2d(2)
        self.block3 = nn.Sequential(nn.Conv2d(32, 64, 3, padding=1), nn.ReLU())
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.block1(x))
        x = self.pool2(self.block2(x))
        return self.fc(self.gap(self.block3(x)).flatten(1))

    def export_weights(self) -> dict[str, np.ndarray]:
        """Weights in the channels-last convention of :mod:`interp_core.datasets.demo`."""
        out = {}
        for i in (1, 2, 3):
            conv = getattr(self, f"block{i}")[0]
            out[f"block{i}/kernel"] = conv.weight.detach().permute(2, 3, 1, 0).numpy().copy()
            out[f"block{i}/bias"] = conv.bias.detach().numpy().copy()
        out["fc/kernel"] = self.fc.weight.detach().T.numpy().copy()
        out["fc/bias"] = self.fc.bias.detach().numpy().copy()
        return {k: v.astype(np.float32) for k, v in out.items()}


def build(weights: dict[str, np.ndarray]) -> DemoNet:
    """A :class:`DemoNet` in eval mode holding ``weights``."""
    model = DemoNet(classes=weights["fc/bias"].shape[0])
    with torch.no_grad():
        for i in (1, 2, 3):
            conv = getattr(model, f"block{i}")[0]
            conv.weight.copy_(torch.from_numpy(weights[f"block{i}/kernel"].transpose(3, 2, 0, 1)))
            conv.bias.copy_(torch.from_numpy(weights[f"block{i}/bias"]))
        model.fc.weight.copy_(torch.from_numpy(weights["fc/kernel"].T.copy()))
        model.fc.bias.copy_(torch.from_numpy(weights["fc/bias"]))
    return model.eval()
