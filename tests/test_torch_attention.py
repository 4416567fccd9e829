"""The torch adapter's attention capture (``TorchBackend.attention``) on the demo ViT against the
NumPy reference transformer: probabilities, scores, both gradient modes; sequence-first
``nn.MultiheadAttention``, masks, model hygiene, threads and the errors."""

from __future__ import annotations

import dataclasses
import threading

import numpy as np
import pytest

from tests.conftest import require_framework

torch = require_framework("torch", "torch")
from interp_torch import testing as torch_testing  # noqa: E402
from interp_torch.attention import Recorder, attention_layers, reading  # noqa: E402
from interp_torch.backend import TorchBackend  # noqa: E402
from torch import nn  # noqa: E402

from interp_core.backend.attention import stochastic_rows  # noqa: E402
from interp_core.backend.target_spec import resolve_targets  # noqa: E402
from interp_core.datasets.demo_vit import ViTConfig, random_vit_weights  # noqa: E402
from interp_core.testing import reference_transformer as rt  # noqa: E402
from interp_core.testing.reference import REFERENCE_VIT  # noqa: E402
from interp_core.testing.suite.hygiene import assert_same_state  # noqa: E402
from tests.torch_models import SmallResNet  # noqa: E402

BACKEND = TorchBackend()
N = 3
CONFIGS = {
    "class_token": REFERENCE_VIT,
    "mean_pooling": dataclasses.replace(REFERENCE_VIT, class_token=False),
    "registers": dataclasses.replace(REFERENCE_VIT, registers=4),
}


def _inputs(cfg: ViTConfig, n: int = N, seed: int = 0) -> np.ndarray:
    rows, cols = cfg.input_size
    return np.random.default_rng(seed).random((n, rows, cols, cfg.channels)).astype(np.float32)


def _weights(cfg: ViTConfig) -> dict[str, np.ndarray]:
    weights = random_vit_weights(cfg, seed=1)
    # A head of std 0.02 gives every sample the same top-1 class: spread the logits.
    weights["head/kernel"] = weights["head/kernel"] * 10
    return weights


def _state(model: nn.Module) -> dict:
    """The suite's snapshot, and which modules hold a ``forward`` of their own."""
    return {**torch_testing.model_state(model),
            "forwards": [n for n, m in model.named_modules() if "forward" in m.__dict__]}


def _assert_matches(capture, reference, n_layers: int) -> None:
    assert capture.blocks == reference.blocks
    assert len(capture.attentions) == n_layers
    for got, want in zip(capture.attentions, reference.attentions, strict=True):
        assert got.dtype == np.float32 and got.shape == want.shape
        np.testing.assert_allclose(got, want, atol=1e-5)
    np.testing.assert_allclose(capture.scores, reference.scores, atol=1e-5)
    np.testing.assert_array_equal(capture.targets, reference.targets)
    if reference.gradients is None:
        assert capture.gradients is None
        return
    for name, got, want in zip(capture.blocks, capture.gradients, reference.gradients,
                               strict=True):
        assert got.dtype == np.float32 and got.shape == want.shape
        scale = np.abs(want).max()
        assert scale > 0, name
        np.testing.assert_allclose(got / scale, want / scale, atol=1e-5, err_msg=name)


@pytest.mark.parametrize("variant", sorted(CONFIGS))
@pytest.mark.parametrize("gradients", ["none", "output", "per_block"])
def test_demo_vit_matches_the_reference(variant: str, gradients: str) -> None:
    cfg = CONFIGS[variant]
    weights, x = _weights(cfg), _inputs(cfg)
    model = torch_testing.reference_transformer(weights, cfg)
    with torch.no_grad():
        logits = model(torch_testing.to_input(x)).numpy()
    np.testing.assert_allclose(logits, rt.forward(weights, x, cfg), atol=1e-5)
    for targets in (None, np.array([2, 0, 1])):
        capture = BACKEND.attention(model, torch_testing.to_input(x),
                                    resolve_targets(targets, N), gradients=gradients,
                                    batch_size=2)  # two chunks
        reference = rt.attention(weights, x, targets, gradients=gradients, config=cfg)
        _assert_matches(capture, reference, cfg.blocks)
        assert all(stochastic_rows(a) for a in capture.attentions)
    assert len(set(reference.targets.tolist())) > 1  # top-1 differs between samples


