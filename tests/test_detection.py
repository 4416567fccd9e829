"""DetectionTarget: explaining detections (boxes, labels, scores per image).

A tiny hand-written detector (torch only) checks the meaning of each target against a gradient
taken by hand; torchvision's Faster R-CNN, RetinaNet and FCOS (random weights) run where
torchvision is installed (the zoo environment), and Faster R-CNN agrees with pytorch-grad-cam's
``FasterRCNNBoxScoreTarget`` where that is installed.
"""

from __future__ import annotations

import numpy as np
import pytest
import zoo_env

import interp_core as ic
from interp_core.backend.detection import iou
from interp_core.backend.scoring import NumpyApiOps, target_scores
from interp_core.backend.target_spec import resolve_targets

# -- the core, without a framework ------------------------------------------------------------


def test_iou():
    box = np.array([0.0, 0.0, 10.0, 10.0])
    boxes = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30], [2, 2, 2, 8]])
    np.testing.assert_allclose(iou(box, boxes), [1.0, 50 / 150, 0.0, 0.0])


def test_detection_targets_resolve_per_sample():
    spec = resolve_targets([ic.DetectionTarget(3, [0, 0, 4, 4], 0.3), ic.DetectionTarget(5)], 2)
    assert spec.kind == "detection"
    assert spec.indices.tolist() == [3, 5] and spec.thresholds.tolist() == [0.3, 0.5]
    assert spec.boxes[0].tolist() == [0, 0, 4, 4] and np.isnan(spec.boxes[1]).all()
    second = spec.take(slice(1, 2))
    assert second.indices.tolist() == [5] and second.boxes.shape == (1, 4)
    assert spec.tile(2).indices.tolist() == [3, 5, 3, 5]
    assert resolve_targets(ic.DetectionTarget(), 1).indices.tolist() == [-1]


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"box": [0, 0, 1]}, "4 finite numbers"),
    ({"box": [5, 0, 1, 1]}, "x2 >= x1"),
    ({"label": -1}, ">= 0"),
    ({"iou_threshold": 1.5}, r"\[0, 1\]"),
])
def test_detection_target_checks_its_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ic.DetectionTarget(**kwargs)


# -- ic.detection: raw heads read as detections, on NumPy (no framework) -------------------------
def yolo_head(rows: int = 4 + 3, anchors: int = 6, seed: int = 0) -> np.ndarray:
    """A raw Ultralytics head ``(1, 4 + C (+ extra), A)``: cx, cy, w, h in pixels, then
    scores in [0, 1]."""
    rng = np.random.default_rng(seed)
    head = rng.uniform(0.05, 0.95, size=(1, rows, anchors)).astype(np.float32)
    head[:, :2] *= 64.0
    head[:, 2:4] = head[:, 2:4] * 20.0 + 4.0
    return head


def test_ultralytics_output_reads_boxes_labels_and_scores():
    head = yolo_head()
    det, = ic.detection.ultralytics_output((head, {"feats": None}))
    cx, cy, w, h = head[0, :4].astype(np.float64)
    np.testing.assert_allclose(det["boxes"], np.stack([cx - w / 2, cy - h / 2, cx + w / 2,
                                                       cy + h / 2], axis=1))
    assert det["labels"].tolist() == head[0, 4:].argmax(0).tolist()
    np.testing.assert_allclose(det["scores"], head[0, 4:].max(0))
    assert dict(det).keys() == {"boxes", "labels", "scores"}
    few, = ic.detection.ultralytics_output(head, min_score=float(np.median(det.scores)))
    assert len(few.scores) == 3 and few.scores.min() >= np.median(det.scores)


def test_ultralytics_output_skips_mask_coefficients_and_takes_num_classes():
    head = yolo_head(rows=4 + 3 + 5)
    head[:, 7:] = np.random.default_rng(1).normal(0, 4, size=(1, 5, 6))   # mask coefficients
    protos = np.zeros((1, 5, 8, 8), dtype=np.float32)
    det, = ic.detection.ultralytics_output(((head, protos), {}))           # a -seg model's output
    assert det.labels.tolist() == head[0, 4:7].argmax(0).tolist()
    with pytest.raises(ValueError, match=r"not class scores in \[0, 1\].*num_classes="):
        ic.detection.ultralytics_output(head)          # the coefficients read as classes
    det, = ic.detection.ultralytics_output(head, num_classes=3)
    assert det.labels.tolist() == head[0, 4:7].argmax(0).tolist()
    with pytest.raises(ValueError, match="num_classes=9 does not fit a head of 12 rows"):
        ic.detection.ultralytics_output(head, num_classes=9)
    with pytest.raises(ValueError, match="training mode"):
        ic.detection.ultralytics_output({"boxes": 0, "scores": 0, "feats": 0})


