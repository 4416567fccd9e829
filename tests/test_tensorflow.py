"""The TensorFlow / Keras 3 adapter: conformance, model kinds, targets, compiled path, callbacks."""

from __future__ import annotations

import functools
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import require_framework

tf = require_framework("tensorflow", "tensorflow")
keras = require_framework("tensorflow", "keras")

from interp_tensorflow import testing as tf_testing  # noqa: E402
from interp_tensorflow.training import CAMLogger, FeatureMapLogger  # noqa: E402

import interp_core as ic  # noqa: E402
from interp_core.backend.layer_choice import default_layer  # noqa: E402
from interp_core.backend.target_spec import resolve_targets  # noqa: E402
from interp_core.logging.sinks import FolderSink, TensorBoardSink  # noqa: E402
from interp_core.methods import METHODS, AttentionMethod  # noqa: E402
from interp_core.testing.conformance import ConformanceFromModule  # noqa: E402
from interp_core.testing.reference import reference_inputs, reference_weights  # noqa: E402
from interp_core.testing.suite.hygiene import assert_same_state  # noqa: E402
from tests import keras_models as km  # noqa: E402


# -- conformance --------------------------------------------------------------------------------
class TestTensorFlowConformance(ConformanceFromModule, backend="tensorflow", helpers=tf_testing):
    @pytest.fixture
    def stateful_model(self):
        model = km.small_convnet(seed=1)  # BatchNorm, Dropout
        model.get_layer("stem").trainable = False  # mixed flags must come back exactly
        return model, "conv2", km.random_images(3, 16)


class TestTensorFlowChannelsFirstConformance(TestTensorFlowConformance):
    """The same suite on data_format="channels_first" models fed (N, 3, H, W)."""

    @pytest.fixture
    def reference_model(self):
        return functools.partial(tf_testing.reference_model, data_format="channels_first")

    @pytest.fixture
    def to_input(self):
        return lambda x: tf.convert_to_tensor(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))

    @pytest.fixture
    def stateful_model(self):
        return None  # a channels-last model: the class above runs it

    @pytest.fixture
    def reference_transformer(self):
        return functools.partial(tf_testing.reference_transformer,
                                 data_format="channels_first")


@pytest.fixture(scope="module")
def backend():
    return ic.get_backend("tensorflow")


@pytest.fixture(scope="module")
def convnet():
    return km.small_convnet()


@pytest.fixture(scope="module")
def x16():
    return km.random_images(3, 16)


# -- agreement with the torch adapter -----------------------------------------------------------
@pytest.mark.parametrize("method", sorted(name for name, cls in METHODS.items()
                                           if not issubclass(cls, AttentionMethod)))
def test_maps_equal_torch_on_reference_model(method):
    torch = pytest.importorskip("torch")
    from tests.torch_models import ReferenceNet

    w = reference_weights()
    x = reference_inputs(4)
    targets = [4, 0, 2, 1]
    got = ic.explain(km.reference_model(w), x, method=method, layer="features", targets=targets)
    x_torch = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))
    want = ic.explain(ReferenceNet(w), x_torch, method=method, layer="features", targets=targets)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_demo_builder_matches_torch():
    torch = pytest.importorskip("torch")
    from interp_torch.demo import DemoNet

    from interp_core.datasets.demo import demo_model

    torch.manual_seed(0)
    weights = DemoNet().export_weights()
    x = np.random.default_rng(0).random((2, 32, 32, 3)).astype(np.float32)
    keras_model = demo_model("tensorflow", weights)  # through the registration's demo hook
    assert [layer.name for layer in keras_model.layers] == [
        "block1", "pool1", "block2", "pool2", "block3", "gap", "fc"]
    from interp_torch.demo import build as build_torch

    torch_logits = build_torch(weights)(torch.from_numpy(x.transpose(0, 3, 1, 2))).detach()
    np.testing.assert_allclose(keras_model(x).numpy(), torch_logits.numpy(), atol=1e-5)
    got = ic.GradCAM(keras_model, "block3")(x, 2)
    want = ic.GradCAM(build_torch(weights), "block3")(
        torch.from_numpy(x.transpose(0, 3, 1, 2)), 2)
    np.testing.assert_allclose(got, want, atol=1e-5)