def test_per_block_gradients_are_the_output_gradients_of_the_model_cut_after_each_block():
    # An independent check of the one-pass recipe: the model with every block after block l
    # made the identity scores block l's output, and its "output" gradient of layer l is the
    # per-block gradient of layer l.
    cfg = dataclasses.replace(REFERENCE_VIT, blocks=3)
    weights, x = _weights(cfg), torch_testing.to_input(_inputs(cfg))
    model = torch_testing.reference_transformer(weights, cfg)
    spec = resolve_targets(np.array([1, 2, 0]), N)
    per_block = BACKEND.attention(model, x, spec, gradients="per_block")
    for layer in range(cfg.blocks):
        handles = [block.register_forward_hook(lambda _m, args, _out: args[0])
                   for block in model.blocks[layer + 1:]]
        try:
            cut = BACKEND.attention(model, x, spec, gradients="output")
        finally:
            for handle in handles:
                handle.remove()
        np.testing.assert_allclose(per_block.gradients[layer], cut.gradients[layer],
                                   rtol=1e-5, atol=1e-7)
    out = BACKEND.attention(model, x, spec, gradients="output")
    np.testing.assert_allclose(per_block.gradients[-1], out.gradients[-1], rtol=1e-5,
                               atol=1e-7)
    assert not np.allclose(per_block.gradients[0], out.gradients[0], atol=1e-7)


class SequenceFirstBlock(nn.Module):
    """A demo ViT block whose attention is ``nn.MultiheadAttention(batch_first=False)``."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.norm1, self.attn, self.norm2, self.mlp = (block.norm1, block.attn, block.norm2,
                                                       block.mlp)
        self.attn.batch_first = False

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.norm1(z).transpose(0, 1)
        z = z + self.attn(h, h, h, need_weights=False)[0].transpose(0, 1)
        return z + self.mlp(self.norm2(z))


@pytest.mark.parametrize("gradients", ["none", "output", "per_block"])
def test_sequence_first_multihead_attention(gradients: str) -> None:
    cfg = REFERENCE_VIT
    weights, x = _weights(cfg), _inputs(cfg)
    model = torch_testing.reference_transformer(weights, cfg)
    model.blocks = nn.ModuleList([SequenceFirstBlock(b) for b in model.blocks])
    capture = BACKEND.attention(model, torch_testing.to_input(x), resolve_targets(None, N),
                                gradients=gradients)
    _assert_matches(capture, rt.attention(weights, x, gradients=gradients, config=cfg),
                    cfg.blocks)


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("mask", ["none", "float", "bool", "padding", "both"])
def test_multihead_attention_answers_as_torch_does(batch_first: bool, mask: str) -> None:
    # While read, an nn.MultiheadAttention still returns what its caller asked for.
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(8, 2, batch_first=batch_first).eval()
    n, t = 2, 5
    x = torch.randn((n, t, 8) if batch_first else (t, n, 8))
    kwargs = {}
    if mask == "float":
        kwargs["attn_mask"] = torch.randn(t, t)
    if mask == "bool":
        kwargs["attn_mask"] = torch.rand(n * 2, t, t) > 0.7
        kwargs["attn_mask"][..., 0] = False  # no row fully masked
    if mask == "both":
        kwargs["attn_mask"] = torch.ones(t, t, dtype=torch.bool).triu(1)  # causal
    if mask in ("padding", "both"):
        kwargs["key_padding_mask"] = torch.tensor([[False] * t, [False] * (t - 2) + [True] * 2])
    holder = nn.Sequential(mha)
    recorder = Recorder()
    for average in (True, False):
        want_out, want_w = mha(x, x, x, average_attn_weights=average, **kwargs)
        with torch.no_grad(), reading(holder, attention_layers(holder), Recorder(), False):
            got_out, got_w = mha(x, x, x, average_attn_weights=average, **kwargs)
        with torch.no_grad(), reading(holder, attention_layers(holder), Recorder(), False):
            none_out, none_w = mha(x, x, x, need_weights=False, **kwargs)
        torch.testing.assert_close(got_out, want_out, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(got_w, want_w, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(none_out, want_out, atol=1e-6, rtol=1e-5)
        assert none_w is None
    with reading(holder, attention_layers(holder), recorder, False):
        mha(x, x, x, **kwargs)
    torch.testing.assert_close(recorder.probs["0"], mha(x, x, x, average_attn_weights=False,
                                                        **kwargs)[1])
    assert "forward" not in mha.__dict__


def test_cross_attention_calls_run_the_original_and_are_not_read() -> None:
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(8, 2, batch_first=True).eval()
    holder = nn.Sequential(mha)
    q, kv = torch.randn(2, 1, 8), torch.randn(2, 5, 8)
    recorder = Recorder()
    with torch.no_grad(), reading(holder, attention_layers(holder), recorder, False):
        out = mha(q, kv, kv)[0]
    torch.testing.assert_close(out, mha(q, kv, kv)[0])
    assert recorder.probs == {}


def test_the_model_comes_back_as_it_was_also_after_an_error() -> None:
    cfg = REFERENCE_VIT
    weights, x = _weights(cfg), _inputs(cfg)
    model = torch_testing.reference_transformer(weights, cfg)
    model.train()
    model.blocks[0].eval()
    for p in model.parameters():  # frozen: the probabilities must still get gradients
        p.requires_grad_(False)
    model.head.weight.requires_grad_(True)
    before = _state(model)
    for gradients in ("none", "output", "per_block"):
        capture = BACKEND.attention(model, torch_testing.to_input(x), resolve_targets(None, N),
                                    gradients=gradients)
        assert_same_state(before, _state(model))
        _assert_matches(capture, rt.attention(weights, x, gradients=gradients, config=cfg),
                        cfg.blocks)
    with pytest.raises(ValueError, match="out of range"):
        BACKEND.attention(model, torch_testing.to_input(x), resolve_targets(7, N),
                          gradients="per_block")
    assert_same_state(before, _state(model))

    def fail(*_: object) -> None:
        assert "forward" in model.blocks[1].attn.__dict__  # inside the call: replaced
        raise RuntimeError("boom")

    handle = model.blocks[1].register_forward_pre_hook(fail)
    try:
        before = _state(model)
        for gradients in ("output", "per_block"):
            with pytest.raises(ValueError, match="boom"):
                BACKEND.attention(model, torch_testing.to_input(x), resolve_targets(None, N),
                                  gradients=gradients)
            assert_same_state(before, _state(model))
    finally:
        handle.remove()


def test_threads_get_the_serial_results() -> None:
    cfg = REFERENCE_VIT
    model = torch_testing.reference_transformer(_weights(cfg), cfg)
    inputs = [torch_testing.to_input(_inputs(cfg, seed=s)) for s in range(4)]
    modes = ["output", "per_block", "none", "output"]

    def run(i: int):
        return BACKEND.attention(model, inputs[i], resolve_targets(None, N), gradients=modes[i])

    serial = [run(i) for i in range(4)]
    results: dict[int, object] = {}
    threads = [threading.Thread(target=lambda i=i: results.__setitem__(i, run(i)))
               for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for i in range(4):
        for got, want in zip(results[i].attentions, serial[i].attentions, strict=True):
            np.testing.assert_array_equal(got, want)
        if modes[i] != "none":
            for got, want in zip(results[i].gradients, serial[i].gradients, strict=True):
                np.testing.assert_array_equal(got, want)


def test_a_model_without_attention_is_refused_clearly() -> None:
    model = SmallResNet(classes=4)
    with pytest.raises(NotImplementedError, match=r"no global self-attention.*GradCAM"):
        BACKEND.attention(model, torch.randn(2, 3, 16, 16), resolve_targets(None, 2))


class WindowAttention(nn.Module):
    """Named like timm's Swin attention; what it computes does not matter."""

    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)


