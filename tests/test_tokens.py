"""Token layers as grids, and the default layer's choice (interp_core.backend.grids,
interp_core.backend.layer_choice), in NumPy; then end to end on small torch token models."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import interp_core as ic
from interp_core.backend.grids import as_grid, consistent_grid, grid_layout, token_grid
from interp_core.backend.layer_choice import (
    LayerOutput,
    choose_layer,
    default_layer,
    last_block_first_norm,
)
from interp_core.backend.protocol import Capture, LayerCapture, LayerProbe
from interp_core.backend.target_spec import TargetSpec

# -- grids ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("grid", "size", "ok"), [
    ((14, 14), (224, 224), True),
    ((7, 7), (224, 224), True),
    ((4, 4), (224, 224), True),           # LeViT's last stage: ceil(224 / 64)
    ((14, 10), (224, 160), True),
    ((10, 14), (224, 160), False),        # the input's longer side has the shorter grid side
    ((1, 197), (224, 224), False),
    ((9, 10), (128, 128), False),         # a square input has a square grid
    ((27, 28), (224, 224), False),
    ((3,), (50,), True),
    ((2, 2), (64, 64, 64), False),        # wrong number of axes
])
def test_consistent_grid(grid, size, ok):
    assert consistent_grid(grid, size) is ok


def test_token_grid_finds_the_input_aspect():
    assert token_grid(196, (224, 224)) == (14, 14)
    assert token_grid(140, (224, 160)) == (14, 10)
    assert token_grid(197, (224, 224)) is None
    assert token_grid(2 * 4 * 4, (32, 64, 64)) == (2, 4, 4)  # 3-D patches of 16


@pytest.mark.parametrize(("tokens", "prefix", "size", "grid"), [
    (197, 1, (224, 224), (14, 14)),        # ViT: class token
    (198, 2, (224, 224), (14, 14)),        # DeiT distilled: class + distillation
    (201, 5, (224, 224), (14, 14)),        # DINOv2 with 4 registers
    (49, 0, (224, 224), (7, 7)),           # Swin in Hugging Face, no class token
    (141, 1, (224, 160), (14, 10)),        # a non-square input
])
def test_grid_layout_of_tokens_in_both_canonical_layouts(tokens, prefix, size, grid):
    first = grid_layout((2, 768, tokens), size, native_channels_first=True)   # torch: (N, C, T)
    last = grid_layout((2, tokens, 1024), size, native_channels_first=False)  # Keras: (N, T, C)
    assert (first.token_axis, first.prefix, first.grid) == (2, prefix, grid)
    assert (last.token_axis, last.prefix, last.grid) == (1, prefix, grid)
    assert first.kind == "tokens" and first.describe().startswith(f"tokens: {prefix} prefix")


def test_channel_counts_are_never_read_as_tokens():
    # 1024 channels = 32 x 32 would be a grid: only native axis 1 holds tokens.
    assert grid_layout((1, 1024, 197), (224, 224), native_channels_first=True).prefix == 1
    # Dense heads and detection heads with anchor counts: no grid, no candidate.
    assert grid_layout((1, 10), (224, 224), native_channels_first=True) is None
    assert grid_layout((1, 4, 3069), (128, 128), native_channels_first=True) is None
    assert grid_layout((1, 91, 341), (128, 128), native_channels_first=True) is None


def test_channels_last_grids_in_a_channels_first_framework():
    # torch Swin block output (N, 7, 7, 768) arrives moved to (N, 7, 768, 7).
    layout = grid_layout((1, 7, 768, 7), (224, 224), native_channels_first=True)
    assert layout.move == (-1, 1) and layout.grid == (7, 7)
    # A channels-first tensor in a channels-last framework, the other way round.
    layout = grid_layout((1, 768, 7, 7), (224, 224), native_channels_first=False)
    assert layout.move == (1, -1) and layout.grid == (7, 7)
    # Ordinary convolution outputs are left alone.
    assert grid_layout((1, 7, 7, 768), (224, 224), native_channels_first=True).is_identity
    # An attention layer's (N, T, heads, C) is no grid of the input.
    assert not grid_layout((1, 17, 2, 16), (32, 32), native_channels_first=False).fits


def test_as_grid_puts_each_token_in_its_place():
    n, h, w, c = 2, 3, 4, 16
    grid = np.arange(n * h * w * c, dtype=np.float32).reshape(n, h, w, c)
    tokens = np.concatenate([np.full((n, 1, c), -1.0, np.float32),
                             grid.reshape(n, h * w, c)], axis=1)        # (N, 1 + h*w, C)
    canonical = np.moveaxis(tokens, 1, -1)                              # torch's (N, C, T)
    acts, grads, layout = as_grid(canonical, canonical * 2, (6, 8), native_channels_first=True)
    np.testing.assert_array_equal(acts, grid)
    np.testing.assert_array_equal(grads, grid * 2)
    assert layout.prefix == 1
    swin = np.moveaxis(grid, 1, -1)                                     # (N, w, C, h)
    assert as_grid(swin, None, (6, 8), native_channels_first=True)[0].shape == (n, h, w, c)


# -- the default layer ------------------------------------------------------------------------
def _cnn() -> list[LayerOutput]:
    return [LayerOutput("conv1", (2, 32, 32, 8), "Conv2d"),
            LayerOutput("relu", (2, 16, 16, 8), "ReLU", calls=3),
            LayerOutput("layer1", (2, 16, 16, 8), "Sequential"),
            LayerOutput("layer2", (2, 8, 8, 16), "Sequential"),
            LayerOutput("avgpool", (2, 7, 7, 16), "AdaptiveAvgPool2d"),
            LayerOutput("pool", (2, 1, 1, 16), "AvgPool2d"),
            LayerOutput("fc", (2, 10), "Linear")]


def test_cnn_default_is_the_last_grid_layer():
    assert choose_layer(_cnn(), (32, 32), 2, native_channels_first=True) == "layer2"


def test_layers_that_ran_twice_or_lost_the_batch_axis_are_skipped():
    outputs = [*_cnn()[:4], LayerOutput("shared", (2, 8, 8, 16), "Conv2d", calls=2),
               LayerOutput("roi_pool", (1000, 7, 7, 16), "RoIAlign")]
    assert choose_layer(outputs, (32, 32), 2, native_channels_first=True) == "layer2"


def _vit(depth: int = 3) -> list[LayerOutput]:
    outputs = [LayerOutput("patch_embed", (1, 4, 4, 32), "Conv2d")]
    for b in range(depth):
        outputs += [LayerOutput(f"blocks.{b}.norm1", (1, 32, 17), "LayerNorm"),
                    LayerOutput(f"blocks.{b}.attn", (1, 32, 17), "Attention"),
                    LayerOutput(f"blocks.{b}.norm2", (1, 32, 17), "LayerNorm"),
                    LayerOutput(f"blocks.{b}.mlp", (1, 32, 17), "Mlp"),
                    LayerOutput(f"blocks.{b}", (1, 32, 17), "Block")]
    return [*outputs, LayerOutput("norm", (1, 32, 17), "LayerNorm"),
            LayerOutput("head", (1, 10), "Linear")]


def _probe_cls_pooling(names: list[str]) -> dict[str, np.ndarray]:
    """Gradients of a class-token ViT: the last block's output tokens and everything after its
    attention reach the score through the class token only."""
    grads = {}
    for name in names:
        g = np.ones((1, 32, 17), np.float32)
        if name in ("norm", "blocks.2", "blocks.2.mlp", "blocks.2.norm2", "blocks.2.attn"):
            g[..., 1:] = 0.0
        grads[name] = g
    return grads


def test_token_model_default_is_the_last_blocks_first_norm():
    chosen = choose_layer(_vit(), (16, 16), 1, native_channels_first=True,
                          gradient_probe=_probe_cls_pooling)
    assert chosen == "blocks.2.norm1"


def test_without_a_probe_the_structure_decides():
    def failing(names: list[str]) -> dict[str, np.ndarray]:
        raise ValueError("class targets need a (N, num_classes) output")

    for probe in (None, failing, lambda names: {n: np.zeros((1, 32, 17)) for n in names}):
        assert choose_layer(_vit(), (16, 16), 1, native_channels_first=True,
                            gradient_probe=probe) == "blocks.2.norm1"
    norms = [o for o in _vit() if o.is_norm]
    assert last_block_first_norm(norms) == "blocks.2.norm1"


def test_a_grid_that_never_reaches_the_score_is_passed_over():
    # PiT: the last stage returns a grid its class token leaves behind.
    outputs = [*_cnn()[:4], LayerOutput("stage3", (2, 4, 4, 16), "Transformer")]

    def probe(names: list[str]) -> dict[str, np.ndarray]:
        return {n: np.zeros((1, 4, 4, 16)) if n == "stage3" else np.ones((1, 8, 8, 16))
                for n in names}

    assert choose_layer(outputs, (32, 32), 2, native_channels_first=True,
                        gradient_probe=probe) == "layer2"


def test_no_candidate_names_three_likely_layers():
    outputs = [LayerOutput("embed", (1, 64, 300), "Embedding"),    # torch's (N, C, T)
               LayerOutput("encoder", (1, 64, 300), "Encoder"),
               LayerOutput("pool", (1, 1, 1, 64), "AdaptiveAvgPool2d"),
               LayerOutput("fc", (1, 10), "Linear")]
    with pytest.raises(ValueError) as info:
        choose_layer(outputs, (32, 32), 1, native_channels_first=True)
    message = str(info.value)
    for name in ("'embed'", "'encoder'", "'pool'"):
        assert name in message
    assert "'fc'" not in message and "form no grid" in message


# -- the core's default_layer(backend, model, inputs) -------------------------------------------
class ProbedBackend:
    """Reports the PiT-like outputs below; its capture gives the gradients of ``probe``."""

    name = "probed"

    def __init__(self, gradient_probe: bool = False) -> None:
        self.calls: list[tuple[str, Any]] = []
        if gradient_probe:
            self.gradient_probe = self._gradient_probe

    def layer_outputs(self, model: Any, inputs: np.ndarray) -> LayerProbe:
        self.calls.append(("layer_outputs", inputs.shape))
        outputs = [*_cnn()[:4], LayerOutput("stage3", (2, 4, 4, 16), "Transformer")]
        return LayerProbe(outputs, (32, 32), len(inputs), native_channels_first=True)

    @staticmethod
    def _grads(names: list[str]) -> dict[str, np.ndarray]:
        return {n: np.zeros((1, 4, 4, 16)) if n == "stage3" else np.ones((1, 8, 8, 16))
                for n in names}

    def capture(self, model: Any, inputs: np.ndarray, layers: list[str], target: TargetSpec,
                **options: Any) -> Capture:
        self.calls.append(("capture", (inputs.shape, target.kind, tuple(layers))))
        grads = self._grads(layers)
        return Capture({n: LayerCapture(n, g, g) for n, g in grads.items()},
                       np.zeros(1, np.float32), np.zeros(1, np.int64), (32, 32))

    def _gradient_probe(self, model: Any, inputs: np.ndarray,
                        names: list[str]) -> dict[str, np.ndarray]:
        self.calls.append(("gradient_probe", inputs.shape))
        return self._grads(names)


def test_the_core_chooses_from_the_adapters_layer_outputs_and_one_top1_capture():
    backend = ProbedBackend()
    x = np.zeros((2, 3, 32, 32), np.float32)
    assert default_layer(backend, object(), x) == "layer2"
    (what, shape), (probe, (sample, kind, layers)) = backend.calls
    assert (what, shape, probe) == ("layer_outputs", (2, 3, 32, 32), "capture")
    assert sample == (1, 3, 32, 32) and kind == "top1" and "stage3" in layers  # first sample
    own = ProbedBackend(gradient_probe=True)  # an adapter's own probe replaces the capture
    assert default_layer(own, object(), x) == "layer2"
    assert [c[0] for c in own.calls] == ["layer_outputs", "gradient_probe"]


def test_a_model_with_one_layer_names_it_and_old_adapters_still_work():
    class Single:
        def layer_outputs(self, model: Any, inputs: Any) -> LayerProbe:
            return LayerProbe((), (), 0, native_channels_first=False, only="features")

    assert default_layer(Single(), object(), np.zeros((1, 4))) == "features"

    class Legacy:  # written against interp-core 0.1: default_layer, no layer_outputs
        name = "legacy"

        def default_layer(self, model: Any, inputs: Any) -> str:
            return "conv"

    with pytest.warns(DeprecationWarning, match="layer_outputs"):
        assert default_layer(Legacy(), object(), np.zeros((1, 4))) == "conv"
    with pytest.raises(TypeError, match="pass layer= explicitly"):
        default_layer(object(), object(), np.zeros((1, 4)))


# -- end to end in torch ----------------------------------------------------------------------
torch = pytest.importorskip("torch")
nn = torch.nn


class TinyViT(nn.Module):
    """Patches of 4, a class token, two pre-norm blocks, a head on the class token."""

    def __init__(self, dim: int = 16, prefix: int = 1) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.patch = nn.Conv2d(3, dim, 4, 4)
        self.extra = nn.Parameter(torch.randn(1, prefix, dim))
        self.blocks = nn.ModuleList(
            nn.ModuleDict({"norm1": nn.LayerNorm(dim),
                           "attn": nn.MultiheadAttention(dim, 2, batch_first=True),
                           "norm2": nn.LayerNorm(dim), "mlp": nn.Linear(dim, dim)})
            for _ in range(2))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.patch(x).flatten(2).transpose(1, 2)
        t = torch.cat([self.extra.expand(len(x), -1, -1), t], dim=1)
        for block in self.blocks:
            h = block["norm1"](t)
            t = t + block["attn"](h, h, h, need_weights=False)[0]
            t = t + block["mlp"](block["norm2"](t))
        return self.head(self.norm(t)[:, 0])


@pytest.mark.parametrize("prefix", [1, 2, 5])
def test_vit_default_layer_and_automatic_reshape(prefix):
    model = TinyViT(prefix=prefix).eval()
    x = torch.randn(2, 3, 16, 24)                                   # a 4x6 patch grid
    exp = ic.GradCAM(model).explain(x)
    assert exp.layers == ["blocks.1.norm1"]
    assert exp.raw["blocks.1.norm1"].shape == (2, 4, 6)
    manual = ic.GradCAM(model, "blocks.1.norm1",
                        reshape=ic.tokens_to_grid(prefix=prefix, height=4, width=6))(x)
    np.testing.assert_allclose(exp.maps, manual, atol=1e-6)


class SwinLike(nn.Module):
    """A channels-last (N, H, W, C) stage in torch, as torchvision's Swin emits."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.patch = nn.Conv2d(3, 8, 4, 4)
        self.norm = nn.LayerNorm(8)
        self.mlp = nn.Linear(8, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.patch(x).permute(0, 2, 3, 1)                       # (N, H, W, C)
        t = self.mlp(self.norm(t))
        return self.head(t.mean(dim=(1, 2)))


def test_channels_last_layers_are_explained_over_their_grid():
    model = SwinLike().eval()
    x = torch.randn(1, 3, 32, 16)
    exp = ic.GradCAM(model, "mlp").explain(x)
    assert exp.raw["mlp"].shape == (1, 8, 4)
    with torch.no_grad():
        acts = model.mlp(model.norm(model.patch(x).permute(0, 2, 3, 1)))
    # Grad-CAM equals CAM at the last layer before mean pooling: weights = head row / (H*W).
    weights = model.head.weight[int(exp.targets[0])] / 32
    np.testing.assert_allclose(exp.raw["mlp"][0], (acts[0] @ weights).detach().numpy(), rtol=1e-4,
                               atol=1e-6)
    assert ic.GradCAM(model).explain(x).layers == ["mlp"]


def test_a_model_without_grid_layers_lists_candidates():
    model = nn.Sequential(nn.Flatten(), nn.Linear(48, 8), nn.ReLU(), nn.Linear(8, 2)).eval()
    with pytest.raises(ValueError, match=r"most likely candidates: '3'.*'2'.*'1'"):
        ic.GradCAM(model)(torch.randn(1, 3, 4, 4))


def _hooked_output(model: nn.Module, layer: str, x: torch.Tensor) -> torch.Tensor:
    store = {}
    handle = dict(model.named_modules())[layer].register_forward_hook(
        lambda m, a, o: store.update(out=o))
    try:
        with torch.no_grad():
            model(x)
    finally:
        handle.remove()
    return store["out"]


@pytest.mark.parametrize("prefix", [1, 2])
def test_feature_maps_of_a_token_layer_are_its_patch_grid(prefix):
    model = TinyViT(prefix=prefix).eval()
    x = torch.randn(2, 3, 16, 24)                                   # a 4x6 patch grid
    maps = ic.feature_maps(model, x, "blocks.1.norm1")
    tokens = _hooked_output(model, "blocks.1.norm1", x)             # (2, prefix + 24, 16)
    by_hand = tokens[:, prefix:].reshape(2, 4, 6, 16).permute(0, 3, 1, 2).numpy()
    assert maps.shape == (2, 16, 4, 6)                               # (N, C, H, W)
    np.testing.assert_allclose(maps, by_hand, rtol=1e-6, atol=1e-6)
    told = ic.feature_maps(model, x, "blocks.1.norm1",
                           reshape=ic.tokens_to_grid(prefix=prefix, height=4, width=6))
    np.testing.assert_array_equal(maps, told)


def test_feature_maps_of_a_channels_last_layer_keep_the_channels():
    model = SwinLike().eval()
    x = torch.randn(1, 3, 24, 16)
    maps = ic.feature_maps(model, x, "mlp")
    by_hand = _hooked_output(model, "mlp", x).permute(0, 3, 1, 2).numpy()   # (1, 8, 6, 4)
    assert maps.shape == (1, 8, 6, 4)
    np.testing.assert_allclose(maps, by_hand, rtol=1e-6, atol=1e-6)


def _ablation_weights_by_hand(model: nn.Module, layer: str, x: torch.Tensor,
                              target: int) -> np.ndarray:
    """``(y - y_c) / y`` with channel ``c`` of the layer's native output (last axis: tokens
    ``(N, T, C)`` or channels-last ``(N, H, W, C)``) set to zero, one forward pass each."""
    module = dict(model.named_modules())[layer]
    zeroed: dict[str, int] = {}

    def hook(m: nn.Module, args: object, out: torch.Tensor) -> torch.Tensor:
        if "c" not in zeroed:
            return out
        out = out.clone()
        out[..., zeroed["c"]] = 0.0
        return out

    channels = _hooked_output(model, layer, x).shape[-1]
    handle = module.register_forward_hook(hook)
    try:
        with torch.no_grad():
            y = float(model(x)[0, target])
            out = []
            for c in range(channels):
                zeroed["c"] = c
                out.append((y - float(model(x)[0, target])) / y)
    finally:
        handle.remove()
    return np.float32(out)


@pytest.mark.parametrize("build, layer, size", [
    (lambda: TinyViT(prefix=1), "blocks.1.norm1", (16, 24)),
    (SwinLike, "mlp", (32, 16)),
])
def test_ablation_cam_ablates_channels_not_tokens(build, layer, size):
    """Ablation-CAM on a token layer and on a channels-last layer: the channels it ablates
    are the layer's last axis (not the tokens or rows on axis 1)."""
    model = build().eval()
    x = torch.randn(1, 3, *size)
    exp = ic.AblationCAM(model, layer).explain(x)
    target = int(exp.targets[0])
    np.testing.assert_allclose(exp.weights[layer][0],
                               _ablation_weights_by_hand(model, layer, x, target),
                               rtol=1e-4, atol=1e-5)