# -- gradients ----------------------------------------------------------------------------------
def _tape_reference(model, layer_name, x, targets):
    """The hand-written Keras Grad-CAM ingredients: a two-output model plus a tape."""
    grad_model = keras.Model(model.input, [model.get_layer(layer_name).output, model.output])
    with tf.GradientTape() as tape:
        acts, out = grad_model(x, training=False)
        scores = tf.gather(out, targets, axis=1, batch_dims=1)
    return acts.numpy(), tape.gradient(scores, acts).numpy(), scores.numpy()


def test_gradients_equal_hand_written_tape(backend, convnet, x16):
    acts, grads, scores = _tape_reference(convnet, "relu1", x16, [1, 4, 7])
    cap = backend.capture(convnet, x16, ["relu1"], resolve_targets([1, 4, 7], 3))
    np.testing.assert_allclose(cap.layers["relu1"].activations, acts, atol=1e-6)
    np.testing.assert_allclose(cap.layers["relu1"].gradients, grads, atol=1e-6)
    np.testing.assert_allclose(cap.scores, scores, rtol=1e-6)
    assert cap.input_spatial == (16, 16)


def test_tensor_and_numpy_inputs(convnet, x16):
    cam = ic.GradCAM(convnet, "conv2")
    np.testing.assert_array_equal(cam(x16, 3), cam(tf.constant(x16), 3))
    np.testing.assert_array_equal(cam(x16.astype(np.float64), 3), cam(x16, 3))


# -- the compiled path --------------------------------------------------------------------------
def test_second_call_on_same_shapes_does_not_retrace(backend):
    model = km.small_convnet(seed=3)
    x = km.random_images(4, 16, seed=5)
    cam = ic.GradCAM(model, "conv2")
    cam(x, [1, 2, 3, 4])
    traced = backend.trace_count
    cam(x, [7, 0, 0, 9])               # other targets, same shapes
    cam(tf.constant(x * 2), [1, 1, 1, 1])  # a tf.Tensor of the same signature
    ic.GradCAM(model, "conv2")(x, [3, 3, 3, 3])  # a new method object on the same model
    assert backend.trace_count == traced
    cam(x, None)                        # top-1: another target kind, one more trace
    cam(x, None)
    assert backend.trace_count == traced + 1
    cam(x[:2], [1, 2])                  # a new batch size: one more
    assert backend.trace_count == traced + 2
    binary = km.small_convnet(classes=1, seed=3)
    ic.GradCAM(binary, "conv2")(x, ic.BinaryTarget())
    traced = backend.trace_count
    ic.GradCAM(binary, "conv2")(x, [ic.BinaryTarget(False)] * 4)
    assert backend.trace_count == traced


def test_predict_is_compiled_and_batched(backend, convnet, x16):
    spec = resolve_targets([0, 1, 2], 3)
    got = backend.predict(convnet, x16, spec, batch_size=2)
    want = convnet(x16, training=False).numpy()[np.arange(3), [0, 1, 2]]
    np.testing.assert_allclose(got, want, rtol=1e-5)
    traced = backend.trace_count
    backend.predict(convnet, x16, resolve_targets([5, 5, 5], 3), batch_size=2)
    assert backend.trace_count == traced


# -- the user's model is never changed -----------------------------------------------------------
def test_logits_output_leaves_the_model_unchanged(x16):
    model = km.small_convnet(activation="softmax", seed=1)
    before = tf_testing.model_state(model)
    ic.explain(model, x16, method="gradcam", layer="conv2", output="logits")
    assert_same_state(before, tf_testing.model_state(model))