def test_windowed_attention_is_refused_by_name() -> None:
    model = torch_testing.reference_transformer(_weights(REFERENCE_VIT), REFERENCE_VIT)
    model.window = WindowAttention()
    x = torch_testing.to_input(_inputs(REFERENCE_VIT))
    with pytest.raises(NotImplementedError, match=r"windowed \(WindowAttention\)"):
        BACKEND.attention(model, x, resolve_targets(None, N), gradients="output")


class TwoLengths(nn.Module):
    """Self-attention over all tokens, then over the first three only."""

    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([nn.MultiheadAttention(8, 2, batch_first=True)
                                     for _ in range(2)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.blocks[0](x, x, x)[0]
        short = x[:, :3]
        return (short + self.blocks[1](short, short, short)[0]).mean((1, 2))[:, None]


def test_layers_over_different_tokens_are_refused() -> None:
    model = TwoLengths()
    with pytest.raises(NotImplementedError, match=r"different token counts \(5 in 'blocks.0', "
                                                  r"3 in 'blocks.1'\)"):
        BACKEND.attention(model, torch.randn(2, 5, 8), resolve_targets(None, 2))


def test_bad_arguments() -> None:
    model = torch_testing.reference_transformer(_weights(REFERENCE_VIT), REFERENCE_VIT)
    x = torch_testing.to_input(_inputs(REFERENCE_VIT))
    with pytest.raises(ValueError, match="gradients='all'"):
        BACKEND.attention(model, x, resolve_targets(None, N), gradients="all")
    with pytest.raises(ValueError, match="batch_size must be a positive int, got 0"):
        BACKEND.attention(model, x, resolve_targets(None, N), batch_size=0)
    with torch.inference_mode(), pytest.raises(RuntimeError, match="inference_mode"):
        BACKEND.attention(model, x, resolve_targets(None, N), gradients="output")
    with torch.inference_mode():  # probabilities alone need no gradients
        capture = BACKEND.attention(model, x, resolve_targets(None, N))
    assert capture.gradients is None and len(capture.attentions) == REFERENCE_VIT.blocks