def _numpy_scores(output, targets, n=1):
    return target_scores(output, resolve_targets(targets, n), NumpyApiOps(channel_axis=1))


def test_ultralytics_detections_score_as_detection_targets():
    head = yolo_head(anchors=8)
    det, = out = ic.detection.ultralytics_output(head)
    k = int(np.argmax(det.scores))
    scores, top1 = _numpy_scores(out, None)
    assert scores[0] == pytest.approx(det.scores[k]) and top1.tolist() == [det.labels[k]]
    label = int(det.labels[k])
    scores, _ = _numpy_scores(out, label)
    assert scores[0] == pytest.approx(det.scores[det.labels == label].sum(), rel=1e-6)
    box = det.boxes[k] + [1.0, 0.0, 2.0, -1.0]
    scores, _ = _numpy_scores(out, ic.DetectionTarget(label, box, iou_threshold=0.0))
    best = iou(box, det.boxes[det.labels == label]).max()
    assert scores[0] == pytest.approx(best + det.scores[det.labels == label][
        iou(box, det.boxes[det.labels == label]).argmax()], rel=1e-6)


def test_detr_output_is_a_softmax_without_the_no_object_class():
    rng = np.random.default_rng(2)
    logits = rng.normal(size=(2, 5, 4)).astype(np.float32)          # 3 classes + no object
    boxes = rng.uniform(0.2, 0.6, size=(2, 5, 4)).astype(np.float32)
    out = ic.detection.detr_output({"logits": logits, "pred_boxes": boxes}, image_size=(40, 80))
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    for i, det in enumerate(out):
        assert det.labels.tolist() == p[i, :, :3].argmax(-1).tolist()
        np.testing.assert_allclose(det.scores, p[i, :, :3].max(-1), rtol=1e-6)
        cx, cy, w, h = boxes[i].T
        np.testing.assert_allclose(det.boxes, np.stack([(cx - w / 2) * 80, (cy - h / 2) * 40,
                                                        (cx + w / 2) * 80, (cy + h / 2) * 40], 1),
                                   rtol=1e-6)
    label = int(out[1].labels[0])
    scores, _ = _numpy_scores(out, [ic.DetectionTarget(), ic.DetectionTarget(label)], n=2)
    np.testing.assert_allclose(scores, [out[0].scores.sum(),
                                        out[1].scores[out[1].labels == label].sum()], rtol=1e-6)
    scores, _ = _numpy_scores(out, None, n=2)
    np.testing.assert_allclose(scores, [d.scores.max() for d in out], rtol=1e-6)
    with pytest.raises(ValueError, match="logits and pred_boxes"):
        ic.detection.detr_output({"logits": logits}, image_size=8)
    with pytest.raises(ValueError, match="image_size"):
        ic.detection.detr_output({"logits": logits, "pred_boxes": boxes}, image_size=(0, 3))


# -- a tiny detector, by hand -----------------------------------------------------------------
torch = pytest.importorskip("torch")
nn = torch.nn


