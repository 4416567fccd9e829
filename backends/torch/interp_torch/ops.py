"""The tensor operations the core's target scoring and adapter policy need, in torch, and the
conversions between torch tensors and the core's NumPy arrays."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


class TorchOps:
    """The tensor operations of :class:`~interp_core.backend.scoring.TensorOps`, in torch."""

    channel_axis = 1

    @staticmethod
    def const(array: np.ndarray, like: torch.Tensor) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(array))
        if t.is_floating_point():
            return t.to(device=like.device, dtype=like.dtype)
        return t.to(device=like.device, dtype=torch.int64)

    @staticmethod
    def cast_like(value: Any, like: torch.Tensor) -> torch.Tensor:
        value = torch.as_tensor(value, device=like.device)
        return value.to(like.dtype) if value.is_floating_point() else value

    @staticmethod
    def flatten(x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], -1)

    @staticmethod
    def row_sum(x: torch.Tensor) -> torch.Tensor:
        return x.sum(dim=1)

    @staticmethod
    def argmax(x: torch.Tensor) -> torch.Tensor:
        return x.detach().argmax(dim=1)

    @staticmethod
    def pick(x: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        return x.gather(1, indices[:, None])[:, 0]

    @staticmethod
    def sqrt(x: torch.Tensor) -> torch.Tensor:
        return torch.sqrt(x)

    @staticmethod
    def channel_means(x: torch.Tensor, axis: int) -> torch.Tensor:
        moved = x.movedim(axis, -1)
        return moved.reshape(moved.shape[0], -1, moved.shape[-1]).mean(dim=1)

    @staticmethod
    def exp(x: torch.Tensor) -> torch.Tensor:
        return torch.exp(x)

    @staticmethod
    def argsort(x: torch.Tensor) -> torch.Tensor:
        return torch.argsort(x.detach(), dim=1, stable=True)

    @staticmethod
    def take(x: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        return x.gather(1, indices)

    @staticmethod
    def one_hot(indices: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.one_hot(indices, like.shape[1]).to(like.dtype)


OPS = TorchOps()


def to_numpy(t: torch.Tensor, channels_last: bool) -> np.ndarray:
    """A tensor as float32 NumPy on the CPU; ``(N, C, *S)`` -> ``(N, *S, C)`` when asked."""
    t = t.detach()
    if channels_last and t.ndim >= 3:
        t = t.movedim(1, -1)
    return t.to(device="cpu", dtype=torch.float32).contiguous().numpy()


# -- memory format ---------------------------------------------------------------------------
#: Below this batch size the per-call reordering of the weights costs more than channels-last
#: convolutions save (ResNet-50 on CPU: 0.47 s against 0.37 s for one image).
CHANNELS_LAST_MIN_BATCH = 4


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """A 4-D (5-D) floating-point CPU batch of at least :data:`CHANNELS_LAST_MIN_BATCH`
    samples in channels-last memory format, where oneDNN's convolutions run faster (ResNet-50:
    about 0.75 of the time, forward and backward; the values and the shape are unchanged);
    other tensors as given."""
    if x.device.type != "cpu" or not x.is_floating_point() or (
            x.ndim >= 4 and x.shape[0] < CHANNELS_LAST_MIN_BATCH):
        return x
    if x.ndim == 4:
        return x.contiguous(memory_format=torch.channels_last)
    if x.ndim == 5:
        return x.contiguous(memory_format=torch.channels_last_3d)
    return x
