"""Grad-CAM through interp-jax versus a hand-written JAX baseline, on a ResNet-style NNX model.

Baseline (what a careful user writes by hand): ``jax.jit`` of the features, ``jax.vjp`` of the
head at the features (jitted, top-1 cotangent), channel weights = spatial mean of the gradient,
weighted sum, ReLU, bilinear resize to the input size, min-max per sample. interp-jax does the
same through ``ic.GradCAM`` (one jitted capture, NumPy post-processing in the core).

Two baselines: one does the ReLU, resize and min-max inside ``jax.jit`` (the fastest a user
can write), one in NumPy like interp-core. Prints the median wall time of each after warm-up
(runs interleaved), the ratios (target <= 1.15), and the first-call (compile) times. Run::

    python benchmarks/bench_jax.py                  # 224x224, batch 8, ResNet-18 layout
    python benchmarks/bench_jax.py --size 128 --repeats 5
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from _measure import benchmark_parser
from flax import nnx

import interp_core as ic


class BasicBlock(nnx.Module):
    """conv-bn-relu-conv-bn plus a (projected) shortcut, then ReLU."""

    def __init__(self, cin: int, cout: int, stride: int, *, rngs: nnx.Rngs) -> None:
        self.conv1 = nnx.Conv(cin, cout, (3, 3), strides=stride, padding=1, use_bias=False,
                              rngs=rngs)
        self.bn1 = nnx.BatchNorm(cout, rngs=rngs)
        self.conv2 = nnx.Conv(cout, cout, (3, 3), padding=1, use_bias=False, rngs=rngs)
        self.bn2 = nnx.BatchNorm(cout, rngs=rngs)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nnx.data(nnx.Sequential(
                nnx.Conv(cin, cout, (1, 1), strides=stride, use_bias=False, rngs=rngs),
                nnx.BatchNorm(cout, rngs=rngs),
            ))

    def __call__(self, x: jax.Array) -> jax.Array:
        identity = x if self.down is None else self.down(x)
        out = nnx.relu(self.bn1(self.conv1(x)))
        return nnx.relu(self.bn2(self.conv2(out)) + identity)


class ResNet(nnx.Module):
    """ResNet-18 layout (2-2-2-2 basic blocks), NHWC input, ``width`` channels in the stem."""

    def __init__(self, classes: int = 1000, width: int = 64, blocks: int = 2, *,
                 rngs: nnx.Rngs) -> None:
        self.stem = nnx.Conv(3, width, (7, 7), strides=2, padding=3, use_bias=False, rngs=rngs)
        self.stem_bn = nnx.BatchNorm(width, rngs=rngs)
        stages = []
        cin = width
        for i in range(4):
            cout = width * 2**i
            stage = [BasicBlock(cin, cout, 1 if i == 0 else 2, rngs=rngs)]
            stage += [BasicBlock(cout, cout, 1, rngs=rngs) for _ in range(blocks - 1)]
            stages.append(nnx.Sequential(*stage))
            cin = cout
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.dropout = nnx.Dropout(0.2, rngs=rngs)
        self.fc = nnx.Linear(cin, classes, rngs=rngs)

    def features(self, x: jax.Array) -> jax.Array:
        x = nnx.relu(self.stem_bn(self.stem(x)))
        x = nnx.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def head(self, a: jax.Array) -> jax.Array:
        return self.fc(self.dropout(a.mean(axis=(1, 2))))

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.head(self.features(x))


def make_baseline(model: ResNet, size: tuple[int, int],
                  postprocess_in_jax: bool = True) -> Callable[[jax.Array], np.ndarray]:
    """The hand-written Grad-CAM: jit(features), vjp(head), weighted sum, ReLU, resize, min-max.

    ``postprocess_in_jax``: ReLU, bilinear resize and min-max inside the jitted function (the
    fastest a user can write); else in NumPy with the core's ``resize_bilinear`` and
    ``normalize_minmax`` (the same post-processing work as interp-core does).
    """
    eval_model = nnx.clone(model)
    eval_model.eval()
    graphdef, state = nnx.split(eval_model)

    @jax.jit
    def features(state: Any, x: jax.Array) -> jax.Array:
        return nnx.merge(graphdef, state).features(x)

    @jax.jit
    def raw_cam(state: Any, a: jax.Array) -> jax.Array:
        head = nnx.merge(graphdef, state).head
        logits, vjp = jax.vjp(head, a)
        onehot = jax.nn.one_hot(jnp.argmax(logits, axis=1), logits.shape[1], dtype=a.dtype)
        (g,) = vjp(onehot)
        return jnp.einsum("nhwc,nc->nhw", a, g.mean(axis=(1, 2)))

    @jax.jit
    def cam(state: Any, a: jax.Array) -> jax.Array:
        maps = jax.nn.relu(raw_cam(state, a))
        maps = jax.image.resize(maps, (maps.shape[0], *size), "bilinear", antialias=False)
        lo = maps.min(axis=(1, 2), keepdims=True)
        hi = maps.max(axis=(1, 2), keepdims=True)
        span = hi - lo
        return jnp.where(span > 1e-6 * jnp.maximum(jnp.abs(hi), jnp.abs(lo)),
                         (maps - lo) / jnp.where(span > 0, span, 1), 0.0)

    if postprocess_in_jax:
        return lambda x: np.asarray(cam(state, features(state, x)))

    def numpy_postprocess(x: jax.Array) -> np.ndarray:
        maps = np.maximum(np.asarray(raw_cam(state, features(state, x))), 0)
        return ic.normalize_minmax(ic.resize_bilinear(maps, size))

    return numpy_postprocess


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    args = benchmark_parser(__doc__, size=224, batch=8, width=64, repeats=15).parse_args()

    model = ResNet(width=args.width, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(1), (args.batch, args.size, args.size, 3))
    size = (args.size, args.size)
    cam = ic.GradCAM(model, "layer4")
    runs: dict[str, Callable[[jax.Array], np.ndarray]] = {
        "interp-jax": cam,
        "baseline (post-processing in jax.jit)": (base_jax := make_baseline(model, size)),
        "baseline (post-processing in NumPy)": make_baseline(model, size, False),
    }
    compile_s = {name: timed(lambda f=fn: f(x))
                 for name, fn in runs.items()}
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.repeats):  # interleaved, so changes in machine load hit all alike
        for name, fn in runs.items():
            times[name].append(timed(lambda f=fn: f(x)))
    diff = float(np.abs(cam(x) - base_jax(x)).max())

    median = {name: statistics.median(t) for name, t in times.items()}
    ours = median["interp-jax"]
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}; ResNet-18 layout, width "
          f"{args.width}, input {args.batch}x{args.size}x{args.size}x3, layer 'layer4', "
          f"top-1 targets, median of {args.repeats} after warm-up")
    print("first call (trace + compile): " + ", ".join(
        f"{name} {t:.2f} s" for name, t in compile_s.items()))
    for name, t in median.items():
        print(f"Grad-CAM wall time, {name}: {t * 1e3:.1f} ms")
    best = {name: min(t) for name, t in times.items()}
    for name in list(runs)[1:]:
        print(f"ratio interp-jax / {name}: {ours / median[name]:.3f} (target <= 1.15; "
              f"ratio of fastest runs {best['interp-jax'] / best[name]:.3f})")
    print(f"max |map difference| interp-jax vs baseline: {diff:.2e}")


if __name__ == "__main__":
    main()
