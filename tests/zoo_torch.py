"""The PyTorch model zoo of the sweep: torchvision, timm and Hugging Face classifiers built with
random weights and small inputs, and an independent Grad-CAM reference.

Imported by ``tests/test_zoo_torch.py`` and ``scripts/make_models_table.py``; needs torchvision,
timm and transformers (``requirements-zoo.txt``). Nothing downloads: torchvision and timm models
are built with ``weights=None`` / ``pretrained=False``, Hugging Face models from configs.

The reference splits the model at the layer with a forward hook, takes the gradient of the
target logit with ``torch.autograd.grad`` by hand, and computes Grad-CAM in torch: it shares no
code with interp-core beyond the model.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn
from zoo_common import Result, agrees, timed

import interp_core as ic
from interp_core.datasets.shapes import make_shapes


@dataclass(frozen=True)
class Case:
    """One model of the sweep.

    Attributes
    ----------
    source, name : str
        ``"torchvision"`` / ``"timm"`` / ``"transformers"`` and the model's name there.
    family : str
        Architecture family (the table's grouping).
    build : callable
        Builds the model, random weights.
    size : int
        Side of the square input.
    layer : str
        The named layer explained besides the default one.
    prefix : int
        Class/distillation/register tokens of the named layer (reference only).
    default_prefix : int or None
        The same for the default layer, when it differs.
    default : str
        A regular expression the default layer's name must match ("" for any).
    slow : bool
        Marked ``@pytest.mark.slow``.
    """

    source: str
    name: str
    family: str
    build: Callable[[], nn.Module]
    size: int
    layer: str
    prefix: int = 0
    default: str = ""
    slow: bool = False
    default_prefix: int | None = None

    @property
    def id(self) -> str:
        return f"{self.source}/{self.name}"


# -- builders ---------------------------------------------------------------------------------
def _torchvision(name: str, **kwargs: Any) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import torchvision

        return torchvision.models.get_model(name, weights=None, num_classes=10, **kwargs)
    return build


def _timm(name: str, **kwargs: Any) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import timm

        return timm.create_model(name, pretrained=False, num_classes=10, **kwargs)
    return build


def _hf(model_class: str, config_class: str, **config: Any) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import transformers

        cfg = getattr(transformers, config_class)(num_labels=10, **config)
        return getattr(transformers, model_class)(cfg)
    return build


_CASE_OPTIONS = ("prefix", "default", "slow", "default_prefix")


def _tv(name: str, size: int, layer: str, family: str, **kw: Any) -> Case:
    options = {k: kw.pop(k) for k in _CASE_OPTIONS if k in kw}
    return Case("torchvision", name, family, _torchvision(name, **kw), size, layer, **options)


def _tm(name: str, size: int, layer: str, family: str, **kw: Any) -> Case:
    options = {k: kw.pop(k) for k in _CASE_OPTIONS if k in kw}
    return Case("timm", name, family, _timm(name, **kw), size, layer, **options)


TORCHVISION = [
    _tv("alexnet", 128, "features.8", "AlexNet"),
    _tv("vgg11", 64, "features.13", "VGG"),
    _tv("vgg11_bn", 64, "features.20", "VGG", slow=True),
    _tv("resnet18", 64, "layer3.1.conv2", "ResNet", default=r"^layer4$"),
    _tv("resnet34", 64, "layer4.2", "ResNet", slow=True),
    _tv("resnet50", 64, "layer4.2.conv3", "ResNet"),
    _tv("resnext50_32x4d", 64, "layer4", "ResNeXt", slow=True),
    _tv("wide_resnet50_2", 64, "layer3", "Wide ResNet", slow=True),
    _tv("densenet121", 64, "features.denseblock4", "DenseNet"),
    _tv("googlenet", 64, "inception5a", "GoogLeNet", init_weights=True, aux_logits=False),
    _tv("inception_v3", 96, "Mixed_6e", "Inception", init_weights=True, aux_logits=False,
        slow=True),
    _tv("squeezenet1_0", 64, "features.9", "SqueezeNet"),
    _tv("squeezenet1_1", 64, "features.10", "SqueezeNet", slow=True),
    _tv("mobilenet_v2", 64, "features.14", "MobileNet"),
    _tv("mobilenet_v3_small", 64, "features.9", "MobileNet"),
    _tv("mobilenet_v3_large", 64, "features.12", "MobileNet", slow=True),
    _tv("mnasnet0_5", 64, "layers.14", "MNASNet"),
    _tv("mnasnet1_0", 64, "layers.13", "MNASNet", slow=True),
    _tv("shufflenet_v2_x0_5", 64, "stage3", "ShuffleNet"),
    _tv("shufflenet_v2_x1_0", 64, "stage4", "ShuffleNet", slow=True),
    _tv("efficientnet_b0", 64, "features.6", "EfficientNet"),
    _tv("efficientnet_b1", 64, "features.7", "EfficientNet", slow=True),
    _tv("efficientnet_v2_s", 64, "features.5", "EfficientNet", slow=True),
    _tv("regnet_x_400mf", 64, "trunk_output.block3", "RegNet"),
    _tv("regnet_y_400mf", 64, "trunk_output.block4", "RegNet", slow=True),
    _tv("convnext_tiny", 64, "features.7.2.block.2", "ConvNeXt"),
    _tv("swin_t", 64, "features.7.1.norm1", "Swin"),
    _tv("swin_v2_t", 64, "features.5.3.norm1", "Swin", slow=True),
    _tv("vit_b_16", 64, "encoder.layers.encoder_layer_10.ln_1", "ViT", image_size=64,
        prefix=1, default=r"encoder_layer_11\.ln_1$"),
    _tv("vit_b_32", 64, "encoder.layers.encoder_layer_8.ln_1", "ViT", image_size=64, prefix=1,
        slow=True),
    _tv("maxvit_t", 224, "blocks.3.layers.0", "MaxViT", slow=True),
]

TIMM = [
    _tm("resnet18", 64, "layer4.1", "ResNet"),
    _tm("efficientnet_b0", 64, "blocks.5", "EfficientNet"),
    _tm("mobilenetv3_small_100", 64, "blocks.4", "MobileNet"),
    _tm("regnetx_002", 64, "s4", "RegNet", slow=True),
    _tm("repvgg_a0", 64, "stages.2", "RepVGG"),
    _tm("convnext_atto", 64, "stages.3.blocks.1.norm", "ConvNeXt"),
    _tm("vit_tiny_patch16_224", 64, "blocks.10.norm1", "ViT", img_size=64, prefix=1,
        default=r"^blocks\.11\.norm1$"),
    _tm("vit_small_patch14_reg4_dinov2", 56, "blocks.10.norm1", "ViT (registers)", img_size=56,
        prefix=5, default=r"^blocks\.11\.norm1$", slow=True),
    _tm("deit_tiny_patch16_224", 64, "blocks.10.norm1", "DeiT", img_size=64, prefix=1,
        default=r"^blocks\.11\.norm1$"),
    _tm("deit_tiny_distilled_patch16_224", 64, "blocks.9.norm1", "DeiT", img_size=64, prefix=2,
        default=r"^blocks\.11\.norm1$", slow=True),
    _tm("cait_xxs24_224", 64, "blocks.23.norm1", "CaiT", img_size=64, default_prefix=1,
        default=r"^blocks_token_only\.1\.norm1$", slow=True),
    _tm("swin_tiny_patch4_window7_224", 64, "layers.3.blocks.1.norm1", "Swin", img_size=64,
        window_size=4),
    _tm("levit_128s", 64, "stages.1", "LeViT", img_size=64),
    _tm("levit_conv_128s", 64, "stages.1", "LeViT", img_size=64, slow=True),
    _tm("maxvit_pico_rw_256", 64, "stages.3", "MaxViT", img_size=64),
    _tm("mobilevit_xxs", 64, "stages.3", "MobileViT"),
    _tm("efficientformer_l1", 224, "stages.2", "EfficientFormer", slow=True),
    _tm("efficientformerv2_s0", 64, "stages.2", "EfficientFormer", img_size=64, slow=True),
    _tm("mixer_s16_224", 64, "blocks.6.norm1", "MLP-Mixer", img_size=64, slow=True),
    _tm("poolformer_s12", 64, "stages.2", "PoolFormer", slow=True),
    _tm("fastvit_t8", 64, "stages.2", "FastViT", slow=True),
    _tm("edgenext_xx_small", 64, "stages.2", "EdgeNeXt", slow=True),
    _tm("tiny_vit_5m_224", 224, "stages.2", "TinyViT", slow=True),
    _tm("pit_ti_224", 64, "transformers.1", "PiT", img_size=64, default_prefix=1, slow=True),
]

HUGGINGFACE = [
    Case("transformers", "ViTForImageClassification", "ViT", _hf(
        "ViTForImageClassification", "ViTConfig", image_size=32, patch_size=4, hidden_size=32,
        num_hidden_layers=3, num_attention_heads=2, intermediate_size=64), 32,
        "vit.layers.1.layernorm_before", prefix=1, default=r"^vit\.layers\.2\.layernorm_before$"),
    Case("transformers", "DeiTForImageClassificationWithTeacher", "DeiT", _hf(
        "DeiTForImageClassificationWithTeacher", "DeiTConfig", image_size=32, patch_size=4,
        hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64), 32,
        "deit.layers.1.layernorm_before", prefix=2,
        default=r"^deit\.layers\.2\.layernorm_before$"),
    Case("transformers", "SwinForImageClassification", "Swin", _hf(
        "SwinForImageClassification", "SwinConfig", image_size=32, patch_size=2, embed_dim=16,
        depths=[1, 2], num_heads=[1, 2], window_size=4), 32,
        "swin.encoder.layers.1.blocks.1.layernorm_before"),
    Case("transformers", "ConvNextForImageClassification", "ConvNeXt", _hf(
        "ConvNextForImageClassification", "ConvNextConfig", num_stages=3,
        hidden_sizes=[16, 32, 48], depths=[1, 1, 1]), 64, "convnext.encoder.stages.1"),
    Case("transformers", "ResNetForImageClassification", "ResNet", _hf(
        "ResNetForImageClassification", "ResNetConfig", embedding_size=16,
        hidden_sizes=[16, 32, 48], depths=[1, 1, 1], layer_type="basic"), 64,
        "resnet.encoder.stages.1"),
    Case("transformers", "MobileViTForImageClassification", "MobileViT", _hf(
        "MobileViTForImageClassification", "MobileViTConfig", image_size=64,
        hidden_sizes=[32, 48, 64], neck_hidden_sizes=[8, 8, 16, 24, 32, 40, 64],
        initializer_range=0.2), 64,
        "mobilevit.encoder.layer.3"),
]

CASES = TORCHVISION + TIMM + HUGGINGFACE


# -- inputs and weights ------------------------------------------------------------------------
def make_input(size: int, n: int = 1) -> torch.Tensor:
    """A fixed, non-degenerate input: shapes images, normalised (not noise, so maps have
    structure even with random weights)."""
    images = make_shapes(n, size=size, seed=3).channels_first()
    return torch.from_numpy((images - 0.5) / 0.25)


def unzero(model: nn.Module) -> nn.Module:
    """Give zero-initialised weights (torchvision ViT's head, timm's zero-init last norms)
    small random values: with an all-zero head every gradient is zero and every map empty."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for module in model.modules():
            weight = getattr(module, "weight", None)
            if isinstance(weight, torch.Tensor) and weight.is_floating_point() and \
                    weight.numel() and not weight.any():
                fan_in = weight[0].numel() if weight.ndim > 1 else 1
                scale = 1.0 if weight.ndim == 1 else 1.0 / math.sqrt(fan_in)
                weight.copy_(torch.randn(weight.shape, generator=gen) * scale +
                             (1.0 if weight.ndim == 1 else 0.0))
    return model


def build(case: Case) -> nn.Module:
    torch.manual_seed(0)
    return unzero(case.build()).eval()


# -- the reference -----------------------------------------------------------------------------
def _logits(out: Any) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    if hasattr(out, "logits"):
        return out.logits
    return out[0]


def _as_nchw(t: torch.Tensor, prefix: int) -> torch.Tensor:
    """A layer output as (N, C, h, w), by hand, for square inputs: tokens (N, T, C) lose the
    prefix and become a square grid; (N, h, w, C) grids are told apart from (N, C, h, w) by
    which pair of axes is square."""
    if t.ndim == 3:
        n, tokens, c = t.shape
        side = math.isqrt(tokens - prefix)
        assert side * side == tokens - prefix, (tuple(t.shape), prefix)
        return t[:, prefix:].reshape(n, side, side, c).permute(0, 3, 1, 2)
    assert t.ndim == 4, tuple(t.shape)
    if t.shape[2] == t.shape[3]:
        return t
    assert t.shape[1] == t.shape[2], tuple(t.shape)
    return t.permute(0, 3, 1, 2)


def _minmax(m: torch.Tensor) -> torch.Tensor:
    flat = m.reshape(len(m), -1)
    lo = flat.min(1).values.reshape(-1, 1, 1)
    hi = flat.max(1).values.reshape(-1, 1, 1)
    span = hi - lo
    flat_map = span <= 1e-6 * torch.maximum(hi.abs(), lo.abs())
    return torch.where(flat_map, torch.zeros_like(m), (m - lo) / torch.where(flat_map, 1, span))


def reference_gradcam(model: nn.Module, x: torch.Tensor, layer: str, prefix: int, *,
                      relu: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Grad-CAM of each sample's top-1 class at ``layer``, by hand: ``(maps, raw)`` with maps
    ``(N, H, W)`` in [0, 1] and the raw map ``(N, h, w)`` before ReLU."""
    module = dict(model.named_modules())[layer]
    store: dict[str, torch.Tensor] = {}

    def hook(mod: nn.Module, args: Any, out: Any) -> Any:
        first = out[0] if isinstance(out, tuple | list) else out
        store["a"] = first
        copy = first.clone()  # downstream in-place ops must not touch the stored tensor
        return (copy, *out[1:]) if isinstance(out, tuple | list) else copy

    handle = module.register_forward_hook(hook)
    try:
        with torch.enable_grad():
            logits = _logits(model(x))
            classes = logits.argmax(1)
            score = logits.gather(1, classes[:, None]).sum()
            (grad,) = torch.autograd.grad(score, store["a"])
    finally:
        handle.remove()
    a = _as_nchw(store["a"].detach(), prefix)
    g = _as_nchw(grad, prefix)
    weights = g.mean(dim=(2, 3), keepdim=True)
    raw = (weights * a).sum(1)
    cam = _minmax(F.relu(raw) if relu else raw)
    up = F.interpolate(cam[:, None], size=tuple(x.shape[2:]), mode="bilinear",
                       align_corners=False)[:, 0]
    return _minmax(up).numpy(), raw.numpy()


# -- one check ---------------------------------------------------------------------------------
def check(case: Case, model: nn.Module | None = None) -> Result:
    """Grad-CAM with the default layer and with ``case.layer`` against the reference."""
    from interp_core.backend.grids import grid_layout

    result = Result(case.id, case.family, case.source, named_layer=case.layer)
    with timed(result):
        model = build(case) if model is None else model
        x = make_input(case.size)
        exp = ic.GradCAM(model).explain(x)
        (result.default_layer,) = exp.layers
        shape = _output_shape(model, x, result.default_layer)
        canonical = (shape[0], *shape[2:], shape[1])
        layout = grid_layout(canonical, x.shape[2:], native_channels_first=True)
        result.reshape = "" if layout is None or layout.is_identity else layout.describe()
        prefix = case.prefix if case.default_prefix is None else case.default_prefix
        result.default_ok = _agrees(exp, model, x, result.default_layer, case, prefix)
        if case.default and not re.search(case.default, result.default_layer):
            raise AssertionError(f"default layer {result.default_layer!r} does not match "
                                 f"{case.default!r}")
        named = ic.GradCAM(model, case.layer).explain(x)
        result.named_ok = _agrees(named, model, x, case.layer, case, case.prefix)
    return result


def _output_shape(model: nn.Module, x: torch.Tensor, layer: str) -> tuple[int, ...]:
    shapes: list[tuple[int, ...]] = []

    def hook(mod: nn.Module, args: Any, out: Any) -> None:
        first = out[0] if isinstance(out, tuple | list) else out
        shapes.append(tuple(first.shape))

    handle = dict(model.named_modules())[layer].register_forward_hook(hook)
    try:
        with torch.no_grad():
            model(x)
    finally:
        handle.remove()
    return shapes[0]


def _agrees(exp: Any, model: nn.Module, x: torch.Tensor, layer: str, case: Case,
            prefix: int) -> bool:
    """:func:`zoo_common.agrees` with this module's reference at ``layer``."""
    return agrees(case.id, layer, exp.raw[layer], exp.maps,
                  lambda relu: reference_gradcam(model, x, layer, prefix, relu=relu),
                  lambda: ic.GradCAM(model, layer, relu=False)(x))
