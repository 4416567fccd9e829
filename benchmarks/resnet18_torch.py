"""A ResNet-18 in plain torch, shaped and named like torchvision's (no torchvision import).

Basic blocks ``[2, 2, 2, 2]``, widths 64..512, module names ``conv1, bn1, relu, maxpool,
layer1..layer4, avgpool, fc`` as in ``torchvision.models.resnet18``, so layer paths such as
``"layer4"`` or ``"layer4.1.conv2"`` mean the same thing, and a torchvision state dict loads into
it. Weights are initialised as torchvision does (Kaiming normal convolutions, unit BatchNorm);
benchmarks use it for shapes and cost, not for accuracy. ``in_channels`` other than 3 gives a
grayscale (1) or multi-band stem. Plain module: importable from any venv that has torch.
"""

from __future__ import annotations

import torch
from resnet50_torch import ResNet
from torch import nn


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with BatchNorm, residual (1x1 projection where the shape changes)."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


def resnet18(num_classes: int = 1000, in_channels: int = 3) -> nn.Module:
    """A ResNet-18 (11.7 M parameters at 1000 classes), randomly initialised, in eval mode."""
    return ResNet((2, 2, 2, 2), num_classes, BasicBlock, in_channels).eval()
