"""Test helpers for the torch adapter: the reference models in torch, and model-state snapshots.

Imported only by tests (it imports torch). A third-party torch-based adapter can run the
conformance suite on these with ``helpers = interp_torch.testing`` in a subclass of
:class:`interp_core.testing.conformance.ConformanceFromModule`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from interp_core.testing import reference as ref


class ReferenceNet(nn.Module):
    """A reference model of :mod:`interp_core.testing.reference` in torch (NCHW input).

    Layers: ``features`` (Conv2d + ReLU), then ``pool`` (``"gap"``) or ``flatten``
    (``"flatten"``), then ``fc`` (``nn.Linear``; a 1x1 ``nn.Conv2d`` for ``"segmentation"``).
    """

    def __init__(self, w: ref.ReferenceWeights | None = None, variant: str = "gap") -> None:
        super().__init__()
        numpy_model = ref.ReferenceModel(w, variant)  # checks the weights fit the variant
        w = numpy_model.weights
        self.variant = variant
        conv = nn.Conv2d(3, ref.CHANNELS, ref.KERNEL)
        conv.weight.data = _tensor(w.conv_kernel.transpose(3, 2, 0, 1))
        conv.bias.data = _tensor(w.conv_bias)
        self.features = nn.Sequential(conv, nn.ReLU())
        if variant == "gap":
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(ref.CHANNELS, w.classes)
            self.fc.weight.data = _tensor(w.fc_weight)
        elif variant == "flatten":
            # torch flattens (c, h, w); the NumPy weights are in (h, w, c) order
            h, wd, c = ref.feature_shape(variant)
            self.flatten = nn.Flatten()
            self.fc = nn.Linear(h * wd * c, w.classes)
            weight = w.fc_weight.reshape(w.classes, h, wd, c).transpose(0, 3, 1, 2)
            self.fc.weight.data = _tensor(weight.reshape(w.classes, -1))
        else:
            self.fc = nn.Conv2d(ref.CHANNELS, w.classes, 1)
            self.fc.weight.data = _tensor(w.fc_weight[:, :, None, None])
        self.fc.bias.data = _tensor(w.fc_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.features(x)
        if self.variant == "gap":
            return self.fc(self.pool(a).flatten(1))
        if self.variant == "flatten":
            return self.fc(self.flatten(a))
        return self.fc(a)


def _tensor(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


def reference_model(weights: ref.ReferenceWeights | None = None, variant: str = "gap"
                    ) -> ReferenceNet:
    """The reference model ``variant`` in torch, from NumPy ``weights``."""
    return ReferenceNet(weights, variant)


def reference_transformer(weights: dict[str, np.ndarray], config: Any = None) -> nn.Module:
    """The reference transformer (:mod:`interp_core.testing.reference_transformer`) in torch:
    the demo ViT (:func:`interp_torch.demo_vit.build`) holding ``weights``; ``config`` a
    :class:`~interp_core.datasets.demo_vit.ViTConfig` (None: read from the weights)."""
    from interp_torch.demo_vit import build

    return build(weights, config)


def _numpy(t: torch.Tensor) -> np.ndarray:
    t = t.detach().cpu()
    return (t.float() if t.is_floating_point() else t).numpy().copy()


def to_input(x: np.ndarray) -> torch.Tensor:
    """NumPy ``(N, H, W, C)`` -> a torch tensor ``(N, C, H, W)``."""
    return torch.from_numpy(np.ascontiguousarray(np.asarray(x).transpose(0, 3, 1, 2)))


class Wrapped(nn.Module):
    """``net`` with a structured output (:func:`interp_core.testing.reference.structured_output`
    of its logits, ``kind`` ``"tuple"`` or ``"dict"``)."""

    def __init__(self, net: nn.Module, kind: str) -> None:
        super().__init__()
        self.net, self.kind = net, kind

    def forward(self, x: torch.Tensor) -> Any:
        return ref.structured_output(self.net(x), self.kind)


#: ``wrap(model, kind) -> (Wrapped(model, kind), "net.features")``: the suite's hook.
structured_output_model = ref.structured_output_hook(Wrapped)


def model_state(model: nn.Module) -> dict[str, Any]:
    """The suite's ``model_state`` snapshot of a torch module: training flags,
    ``requires_grad`` flags, parameters, their ``.grad``, buffers, every hook dictionary and the
    global grad mode."""
    return {
        "training": [(n, m.training) for n, m in model.named_modules()],
        "requires_grad": [(n, p.requires_grad) for n, p in model.named_parameters()],
        "params": {n: _numpy(p) for n, p in model.named_parameters()},
        "grads": {n: None if p.grad is None else _numpy(p.grad)
                  for n, p in model.named_parameters()},
        "buffers": {n: _numpy(b) for n, b in model.named_buffers()},
        "hooks": [(n, len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks),
                   len(getattr(m, "_backward_pre_hooks", {})))
                  for n, m in model.named_modules()],
        "grad_mode": torch.is_grad_enabled(),
    }
