"""The torch adapter's attention capture on zoo transformers: timm (ViT, DeiT distilled, DINOv2
with registers, EVA-02), torchvision's ``VisionTransformer`` and Hugging Face (ViT, DeiT, DINOv2,
CLIP vision), random weights and small inputs; Swin (three sources) and models whose attention
is not global self-attention are refused.

Per model: probabilities ``(N, heads, T, T)`` whose rows sum to 1, scores equal to the model's
own (the eager / written-out path computes what the fused one does), finite non-zero gradients
in both modes, per-block gradients equal to the output gradients of the model cut after each
block (later blocks made the identity), and the model as it was (weights, training flags,
``fused_attn`` switches, configs, hooks, ``forward`` attributes).

Runs in the zoo environment (``requirements-zoo.txt``); skips elsewhere unless
``INTERP_TEST_ZOO=1``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import zoo_env

for _module in ("torchvision", "timm", "transformers"):
    zoo_env.require(_module, module_level=True)

import timm  # noqa: E402
import torch  # noqa: E402
import torchvision  # noqa: E402
import transformers  # noqa: E402
from interp_torch.attention import blocks_of  # noqa: E402
from interp_torch.backend import TorchBackend  # noqa: E402
from interp_torch.layers import replace_first_tensor  # noqa: E402
from torch import nn  # noqa: E402
from zoo_torch import make_input, unzero  # noqa: E402

from interp_core.backend.attention import stochastic_rows  # noqa: E402
from interp_core.backend.target_spec import resolve_targets  # noqa: E402

BACKEND = TorchBackend()
N = 2


@dataclass(frozen=True)
class Case:
    id: str
    build: Callable[[], nn.Module]
    size: int
    blocks: str  # the container of the blocks
    layers: int  # attention layers
    tokens: int  # T


def _timm(name: str, **kwargs: Any) -> Callable[[], nn.Module]:
    return lambda: timm.create_model(name, pretrained=False, num_classes=5, **kwargs)


def _hf(model: str, config: str, **kwargs: Any) -> Callable[[], nn.Module]:
    return lambda: getattr(transformers, model)(getattr(transformers, config)(**kwargs))


_SMALL_HF = {"image_size": 32, "patch_size": 8, "hidden_size": 32, "num_hidden_layers": 2,
             "num_attention_heads": 2}

CASES = [
    Case("timm/vit_tiny_patch16_224", _timm("vit_tiny_patch16_224", img_size=32, depth=3),
         32, "blocks", 3, 5),
    Case("timm/deit_tiny_distilled_patch16_224",
         _timm("deit_tiny_distilled_patch16_224", img_size=32, depth=3), 32, "blocks", 3, 6),
    Case("timm/vit_small_patch14_reg4_dinov2",
         _timm("vit_small_patch14_reg4_dinov2", img_size=42, depth=3), 42, "blocks", 3, 14),
    Case("timm/eva02_tiny_patch14_224", _timm("eva02_tiny_patch14_224", img_size=42, depth=3),
         42, "blocks", 3, 10),
    Case("torchvision/VisionTransformer", lambda: torchvision.models.VisionTransformer(
        image_size=32, patch_size=16, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64,
        num_classes=5), 32, "encoder.layers", 2, 5),
    Case("transformers/ViTForImageClassification", _hf(
        "ViTForImageClassification", "ViTConfig", intermediate_size=64, num_labels=5,
        **_SMALL_HF), 32, "vit.layers", 2, 17),
    Case("transformers/DeiTForImageClassificationWithTeacher", _hf(
        "DeiTForImageClassificationWithTeacher", "DeiTConfig", intermediate_size=64,
        num_labels=5, **_SMALL_HF), 32, "deit.layers", 2, 18),
    Case("transformers/Dinov2ForImageClassification", _hf(
        "Dinov2ForImageClassification", "Dinov2Config", mlp_ratio=2, num_labels=5,
        **_SMALL_HF), 32, "dinov2.encoder.layer", 2, 17),
    Case("transformers/CLIPVisionModelWithProjection", _hf(
        "CLIPVisionModelWithProjection", "CLIPVisionConfig", intermediate_size=64,
        projection_dim=8, **_SMALL_HF), 32, "vision_model.encoder.layers", 2, 17),
]


def _build(case: Case) -> nn.Module:
    torch.manual_seed(0)
    return unzero(case.build()).eval()


def _logits(out: Any) -> torch.Tensor:
    if torch.is_tensor(out):
        return out
    for key in ("logits", "image_embeds"):
        if getattr(out, key, None) is not None:
            return getattr(out, key)
    return out[0]


def _state(model: nn.Module) -> dict[str, Any]:
    configs = {id(c): c for m in model.modules()
               if (c := getattr(m, "config", None)) is not None and hasattr(
                   c, "_attn_implementation")}
    return {
        "weights": {k: v.clone() for k, v in model.state_dict().items()},
        "training": [m.training for m in model.modules()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "grads": [p.grad for p in model.parameters()],
        "fused": [(n, m.fused_attn) for n, m in model.named_modules() if hasattr(m, "fused_attn")],
        "configs": [c._attn_implementation for c in configs.values()],
        "hooks": [(n, len(m._forward_hooks), len(m._forward_pre_hooks),
                   len(m._forward_hooks_with_kwargs), len(m._forward_pre_hooks_with_kwargs))
                  for n, m in model.named_modules()],
        "forwards": [n for n, m in model.named_modules() if "forward" in m.__dict__],
        "grad_mode": torch.is_grad_enabled(),
    }


def _assert_same(before: dict[str, Any], after: dict[str, Any]) -> None:
    assert before.keys() == after.keys()
    for key in before:
        if key == "weights":
            for name, value in before[key].items():
                assert torch.equal(value, after[key][name]), name
        else:
            assert before[key] == after[key], key


def _cut_after(blocks: nn.Module, layer: int) -> list[Any]:
    """Forward hooks that make every block after ``layer`` hand its input on unchanged."""
    def identity(_m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> Any:
        x = next(a for a in (*args, *kwargs.values()) if torch.is_tensor(a))
        return replace_first_tensor(out, x)
    return [block.register_forward_hook(identity, with_kwargs=True)
            for block in list(blocks)[layer + 1:]]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_attention_of_zoo_transformers(case: Case) -> None:
    model = _build(case)
    x = make_input(case.size, N)
    with torch.no_grad():
        own = _logits(model(x))  # the model's own (fused / sdpa) attention
    model.train()  # the call runs in eval mode and puts this back
    before = _state(model)
    spec = resolve_targets(None, N)

    plain = BACKEND.attention(model, x, spec)
    _assert_same(before, _state(model))
    assert plain.gradients is None and len(plain.blocks) == case.layers
    assert [b.rsplit(".", 1)[0] for b in blocks_of(model, plain.blocks)] == \
        [case.blocks] * case.layers
    for probs in plain.attentions:
        assert probs.shape[0] == N and probs.shape[2:] == (case.tokens, case.tokens)
        assert np.isfinite(probs).all() and stochastic_rows(probs, atol=1e-4)
    top1 = own.argmax(1).numpy()
    np.testing.assert_array_equal(plain.targets, top1)
    want = own[torch.arange(N), top1].numpy()
    np.testing.assert_allclose(plain.scores, want, atol=1e-4 * max(1.0, np.abs(want).max()))

    captures = {}
    for gradients in ("output", "per_block"):
        captures[gradients] = capture = BACKEND.attention(model, x, spec, gradients=gradients)
        _assert_same(before, _state(model))
        assert capture.blocks == plain.blocks
        np.testing.assert_array_equal(capture.targets, plain.targets)
        np.testing.assert_allclose(capture.scores, plain.scores, rtol=1e-5, atol=1e-6)
        for probs, got, grads in zip(plain.attentions, capture.attentions, capture.gradients,
                                     strict=True):
            np.testing.assert_allclose(got, probs, atol=1e-6)
            assert grads.shape == probs.shape and np.isfinite(grads).all()
            assert np.abs(grads).max() > 0
    out, per_block = captures["output"], captures["per_block"]
    _close(per_block.gradients[-1], out.gradients[-1])

    container = model.get_submodule(case.blocks)
    classes = resolve_targets(plain.targets, N)  # the cut model's top-1 may differ
    for layer in range(case.layers - 1):
        handles = _cut_after(container, layer)
        try:
            cut = BACKEND.attention(model, x, classes, gradients="output")
        finally:
            for handle in handles:
                handle.remove()
        _close(per_block.gradients[layer], cut.gradients[layer])
    _assert_same(before, _state(model))


def _close(got: np.ndarray, want: np.ndarray) -> None:
    scale = np.abs(want).max()
    assert scale > 0
    np.testing.assert_allclose(got / scale, want / scale, atol=1e-4)


def test_the_config_comes_back_after_an_error_inside_the_call() -> None:
    case = next(c for c in CASES if c.id == "transformers/ViTForImageClassification")
    model = _build(case)

    def fail(*_: Any) -> None:
        assert model.config._attn_implementation == "eager"  # inside: switched
        raise RuntimeError("boom")

    handle = model.vit.layers[1].register_forward_pre_hook(fail)
    try:
        before = _state(model)
        for gradients in ("none", "per_block"):
            with pytest.raises(ValueError, match="boom"):
                BACKEND.attention(model, make_input(32, N), resolve_targets(None, N),
                                  gradients=gradients)
            _assert_same(before, _state(model))
    finally:
        handle.remove()
    assert before["configs"] == ["sdpa"]


REFUSED = [
    ("timm/swin", _timm("swin_tiny_patch4_window7_224", img_size=64, window_size=4,
                        depths=(1, 1, 1, 1)), 64, r"windowed \(WindowAttention\)"),
    ("torchvision/SwinTransformer", lambda: torchvision.models.SwinTransformer(
        patch_size=[4, 4], embed_dim=16, depths=[1, 1], num_heads=[1, 2], window_size=[4, 4],
        num_classes=5), 64,
     r"windowed \(ShiftedWindowAttention\)"),
    # transformers 5 names Swin's attention SwinAttention (in the core's WINDOWED_ATTENTION)
    ("transformers/Swin", _hf("SwinForImageClassification", "SwinConfig", image_size=32,
                              patch_size=2, embed_dim=16, depths=[1, 2], num_heads=[1, 2],
                              window_size=4, num_labels=5), 32,
     r"windowed \((SwinAttention|SwinSelfAttention)"),
    ("timm/maxvit", _timm("maxvit_pico_rw_256", img_size=64), 64,
     r"stages.0.blocks.0.attn_block.attn.*shape \(\d+, 1, 4, 4\), not \(N=1"),
    ("timm/pvt_v2", _timm("pvt_v2_b0"), 64, r"stages.0.blocks.0.attn.*shape \(1, 1, 256, 4\)"),
    ("timm/cait", _timm("cait_xxs24_224", img_size=32, depth=1), 32,
     r"blocks_token_only.0.attn.*shape \(1, 4, 1, 5\)"),
]


@pytest.mark.parametrize(("build", "size", "match"), [r[1:] for r in REFUSED],
                         ids=[r[0] for r in REFUSED])
def test_models_without_global_self_attention_are_refused(build: Callable[[], nn.Module],
                                                          size: int, match: str) -> None:
    torch.manual_seed(0)
    model = build().eval()
    before = _state(model)
    with pytest.raises(NotImplementedError, match=match):
        BACKEND.attention(model, make_input(size, N), resolve_targets(None, N),
                          gradients="per_block")
    _assert_same(before, _state(model))

