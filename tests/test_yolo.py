"""Ultralytics YOLO as a first-class model (zoo environment): YOLOv8n, YOLO11n and YOLOv8n-seg
built from their YAML configs (random weights, nothing downloaded), explained through
``ic.detection.ultralytics_output``.

- Grad-CAM of one box equals an independent Grad-CAM written here with torch hooks and
  ``autograd.grad`` (the box and score read from the raw head in torch, the match by
  torchvision's ``box_iou``, mean-gradient weights, ReLU, min-max, bilinear resize);
- Eigen-CAM runs with no target and no ``output=`` on the raw head;
- the model is left as it was: training flags, ``requires_grad``, parameters, buffers, hooks,
  and Ultralytics' fused state (no Conv+BatchNorm fused by explaining, Score-CAM's folding
  included), also after an error.

Ultralytics is installed in the zoo venv without its dependencies (the Makefile's
``ULTRALYTICS``); ``YOLO_OFFLINE`` and a temporary ``YOLO_CONFIG_DIR`` keep it from reaching
the network or writing its settings under ``$HOME``.
"""

from __future__ import annotations

import os
import tempfile

import numpy as np
import pytest
import zoo_env

import interp_core as ic

_SETTINGS = tempfile.TemporaryDirectory(prefix="interp-yolo-settings-")
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_CONFIG_DIR", _SETTINGS.name)

torch = zoo_env.require("torch", module_level=True)
ultralytics = zoo_env.require("ultralytics", module_level=True)
box_iou = zoo_env.require("torchvision.ops", module_level=True).box_iou
from interp_torch.testing import model_state  # noqa: E402

F = torch.nn.functional
SIZE = 160
CONFIGS = ["yolov8n.yaml", "yolo11n.yaml", "yolov8n-seg.yaml"]


def build(config: str):
    """``YOLO(config).model``: a DetectionModel / SegmentationModel with random weights, in
    training mode as Ultralytics builds it."""
    torch.manual_seed(0)
    return ultralytics.YOLO(config, verbose=False).model


def neck(net, level: int = 0) -> str:
    """A neck block the head reads: level 0 is the stride-8 one (``model.15`` for YOLOv8n,
    ``model.16`` for YOLO11n), which every scale's boxes depend on (the coarser levels are
    computed from it); level -1 the stride-32 one (``model.21``, ``model.22``), which only the
    stride-32 anchors read."""
    return f"model.{net.model[-1].f[level]}"


@pytest.fixture(scope="module", params=CONFIGS)
def yolo(request):
    return build(request.param)


@pytest.fixture(scope="module")
def x():
    from interp_core.datasets.shapes import make_shapes

    return torch.from_numpy(make_shapes(1, size=SIZE, seed=3).channels_first())


def detections(net, x):
    training = net.training
    net.eval()
    try:
        with torch.no_grad():
            return ic.detection.ultralytics_output(net(x))
    finally:
        net.train(training)


