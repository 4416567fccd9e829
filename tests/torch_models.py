"""Small torch models for the tests and benchmarks (no torchvision)."""

from __future__ import annotations

import torch
from interp_torch.testing import ReferenceNet
from torch import nn

__all__ = ["Block", "ReferenceNet", "SmallResNet"]  # ReferenceNet lives in interp_torch.testing


class Block(nn.Module):
    """A residual block with BatchNorm and an in-place ReLU (the torchvision pattern)."""

    def __init__(self, cin: int, cout: int, stride: int = 1, dims: int = 2) -> None:
        super().__init__()
        conv = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[dims]
        norm = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}[dims]
        self.conv1 = conv(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = norm(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = norm(cout)
        self.down = None if stride == 1 and cin == cout else nn.Sequential(
            conv(cin, cout, 1, stride, bias=False), norm(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.down is None else self.down(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class SmallResNet(nn.Module):
    """A ResNet-shaped classifier for 1-D, 2-D or 3-D inputs."""

    def __init__(self, classes: int = 10, dims: int = 2, width: int = 8, cin: int = 3) -> None:
        super().__init__()
        conv = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[dims]
        pool = {1: nn.AdaptiveAvgPool1d, 2: nn.AdaptiveAvgPool2d, 3: nn.AdaptiveAvgPool3d}[dims]
        self.stem = nn.Sequential(conv(cin, width, 3, 1, 1, bias=False), nn.ReLU(inplace=True))
        self.layer1 = Block(width, width, 1, dims)
        self.layer2 = Block(width, 2 * width, 2, dims)
        self.dropout = nn.Dropout(0.5)
        self.avgpool = pool(1)
        self.fc = nn.Linear(2 * width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer2(self.layer1(self.stem(x)))
        return self.fc(self.dropout(self.avgpool(x).flatten(1)))
