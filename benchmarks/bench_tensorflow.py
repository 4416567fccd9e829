"""Grad-CAM speed on Keras: interp-core vs a hand-written GradientTape baseline (and peers).

Model: ``keras.applications.ResNet50(weights=None)`` (nothing downloaded), 224 x 224, batch 8,
layer ``conv5_block3_out``, each sample's top-1 class. The baseline is what a careful user writes:
a two-output ``keras.Model`` (layer output, predictions), a ``GradientTape`` and the weighted
sum, all under ``tf.function``. Both run once to warm up (trace); then they alternate, and the
ratio of each pair is taken, so load drift on a shared machine affects both alike.

Target: median ratio interp-core / baseline <= 1.15. interp-core's time includes everything a
user gets from ``cam(x)``: input conversion, the compiled pass, the NumPy weights, ReLU, the
bilinear resize to 224 x 224 and the min-max normalisation (the baseline stops at the raw map).

    python benchmarks/bench_tensorflow.py [--repeats 7] [--batch 8] [--size 224]
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import tensorflow as tf
from _measure import benchmark_parser

import interp_core as ic

LAYER = "conv5_block3_out"


def hand_written_gradcam(model: keras.Model, layer: str) -> Callable[[tf.Tensor], np.ndarray]:
    """The baseline: two-output model + tape + weighted sum, under tf.function."""
    grad_model = keras.Model(model.input, [model.get_layer(layer).output, model.output])

    @tf.function
    def run(x: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            acts, preds = grad_model(x, training=False)
            top1 = tf.argmax(preds, axis=1)
            scores = tf.gather(preds, top1, axis=1, batch_dims=1)
        grads = tape.gradient(scores, acts)
        weights = tf.reduce_mean(grads, axis=(1, 2))
        return tf.nn.relu(tf.einsum("nhwc,nc->nhw", acts, weights))

    return lambda x: run(x).numpy()


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def compare(name: str, ours: Callable[[], object], theirs: Callable[[], object],
            repeats: int) -> float:
    ours(), theirs()  # warm-up: trace both
    ratios, t_ours, t_theirs = [], [], []
    for r in range(repeats):
        if r % 2:  # alternate the order within each pair
            b, a = timed(theirs), timed(ours)
        else:
            a, b = timed(ours), timed(theirs)
        t_ours.append(a)
        t_theirs.append(b)
        ratios.append(a / b)
    ratio = statistics.median(ratios)
    print(f"{name}: interp-core {statistics.median(t_ours) * 1e3:.1f} ms, "
          f"baseline {statistics.median(t_theirs) * 1e3:.1f} ms (medians of {repeats})")
    print(f"{name}: ratio interp-core / baseline = {ratio:.3f} (median of per-pair ratios; "
          f"range {min(ratios):.3f}..{max(ratios):.3f}; target <= 1.15)")
    return ratio


def peer_tf_keras_vis(model: keras.Model, x: tf.Tensor, ours: Callable[[], object],
                      repeats: int) -> None:
    try:
        from tf_keras_vis.gradcam import Gradcam
        from tf_keras_vis.utils.scores import CategoricalScore
    except ImportError:
        print("tf-keras-vis is not installed: skipping the peer comparison "
              "(pip install tf-keras-vis to run it)")
        return
    top1 = np.argmax(model(x, training=False).numpy(), axis=1)
    gradcam = Gradcam(model, clone=True)
    score = CategoricalScore(top1.tolist())
    compare("tf-keras-vis", ours,
            lambda: gradcam(score, x, penultimate_layer=LAYER), repeats)


def main() -> None:
    args = benchmark_parser(__doc__, repeats=7, batch=8, size=224).parse_args()

    keras.utils.set_random_seed(0)
    model = keras.applications.ResNet50(weights=None, input_shape=(args.size, args.size, 3))
    x = tf.random.uniform((args.batch, args.size, args.size, 3), seed=1)
    print(f"TensorFlow {tf.__version__}, Keras {keras.__version__}, "
          f"{len(tf.config.list_physical_devices('GPU'))} GPU(s); ResNet50(weights=None), "
          f"batch {args.batch}, {args.size}x{args.size}, layer {LAYER}")

    cam = ic.GradCAM(model, LAYER)
    baseline = hand_written_gradcam(model, LAYER)
    np.testing.assert_allclose(  # same maps before timing anything
        cam.explain(x).raw[LAYER].clip(min=0), baseline(x), rtol=1e-3,
        atol=1e-5 * float(np.abs(baseline(x)).max()))
    compare("hand-written GradientTape", lambda: cam(x), lambda: baseline(x), args.repeats)
    peer_tf_keras_vis(model, x, lambda: cam(x), args.repeats)


if __name__ == "__main__":
    main()
