"""Hugging Face DETR (zoo environment): ``DetrForObjectDetection`` built from a small config in
code (a tiny ResNet backbone, random weights, nothing downloaded), explained through
``ic.detection.detr_output``.

The candidates equal ``DetrImageProcessor.post_process_object_detection``'s (scores, labels,
boxes in pixels); Grad-CAM of one box on a backbone stage equals an independent Grad-CAM
with torch hooks and ``autograd.grad`` (softmax and box decoding in torch); the model is left
as it was.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import zoo_env

import interp_core as ic

torch = zoo_env.require("torch", module_level=True)
transformers = zoo_env.require("transformers", module_level=True)
box_iou = zoo_env.require("torchvision.ops", module_level=True).box_iou
from interp_torch.testing import model_state  # noqa: E402

SIZE = 96
LAYER = "model.backbone.model.encoder.stages.3"


def tiny_detr():
    """A DETR of ~0.3 M parameters: a four-stage ResNet of basic blocks, one encoder and one
    decoder layer of width 32, 10 queries, 3 classes (and "no object"). ``init_std=0.2``: at
    the default 0.02 the random queries all give the same box and score."""
    backbone = transformers.ResNetConfig(
        embedding_size=16, hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 1, 1],
        layer_type="basic", out_features=["stage1", "stage2", "stage3", "stage4"])
    config = transformers.DetrConfig(
        backbone_config=backbone, d_model=32, encoder_layers=1, decoder_layers=1,
        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64,
        decoder_ffn_dim=64, num_queries=10, num_labels=3, init_std=0.2)
    torch.manual_seed(0)
    return transformers.DetrForObjectDetection(config).eval()


@pytest.fixture(scope="module")
def detr():
    return tiny_detr()


@pytest.fixture(scope="module")
def x():
    from interp_core.datasets.shapes import make_shapes

    return torch.from_numpy(make_shapes(2, size=SIZE, seed=4).channels_first())


OUTPUT = functools.partial(ic.detection.detr_output, image_size=(SIZE, SIZE))


def test_candidates_are_hugging_faces_post_processed_detections(detr, x):
    with torch.no_grad():
        raw = detr(x)
    ours = OUTPUT(raw)
    processor = transformers.DetrImageProcessor()
    theirs = processor.post_process_object_detection(raw, threshold=0.0,
                                                     target_sizes=[(SIZE, SIZE)] * len(x))
    for det, ref in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(det.scores, ref["scores"].numpy(), rtol=1e-5)
        np.testing.assert_array_equal(det.labels, ref["labels"].numpy())
        np.testing.assert_allclose(det.boxes, ref["boxes"].numpy(), atol=1e-4)


def _independent_grad_cam(model, x, label: int, box: list[float]) -> np.ndarray:
    """Grad-CAM at LAYER of IoU + probability of the best-matching query, by hand. DETR
    freezes its backbone's first stages, so the layer's output is made a leaf that needs
    gradients."""
    store = {}

    def keep(module, args, output):
        store["a"] = output.detach().requires_grad_()
        return store["a"]

    handle = dict(model.named_modules())[LAYER].register_forward_hook(keep)
    try:
        out = model(x)
        probs = out.logits[0].softmax(-1)                                  # (Q, C + 1)
        cxcy, wh = out.pred_boxes[0, :, :2], out.pred_boxes[0, :, 2:]
        xyxy = torch.cat([cxcy - wh / 2, cxcy + wh / 2], dim=1) * SIZE    # (Q, 4)
        target = torch.tensor([box], dtype=xyxy.dtype)
        of_label = probs[:, :-1].detach().argmax(-1) == label
        q = int(box_iou(target, xyxy.detach())[0].masked_fill(~of_label, -1.0).argmax())
        lo = torch.maximum(xyxy[q, :2], target[0, :2])
        hi = torch.minimum(xyxy[q, 2:], target[0, 2:])
        inter = (hi - lo).clamp(min=0).prod()
        union = (xyxy[q, 2:] - xyxy[q, :2]).prod() + (target[0, 2:] - target[0, :2]).prod()
        (g,) = torch.autograd.grad(inter / (union - inter) + probs[q, label], store["a"])
    finally:
        handle.remove()
    return (g.mean(dim=(2, 3), keepdim=True) * store["a"]).sum(1).detach().numpy()


def test_grad_cam_of_one_box_agrees_with_autograd_by_hand(detr, x):
    with torch.no_grad():
        det = OUTPUT(detr(x[:1]))[0]
    k = int(np.argmax(det.scores))
    label = int(det.labels[k])
    box = (det.boxes[k] + [2.0, -1.0, 3.0, 1.0]).tolist()
    before = model_state(detr)
    exp = ic.GradCAM(detr, LAYER, output=OUTPUT).explain(x[:1], ic.DetectionTarget(label, box))
    assert exp.maps.shape == (1, SIZE, SIZE) and exp.targets.tolist() == [label]
    assert 0.5 < exp.scores[0] < 2.0
    raw = _independent_grad_cam(detr, x[:1], label, box)
    np.testing.assert_allclose(exp.raw[LAYER], raw, rtol=1e-4, atol=1e-5 * np.abs(raw).max())
    after = model_state(detr)
    assert before["training"] == after["training"] and before["hooks"] == after["hooks"]
    assert before["requires_grad"] == after["requires_grad"]
    for name, value in before["params"].items():
        np.testing.assert_array_equal(value, after["params"][name], err_msg=name)


def test_class_and_top1_targets_on_a_batch(detr, x):
    with torch.no_grad():
        dets = OUTPUT(detr(x))
    label = int(dets[0].labels[np.argmax(dets[0].scores)])
    summed = ic.GradCAM(detr, LAYER, output=OUTPUT).explain(x, label)
    np.testing.assert_allclose(summed.scores, [d.scores[d.labels == label].sum() for d in dets],
                               rtol=1e-5)
    top1 = ic.GradCAM(detr, LAYER, output=OUTPUT).explain(x)
    np.testing.assert_allclose(top1.scores, [d.scores.max() for d in dets], rtol=1e-5)
    assert top1.targets.tolist() == [int(d.labels[np.argmax(d.scores)]) for d in dets]
    eigen = ic.EigenCAM(detr, LAYER).explain(x)
    assert eigen.maps.shape == (2, SIZE, SIZE) and np.isfinite(eigen.maps).all()
