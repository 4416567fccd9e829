"""The public API as users call it, checked by ``mypy --strict`` in ``make test``; never run.

Every name in ``interp_core.__all__`` is used here the way the README and the docs use it, and
``assert_type`` pins what each call returns, so a public signature that loses its types (an
unannotated parameter, a return that becomes ``Any``) fails the type check. Not collected by
pytest (no ``test_`` prefix); the calls sit in functions that nothing calls.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, assert_type

import numpy as np

import interp_core as ic
from interp_core.backend import LayerOutput, LayerProbe, TargetSpec, resolve_targets
from interp_core.methods.postprocess import TokenGrid

_METHOD_CLASSES: tuple[type[ic.CAMMethod], ...] = (
    ic.CAM, ic.AblationCAM, ic.EigenCAM, ic.EigenGradCAM, ic.GradCAM, ic.GradCAMElementWise,
    ic.GradCAMPlusPlus, ic.HiResCAM, ic.LayerCAM, ic.ScoreCAM, ic.XGradCAM, ic.FEM, ic.ShapleyCAM,
    ic.FinerCAM, ic.SegEigenCAM, ic.RefineCAM,
)
_CHANNEL_WEIGHT: tuple[type[ic.ChannelWeightCAM], ...] = (
    ic.GradCAM, ic.GradCAMPlusPlus, ic.ShapleyCAM, ic.XGradCAM,
)


def quickstart(model: Any, x: Any, vit: Any, image: np.ndarray) -> None:
    """The README's quickstart."""
    cam = ic.GradCAM(model, layer="layer4")
    assert_type(cam, ic.GradCAM)
    maps = cam(x, targets=[3, 7])
    assert_type(maps, np.ndarray)
    exp = cam.explain(x, targets=None)
    assert_type(exp, ic.Explanation)
    assert_type(exp.maps, np.ndarray)
    assert_type(exp.raw, dict[str, np.ndarray])
    assert_type(exp.scores, np.ndarray)
    assert_type(exp.targets, np.ndarray)
    assert_type(exp.layers, list[str])
    assert_type(exp.method, str)
    assert_type(exp.backend, str)
    assert_type(exp.weights, dict[str, np.ndarray])
    assert_type(ic.overlay(image, maps[0]), np.ndarray)
    assert_type(ic.overlay(image, maps[0], alpha=0.4, colormap="viridis"), np.ndarray)
    assert_type(ic.save_png("cat.png", ic.overlay(image, maps[0])), str)
    assert_type(ic.save_png(Path("cat.png"), image), str)

    assert_type(ic.explain(model, x, method="gradcam++", layer="layer4"), np.ndarray)
    assert_type(ic.explain(model, x, "scorecam", "layer4", 3, batch_size=8), np.ndarray)
    assert_type(ic.methods(), list[str])
    assert_type(ic.backends(), list[str])
    vit_cam = ic.GradCAM(vit, "blocks.11.norm1", reshape=ic.tokens_to_grid(prefix=1))
    assert_type(vit_cam(x), np.ndarray)
    assert_type(ic.tokens_to_grid(prefix=1, height=14, width=14), TokenGrid)
    assert_type(ic.tokens_to_grid()(np.zeros((1, 197, 8), np.float32)), np.ndarray)
    assert_type(ic.__version__, str)


def methods_and_options(model: Any, x: Any, fc: Any) -> None:
    """Every method class, with the options the docs show."""
    for cls in _METHOD_CLASSES:
        method = cls(model, "layer4", backend="torch", relu=False, normalize=False)
        assert_type(method(x, 3), np.ndarray)
        assert_type(method.explain(x, [0, 1]), ic.Explanation)
    for weighted in _CHANNEL_WEIGHT:
        assert_type(weighted(model)(x), np.ndarray)
    ic.GradCAM(model, ["layer3", "layer4"], fuse="max", upsample=False, aug_smooth=True)
    ic.EigenCAM(model, eigen_smooth=True, output=0)
    ic.CAM(model, "layer4", fc=fc)
    ic.ScoreCAM(model, "layer4", batch_size=8, top_k=32, fast_scoring=False)
    ic.AblationCAM(model, "layer4", batch_size=16, ratio_channels_to_ablate=0.5)
    ic.LayerCAM(model, "layer2", relu=True)
    ic.GradCAMElementWise(model, "layer4", normalize=True)
    ic.EigenGradCAM(model, "layer4")
    ic.FEM(model, "layer4", k=2.0)
    ic.FinerCAM(model, "layer4", alpha=0.5, comparisons=3, base="gradcam++")
    ic.FinerCAM(model, "layer4", comparisons=(1, 2), base=ic.HiResCAM)
    ic.SegEigenCAM(model, "layer4")
    ic.RefineCAM(model, ["layer2", "layer3", "layer4"], base=ic.GradCAM, fuse="product")


def targets(model: Any, x: Any, mask: np.ndarray, embedding: np.ndarray) -> None:
    """Target objects in place of class indices."""
    cam = ic.GradCAM(model, "layer4")
    cam(x, ic.ClassTarget(3))
    cam(x, [ic.ClassTarget(1), ic.ClassTarget(2)])
    cam(x, ic.BinaryTarget(positive=False))
    cam(x, ic.SegmentationTarget(category=1, mask=mask))
    cam(x, ic.SimilarityTarget(embedding))
    cam(x, ic.DetectionTarget(label=2, box=(0, 0, 10, 10), iou_threshold=0.3))
    cam(x, ic.OutputTarget(lambda out: out[:, 0]))
    cam(x, ic.ContrastTarget(main=3, comparisons=[5, 7], alpha=0.5))
    cam(x, [ic.ContrastTarget(ranks=(1, 2)), ic.ContrastTarget(main=1)])
    assert_type(ic.ContrastTarget().main, int | None)
    assert_type(ic.ClassTarget(3).index, int)
    assert_type(ic.BinaryTarget().positive, bool)
    assert_type(ic.DetectionTarget().label, int | None)


