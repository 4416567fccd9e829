"""The demo vision transformer (:mod:`interp_core.datasets.demo_vit`) as a Keras 3 model.

Attention is ``keras.layers.MultiHeadAttention``, the layer that keras-hub's ViT uses too, so
the adapter reads both the same way. The weights' query/key/value kernels ``(D, H, Dh)`` and
output kernel ``(H, Dh, D)`` are exactly the shapes of its ``EinsumDense`` kernels.

Layers (a Functional model on channels-last ``(N, H, W, C)`` images): ``"patch_embed"``
(Conv2D), ``"tokens"`` (class token, registers, patch tokens plus positions), ``"blocks_{i}"``
(a :class:`Block`, holding ``"norm1"``, ``"attn"``, ``"norm2"``, ``"mlp"``), ``"norm"``,
``"pool"`` and ``"head"``.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from interp_core.datasets.demo_vit import LN_EPS, ViTConfig

_PACKAGE = "interp_tensorflow"


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Tokens(keras.layers.Layer):
    """``(N, rows, cols, D)`` patch embeddings (``(N, D, rows, cols)`` channels-first) ->
    ``(N, T, D)`` tokens: ``[class token, registers..., patches + pos_embed]``, patches row by
    row."""

    def __init__(self, grid: tuple[int, int], dim: int, class_token: bool = True,
                 registers: int = 0, data_format: str = "channels_last", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.grid, self.dim = (int(grid[0]), int(grid[1])), int(dim)
        self.class_token, self.registers = bool(class_token), int(registers)
        self.data_format = data_format
        count = self.grid[0] * self.grid[1]
        self.pos_embed = self.add_weight(shape=(1, count, self.dim), initializer="zeros",
                                         name="pos_embed")
        self.cls_token = (self.add_weight(shape=(1, 1, self.dim), initializer="zeros",
                                          name="cls_token") if self.class_token else None)
        self.register_tokens = (self.add_weight(shape=(1, self.registers, self.dim),
                                                initializer="zeros", name="registers")
                                if self.registers else None)

    def call(self, patches: Any) -> Any:
        n = keras.ops.shape(patches)[0]
        if self.data_format == "channels_first":
            patches = keras.ops.transpose(patches, (0, 2, 3, 1))
        tokens = keras.ops.reshape(patches, (-1, self.grid[0] * self.grid[1], self.dim))
        tokens = tokens + self.pos_embed
        prefix = [keras.ops.broadcast_to(t, (n, t.shape[1], self.dim))
                  for t in (self.cls_token, self.register_tokens) if t is not None]
        return keras.ops.concatenate([*prefix, tokens], axis=1) if prefix else tokens

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        prefix = int(self.class_token) + self.registers
        return (input_shape[0], prefix + self.grid[0] * self.grid[1], self.dim)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "grid": self.grid, "dim": self.dim,
                "class_token": self.class_token, "registers": self.registers,
                "data_format": self.data_format}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Mlp(keras.layers.Layer):
    """``fc2(gelu(fc1(x)))`` with the exact (erf) GELU."""

    def __init__(self, dim: int, hidden: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.dim, self.hidden = int(dim), int(hidden)
        self.fc1 = keras.layers.Dense(self.hidden, name="fc1")
        self.fc2 = keras.layers.Dense(self.dim, name="fc2")

    def build(self, input_shape: tuple) -> None:
        self.fc1.build(input_shape)
        self.fc2.build((*input_shape[:-1], self.hidden))
        self.built = True

    def call(self, x: Any) -> Any:
        return self.fc2(keras.activations.gelu(self.fc1(x), approximate=False))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "dim": self.dim, "hidden": self.hidden}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Block(keras.layers.Layer):
    """``z + attn(norm1(z))``, then ``+ mlp(norm2(z))``: input and output ``(N, T, D)``."""

    def __init__(self, dim: int, heads: int, mlp: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.dim, self.heads, self.mlp_dim = int(dim), int(heads), int(mlp)
        self.norm1 = keras.layers.LayerNormalization(epsilon=LN_EPS, name="norm1")
        self.attn = keras.layers.MultiHeadAttention(num_heads=self.heads,
                                                    key_dim=self.dim // self.heads, name="attn")
        self.norm2 = keras.layers.LayerNormalization(epsilon=LN_EPS, name="norm2")
        self.mlp = Mlp(self.dim, self.mlp_dim, name="mlp")

    def build(self, input_shape: tuple) -> None:
        self.norm1.build(input_shape)
        self.attn.build(input_shape, input_shape)
        self.norm2.build(input_shape)
        self.mlp.build(input_shape)
        self.built = True

    def call(self, z: Any) -> Any:
        h = self.norm1(z)
        z = z + self.attn(h, h)
        return z + self.mlp(self.norm2(z))

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "dim": self.dim, "heads": self.heads,
                "mlp": self.mlp_dim}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Pool(keras.layers.Layer):
    """The class token ``z[:, 0]``, or without one the mean of the patch tokens
    ``z[:, prefix:]``: ``(N, T, D)`` -> ``(N, D)``."""

    def __init__(self, class_token: bool = True, prefix: int = 1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.class_token, self.prefix = bool(class_token), int(prefix)

    def call(self, z: Any) -> Any:
        return z[:, 0] if self.class_token else keras.ops.mean(z[:, self.prefix:], axis=1)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return (input_shape[0], input_shape[-1])

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "class_token": self.class_token, "prefix": self.prefix}


def build(weights: dict[str, np.ndarray], config: ViTConfig | None = None, *,
          data_format: str = "channels_last") -> keras.Model:
    """A Functional Keras model of the demo ViT holding ``weights``.

    Parameters
    ----------
    weights : dict of str to np.ndarray
        In the format of :mod:`interp_core.datasets.demo_vit`.
    config : ViTConfig, optional
        The sizes (needed for a non-square grid); default ``ViTConfig.of(weights)``.
    data_format : {"channels_last", "channels_first"}
        The images' layout (the weights are the same).

    Returns
    -------
    keras.Model
        Input ``(N, rows * P, cols * P, C)`` images (``(N, C, rows * P, cols * P)``
        channels-first), logits ``(N, classes)``.
    """
    cfg = config or ViTConfig.of(weights)
    if data_format not in ("channels_last", "channels_first"):
        raise ValueError(f"data_format={data_format!r}; expected 'channels_last' or "
                         "'channels_first'")
    shape = ((*cfg.input_size, cfg.channels) if data_format == "channels_last"
             else (cfg.channels, *cfg.input_size))
    image = keras.Input(shape, name="image")
    patches = keras.layers.Conv2D(cfg.dim, cfg.patch, strides=cfg.patch, padding="valid",
                                  data_format=data_format, name="patch_embed")(image)
    z = Tokens(cfg.grid, cfg.dim, cfg.class_token, cfg.registers, data_format,
               name="tokens")(patches)
    blocks = [Block(cfg.dim, cfg.heads, cfg.mlp, name=f"blocks_{i}") for i in range(cfg.blocks)]
    for block in blocks:
        z = block(z)
    z = keras.layers.LayerNormalization(epsilon=LN_EPS, name="norm")(z)
    pooled = Pool(cfg.class_token, cfg.prefix, name="pool")(z)
    logits = keras.layers.Dense(cfg.classes, name="head")(pooled)
    model = keras.Model(image, logits, name="demo_vit")
    _load(model, blocks, weights, cfg)
    return model


def _load(model: keras.Model, blocks: list[Block], weights: dict[str, np.ndarray],
          cfg: ViTConfig) -> None:
    """Assign ``weights`` to the built model, checking every shape."""

    def put(variable: Any, key: str) -> None:
        value = np.asarray(weights[key], dtype=np.float32)
        if tuple(variable.shape) != value.shape:
            raise ValueError(f"weight {key!r} has shape {value.shape}, but the model of "
                             f"{cfg} needs {tuple(variable.shape)}")
        variable.assign(value)

    def dense(layer: Any, prefix: str) -> None:
        put(layer.kernel, prefix + "/kernel")
        put(layer.bias, prefix + "/bias")

    def norm(layer: Any, prefix: str) -> None:
        put(layer.gamma, prefix + "/scale")
        put(layer.beta, prefix + "/bias")

    dense(model.get_layer("patch_embed"), "patch_embed")
    tokens = model.get_layer("tokens")
    put(tokens.pos_embed, "pos_embed")
    if tokens.cls_token is not None:
        put(tokens.cls_token, "cls_token")
    if tokens.register_tokens is not None:
        put(tokens.register_tokens, "registers")
    for i, block in enumerate(blocks):
        p = f"blocks/{i}/"
        norm(block.norm1, p + "norm1")
        norm(block.norm2, p + "norm2")
        for proj, layer in (("query", block.attn.query_dense), ("key", block.attn.key_dense),
                            ("value", block.attn.value_dense), ("out", block.attn.output_dense)):
            dense(layer, p + f"attn/{proj}")
        dense(block.mlp.fc1, p + "mlp/fc1")
        dense(block.mlp.fc2, p + "mlp/fc2")
    norm(model.get_layer("norm"), "norm")
    dense(model.get_layer("head"), "head")