def test_model_state_restored_after_multi_layer_errors(x16):
    model = km.small_convnet(seed=1)
    before = tf_testing.model_state(model)
    with pytest.raises(ValueError, match="10 outputs"):
        ic.GradCAM(model, ["conv1", "conv2"])(x16, targets=[1, 2, 99])
    with pytest.raises(ValueError, match=r"not connected|no spatial"):
        ic.GradCAM(model, "fc")(x16, 0)
    assert_same_state(before, tf_testing.model_state(model))


# -- model kinds --------------------------------------------------------------------------------
def test_nested_base_model(backend):
    model = km.nested_model()
    x = km.random_images(2, 16)
    names = backend.layer_names(model)
    assert "base" in names and "base/block2_conv" in names and "base/block1_pool" in names
    maps = ic.GradCAM(model, "base/block2_conv")(x, [1, 3])
    assert maps.shape == (2, 16, 16) and maps.max() == pytest.approx(1.0)
    # the hand-written way that avoids "Graph disconnected": base internals, then the head
    base = model.get_layer("base")
    inner = keras.Model(base.input, [base.get_layer("block2_conv").output, base.output])
    with tf.GradientTape() as tape:
        acts, feats = inner(x)
        out = model.get_layer("fc")(model.get_layer("gap")(feats))
        scores = tf.gather(out, [1, 3], axis=1, batch_dims=1)
    grads = tape.gradient(scores, acts).numpy()
    cap = backend.capture(model, x, ["base/block2_conv"], resolve_targets([1, 3], 2))
    np.testing.assert_allclose(cap.layers["base/block2_conv"].gradients, grads, atol=1e-6)
    # a unique leaf name resolves to its nested path; a layer object works too
    by_leaf = ic.GradCAM(model, "block2_conv").explain(x, [1, 3])
    assert by_leaf.layers == ["base/block2_conv"]
    np.testing.assert_array_equal(by_leaf.maps, maps)
    np.testing.assert_array_equal(
        ic.GradCAM(model, base.get_layer("block2_conv"))(x, [1, 3]), maps)
    assert default_layer(backend, model, x) == "base"  # the base's output, (8, 8, 16)


def test_unknown_nested_layer_lists_prefixed_names():
    model = km.nested_model()
    with pytest.raises(ValueError, match=r"base/block2_conv") as info:
        ic.GradCAM(model, "base/block2_cnv")(km.random_images(1, 16))
    assert "closest names" in str(info.value)
    with pytest.raises(ValueError, match=r"base/block2_conv"):
        ic.GradCAM(model, "block2_cnv")(km.random_images(1, 16))
    with pytest.raises(ValueError, match="not part of the model"):
        ic.GradCAM(model, keras.layers.Conv2D(2, 1))(km.random_images(1, 16))


@pytest.mark.filterwarnings("ignore:`build\\(\\)` was called on layer:UserWarning")
def test_subclassed_model_and_custom_layer(backend):
    model = km.SubclassedNet()
    with pytest.raises(ValueError, match=r"not been built.*model\(x\)"):
        ic.GradCAM(model, "stem")(km.random_images(2, 16))
    assert not model.built  # the error did not build it behind the user's back
    x = km.random_images(2, 16)
    model(x)
    names = backend.layer_names(model)
    assert {"stem", "block", "block/conv", "block/norm", "head"} <= set(names)
    for layer in ("stem", "block", "block/conv"):
        maps = ic.GradCAM(model, layer)(x)
        assert maps.shape == (2, 16, 16) and np.isfinite(maps).all()
    assert default_layer(backend, model, x) == "block"
    with pytest.raises(ValueError, match="never ran"):
        ic.GradCAM(model, "unused")(x)


def test_sequential_and_unbuilt_sequential():
    model = keras.Sequential([keras.layers.Conv2D(4, 3, activation="relu", name="conv"),
                              keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3)])
    x = km.random_images(2, 8)
    with pytest.raises(ValueError, match="build"):
        ic.GradCAM(model, "conv")(x)
    model.build((None, 8, 8, 3))
    assert ic.GradCAM(model, "conv")(x).shape == (2, 8, 8)
    assert ic.GradCAM(model)(x).shape == (2, 8, 8)


