"""The tensor operations the core's target scoring and adapter policy need, in torch, and the
conversions between torch tensors and the core's NumPy arrays."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.overrides import TorchFunctionMode


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


OPS = TorchOps()


def to_numpy(t: torch.Tensor, channels_last: bool) -> np.ndarray:
    """A tensor as float32 NumPy on the CPU; ``(N, C, *S)`` -> ``(N, *S, C)`` when asked."""
    t = t.detach()
    if channels_last and t.ndim >= 3:
        t = t.movedim(1, -1)
    return t.to(device="cpu", dtype=torch.float32).contiguous().numpy()


# -- guided backpropagation ------------------------------------------------------------------
class GuidedReLU(torch.autograd.Function):
    """``relu(x)`` whose backward pass is guided: ``g * (x > 0) * (g > 0)``."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(x)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (out,) = ctx.saved_tensors
        return grad * ((out > 0) & (grad > 0)).to(grad.dtype)


class GuidedReLUInplace(GuidedReLU):
    """``relu_(x)`` (in place, as ``nn.ReLU(inplace=True)``) with :class:`GuidedReLU`'s
    backward pass."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        torch.relu_(x)
        ctx.mark_dirty(x)
        ctx.save_for_backward(x)
        return x


_RELU = frozenset({torch.relu, torch.nn.functional.relu, torch.Tensor.relu})
_RELU_INPLACE = frozenset({torch.relu_, torch.nn.functional.relu_, torch.Tensor.relu_})


class GuidedReLUMode(TorchFunctionMode):
    """Inside this mode every ReLU (``nn.ReLU``, ``F.relu``, ``torch.relu``, ``x.relu()`` and
    their in-place forms) runs as :class:`GuidedReLU`.

    A torch function mode is thread-local and lives only for the ``with`` block, so neither the
    model nor other threads are touched (Captum instead registers backward hooks on the
    model's ``nn.ReLU`` modules, which misses ``F.relu``).
    """

    def __torch_function__(self, func: Any, types: Any, args: Any = (),
                           kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if func in _RELU or func in _RELU_INPLACE:
            inplace = func in _RELU_INPLACE or bool(
                kwargs.get("inplace", args[1] if len(args) > 1 else False))
            x = args[0]
            if inplace and not (x.requires_grad and x.is_leaf):
                return GuidedReLUInplace.apply(x)
            return GuidedReLU.apply(x)
        return func(*args, **kwargs)


def guided_relus() -> GuidedReLUMode:
    """A context manager: every ReLU run inside it has the guided backward pass."""
    return GuidedReLUMode()


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
