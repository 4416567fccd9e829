"""SegmentationTarget on real segmentation architectures (random weights): torchvision's
DeepLabV3 and FCN (dict output, ``"out"``) and Hugging Face Segformer (``.logits`` at a quarter
of the input's size), each against a gradient taken by hand, and DeepLabV3 against
pytorch-grad-cam's ``SemanticSegmentationTarget`` where that is installed (the zoo environment).
"""

from __future__ import annotations

import numpy as np
import pytest
import zoo_env

torch = zoo_env.require("torch", module_level=True)
zoo_env.require("torchvision", module_level=True)

import interp_core as ic  # noqa: E402
from interp_core.datasets.shapes import make_shapes  # noqa: E402

SIZE = 64


@pytest.fixture(scope="module")
def image() -> torch.Tensor:
    return torch.from_numpy((make_shapes(1, size=SIZE, seed=7).channels_first() - 0.5) / 0.25)


def _segmenter(name: str) -> torch.nn.Module:
    from torchvision.models import segmentation

    torch.manual_seed(0)
    return getattr(segmentation, name)(weights=None, weights_backbone=None, num_classes=4,
                                       aux_loss=False).eval()


def _by_hand(model, x, layer, score_of) -> np.ndarray:
    """Grad-CAM's raw map at ``layer`` for ``score_of(model(x))``, autograd by hand."""
    store = {}
    module = dict(model.named_modules())[layer]
    handle = module.register_forward_hook(lambda m, a, o: store.update(a=o))
    try:
        (g,) = torch.autograd.grad(score_of(model(x)), store["a"])
    finally:
        handle.remove()
    return (g.mean(dim=(2, 3), keepdim=True) * store["a"]).sum(1).detach().numpy()


def _mask(shape: tuple[int, int]) -> np.ndarray:
    mask = np.zeros(shape, np.float32)
    mask[shape[0] // 4 : shape[0] // 2, shape[1] // 3 :] = 1.0
    return mask


@pytest.mark.parametrize("name", ["deeplabv3_resnet50", "fcn_resnet50"])
def test_torchvision_segmentation_models(name, image):
    model = _segmenter(name)
    mask = _mask((SIZE, SIZE))
    layer = "backbone.layer4"
    exp = ic.GradCAM(model, layer).explain(image, ic.SegmentationTarget(2, mask))  # dict "out"
    raw = _by_hand(model, image, layer,
                   lambda out: (out["out"][0, 2] * torch.from_numpy(mask)).sum())
    np.testing.assert_allclose(exp.raw[layer], raw, rtol=1e-3, atol=1e-4 * np.abs(raw).max())
    with torch.no_grad():
        expected = float((model(image)["out"][0, 2] * torch.from_numpy(mask)).sum())
    assert exp.scores[0] == pytest.approx(expected, rel=1e-4)
    assert exp.maps.shape == (1, SIZE, SIZE) and exp.maps.max() == pytest.approx(1.0)


def test_deeplabv3_agrees_with_pytorch_grad_cam(image):
    zoo_env.require("pytorch_grad_cam")
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import SemanticSegmentationTarget

    model = _segmenter("deeplabv3_resnet50")
    mask = _mask((SIZE, SIZE))

    class OutOnly(torch.nn.Module):  # pytorch-grad-cam needs a tensor output
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.inner(x)["out"]

    with GradCAM(model=OutOnly(model), target_layers=[model.backbone.layer4]) as theirs:
        expected = theirs(image, targets=[SemanticSegmentationTarget(2, mask)])
    ours = ic.GradCAM(model, "backbone.layer4")(image, ic.SegmentationTarget(2, mask))
    np.testing.assert_allclose(ours, expected, atol=1e-4)


def test_segformer_from_a_config(image):
    transformers = zoo_env.require("transformers")
    config = transformers.SegformerConfig(num_labels=4, num_encoder_blocks=2, depths=[1, 1],
                                          sr_ratios=[2, 1], hidden_sizes=[16, 32],
                                          num_attention_heads=[1, 2], decoder_hidden_size=32,
                                          strides=[4, 2], patch_sizes=[7, 3])
    torch.manual_seed(0)
    model = transformers.SegformerForSemanticSegmentation(config).eval()
    with torch.no_grad():
        logits = model(image).logits                                # (1, 4, 16, 16)
    mask = _mask(tuple(logits.shape[2:]))
    layer = "decode_head.linear_fuse"
    exp = ic.GradCAM(model, layer).explain(image, ic.SegmentationTarget(1, mask))
    raw = _by_hand(model, image, layer,
                   lambda out: (out.logits[0, 1] * torch.from_numpy(mask)).sum())
    np.testing.assert_allclose(exp.raw[layer], raw, rtol=1e-3, atol=1e-4 * np.abs(raw).max())
    assert exp.maps.shape == (1, SIZE, SIZE)
    # A token layer of the encoder, reshaped to its grid without being told.
    tokens = ic.GradCAM(model, "segformer.stages.1.blocks.0.layernorm_before").explain(
        image, ic.SegmentationTarget(1, mask))
    assert tokens.raw["segformer.stages.1.blocks.0.layernorm_before"].shape == (1, 8, 8)