def test_multi_layer_fusion(convnet, x16):
    # DESIGN.md section 3: ReLU and min-max each layer at its resolution, resize, mean, min-max
    fused = ic.GradCAM(convnet, ["relu1", "conv2"]).explain(x16, 2)
    assert fused.layers == ["relu1", "conv2"]
    size = fused.maps.shape[1:]
    per_layer = [ic.resize_bilinear(ic.normalize_minmax(np.maximum(r, 0)), size)
                 for r in fused.raw.values()]
    np.testing.assert_allclose(fused.maps, ic.normalize_minmax(np.mean(per_layer, axis=0)),
                               atol=1e-5)


def test_multi_input_model(backend):
    model = km.multi_input_model()
    rng = np.random.default_rng(0)
    image = rng.normal(size=(3, 12, 12, 3)).astype(np.float32)
    meta = rng.normal(size=(3, 4)).astype(np.float32)
    as_list = ic.GradCAM(model, "conv")([image, meta], [0, 1, 2])
    as_dict = ic.GradCAM(model, "conv")({"image": image, "meta": meta}, [0, 1, 2])
    assert as_list.shape == (3, 12, 12)
    np.testing.assert_allclose(as_list, as_dict, atol=1e-6)
    assert default_layer(backend, model, [image, meta]) == "conv"
    with pytest.raises(ValueError, match="no spatial axes"):
        ic.GradCAM(model, "meta_dense")([image, meta], 0)


def test_layer_not_connected_to_the_output():
    inp = keras.Input((8, 8, 3))
    a = keras.layers.Conv2D(4, 3, name="main")(inp)
    b = keras.layers.Conv2D(4, 3, name="aux_conv")(inp)
    main = keras.layers.Dense(3, name="logits")(keras.layers.GlobalAveragePooling2D()(a))
    aux = keras.layers.Dense(2, name="aux")(keras.layers.GlobalAveragePooling2D()(b))
    model = keras.Model(inp, {"logits": main, "aux": aux})
    x = km.random_images(2, 8)
    assert ic.GradCAM(model, "main")(x, 1).shape == (2, 8, 8)  # dict output: "logits" picked
    with pytest.raises(ValueError, match="not connected"):
        ic.GradCAM(model, "aux_conv")(x, 1)
    assert ic.GradCAM(model, "aux_conv", output="aux")(x, 1).shape == (2, 8, 8)


# -- outputs and targets ------------------------------------------------------------------------
@pytest.mark.parametrize("activation", ["softmax", "sigmoid"])
def test_logits_behind_final_activation(backend, activation, x16):
    squashed = km.small_convnet(activation=activation, seed=4)
    linear = km.small_convnet(activation=None, seed=4)
    linear.set_weights(squashed.get_weights())
    fc_before = squashed.get_layer("fc").activation
    got = ic.GradCAM(squashed, "conv2", output="logits", relu=False, normalize=False)
    want = ic.GradCAM(linear, "conv2", relu=False, normalize=False)
    a, b = got.explain(x16, [1, 2, 3]), want.explain(x16, [1, 2, 3])
    np.testing.assert_allclose(a.scores, b.scores, rtol=1e-5)
    np.testing.assert_allclose(a.raw["conv2"], b.raw["conv2"], atol=1e-6)
    probs = ic.GradCAM(squashed, "conv2").explain(x16, [1, 2, 3]).scores
    np.testing.assert_allclose(probs, squashed(x16).numpy()[np.arange(3), [1, 2, 3]], rtol=1e-5)
    assert squashed.get_layer("fc").activation is fc_before
    assert "activation" in squashed.get_layer("fc").__dict__
    # a model whose output already is the logits: output="logits" gives the output itself
    np.testing.assert_allclose(
        ic.GradCAM(linear, "conv2", output="logits").explain(x16, [1, 2, 3]).scores, b.scores)
    if activation == "softmax":
        softmax_layer = keras.Sequential([linear, keras.layers.Softmax(name="probs")])
        c = ic.GradCAM(softmax_layer, "convnet/conv2", output="logits", relu=False,
                       normalize=False).explain(x16, [1, 2, 3])
        np.testing.assert_allclose(c.scores, b.scores, rtol=1e-5)


