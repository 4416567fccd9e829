"""Small torch models for the file-door tests: a one-channel classifier and a 3-D volume
classifier. Both record their inputs when ``INTERP_RECORD_INPUTS`` names a folder, so a test
can compare what each entry point (explain, audit on either engine) fed the model."""

from __future__ import annotations

import os
import uuid

import numpy as np
import torch
from torch import nn


def _record(x: torch.Tensor) -> None:
    folder = os.environ.get("INTERP_RECORD_INPUTS")
    if folder:
        np.save(os.path.join(folder, f"{uuid.uuid4().hex}.npy"), x.detach().cpu().numpy())


class _OneChannelNet(nn.Module):
    """Two convolutions (``features``) and a linear head on one input channel; the
    subclasses choose the convolution's dimensionality."""

    conv: type[nn.Module]
    pool: type[nn.Module]
    width: int
    classes: int

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        w = self.width
        self.features = nn.Sequential(self.conv(1, w, 3, padding=1), nn.ReLU(),
                                      self.conv(w, w, 3, padding=1), nn.ReLU())
        self.head = nn.Sequential(self.pool(1), nn.Flatten(), nn.Linear(w, self.classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _record(x)
        return self.head(self.features(x))


class GrayNet(_OneChannelNet):
    """Takes (N, 1, H, W): a grayscale classifier with 3 classes."""

    conv, pool, width, classes = nn.Conv2d, nn.AdaptiveAvgPool2d, 8, 3


class VolumeNet(_OneChannelNet):
    """Takes (N, 1, D, H, W): a 3-D classifier with 2 classes."""

    conv, pool, width, classes = nn.Conv3d, nn.AdaptiveAvgPool3d, 4, 2


def recorded(folder: str | os.PathLike[str]) -> list[np.ndarray]:
    """The distinct inputs recorded in ``folder``, one sample each, sorted by content (the
    order the batches ran in is the engine's; a method may run the model more than once)."""
    samples = {s.tobytes(): s for f in sorted(os.listdir(folder))
               for s in np.load(os.path.join(folder, f))}
    return sorted(samples.values(), key=lambda s: (s.shape, float(s.sum()), s.tobytes()))
