"""Filter-pattern speed on the demo model, per backend, against a plain forward+backward.

For each installed backend: ``ic.filter_patterns`` for 16 channels of ``block3``, 256 steps,
64x64 images (all regularisers on). The baseline is one plain forward+backward of the same
batch (16 images) written by hand in the framework: the model's forward with the ``block3``
activation kept, and the gradient of the channel means with respect to the input (compiled
where the framework compiles: ``tf.function``, ``jax.jit``).

Prints per backend, in ms per step: the full 256-step run; then the ratio from interleaved
blocks (``--block`` pattern steps, then as many baseline calls, 256 steps in all; medians), so
that load changes on a shared machine hit both alike (target <= 1.3); the share of a step
spent in the NumPy core; and how close the other backends' patterns come to torch's.

    python benchmarks/bench_features.py [--steps 256] [--channels 16] [--size 64] [--block 32]
                                        [--backends torch,tensorflow,jax] [--decorrelate]

On a small shared machine, ``OMP_NUM_THREADS=1`` gives steadier torch timings.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import interp_core as ic
from interp_core.backend.layout import input_layout
from interp_core.datasets.demo import demo_model, demo_weights, random_demo_weights

LAYER = "block3"


# -- hand-written baselines: one forward+backward of the batch ------------------------------
def torch_baseline(model: Any, x_nhwc: np.ndarray, idx: np.ndarray) -> Callable[[], Any]:
    import torch

    x = torch.from_numpy(np.ascontiguousarray(x_nhwc.transpose(0, 3, 1, 2)))
    index = torch.from_numpy(idx)

    def run() -> np.ndarray:
        xr = x.detach().requires_grad_(True)
        store = {}
        handle = model.block3.register_forward_hook(lambda m, i, o: store.__setitem__("a", o))
        try:
            model(xr)
        finally:
            handle.remove()
        per_channel = store["a"].mean(dim=(2, 3))
        (grad,) = torch.autograd.grad(per_channel.gather(1, index[:, None]).sum(), [xr])
        return grad.numpy()

    return run


def tensorflow_baseline(model: Any, x_nhwc: np.ndarray, idx: np.ndarray) -> Callable[[], Any]:
    import keras
    import tensorflow as tf

    both = keras.Model(model.inputs, [model.get_layer(LAYER).output, model.outputs[0]])
    x = tf.constant(x_nhwc)
    index = tf.constant(idx)

    @tf.function
    def step(x: tf.Tensor, index: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            tape.watch(x)
            acts, _ = both(x, training=False)
            per_channel = tf.reduce_mean(acts, axis=[1, 2])
            objective = tf.reduce_sum(tf.gather(per_channel, index, batch_dims=1))
        return tape.gradient(objective, x)

    return lambda: step(x, index).numpy()


def jax_baseline(model: Any, x_nhwc: np.ndarray, idx: np.ndarray) -> Callable[[], Any]:
    import jax
    import jax.numpy as jnp
    from flax import nnx

    graphdef, state = nnx.split(model)

    def objective(state: Any, x: jax.Array) -> jax.Array:
        m = nnx.merge(graphdef, state)
        acts = m.block3(m.pool2(m.block2(m.pool1(m.block1(x)))))
        logits = m.fc(m.gap(acts))
        per_channel = acts.mean(axis=(1, 2))
        return jnp.take_along_axis(per_channel, idx[:, None], axis=1).sum() + 0.0 * logits.sum()

    grad = jax.jit(jax.grad(objective, argnums=1))
    x = jnp.asarray(x_nhwc)
    return lambda: np.asarray(grad(state, x))


BASELINES = {"torch": torch_baseline, "tensorflow": tensorflow_baseline, "jax": jax_baseline}


# -- measurement ----------------------------------------------------------------------------
def timed_calls(fn: Callable[[], Any], count: int) -> list[float]:
    out = []
    for _ in range(count):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


class _InstantBackend:
    """Returns fixed gradients at once: what is left of a step is the NumPy core's work."""

    name = "instant"
    capabilities = frozenset({"gradients", "input_gradients"})

    def __init__(self, layout: str) -> None:
        self.input_layout = layout

    def from_numpy(self, x: np.ndarray, model: Any) -> np.ndarray:
        return x

    def capture(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError("only input gradients")

    def input_gradients(self, model: Any, inputs: np.ndarray, layer: Any, channels: np.ndarray,
                        *, output: Any = None) -> tuple[np.ndarray, np.ndarray]:
        grads = _FIXED.get(inputs.shape)
        if grads is None:
            grads = _FIXED.setdefault(inputs.shape, np.random.default_rng(1).standard_normal(
                inputs.shape).astype(np.float32))
        return np.ones(len(channels), np.float32), grads


_FIXED: dict[tuple[int, ...], np.ndarray] = {}


def core_step_seconds(channels: int, size: int, decorrelate: bool, layout: str,
                      steps: int = 64) -> float:
    """Time per step of ``filter_patterns`` with instant gradients (layer=None: no probe)."""
    backend = _InstantBackend(layout)
    kw = dict(steps=steps, decorrelate=decorrelate, backend=backend)
    ic.filter_patterns(None, None, np.arange(channels), (size, size), **{**kw, "steps": 2})
    start = time.perf_counter()
    ic.filter_patterns(None, None, np.arange(channels), (size, size), **kw)
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=256)
    parser.add_argument("--channels", type=int, default=16)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--block", type=int, default=32,
                        help="steps per interleaved timing block (pattern steps vs baseline)")
    parser.add_argument("--backends", default=",".join(ic.backends()))
    parser.add_argument("--decorrelate", action="store_true")
    args = parser.parse_args()

    try:
        weights, which = demo_weights(), "bundled demo weights"
    except FileNotFoundError:
        weights, which = random_demo_weights(), "random weights (demo_shapes.npz not there yet)"
    channels = np.arange(args.channels, dtype=np.int64)
    x = np.random.default_rng(0).random((args.channels, args.size, args.size, 3),
                                        dtype=np.float32)
    core = {layout: core_step_seconds(args.channels, args.size, args.decorrelate, layout)
            for layout in ("channels_first", "channels_last")}
    print(f"demo model ({which}), layer {LAYER!r}, {args.channels} channels, {args.size}x"
          f"{args.size}, {args.steps} steps, decorrelate={args.decorrelate}")
    print(f"NumPy core alone (instant gradients): {core['channels_first'] * 1e3:.2f} ms per "
          f"step with channels-first inputs, {core['channels_last'] * 1e3:.2f} ms channels-last")
    print(f"{'backend':<11} {'full run':>8} {'ms/step':>8} {'ms/base':>8} {'ratio':>6} "
          f"{'core %':>7}  (ms per step; target ratio <= 1.3)")
    patterns: dict[str, np.ndarray] = {}
    for name in [b.strip() for b in args.backends.split(",") if b.strip()]:
        if name not in BASELINES:
            print(f"{name:<11} skipped: no hand-written baseline for this backend")
            continue
        try:
            model = demo_model(name, weights=weights)
        except (ImportError, ValueError) as exc:
            print(f"{name:<11} skipped: {exc}")
            continue
        base = BASELINES[name](model, x, channels)
        size = (args.size, args.size)

        def run(steps: int, model: Any = model, size: tuple[int, int] = size) -> np.ndarray:
            return ic.filter_patterns(model, LAYER, channels, size, steps=steps,
                                      decorrelate=args.decorrelate)

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # dead channels of random weights
            run(2)  # warm-up: compile, allocate
            timed_calls(base, 2)
            start = time.perf_counter()
            patterns[name] = run(args.steps)
            full = (time.perf_counter() - start) / args.steps
            # Interleaved blocks, so that load changes on a shared machine hit both alike.
            block_pat, block_base = [], []
            for _ in range(max(1, args.steps // args.block)):
                block_base.append(sum(timed_calls(base, args.block)) / args.block)
                start = time.perf_counter()
                run(args.block)
                block_pat.append((time.perf_counter() - start) / args.block)
        per_step, baseline = statistics.median(block_pat), statistics.median(block_base)
        share = core[input_layout(ic.get_backend(name), model)] / per_step
        print(f"{name:<11} {full * 1e3:8.2f} {per_step * 1e3:8.2f} {baseline * 1e3:8.2f} "
              f"{per_step / baseline:6.2f} {100 * share:6.1f}%")
    if "torch" in patterns and len(patterns) > 1:
        print("agreement with torch's patterns (same seed and weights):")
        for name, pats in patterns.items():
            if name == "torch":
                continue
            diff = np.abs(pats - patterns["torch"]).reshape(len(pats), -1)
            corr = min(np.corrcoef(a.ravel(), b.ravel())[0, 1]
                       for a, b in zip(pats, patterns["torch"], strict=True))
            print(f"  {name:<11} max |diff| {diff.max():.2e}, mean {diff.mean():.2e}, "
                  f"pixels within 1e-3: {100 * np.mean(diff <= 1e-3):.1f}%, "
                  f"min correlation {corr:.4f}")


if __name__ == "__main__":
    main()