def test_cat_vs_dog_vgg16_binary(backend):
    model = km.cat_vs_dog(32)
    x = km.random_images(2, 32, seed=7)
    assert default_layer(backend, model, x) == "vgg16/block5_conv3"
    pos = ic.GradCAM(model, "vgg16/block5_conv3", output="logits", relu=False, normalize=False)
    neg = ic.GradCAM(model, "vgg16/block5_conv3", output="logits", relu=False, normalize=False)
    p = pos.explain(x, ic.BinaryTarget())
    n = neg.explain(x, ic.BinaryTarget(positive=False))
    np.testing.assert_allclose(p.raw["vgg16/block5_conv3"], -n.raw["vgg16/block5_conv3"],
                               atol=1e-6)
    assert p.targets.tolist() == [1, 1] and n.targets.tolist() == [0, 0]
    gap = keras.Model(model.input, model.get_layer("gap").output)(x)
    fc = model.get_layer("fc")
    logit = (gap.numpy() @ fc.kernel.numpy() + fc.bias.numpy())[:, 0]
    np.testing.assert_allclose(p.scores, logit, rtol=1e-4, atol=1e-6)
    maps = ic.GradCAM(model, "vgg16/block5_conv3")(x, ic.BinaryTarget())  # on the probability
    assert maps.shape == (2, 32, 32) and np.isfinite(maps).all()
    with pytest.raises(ValueError, match="single"):
        ic.GradCAM(km.small_convnet(), "conv2")(km.random_images(2, 16), ic.BinaryTarget())


def test_cam_reads_dense_kernel_and_equals_gradcam(backend):
    model = km.cat_vs_dog(64)
    x = km.random_images(2, 64, seed=8)
    W = backend.linear_weights(model)
    np.testing.assert_array_equal(W, model.get_layer("fc").kernel.numpy().T)
    for target in (ic.BinaryTarget(), ic.BinaryTarget(positive=False)):
        cam = ic.CAM(model, "vgg16")(x, target)  # vgg16's output feeds the pooling
        grad = ic.GradCAM(model, "vgg16")(x, target)
        np.testing.assert_allclose(cam, grad, atol=1e-5)
    convnet = km.small_convnet()
    x16 = km.random_images(3, 16)
    np.testing.assert_allclose(ic.CAM(convnet, "conv2", fc="fc")(x16, [1, 2, 3]),
                               ic.GradCAM(convnet, "conv2")(x16, [1, 2, 3]), atol=1e-5)


# -- registration -------------------------------------------------------------------------------
def test_registered_and_detected(convnet):
    assert "tensorflow" in ic.backends()
    assert ic.get_backend(convnet).name == "tensorflow"
    from interp_core.backend.registry import registrations

    assert registrations()["tensorflow"].demo == "interp_tensorflow.demo:build"


def test_plugin_imports_no_framework():
    code = (
        "import sys, interp_core as ic, interp_tensorflow.plugin\n"
        "assert 'tensorflow' in ic.backends()\n"
        "bad = [m for m in ('tensorflow', 'keras') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


# -- callbacks ----------------------------------------------------------------------------------
def _training_data(n: int = 16, size: int = 16, classes: int = 10):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, size, size, 3)).astype(np.float32)
    return x, rng.integers(0, classes, n)


def _fit(model, callbacks, epochs=3):
    x, y = _training_data()
    model.compile(optimizer=keras.optimizers.SGD(0.05),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=8, epochs=epochs, shuffle=False, verbose=0, callbacks=callbacks)
    return model