def test_raw_head_is_read_as_per_image_candidates(yolo, x):
    det, = detections(yolo, x)
    anchors = sum((SIZE // s) ** 2 for s in (8, 16, 32))
    assert det.boxes.shape == (anchors, 4) and det.labels.shape == det.scores.shape == (anchors,)
    assert det.labels.max() < yolo.model[-1].nc
    assert 0.0 <= det.scores.min() <= det.scores.max() <= 1.0
    assert (det.boxes[:, 2:] >= det.boxes[:, :2]).all()


def _minmax(cam):
    """Min-max per sample; a constant map becomes zeros (the library's convention)."""
    lo, hi = cam.amin(dim=(2, 3), keepdim=True), cam.amax(dim=(2, 3), keepdim=True)
    return torch.where(hi - lo > 1e-7 * hi.abs(), (cam - lo) / (hi - lo), torch.zeros_like(cam))


def _independent_grad_cam(net, x, layer: str, label: int,
                          box: list[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Grad-CAM of ``IoU(box, matched) + score(matched)``, by hand: the head's rows decoded in
    torch, the anchor of ``label`` with the largest IoU matched with torchvision's box_iou.
    Returns the map before ReLU at the layer's resolution, the final map, and the final map
    without the ReLU."""
    store = {}
    module = dict(net.named_modules())[layer]
    handle = module.register_forward_hook(lambda m, a, o: store.update(a=o))
    training = net.training
    net.eval()
    try:
        raw = net(x)
        preds = raw[0][0] if isinstance(raw[0], tuple | list) else raw[0]    # (1, R, A)
        head = preds[0]
        cls = head[4:4 + net.model[-1].nc]                                    # (C, A)
        xyxy = torch.cat([head[:2] - head[2:4] / 2, head[:2] + head[2:4] / 2]).T  # (A, 4)
        target = torch.tensor([box], dtype=xyxy.dtype)
        of_label = cls.detach().argmax(0) == label
        overlaps = box_iou(target, xyxy.detach())[0].masked_fill(~of_label, -1.0)
        a = int(overlaps.argmax())
        lo = torch.maximum(xyxy[a, :2], target[0, :2])
        hi = torch.minimum(xyxy[a, 2:], target[0, 2:])
        inter = (hi - lo).clamp(min=0).prod()
        union = (xyxy[a, 2:] - xyxy[a, :2]).prod() + (target[0, 2:] - target[0, :2]).prod()
        score = inter / (union - inter) + cls[label, a]
        (g,) = torch.autograd.grad(score, store["a"])
    finally:
        handle.remove()
        net.train(training)
    raw_cam = (g.mean(dim=(2, 3), keepdim=True) * store["a"]).sum(1, keepdim=True).detach()

    def final(cam):
        cam = F.interpolate(_minmax(cam), size=x.shape[2:], mode="bilinear", align_corners=False)
        return _minmax(cam)[:, 0].numpy()

    return raw_cam[:, 0].numpy(), final(F.relu(raw_cam)), final(raw_cam)


def test_grad_cam_of_one_box_agrees_with_autograd_by_hand(yolo, x):
    det, = detections(yolo, x)
    k = int(np.argmax(det.scores))
    label = int(det.labels[k])
    box = (det.boxes[k] + [3.0, -2.0, 5.0, 1.0]).tolist()    # near the detection, not on it
    layer = neck(yolo)
    cam = ic.GradCAM(yolo, layer, output=ic.detection.ultralytics_output)
    exp = cam.explain(x, ic.DetectionTarget(label, box))
    assert exp.maps.shape == (1, SIZE, SIZE) and exp.targets.tolist() == [label]
    assert 0.5 < exp.scores[0] < 2.0                          # IoU in (0.5, 1) + a score
    raw, expected, without_relu = _independent_grad_cam(yolo, x, layer, label, box)
    scale = np.abs(raw).max()
    assert scale > 0
    np.testing.assert_allclose(exp.raw[layer], raw, rtol=1e-4, atol=1e-5 * scale)
    np.testing.assert_allclose(exp.maps, expected, atol=1e-5)
    # Random weights may leave nothing after the ReLU: the whole pipeline without it too.
    signed = ic.GradCAM(yolo, layer, output=ic.detection.ultralytics_output, relu=False)
    np.testing.assert_allclose(signed(x, ic.DetectionTarget(label, box)), without_relu,
                               atol=1e-5)


def test_eigen_cam_needs_no_target_and_no_output(yolo, x):
    exp = ic.EigenCAM(yolo, neck(yolo, -1)).explain(x)       # the "model.21"
    assert exp.maps.shape == (1, SIZE, SIZE) and np.isfinite(exp.maps).all()
    assert exp.maps.max() == pytest.approx(1.0) and exp.scores.shape == (0,)
    assert exp.targets.tolist() == [-1]


def _state(net) -> dict:
    state = model_state(net)
    state["fused"] = net.is_fused()
    state["modules"] = [(n, type(m).__name__) for n, m in net.named_modules()]
    return state


def _assert_same(before: dict, after: dict) -> None:
    for key in before:
        if key in ("params", "buffers", "grads"):
            assert before[key].keys() == after[key].keys(), key
            for name, value in before[key].items():
                np.testing.assert_array_equal(value, after[key][name], err_msg=name)
        else:
            assert before[key] == after[key], key


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_the_model_is_left_as_it_was(mode, x):
    net = build("yolov8n.yaml").train(mode == "train")
    det, = detections(net, x)
    k = int(np.argmax(det.scores))
    target = ic.DetectionTarget(int(det.labels[k]), det.boxes[k].tolist())
    before = _state(net)
    assert not before["fused"] and before["training"][0] == ("", mode == "train")
    out = ic.detection.ultralytics_output
    ic.GradCAM(net, "model.15", output=out)(x, target)
    ic.EigenCAM(net, "model.21")(x)
    if mode == "eval":  # Score-CAM folds BatchNorms into a stand-in: 64 channels of model.15
        ic.ScoreCAM(net, "model.15", output=out, batch_size=64)(x, target)
    with pytest.raises(ValueError, match="no detection matches"):
        ic.GradCAM(net, "model.21", output=out)(x, ic.DetectionTarget(0, [1e4, 1e4, 1e4 + 9,
                                                                           1e4 + 9]))
    _assert_same(before, _state(net))
