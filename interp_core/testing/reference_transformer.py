"""The reference transformer: the demo ViT architecture (:mod:`interp_core.datasets.demo_vit`)
written out in NumPy, with its attention and the gradients the attention methods need.

Every adapter's ``attention`` is checked against :func:`attention` on the same weights, and the
attention methods against transcriptions of their papers fed by it. The math runs in float64;
gradients are taken by hand (the backward pass of each layer, written out below), so nothing
here depends on a framework's autograd.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from interp_core.backend.attention import no_attention_error
from interp_core.backend.protocol import (
    ATTENTION,
    GRADIENTS,
    AttentionCapture,
    Capture,
    LayerProbe,
)
from interp_core.backend.scoring import target_scores
from interp_core.backend.target_spec import TargetSpec, check_class_range
from interp_core.datasets.demo_vit import LN_EPS, ViTConfig
from interp_core.testing.reference import NUMPY_OPS

_erf = np.frompyfunc(math.erf, 1, 1)


def _gelu(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact GELU and its derivative."""
    cdf = 0.5 * (1.0 + _erf(x / math.sqrt(2.0)).astype(np.float64))
    pdf = np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)
    return x * cdf, cdf + x * pdf


def _layer_norm(x: np.ndarray, scale: np.ndarray, bias: np.ndarray
                ) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    mean = x.mean(-1, keepdims=True)
    inv = 1.0 / np.sqrt(x.var(-1, keepdims=True) + LN_EPS)
    normed = (x - mean) * inv
    return normed * scale + bias, (normed, inv, scale)


def _layer_norm_back(dy: np.ndarray, cache: tuple[np.ndarray, np.ndarray, np.ndarray]
                     ) -> np.ndarray:
    normed, inv, scale = cache
    g = dy * scale
    return inv * (g - g.mean(-1, keepdims=True) - normed * (g * normed).mean(-1, keepdims=True))


@dataclass
class _BlockCache:
    """What one block's backward pass needs."""

    z_in: np.ndarray
    ln1: Any
    q: np.ndarray
    k: np.ndarray
    v: np.ndarray
    probs: np.ndarray
    z_mid: np.ndarray
    ln2: Any
    pre: np.ndarray
    gelu_grad: np.ndarray
    hidden: np.ndarray


@dataclass
class TransformerPass:
    """One forward pass: logits, every block's output and what the backward passes need."""

    config: ViTConfig
    weights: dict[str, np.ndarray]
    logits: np.ndarray
    outputs: list[np.ndarray] = field(default_factory=list)
    caches: list[_BlockCache] = field(default_factory=list)


def _w(weights: dict[str, np.ndarray], key: str) -> np.ndarray:
    return np.asarray(weights[key], dtype=np.float64)


def _block_forward(w: dict[str, np.ndarray], p: str, z: np.ndarray, cfg: ViTConfig
                   ) -> tuple[np.ndarray, _BlockCache]:
    h, ln1 = _layer_norm(z, _w(w, p + "norm1/scale"), _w(w, p + "norm1/bias"))
    q, k, v = (np.einsum("ntd,dhk->nhtk", h, _w(w, p + f"attn/{name}/kernel"))
               + _w(w, p + f"attn/{name}/bias")[None, :, None, :]
               for name in ("query", "key", "value"))
    logits = q @ k.transpose(0, 1, 3, 2) / math.sqrt(cfg.head_dim)
    logits -= logits.max(-1, keepdims=True)
    probs = np.exp(logits)
    probs /= probs.sum(-1, keepdims=True)
    attended = probs @ v
    z_mid = z + np.einsum("nhtk,hkd->ntd", attended, _w(w, p + "attn/out/kernel")) \
        + _w(w, p + "attn/out/bias")
    h2, ln2 = _layer_norm(z_mid, _w(w, p + "norm2/scale"), _w(w, p + "norm2/bias"))
    pre = h2 @ _w(w, p + "mlp/fc1/kernel") + _w(w, p + "mlp/fc1/bias")
    hidden, gelu_grad = _gelu(pre)
    out = z_mid + hidden @ _w(w, p + "mlp/fc2/kernel") + _w(w, p + "mlp/fc2/bias")
    return out, _BlockCache(z, ln1, q, k, v, probs, z_mid, ln2, pre, gelu_grad, hidden)