class TinyDetector(nn.Module):
    """One detection per cell of an 8x8 grid: box = cell + predicted offsets, score and label
    from a softmax over classes; detections scoring under ``threshold`` are dropped, as
    torchvision's detectors do. Returns a list of {"boxes", "labels", "scores"} per image."""

    def __init__(self, classes: int = 4, threshold: float = 0.26) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.backbone = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.ReLU(),
                                      nn.Conv2d(16, 16, 3, 2, 1), nn.ReLU())
        self.cls = nn.Conv2d(16, classes, 1)
        self.box = nn.Conv2d(16, 4, 1)
        self.threshold = threshold

    def forward(self, x: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        f = self.backbone(x)
        probs = self.cls(f).softmax(dim=1).flatten(2).transpose(1, 2)    # (N, 64, K)
        deltas = self.box(f).flatten(2).transpose(1, 2)                  # (N, 64, 4)
        h, w = f.shape[2:]
        ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        cell = x.shape[-1] / w
        corners = torch.stack([xs, ys, xs + 1, ys + 1], -1).reshape(-1, 4).float() * cell
        out = []
        for i in range(len(x)):
            scores, labels = probs[i].max(dim=1)
            keep = scores >= self.threshold
            boxes = corners + 2.0 * torch.tanh(deltas[i])
            out.append({"boxes": boxes[keep], "labels": labels[keep], "scores": scores[keep]})
        return out


def _by_hand(model: TinyDetector, x: torch.Tensor, score_of) -> np.ndarray:
    """Grad-CAM at "backbone" of ``sum_i score_of(i, detections_i)`` with autograd by hand."""
    store = {}
    handle = model.backbone.register_forward_hook(lambda m, a, o: store.update(a=o))
    try:
        out = model(x)
        total = sum(score_of(i, d) for i, d in enumerate(out))
        (g,) = torch.autograd.grad(total, store["a"])
    finally:
        handle.remove()
    raw = (g.mean(dim=(2, 3), keepdim=True) * store["a"]).sum(1).detach().numpy()
    return raw


def _torch_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    lo = torch.maximum(a[:2], b[:2])
    hi = torch.minimum(a[2:], b[2:])
    inter = (hi - lo).clamp(min=0).prod()
    return inter / ((a[2:] - a[:2]).prod() + (b[2:] - b[:2]).prod() - inter)


@pytest.fixture
def detector():
    return TinyDetector().eval()


@pytest.fixture
def x():
    torch.manual_seed(1)
    return torch.randn(2, 3, 32, 32)


def test_box_target_is_iou_plus_score_of_the_best_match(detector, x):
    with torch.no_grad():
        dets = detector(x)
    label = int(dets[0]["labels"][3])
    given = (dets[0]["boxes"][3] + torch.tensor([0.3, -0.2, 0.5, -0.4])).tolist()  # no ties
    exp = ic.GradCAM(detector, "backbone").explain(x[:1], ic.DetectionTarget(label, given))
    # The match, by hand: the detection of that label whose box overlaps the given one most.
    same = torch.nonzero(dets[0]["labels"] == label)[:, 0]
    ious = torch.stack([_torch_iou(dets[0]["boxes"][k], torch.tensor(given)) for k in same])
    k = int(same[ious.argmax()])
    assert exp.scores[0] == pytest.approx(float(ious.max() + dets[0]["scores"][k]), rel=1e-5)
    assert exp.targets.tolist() == [label]
    raw = _by_hand(detector, x[:1], lambda i, d: _torch_iou(d["boxes"][k], torch.tensor(given))
                   + d["scores"][k])
    np.testing.assert_allclose(exp.raw["backbone"], raw, rtol=1e-4, atol=1e-6)


def test_class_targets_sum_the_scores_of_that_class(detector, x):
    with torch.no_grad():
        label = int(detector(x)[0]["labels"][0])
    by_target = ic.GradCAM(detector, "backbone").explain(x, ic.DetectionTarget(label))
    by_int = ic.GradCAM(detector, "backbone").explain(x, label)
    raw = _by_hand(detector, x, lambda i, d: d["scores"][d["labels"] == label].sum())
    np.testing.assert_allclose(by_target.raw["backbone"], raw, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(by_int.maps, by_target.maps, atol=1e-6)
    assert by_int.targets.tolist() == [label, label]


def test_no_target_explains_each_images_most_confident_detection(detector, x):
    exp = ic.GradCAM(detector, "backbone").explain(x)
    with torch.no_grad():
        dets = detector(x)
    best = [int(d["scores"].argmax()) for d in dets]
    assert exp.targets.tolist() == [int(d["labels"][k]) for d, k in zip(dets, best, strict=True)]
    np.testing.assert_allclose(exp.scores, [float(d["scores"][k]) for d, k in
                                            zip(dets, best, strict=True)], rtol=1e-6)
    raw = _by_hand(detector, x, lambda i, d: d["scores"][best[i]])
    np.testing.assert_allclose(exp.raw["backbone"], raw, rtol=1e-4, atol=1e-6)


def test_an_image_without_a_match_gets_an_empty_map(detector, x):
    with torch.no_grad():
        dets = detector(x)
    far = [1000.0, 1000.0, 1010.0, 1010.0]
    targets = [ic.DetectionTarget(int(dets[0]["labels"][0]), dets[0]["boxes"][0].tolist()),
               ic.DetectionTarget(0, far)]
    exp = ic.GradCAM(detector, "backbone").explain(x, targets)
    assert exp.maps[0].max() > 0 and not exp.maps[1].any()
    assert exp.scores[1] == 0.0


def test_no_match_in_the_batch_is_an_error_that_lists_the_detections(detector, x):
    with pytest.raises(ValueError, match=r"no detection matches.*image 0: \d+ detections"):
        ic.GradCAM(detector, "backbone")(x, ic.DetectionTarget(0, [1e3, 1e3, 1e3 + 9, 1e3 + 9]))
    with pytest.raises(ValueError, match="cannot score a detection output"):
        ic.GradCAM(detector, "backbone")(x, ic.BinaryTarget())


def test_eigencam_needs_no_target(detector, x):
    exp = ic.EigenCAM(detector, "backbone").explain(x)
    assert exp.maps.shape == (2, 32, 32) and np.isfinite(exp.maps).all()


def test_default_layer_is_the_last_one_that_reaches_the_score(detector, x):
    # The box head runs last but moves boxes only: the most confident detection's score
    # does not depend on it, so the class head is the default.
    assert ic.GradCAM(detector).explain(x).layers == ["cls"]


# -- the Ultralytics YOLO recipe of docs/detection.md, on a stand-in with YOLO's output ----------
def yolo_detections(raw):
    """The converter docs/detection.md had before ic.detection.ultralytics_output, by hand in
    torch: YOLO's (N, 4 + C, A) to per-image detections."""
    preds = raw[0] if isinstance(raw, tuple | list) else raw      # (N, 4 + C, A)
    xy, wh, cls = preds[:, 0:2], preds[:, 2:4], preds[:, 4:]
    boxes = torch.cat([xy - wh / 2, xy + wh / 2], dim=1).transpose(1, 2)   # (N, A, 4) xyxy
    scores, labels = cls.max(dim=1)                                       # (N, A)
    return [{"boxes": b, "scores": s, "labels": lab}
            for b, s, lab in zip(boxes, scores, labels, strict=True)]


class YoloLike(nn.Module):
    """An eval-mode Ultralytics DetectionModel's output: ``(preds, features)`` with preds
    ``(N, 4 + classes, A)``: box centre and size in pixels, then sigmoid class scores."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        torch.manual_seed(2)
        self.model = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.SiLU(),
                                   nn.Conv2d(8, 8, 3, 2, 1), nn.SiLU())
        self.detect = nn.Conv2d(8, 4 + classes, 1)

    def forward(self, x: torch.Tensor):
        f = self.model(x)
        raw = self.detect(f).flatten(2)                                   # (N, 4 + C, A)
        h, w = f.shape[2:]
        ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        stride = x.shape[-1] / w
        centres = (torch.stack([xs, ys]).reshape(2, -1).float() + 0.5) * stride
        xy = centres + torch.tanh(raw[:, :2]) * stride
        wh = (1.0 + torch.sigmoid(raw[:, 2:4])) * stride
        return torch.cat([xy, wh, torch.sigmoid(raw[:, 4:])], dim=1), [f]


def test_the_yolo_recipe_explains_a_box():
    """docs/detection.md's one line, ``output=ic.detection.ultralytics_output``: the score and
    the gradient equal those of the hand-written converter above (torch.cat and max)."""
    net = YoloLike().eval()
    torch.manual_seed(3)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        det = yolo_detections(net(x))[0]
        ours = ic.detection.ultralytics_output(net(x))[0]
    np.testing.assert_allclose(ours.boxes, det["boxes"].numpy(), rtol=1e-6, atol=1e-5)
    assert ours.labels.tolist() == det["labels"].tolist()
    k = int(det["scores"].argmax())
    for shift in ([0.0] * 4, [1.0, -0.5, 0.5, 1.5]):          # on the box (ties), and off it
        box = (det["boxes"][k].numpy() + shift).tolist()
        target = ic.DetectionTarget(int(det["labels"][k]), box)
        exp = ic.GradCAM(net, "model", output=ic.detection.ultralytics_output).explain(x, target)
        by_hand = ic.GradCAM(net, "model", output=yolo_detections).explain(x, target)
        assert exp.scores[0] == pytest.approx(by_hand.scores[0], rel=1e-5)
        np.testing.assert_allclose(exp.raw["model"], by_hand.raw["model"], rtol=1e-4, atol=1e-7)
    assert exp.scores[0] < 1.0 + float(det["scores"][k])
    raw = _by_hand_layer(net, x, "model",
                         lambda out: yolo_detections(out)[0]["scores"][k] + 1.0,
                         unpack=False)
    # Matched with its own box, the IoU is at its maximum, 1: with ties split as torch splits
    # them its gradient is 0, so the gradient is the score's alone.
    on_box = ic.GradCAM(net, "model", output=ic.detection.ultralytics_output).explain(
        x, ic.DetectionTarget(int(det["labels"][k]), det["boxes"][k].tolist()))
    assert on_box.scores[0] == pytest.approx(1.0 + float(det["scores"][k]), rel=1e-5)
    np.testing.assert_allclose(on_box.raw["model"], raw, rtol=1e-4, atol=1e-7)


# -- torchvision detectors (zoo environment) ---------------------------------------------------
def _torchvision_detector(name: str):
    detection = zoo_env.require("torchvision.models.detection")
    threshold = {"fasterrcnn_resnet50_fpn": {"box_score_thresh": 0.0}}.get(
        name, {"score_thresh": 0.0})
    torch.manual_seed(0)
    model = getattr(detection, name)(weights=None, weights_backbone=None, num_classes=5,
                                     min_size=96, max_size=96, **threshold)
    return model.eval()


@pytest.fixture(scope="module")
def image():
    from interp_core.datasets.shapes import make_shapes

    return torch.from_numpy(make_shapes(1, size=96, seed=5).channels_first())


@pytest.mark.parametrize("name", ["fasterrcnn_resnet50_fpn", "retinanet_resnet50_fpn",
                                  "fcos_resnet50_fpn"])
def test_torchvision_detectors(name, image):
    model = _torchvision_detector(name)
    with torch.no_grad():
        dets = model(image)[0]
    assert len(dets["boxes"]), "random weights with a zero score threshold give detections"
    label, box = int(dets["labels"][0]), dets["boxes"][0].tolist()
    layer = "backbone.body.layer4"
    exp = ic.GradCAM(model, layer).explain(image, ic.DetectionTarget(label, box))
    assert exp.scores[0] == pytest.approx(1.0 + float(dets["scores"][0]), rel=1e-4)
    assert exp.maps.shape == (1, 96, 96) and np.isfinite(exp.maps).all()
    raw = _by_hand_layer(model, image, layer, lambda d: d["scores"][0] + 1.0)
    np.testing.assert_allclose(exp.raw[layer], raw, rtol=1e-3, atol=1e-3 * np.abs(raw).max())
    summed = ic.GradCAM(model, layer).explain(image, label)
    assert summed.scores[0] == pytest.approx(float(dets["scores"][dets["labels"] == label].sum()),
                                             rel=1e-4)
    eigen = ic.EigenCAM(model, layer).explain(image)              # no target at all
    assert eigen.maps.max() == pytest.approx(1.0)


def _by_hand_layer(model, x, layer, score_of, unpack: bool = True) -> np.ndarray:
    store = {}
    module = dict(model.named_modules())[layer]
    handle = module.register_forward_hook(lambda m, a, o: store.update(a=o))
    try:
        out = model(x)
        (g,) = torch.autograd.grad(score_of(out[0] if unpack else out), store["a"])
    finally:
        handle.remove()
    return (g.mean(dim=(2, 3), keepdim=True) * store["a"]).sum(1).detach().numpy()


def test_faster_rcnn_agrees_with_pytorch_grad_cam(image):
    zoo_env.require("pytorch_grad_cam")
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import FasterRCNNBoxScoreTarget

    model = _torchvision_detector("fasterrcnn_resnet50_fpn")
    with torch.no_grad():
        dets = model(image)[0]
    label, box = int(dets["labels"][0]), dets["boxes"][0]
    layer = model.backbone.body.layer4
    with GradCAM(model=model, target_layers=[layer]) as theirs:
        expected = theirs(image, targets=[FasterRCNNBoxScoreTarget([label], box[None])])
    ours = ic.GradCAM(model, "backbone.body.layer4")(image, ic.DetectionTarget(label,
                                                                               box.tolist()))
    np.testing.assert_allclose(ours, expected, atol=1e-4)
