"""Multi-layer maps follow pytorch-grad-cam's order: per layer ReLU and min-max at the layer's
resolution, then resize, then the mean over layers, then a last min-max (DESIGN.md section 3).

The reference below is pytorch-grad-cam's algorithm written out with torch autograd and
``torch.nn.functional.interpolate`` (half-pixel bilinear, as OpenCV's ``INTER_LINEAR``), so the
test needs neither pytorch-grad-cam nor OpenCV.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402
from torch.nn import functional  # noqa: E402

import interp_core as ic  # noqa: E402


class TwoStage(nn.Module):
    """A small ResNet-like stack with a "layer3" (8x8) and a "layer4" (4x4) stage."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.layer3 = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.ReLU())
        self.layer4 = nn.Sequential(nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU())
        self.fc = nn.Linear(32, 6)
        # pytorch-grad-cam divides by (1e-7 + max), an exact min-max by max: they differ by
        # about 1e-7 / max(cam). A scaled head gives CAMs of order 1, as trained models have,
        # instead of the ~1e-3 of a random init, so that 1e-5 compares the order, not the eps.
        with torch.no_grad():
            self.fc.weight.mul_(1000.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer4(self.layer3(self.stem(x)))
        return self.fc(x.mean(dim=(2, 3)))


def _scale(cams: np.ndarray, size: tuple[int, int] | None = None) -> np.ndarray:
    """pytorch-grad-cam's ``scale_cam_image``: min-max with a 1e-7 guard, then resize."""
    out = []
    for img in cams:
        img = img - img.min()
        img = img / (1e-7 + img.max())
        if size is not None:
            t = torch.from_numpy(img.astype(np.float32))[None, None]
            resized = functional.interpolate(t, size=size, mode="bilinear", align_corners=False)
            img = resized[0, 0].numpy()
        out.append(img)
    return np.asarray(out, dtype=np.float32)


def _reference(model: nn.Module, x: torch.Tensor, layers: list[str], targets: list[int],
               method: str) -> np.ndarray:
    store: dict[str, torch.Tensor] = {}
    handles = [dict(model.named_modules())[name].register_forward_hook(
        lambda m, a, out, name=name: store.__setitem__(name, out)) for name in layers]
    try:
        logits = model(x)
    finally:
        for h in handles:
            h.remove()
    score = logits[torch.arange(len(x)), torch.tensor(targets)].sum()
    grads = torch.autograd.grad(score, [store[n] for n in layers])
    per_layer = []
    for name, g in zip(layers, grads, strict=True):
        a, g = store[name].detach().numpy(), g.numpy()
        if method == "gradcam":
            cam = (g.mean(axis=(2, 3))[:, :, None, None] * a).sum(axis=1)
        else:  # layercam
            cam = (np.maximum(g, 0) * a).sum(axis=1)
        per_layer.append(_scale(np.maximum(cam, 0), tuple(x.shape[2:]))[:, None])
    fused = np.maximum(np.concatenate(per_layer, axis=1), 0).mean(axis=1)
    return _scale(fused)


@pytest.mark.parametrize("method", ["gradcam", "layercam"])
def test_multi_layer_maps_equal_pytorch_grad_cam_order(method):
    model = TwoStage().eval()
    x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    targets = [0, 4, 2]
    want = _reference(model, x, ["layer3", "layer4"], targets, method)
    cls = {"gradcam": ic.GradCAM, "layercam": ic.LayerCAM}[method]
    got = cls(model, ["layer3", "layer4"])(x, targets)
    assert got.shape == (3, 16, 16)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_resize_before_minmax_would_differ():
    """The old order (resize, then min-max) gives a measurably different multi-layer map, so
    the test above can tell the two apart."""
    model = TwoStage().eval()
    x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    exp = ic.GradCAM(model, ["layer3", "layer4"]).explain(x, [0, 4, 2])
    old = [ic.normalize_minmax(ic.resize_bilinear(np.maximum(r, 0), (16, 16)))
           for r in exp.raw.values()]
    old_map = ic.normalize_minmax(np.mean(old, axis=0))
    assert np.abs(old_map - exp.maps).max() > 1e-3


def test_single_layer_map_is_unchanged_by_the_order():
    model = TwoStage().eval()
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    exp = ic.GradCAM(model, "layer4").explain(x, [1, 3])
    old = ic.normalize_minmax(ic.resize_bilinear(np.maximum(exp.raw["layer4"], 0), (16, 16)))
    np.testing.assert_allclose(exp.maps, old, atol=1e-6)