def _tokens(w: dict[str, np.ndarray], x: np.ndarray, cfg: ViTConfig) -> np.ndarray:
    n, rows, cols, c = x.shape
    p = cfg.patch
    if (rows // p, cols // p) != cfg.grid or rows % p or cols % p:
        raise ValueError(
            f"input of {rows}x{cols} pixels does not make the model's {cfg.grid[0]}x"
            f"{cfg.grid[1]} grid of {p}-pixel patches: use {cfg.input_size[0]}x"
            f"{cfg.input_size[1]} inputs"
        )
    patches = x.reshape(n, cfg.grid[0], p, cfg.grid[1], p, c).transpose(0, 1, 3, 2, 4, 5)
    patches = patches.reshape(n, cfg.grid[0] * cfg.grid[1], p * p * c)
    kernel = _w(w, "patch_embed/kernel").reshape(p * p * c, cfg.dim)
    tokens = patches @ kernel + _w(w, "patch_embed/bias") + _w(w, "pos_embed")
    prefix = [np.broadcast_to(_w(w, key), (n, *w[key].shape[1:]))
              for key in ("cls_token", "registers") if key in w]
    return np.concatenate([*prefix, tokens], axis=1)


def _tail(w: dict[str, np.ndarray], z: np.ndarray, cfg: ViTConfig) -> tuple[np.ndarray, Any]:
    """Final norm, pooling and head on block outputs ``z`` ``(N, T, D)``."""
    zf, cache = _layer_norm(z, _w(w, "norm/scale"), _w(w, "norm/bias"))
    pooled = zf[:, 0] if cfg.class_token else zf[:, cfg.prefix:].mean(1)
    return pooled @ _w(w, "head/kernel") + _w(w, "head/bias"), cache


def _tail_back(w: dict[str, np.ndarray], dlogits: np.ndarray, cache: Any, cfg: ViTConfig,
               tokens: int) -> np.ndarray:
    dpooled = dlogits @ _w(w, "head/kernel").T
    dzf = np.zeros((len(dlogits), tokens, cfg.dim))
    if cfg.class_token:
        dzf[:, 0] = dpooled
    else:
        dzf[:, cfg.prefix:] = dpooled[:, None, :] / (tokens - cfg.prefix)
    return _layer_norm_back(dzf, cache)


def forward_pass(weights: dict[str, np.ndarray], x: np.ndarray,
                 config: ViTConfig | None = None) -> TransformerPass:
    """Run the transformer on channels-last ``x`` ``(N, H, W, C)``, keeping what backward
    passes need."""
    cfg = config or ViTConfig.of(weights)
    z = _tokens(weights, np.asarray(x, dtype=np.float64), cfg)
    run = TransformerPass(cfg, weights, np.zeros(0))
    for i in range(cfg.blocks):
        z, cache = _block_forward(weights, f"blocks/{i}/", z, cfg)
        run.outputs.append(z)
        run.caches.append(cache)
    run.logits = _tail(weights, z, cfg)[0]
    return run


def forward(weights: dict[str, np.ndarray], x: np.ndarray,
            config: ViTConfig | None = None) -> np.ndarray:
    """Logits ``(N, classes)`` (float64) of channels-last ``x`` ``(N, H, W, C)``."""
    return forward_pass(weights, x, config).logits


def _block_back(w: dict[str, np.ndarray], p: str, dz_out: np.ndarray, c: _BlockCache,
                cfg: ViTConfig) -> tuple[np.ndarray, np.ndarray]:
    """Backward through one block: (d block input, d attention probabilities)."""
    dhidden = dz_out @ _w(w, p + "mlp/fc2/kernel").T
    dpre = dhidden * c.gelu_grad
    dh2 = dpre @ _w(w, p + "mlp/fc1/kernel").T
    dz_mid = dz_out + _layer_norm_back(dh2, c.ln2)
    dattended = np.einsum("ntd,hkd->nhtk", dz_mid, _w(w, p + "attn/out/kernel"))
    dprobs = dattended @ c.v.transpose(0, 1, 3, 2)
    dv = c.probs.transpose(0, 1, 3, 2) @ dattended
    dlogits = c.probs * (dprobs - (dprobs * c.probs).sum(-1, keepdims=True))
    dlogits /= math.sqrt(cfg.head_dim)
    dq = dlogits @ c.k
    dk = dlogits.transpose(0, 1, 3, 2) @ c.q
    dh = sum(np.einsum("nhtk,dhk->ntd", grad, _w(w, p + f"attn/{name}/kernel"))
             for grad, name in ((dq, "query"), (dk, "key"), (dv, "value")))
    return dz_mid + _layer_norm_back(dh, c.ln1), dprobs


def _one_hot(indices: np.ndarray, classes: int) -> np.ndarray:
    out = np.zeros((len(indices), classes))
    out[np.arange(len(indices)), indices] = 1.0
    return out


def attention(weights: dict[str, np.ndarray], x: np.ndarray, targets: Any = None, *,
              gradients: str = "none", config: ViTConfig | None = None) -> AttentionCapture:
    """What an adapter's ``attention`` must return for this transformer (float32 arrays).

    Parameters
    ----------
    weights : dict
        Weights in the format of :mod:`interp_core.datasets.demo_vit`.
    x : np.ndarray
        Channels-last inputs ``(N, H, W, C)``.
    targets : None or int array ``(N,)``
        Class per sample; None: each sample's top-1 class.
    gradients : {"none", "output", "per_block"}
        As :meth:`interp_core.backend.protocol.AttentionBackend.attention`.
    """
    run = forward_pass(weights, x, config)
    cfg, n = run.config, len(run.logits)
    idx = (run.logits.argmax(1) if targets is None
           else np.broadcast_to(np.asarray(targets, dtype=np.int64), (n,)))
    scores = run.logits[np.arange(n), idx]
    grads: list[np.ndarray] | None = None
    if gradients == "output":
        tokens = run.outputs[-1].shape[1]
        _, tail_cache = _tail(weights, run.outputs[-1], cfg)
        dz = _tail_back(weights, _one_hot(idx, cfg.classes), tail_cache, cfg, tokens)
        grads = [np.zeros(0)] * cfg.blocks
        for i in reversed(range(cfg.blocks)):
            dz, grads[i] = _block_back(weights, f"blocks/{i}/", dz, run.caches[i], cfg)
    elif gradients == "per_block":
        grads = []
        for i, z in enumerate(run.outputs):
            _, tail_cache = _tail(weights, z, cfg)
            dz = _tail_back(weights, _one_hot(idx, cfg.classes), tail_cache, cfg, z.shape[1])
            grads.append(_block_back(weights, f"blocks/{i}/", dz, run.caches[i], cfg)[1])
    elif gradients != "none":
        raise ValueError(f"gradients={gradients!r} must be 'none', 'output' or 'per_block'")
    return AttentionCapture(
        blocks=[f"blocks.{i}.attn" for i in range(cfg.blocks)],
        attentions=[c.probs.astype(np.float32) for c in run.caches],
        gradients=None if grads is None else [g.astype(np.float32) for g in grads],
        scores=scores.astype(np.float32),
        targets=idx.astype(np.int64),
    )


# -- a NumPy adapter for it ---------------------------------------------------------------------
@dataclass(eq=False)
class ReferenceTransformer:
    """The reference transformer as a "model": its weights and sizes."""

    weights: dict[str, np.ndarray]
    config: ViTConfig


class ReferenceTransformerBackend:
    """A NumPy adapter for :class:`ReferenceTransformer` with the ``"attention"`` capability
    (and nothing else a transformer method needs): the oracle of the attention methods' tests,
    and a third-party adapter in miniature. Class targets and top-1 only."""

    name = "reference-vit"
    input_layout = "channels_last"
    capabilities = frozenset({GRADIENTS, ATTENTION})

    def layer_names(self, model: ReferenceTransformer) -> list[str]:
        return [f"blocks.{i}.attn" for i in range(model.config.blocks)]

    def layer_outputs(self, model: ReferenceTransformer, inputs: Any) -> LayerProbe:
        x = np.asarray(inputs)
        return LayerProbe((), tuple(x.shape[1:-1]), len(x), native_channels_first=False)

    def capture(self, model: ReferenceTransformer, inputs: Any, layers: Any,
                target: TargetSpec, **options: Any) -> Capture:
        if layers:
            raise NotImplementedError("the reference transformer's adapter captures no layers")
        logits = forward(model.weights, np.asarray(inputs), model.config)
        scores, top1 = target_scores(logits.astype(np.float32), target, NUMPY_OPS)
        return Capture(layers={}, scores=np.asarray(scores, np.float32),
                       targets=target.resolved_indices(top1),
                       input_spatial=np.asarray(inputs).shape[1:3])

    def predict(self, model: ReferenceTransformer, inputs: Any, target: TargetSpec, *,
                batch_size: int = 32, output: Any = None) -> np.ndarray:
        return self.capture(model, inputs, [], target).scores

    def attention(self, model: ReferenceTransformer, inputs: Any, target: TargetSpec, *,
                  gradients: str = "none", output: Any = None,
                  batch_size: int = 32) -> AttentionCapture:
        if not isinstance(model, ReferenceTransformer):
            raise no_attention_error(self.name, model)
        x = np.asarray(inputs)
        logits = forward(model.weights, x, model.config).astype(np.float32)
        check_class_range(target, logits.shape[1])
        _, top1 = target_scores(logits, target, NUMPY_OPS)
        if target.kind not in ("top1", "class"):
            raise NotImplementedError(
                f"the reference transformer's adapter explains class targets, not {target.kind!r}")
        return attention(model.weights, x, target.resolved_indices(top1),
                         gradients=gradients, config=model.config)

    def to_numpy(self, x: Any) -> np.ndarray:
        return np.asarray(x)

    def from_numpy(self, x: np.ndarray, model: Any) -> np.ndarray:
        return np.asarray(x, dtype=np.float32)