def detectors(yolo: Any, detr: Any, x: Any, raw: Any) -> None:
    """docs/detection.md: raw detector heads read by ic.detection."""
    box = [10.0, 12.0, 40.0, 60.0]
    maps = ic.GradCAM(yolo, "model.15", output=ic.detection.ultralytics_output)(
        x, ic.DetectionTarget(label=0, box=box))
    assert_type(maps, np.ndarray)
    output = functools.partial(ic.detection.detr_output, image_size=(96, 96))
    ic.GradCAM(detr, "model.backbone.model.encoder.stages.3", output=output)(x)
    dets = ic.detection.ultralytics_output(raw, num_classes=80, min_score=0.25)
    assert_type(dets, list[ic.detection.UltralyticsDetections])
    assert_type(dets[0]["boxes"], np.ndarray)
    assert_type(ic.detection.detr_output(raw, image_size=96)[0].scores, np.ndarray)


def jax_split(x: Any) -> None:
    """Two callables as one model."""

    def features(v: Any) -> Any:
        return v

    def head(a: Any) -> Any:
        return a.mean(axis=(1, 2))

    split = ic.Split(features, head)
    assert_type(split(x), Any)
    assert_type(ic.GradCAM(split)(x), np.ndarray)


def features(model: Any, x: Any) -> None:
    """Feature maps, filter patterns, grids."""
    maps = ic.feature_maps(model, x, "layer1")
    assert_type(maps, np.ndarray)
    assert_type(ic.feature_maps(model, x, "layer1", backend="torch", output=0), np.ndarray)
    assert_type(ic.feature_grid(maps[0]), np.ndarray)
    assert_type(
        ic.feature_grid(maps[0], 4, None, colormap="viridis", labels=True, top=16, scale=2),
        np.ndarray,
    )
    patterns = ic.filter_patterns(model, "layer3", channels=range(16), size=(64, 64))
    assert_type(patterns, np.ndarray)
    ic.filter_patterns(model, "layer3", 0, steps=64, decorrelate=True, seed=1, lr=0.05)
    ic.filter_patterns(model, "layer3", [1, 2], input_mean=(0.5,), input_std=(0.2,))
    assert_type(ic.normalize_minmax(maps), np.ndarray)
    assert_type(ic.normalize_minmax(maps, spatial_ndim=2), np.ndarray)
    assert_type(ic.resize_bilinear(maps, (224, 224)), np.ndarray)


def audit(model: Any, source: str | os.PathLike[str]) -> None:
    """A dataset audit."""
    result = ic.audit(model, source, "audit-out", method="gradcam", size=224,
                      mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), engine="local")
    assert_type(result, ic.AuditResult)
    assert_type(result.out, Path)
    assert_type(result.report, Path | None)
    assert_type(result.images, int)
    assert_type(result.seconds, float)
    assert_type(result.summary, dict[str, Any])
    assert_type(result.layers, tuple[str, ...])
    ic.audit("demo:torch", Path("images"), Path("out"), engine="ray", workers=2, resume=True)


class _MyBackend:
    """A minimal adapter, as docs/adapters.md writes one: it must satisfy ``ic.Backend``."""

    name = "mine"
    capabilities: frozenset[str] = frozenset({"gradients"})

    def layer_names(self, model: Any) -> list[str]:
        return []

    def layer_outputs(self, model: Any, inputs: Any) -> LayerProbe:
        return LayerProbe((LayerOutput("features", (1, 4, 4, 2), "Conv"),), (4, 4), 1,
                          native_channels_first=False)

    def capture(
        self, model: Any, inputs: Any, layers: Sequence[Any], target: TargetSpec, *,
        gradients: bool = True, output: Any = None, native_layout: bool = False,
    ) -> ic.Capture:
        acts = np.zeros((1, 4, 4, 2), np.float32)
        layer = ic.LayerCapture("features", acts, gradients=acts if gradients else None)
        return ic.Capture({"features": layer}, np.zeros(1, np.float32),
                          np.zeros(1, np.int64), (4, 4))

    def predict(
        self, model: Any, inputs: Any, target: TargetSpec, *, batch_size: int = 32,
        output: Any = None,
    ) -> np.ndarray:
        return np.zeros(1, np.float32)

    def to_numpy(self, x: Any) -> np.ndarray:
        return np.asarray(x)

    def from_numpy(self, x: np.ndarray, model: Any) -> Any:
        return x


@ic.hookimpl
def interp_core_register_backends() -> list[ic.BackendRegistration]:
    """A plugin module's hook, registering the backend above."""
    return [ic.BackendRegistration("mine", _MyBackend, frameworks=("mylib",))]


def adapters(model: Any) -> None:
    """Registering and finding backends."""
    backend: ic.Backend = _MyBackend()
    assert_type(backend.capture(model, None, ["features"], resolve_targets(None, 1)),
                ic.Capture)
    registration = ic.BackendRegistration(
        "mine", "mylib_adapter.backend:MyBackend", frameworks=("mylib",),
        install_hint="pip install mylib-adapter",
    )
    ic.register_backend(registration)
    ic.register_backend(registration, claim=lambda m: hasattr(m, "mylib"))
    assert_type(ic.get_backend("mine"), ic.Backend)
    assert_type(ic.get_backend(model), ic.Backend)
    assert_type(ic.get_backend(model).name, str)
    ic.reset_registry()
