"""Make the pictures of docs/detection.md and docs/segmentation.md (run in the zoo venv).

    .venv-zoo/bin/python scripts/make_task_pictures.py

torchvision's Faster R-CNN and DeepLabV3 are built with RANDOM weights (nothing is downloaded)
and run on generated shapes images, so the pictures show what the API produces (which box is
explained, where the map lands), not what a trained model attends to.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from torchvision.models import detection, segmentation

import interp_core as ic
from interp_core.datasets.shapes import make_shapes

IMAGES = Path(__file__).resolve().parents[1] / "docs" / "images"
SIZE = 128
TILE = 256
LABEL = 20


def tiles(panels: list[tuple[str, np.ndarray]], path: Path) -> None:
    """Panels (title, uint8 (H, W, 3)) side by side, scaled to TILE, titles on top."""
    canvas = Image.new("RGB", (TILE * len(panels), TILE + LABEL), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (title, panel) in enumerate(panels):
        canvas.paste(Image.fromarray(panel).resize((TILE, TILE), Image.NEAREST),
                     (i * TILE, LABEL))
        draw.text((i * TILE + 6, 4), title, fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    print(f"wrote {path}")


def with_box(image: np.ndarray, box: list[float], colour: str = "white") -> np.ndarray:
    picture = Image.fromarray(image)
    ImageDraw.Draw(picture).rectangle(box, outline=colour, width=2)
    return np.asarray(picture)


def detection_picture() -> None:
    torch.manual_seed(0)
    model = detection.fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None,
                                              num_classes=6, min_size=SIZE, max_size=SIZE,
                                              box_score_thresh=0.0).eval()
    shapes = make_shapes(1, size=SIZE, seed=4)
    x = torch.from_numpy(shapes.channels_first())
    with torch.no_grad():
        dets = model(x)[0]
    # Random weights give many tiny boxes: show the most confident one of a visible size.
    sides = dets["boxes"][:, 2:] - dets["boxes"][:, :2]
    k = int(torch.nonzero((sides >= SIZE / 5).all(dim=1))[0, 0])
    label, box = int(dets["labels"][k]), dets["boxes"][k].tolist()
    target = ic.DetectionTarget(label, box)
    gradcam = ic.GradCAM(model, "backbone.body.layer4").explain(x, target)
    eigen = ic.EigenCAM(model, "backbone.body.layer4").explain(x)          # no target
    image = (shapes.images[0] * 255).astype(np.uint8)
    tiles([("input and the box explained", with_box(image, box)),
           (f"Grad-CAM, DetectionTarget({label}, box)",
            with_box(ic.overlay(image, gradcam.maps[0]), box)),
           ("Eigen-CAM, no target", ic.overlay(image, eigen.maps[0]))],
          IMAGES / "detection_fasterrcnn.png")


def segmentation_picture() -> None:
    torch.manual_seed(0)
    model = segmentation.deeplabv3_resnet50(weights=None, weights_backbone=None,
                                            num_classes=3, aux_loss=False).eval()
    shapes = make_shapes(1, size=SIZE, seed=9)
    x = torch.from_numpy(shapes.channels_first())
    mask = shapes.masks[0].astype(np.float32)
    exp = ic.GradCAM(model, "backbone.layer4").explain(x, ic.SegmentationTarget(1, mask))
    image = (shapes.images[0] * 255).astype(np.uint8)
    shown = np.repeat((mask[..., None] * 255).astype(np.uint8), 3, axis=2)
    tiles([("input", image), ("mask (the object's pixels)", shown),
           ("Grad-CAM, SegmentationTarget(1, mask)", ic.overlay(image, exp.maps[0]))],
          IMAGES / "segmentation_deeplabv3.png")


if __name__ == "__main__":
    detection_picture()
    segmentation_picture()