def test_callbacks_log_to_folder_and_leave_training_unchanged(tmp_path, backend):
    samples = km.random_images(2, 16, seed=9)
    sink = FolderSink(tmp_path / "logs")
    plain = _fit(km.small_convnet(seed=11), [])
    logged_model = km.small_convnet(seed=11)
    cam_logger = CAMLogger(samples, "conv2", every_n_epochs=2, sink=sink)
    fm_logger = FeatureMapLogger(samples, "stem", sink=sink, max_channels=4)
    batch_hooks = [name for name in dir(keras.callbacks.Callback) if "batch" in name]
    for logger in (cam_logger, fm_logger):  # no batch hooks: nothing runs during the epoch
        for hook in batch_hooks:
            assert getattr(type(logger), hook) is getattr(keras.callbacks.Callback, hook), hook
    traced = backend.trace_count
    logged = _fit(logged_model, [cam_logger, fm_logger])
    assert backend.trace_count - traced <= 2  # one trace per logger, reused every epoch
    for u, v in zip(plain.get_weights(), logged.get_weights(), strict=True):
        np.testing.assert_array_equal(u, v)
    assert all(layer.trainable for layer in logged.layers)
    steps = {(e["tag"], e["step"]) for e in sink.entries}
    assert steps == {("gradcam/conv2", 1), ("features/stem", 0), ("features/stem", 1),
                     ("features/stem", 2)}
    png = tmp_path / "logs" / "gradcam_conv2" / "sample_001" / "step_0001.png"
    assert png.is_file() and (tmp_path / "logs" / "index.html").is_file()
    from PIL import Image

    assert np.asarray(Image.open(png)).shape == (16, 16, 3)
    grid = np.asarray(Image.open(tmp_path / "logs" / "features_stem" / "sample_000" /
                                 "step_0002.png"))
    assert grid.shape == (65, 65, 3)  # 2 x 2 tiles of 32 px and a 1 px gap


def test_callback_maps_follow_the_weights(tmp_path):
    samples = km.random_images(2, 16, seed=9)
    logger = CAMLogger(samples, "conv2", sink=FolderSink(tmp_path), targets=[1, 2])
    model = km.small_convnet(seed=12)
    logger.set_model(model)
    first = logger.render()
    model.set_weights([w * 1.5 + 0.1 for w in model.get_weights()])
    second = logger.render()
    assert any(not np.array_equal(first[k], second[k]) for k in first)
    with pytest.raises(ValueError, match="every_n_epochs"):
        CAMLogger(samples, "conv2", every_n_epochs=0, sink=FolderSink(tmp_path))


def test_default_sink_is_a_folder_created_on_first_use(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    logger = FeatureMapLogger(km.random_images(1, 16), "conv2")
    assert not (tmp_path / "interp_logs").exists()
    _fit(km.small_convnet(seed=11), [logger], epochs=1)
    assert (tmp_path / "interp_logs" / "index.html").is_file()
    assert (tmp_path / "interp_logs" / "features_conv2" / "sample_000" / "step_0000.png").is_file()


def test_tensorboard_sink(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    samples = km.random_images(2, 16, seed=9)
    sink = TensorBoardSink(tmp_path)
    _fit(km.small_convnet(seed=11), [CAMLogger(samples, "conv2", sink=sink)], epochs=2)
    sink.close()
    acc = EventAccumulator(str(tmp_path), size_guidance={"tensors": 0, "images": 0})
    acc.Reload()
    tags = acc.Tags()
    logged = set(tags.get("tensors", [])) | set(tags.get("images", []))
    assert "gradcam/conv2/sample_000" in logged, tags


def test_wandb_sink_offline(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    from interp_core.logging.sinks import WandbSink

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    sink = WandbSink(project="interp-tests", dir=str(tmp_path))
    for i in range(3):  # another logger moves W&B's global step past the epoch numbers
        sink.run.log({"loss": float(i)})
    samples = km.random_images(2, 16, seed=9)
    _fit(km.small_convnet(seed=11), [CAMLogger(samples, "conv2", sink=sink)], epochs=2)
    summary = dict(sink.run.summary)
    sink.close()
    assert "gradcam/conv2/sample_001" in summary, sorted(summary)  # not dropped as "old" steps
    assert summary[WandbSink.STEP_METRIC] == 1
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].rglob("*.png"))


