"""Guided backpropagation in torch: every ReLU run inside :func:`guided_relus` passes back
only positive gradients where its input was positive (Springenberg et al. 2015)."""

from __future__ import annotations

from typing import Any

import torch
from torch.overrides import TorchFunctionMode


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
