"""Make the YOLO and DETR pictures of docs/detection.md (zoo venv; 1 to 15 min on 2 cores).

    .venv-zoo/bin/python scripts/make_detection_images.py

- **YOLOv8n** built from ``yolov8n.yaml`` with 5 classes and TRAINED here for a few hundred
  steps on generated shapes images (one shape per image; Ultralytics' own detection loss,
  ``DetectionModel.loss``), so its best box lands on the shape; nothing is downloaded and no
  weights file is kept.
- **DETR** (``DetrForObjectDetection``, the tiny config of ``tests/test_detr.py``) with RANDOM
  weights: the picture shows what the API produces (which query's box is explained, the map
  over the image), not what a trained DETR looks at.

Ultralytics runs offline (``YOLO_OFFLINE=1``) with its settings in a temporary folder.
"""

from __future__ import annotations

import functools
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

_SETTINGS = tempfile.TemporaryDirectory(prefix="interp-yolo-settings-")
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_CONFIG_DIR", _SETTINGS.name)

import torch  # noqa: E402
from ultralytics.cfg import get_cfg  # noqa: E402
from ultralytics.nn.tasks import DetectionModel  # noqa: E402

import interp_core as ic  # noqa: E402
from interp_core.datasets.shapes import CLASSES, make_shapes  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from make_task_pictures import IMAGES, tiles, with_box  # noqa: E402
from test_detr import tiny_detr  # noqa: E402

SIZE = 128
STEPS = 300
BATCH = 16


def xyxy(boxes: np.ndarray) -> np.ndarray:
    """The shapes data's boxes ``(y0, x0, y1, x1)`` as ``(x1, y1, x2, y2)``."""
    return boxes[:, [1, 0, 3, 2]].astype(np.float32)


def train_yolo() -> DetectionModel:
    """YOLOv8n (5 classes) trained on shapes with Ultralytics' loss, AdamW, fixed seeds."""
    torch.manual_seed(0)
    net = DetectionModel("yolov8n.yaml", nc=len(CLASSES), verbose=False)
    net.args = get_cfg()                      # the loss gains (box, cls, dfl)
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3)
    net.train()
    for step in range(STEPS):
        b = make_shapes(BATCH, size=SIZE, seed=1000 + step)
        boxes = torch.from_numpy(xyxy(b.boxes))
        centre_size = torch.cat([(boxes[:, :2] + boxes[:, 2:]) / 2, boxes[:, 2:] - boxes[:, :2]],
                                dim=1) / SIZE
        batch = {"img": torch.from_numpy(b.channels_first()),
                 "cls": torch.from_numpy(b.labels).float()[:, None],
                 "bboxes": centre_size, "batch_idx": torch.arange(BATCH).float()}
        loss, _ = net.loss(batch)
        opt.zero_grad()
        loss.sum().backward()
        opt.step()
        if step % 50 == 0:
            print(f"step {step}: loss {loss.detach().sum().item():.3f}", flush=True)
    return net.eval()


def yolo_picture() -> None:
    net = train_yolo()
    shapes = make_shapes(1, size=SIZE, seed=7)
    x = torch.from_numpy(shapes.channels_first())
    with torch.no_grad():
        det, = ic.detection.ultralytics_output(net(x))
    k = int(np.argmax(det.scores))
    label, box = int(det.labels[k]), det.boxes[k].tolist()
    print(f"YOLO: true {CLASSES[shapes.labels[0]]} {xyxy(shapes.boxes)[0].tolist()}, "
          f"best {CLASSES[label]} {det.scores[k]:.2f} {np.round(box, 1).tolist()}")
    gradcam = ic.GradCAM(net, "model.15", output=ic.detection.ultralytics_output).explain(
        x, ic.DetectionTarget(label, box))
    eigen = ic.EigenCAM(net, "model.15").explain(x)                       # no target
    image = (shapes.images[0] * 255).astype(np.uint8)
    tiles([(f"best box: {CLASSES[label]} {det.scores[k]:.2f}", with_box(image, box)),
           ("Grad-CAM of that box", with_box(ic.overlay(image, gradcam.maps[0]), box)),
           ("Eigen-CAM, no target", ic.overlay(image, eigen.maps[0]))],
          IMAGES / "detection_yolo.png")


def detr_picture() -> None:
    model = tiny_detr()
    shapes = make_shapes(1, size=SIZE, seed=7)
    x = torch.from_numpy(shapes.channels_first())
    output = functools.partial(ic.detection.detr_output, image_size=(SIZE, SIZE))
    with torch.no_grad():
        det, = output(model(x))
    k = int(np.argmax(det.scores))
    label, box = int(det.labels[k]), np.clip(det.boxes[k], 0, SIZE - 1).tolist()
    layer = "model.backbone.model.encoder.stages.3"
    gradcam = ic.GradCAM(model, layer, output=output).explain(
        x, ic.DetectionTarget(label, det.boxes[k].tolist()))
    image = (shapes.images[0] * 255).astype(np.uint8)
    tiles([("input and the best query's box", with_box(image, box)),
           (f"Grad-CAM, DetectionTarget({label}, box)",
            with_box(ic.overlay(image, gradcam.maps[0]), box))],
          IMAGES / "detection_detr.png")


if __name__ == "__main__":
    yolo_picture()
    detr_picture()
