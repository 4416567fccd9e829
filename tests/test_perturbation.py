"""Score-CAM and Ablation-CAM against slow, obvious NumPy implementations."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import interp_core as ic
from interp_core.backend.layout import infer_layout as input_layout
from interp_core.backend.protocol import ACTIVATION_PATCH
from interp_core.imaging import blend
from interp_core.methods import METHODS
from interp_core.methods.perturbation import scorecam_masks
from interp_core.testing import reference as ref

TARGETS = [0, 3, 1, 4]


@pytest.fixture
def oracle():
    return ref.ReferenceBackend(), ref.ReferenceModel(ref.reference_weights())


@pytest.fixture
def x():
    return ref.reference_inputs(4)


class CountingBackend(ref.ReferenceBackend):
    """The reference backend, recording how many inputs each forward pass gets."""

    def __init__(self, capabilities=None):
        self.sizes = []
        if capabilities is not None:
            self.capabilities = capabilities

    def predict(self, model, inputs, target, *, batch_size=32, output=None):
        assert len(inputs) <= batch_size
        self.sizes.append(len(inputs))
        return super().predict(model, inputs, target, batch_size=batch_size, output=output)

    def patched_scores(self, model, inputs, layer, channel_masks, target, *, batch_size=32,
                       output=None):
        self.sizes.append(len(channel_masks) * len(inputs))
        return super().patched_scores(model, inputs, layer, channel_masks, target,
                                      batch_size=batch_size, output=output)


# -- slow, obvious implementations -----------------------------------------------------------
def slow_upsample_align_corners(a, size):
    """Bilinear, align_corners=True, one pixel at a time."""
    h, w = a.shape
    out = np.zeros(size)
    for i in range(size[0]):
        for j in range(size[1]):
            y = i * (h - 1) / (size[0] - 1)
            x = j * (w - 1) / (size[1] - 1)
            y0, x0 = int(np.floor(y)), int(np.floor(x))
            y1, x1 = min(y0 + 1, h - 1), min(x0 + 1, w - 1)
            fy, fx = y - y0, x - x0
            out[i, j] = ((1 - fy) * (1 - fx) * a[y0, x0] + (1 - fy) * fx * a[y0, x1]
                         + fy * (1 - fx) * a[y1, x0] + fy * fx * a[y1, x1])
    return out


def slow_channel_maps(model, x, channels, channel_weights):
    """``sum_ch w_ch * A[..., ch]`` per sample, one channel at a time; ``channel_weights(acts,
    i, chans)`` gives sample ``i``'s weights of the channels ``chans`` (default: all)."""
    acts = model.features(x)
    n, _, _, c = acts.shape
    maps = np.zeros(acts.shape[:3])
    for i in range(n):
        chans = list(range(c) if channels is None else channels[i])
        for weight, ch in zip(channel_weights(acts, i, chans), chans, strict=True):
            maps[i] += weight * acts[i, :, :, ch]
    return maps


def slow_scorecam(model, x, classes, channels=None):
    def softmax_of_masked_scores(acts, i, chans):
        scores = []
        for ch in chans:
            up = slow_upsample_align_corners(acts[i, :, :, ch].astype(np.float64), x.shape[1:3])
            mask = (up - up.min()) / (up.max() - up.min() + 1e-8)
            masked = x[i] * mask[:, :, None]
            scores.append(model(masked[None])[0, classes[i]])
        s = np.array(scores, dtype=np.float64)
        w = np.exp(s - s.max())
        return w / w.sum()

    return slow_channel_maps(model, x, channels, softmax_of_masked_scores)


def slow_ablationcam(model, x, classes, channels=None):
    def score_drops(acts, i, chans):
        original = model.head(acts[i : i + 1])[0, classes[i]]
        weights = []
        for ch in chans:
            ablated = acts[i : i + 1].copy()
            ablated[..., ch] = 0
            weights.append((original - model.head(ablated)[0, classes[i]]) / original)
        return weights

    return slow_channel_maps(model, x, channels, score_drops)


def dead_channel_model():
    """The reference model with channel 2 dead (constant 0) for every input."""
    w = ref.reference_weights()
    bias = w.conv_bias.copy()
    bias[2] = -100.0
    return ref.ReferenceModel(dataclasses.replace(w, conv_bias=bias))


def duplicate_channel_model():
    """The reference model with channel 5 = 2 * channel 3 (same mask, one score)."""
    w = ref.reference_weights()
    kernel, bias = w.conv_kernel.copy(), w.conv_bias.copy()
    kernel[..., 5], bias[5] = 2 * kernel[..., 3], 2 * bias[3]
    return ref.ReferenceModel(dataclasses.replace(w, conv_kernel=kernel, conv_bias=bias))


# -- Score-CAM -------------------------------------------------------------------------------
def test_scorecam_masks_match_slow_upsampling():
    a = np.random.default_rng(0).random((3, 4, 5)).astype(np.float32)
    got = scorecam_masks(a, (9, 7))
    for k in range(3):
        up = slow_upsample_align_corners(a[k].astype(np.float64), (9, 7))
        want = (up - up.min()) / (up.max() - up.min() + 1e-8)
        np.testing.assert_allclose(got[k], want, atol=1e-6)


@pytest.mark.parametrize("model_fn", [lambda: ref.ReferenceModel(), dead_channel_model,
                                      duplicate_channel_model])
def test_scorecam_matches_slow_numpy(model_fn, x):
    model = model_fn()
    backend = ref.ReferenceBackend()
    exp = ic.ScoreCAM(model, ref.LAYER, backend=backend).explain(x, TARGETS)
    want = slow_scorecam(model, x, TARGETS)
    np.testing.assert_allclose(exp.raw[ref.LAYER], want, rtol=1e-5, atol=1e-6)
    assert exp.maps.shape == (4, 10, 10) and exp.method == "scorecam"


def test_scorecam_dead_channels_share_one_zero_input_pass(x):
    backend = CountingBackend()
    ic.ScoreCAM(dead_channel_model(), ref.LAYER, backend=backend, batch_size=7).explain(x, 0)
    # per sample 7 live channels in one chunk of 7; the dead channel: one pass of 4 zero inputs
    assert sorted(backend.sizes) == [4, 7, 7, 7, 7]


def test_scorecam_scores_each_distinct_mask_once(x):
    backend = CountingBackend()
    ic.ScoreCAM(duplicate_channel_model(), ref.LAYER, backend=backend, batch_size=5
                ).explain(x, 0)
    assert max(backend.sizes) <= 5
    assert sum(backend.sizes) == 4 * (ref.CHANNELS - 1)  # chunks run across samples


def test_scorecam_top1_targets_are_pinned(oracle, x):
    backend, model = oracle
    top1 = model(x).argmax(1)
    got = ic.ScoreCAM(model, ref.LAYER, backend=backend).explain(x)
    want = ic.ScoreCAM(model, ref.LAYER, backend=backend).explain(x, top1.tolist())
    np.testing.assert_array_equal(got.targets, top1)
    np.testing.assert_allclose(got.raw[ref.LAYER], want.raw[ref.LAYER], atol=1e-7)


@pytest.mark.parametrize("method", ["scorecam", "ablationcam"])
def test_batch_size_independence(oracle, x, method):
    model = oracle[1]
    results = [
        METHODS[method](model, ref.LAYER, backend=CountingBackend(), batch_size=bs)
        .explain(x, TARGETS).raw[ref.LAYER]
        for bs in (1, 3, 8, 64)
    ]
    for r in results[1:]:
        np.testing.assert_allclose(r, results[0], rtol=1e-6, atol=1e-7)


def test_scorecam_memory_bounded_by_batch_size(x):
    backend = CountingBackend()
    ic.ScoreCAM(ref.ReferenceModel(), ref.LAYER, backend=backend, batch_size=3).explain(x, 1)
    assert max(backend.sizes) <= 3
    assert sum(backend.sizes) == 4 * ref.CHANNELS  # one masked input per sample and channel


def test_scorecam_top_k(oracle, x):
    backend, model = oracle
    acts = model.features(x)
    var = acts.reshape(4, -1, ref.CHANNELS).var(axis=1)
    k = 3
    chosen = [np.argsort(-v, kind="stable")[:k] for v in var]
    counting = CountingBackend()
    cam = ic.ScoreCAM(model, ref.LAYER, backend=counting, top_k=k)
    exp = cam.explain(x, TARGETS)
    np.testing.assert_allclose(exp.raw[ref.LAYER], slow_scorecam(model, x, TARGETS, chosen),
                               rtol=1e-5, atol=1e-6)
    assert sum(counting.sizes) == 4 * k
    weights = cam.channel_weights(acts, None, _ctx(cam, backend, model, x))
    assert ((weights > 0).sum(axis=1) == k).all()
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, rtol=1e-6)
    full = ic.ScoreCAM(model, ref.LAYER, backend=backend, top_k=ref.CHANNELS).explain(x, TARGETS)
    exact = ic.ScoreCAM(model, ref.LAYER, backend=backend).explain(x, TARGETS)
    np.testing.assert_array_equal(full.raw[ref.LAYER], exact.raw[ref.LAYER])


def _ctx(cam, backend, model, x):
    from interp_core.backend.target_spec import resolve_targets
    from interp_core.methods.base import LayerContext

    spec = resolve_targets(TARGETS, len(x))
    cap = backend.capture(model, x, [ref.LAYER], spec, gradients=False)
    return LayerContext(backend, model, x, spec, cap, ref.LAYER, ref.LAYER)


# -- Ablation-CAM ----------------------------------------------------------------------------
@pytest.mark.parametrize("model_fn", [lambda: ref.ReferenceModel(), dead_channel_model])
def test_ablationcam_matches_slow_numpy(model_fn, x):
    model = model_fn()
    exp = ic.AblationCAM(model, ref.LAYER, backend=ref.ReferenceBackend()).explain(x, TARGETS)
    np.testing.assert_allclose(exp.raw[ref.LAYER], slow_ablationcam(model, x, TARGETS),
                               rtol=1e-5, atol=1e-6)
    assert exp.method == "ablationcam"


def test_ablationcam_skips_dead_channels(x):
    backend = CountingBackend()
    ic.AblationCAM(dead_channel_model(), ref.LAYER, backend=backend).explain(x, 0)
    assert sum(backend.sizes) == 4 * (ref.CHANNELS - 1)


def test_ablationcam_ratio(oracle, x):
    model = oracle[1]
    acts = model.features(x)
    mean_abs = np.abs(acts).reshape(4, -1, ref.CHANNELS).mean(axis=1)
    chosen = [np.argsort(-m, kind="stable")[:3] for m in mean_abs]  # ceil(0.3 * 8) = 3
    counting = CountingBackend()
    exp = ic.AblationCAM(model, ref.LAYER, backend=counting, ratio_channels_to_ablate=0.3
                         ).explain(x, TARGETS)
    np.testing.assert_allclose(exp.raw[ref.LAYER], slow_ablationcam(model, x, TARGETS, chosen),
                               rtol=1e-5, atol=1e-6)
    assert sum(counting.sizes) == 4 * 3


def test_ablationcam_needs_activation_patch(oracle):
    backend = CountingBackend(capabilities=oracle[0].capabilities - {ACTIVATION_PATCH})
    with pytest.raises(NotImplementedError, match="activation_patch"):
        ic.AblationCAM(oracle[1], ref.LAYER, backend=backend)


def test_reference_patched_scores_closed_form(oracle, x):
    backend, model = oracle
    spec = ic.backend.resolve_targets(TARGETS, 4)
    masks = np.ones((3, ref.CHANNELS), np.float32)
    masks[1, 2] = 0
    masks[2] = 0
    got = backend.patched_scores(model, x, ref.LAYER, masks, spec)
    assert got.shape == (3, 4) and got.dtype == np.float32
    np.testing.assert_allclose(got[0], backend.predict(model, x, spec), rtol=1e-6)
    np.testing.assert_allclose(got[2], model.weights.fc_bias[TARGETS], rtol=1e-6)
    acts = model.features(x)
    acts[..., 2] = 0
    np.testing.assert_allclose(got[1], model.head(acts)[np.arange(4), TARGETS], rtol=1e-5)


# -- options and layouts ---------------------------------------------------------------------
@pytest.mark.parametrize("cls,options", [
    (ic.ScoreCAM, {"batch_size": 0}), (ic.ScoreCAM, {"top_k": 0}),
    (ic.ScoreCAM, {"batch_size": 2.5}), (ic.AblationCAM, {"ratio_channels_to_ablate": 0}),
    (ic.AblationCAM, {"ratio_channels_to_ablate": 1.5}), (ic.AblationCAM, {"batch_size": -1}),
])
def test_bad_options_name_the_value(oracle, cls, options):
    (key,) = options
    with pytest.raises(ValueError, match=key):
        cls(oracle[1], ref.LAYER, backend=oracle[0], **options)


def test_unknown_option_still_rejected(oracle):
    with pytest.raises(TypeError, match="unknown options"):
        ic.ScoreCAM(oracle[1], ref.LAYER, backend=oracle[0], topk=3)


def test_methods_listed():
    assert {"scorecam", "ablationcam"} <= set(ic.methods())


def test_input_layout():
    assert input_layout(np.zeros((2, 3, 8, 9)), (8, 9)) == "channels_first"
    assert input_layout(np.zeros((2, 8, 9, 3)), (8, 9)) == "channels_last"
    assert input_layout(np.zeros((2, 8, 9)), (8, 9)) == "none"
    assert input_layout(np.zeros((2, 3, 32)), (32,)) == "channels_first"
    with pytest.raises(ValueError, match="ambiguous"):
        input_layout(np.zeros((2, 8, 8, 8)), (8, 8))
    with pytest.raises(ValueError, match="spatial shape"):
        input_layout(np.zeros((2, 3, 8, 9)), (9, 9))

    class Declared:
        name = "declared"
        input_layout = "channels_first"

    assert input_layout(np.zeros((2, 8, 8, 8)), (8, 8), Declared()) == "channels_first"


def test_blend_keeps_the_logical_layout():
    rng = np.random.default_rng(0)
    x = rng.random((1, 3, 4, 5)).astype(np.float32)
    masks = rng.random((2, 4, 5)).astype(np.float32)
    base = rng.random((1, 3, 4, 5)).astype(np.float32)
    got = blend(x, masks, "channels_first", base)
    np.testing.assert_allclose(got, x * masks[:, None] + base * (1 - masks[:, None]), atol=1e-6)
    cl = blend(np.moveaxis(x, 1, -1), masks, "channels_last")
    np.testing.assert_allclose(np.moveaxis(cl, -1, 1), x * masks[:, None], atol=1e-6)


# -- torch: pytorch-grad-cam's numerics, models of any dimension -----------------------------
def test_torch_scorecam_equals_pytorch_grad_cam_algorithm():
    torch = pytest.importorskip("torch")
    from tests.torch_models import SmallResNet

    torch.manual_seed(0)
    model = SmallResNet(classes=6).eval()
    x = torch.randn(2, 3, 16, 16)
    targets = [1, 4]
    ours = ic.ScoreCAM(model, "layer2", batch_size=5).explain(x, targets)
    # pytorch-grad-cam's ScoreCAM.get_cam_weights, written out in torch
    store = {}
    handle = model.layer2.register_forward_hook(lambda m, a, o: store.setdefault("a", o))
    with torch.no_grad():
        model(x)
        handle.remove()
        acts = store["a"]
        up = torch.nn.UpsamplingBilinear2d(size=x.shape[-2:])(acts)
        flat = up.view(up.size(0), up.size(1), -1)
        mx, mn = flat.max(-1)[0][:, :, None, None], flat.min(-1)[0][:, :, None, None]
        up = (up - mn) / (mx - mn + 1e-8)
        masked = x[:, None] * up[:, :, None]
        scores = torch.stack([model(masked[i])[:, t] for i, t in enumerate(targets)])
        weights = torch.softmax(scores, dim=-1)
        cam = (weights[:, :, None, None] * acts).sum(1)
    np.testing.assert_allclose(ours.raw["layer2"], cam.numpy(), rtol=1e-4, atol=1e-5)


def test_torch_ablationcam_and_batch_independence():
    torch = pytest.importorskip("torch")
    from tests.torch_models import SmallResNet

    torch.manual_seed(1)
    model = SmallResNet(classes=5).eval()
    x = torch.randn(3, 3, 16, 16)
    store = {}
    handle = model.layer2.register_forward_hook(lambda m, a, o: store.setdefault("a", o.clone()))
    with torch.no_grad():
        logits = model(x)
    handle.remove()
    acts = store["a"]
    targets = logits.argmax(1)
    want = torch.zeros(acts.shape[0], *acts.shape[2:])
    with torch.no_grad():
        for i, t in enumerate(targets.tolist()):
            y = logits[i, t]
            for c in range(acts.shape[1]):
                def zero(m, a, o, c=c, i=i):
                    o = o.clone()
                    o[:, c] = 0
                    return o
                h = model.layer2.register_forward_hook(zero)
                y_c = model(x[i : i + 1])[0, t]
                h.remove()
                want[i] += (y - y_c) / y * acts[i, c]
    maps = {bs: ic.AblationCAM(model, "layer2", batch_size=bs).explain(x).raw["layer2"]
            for bs in (1, 4, 32)}
    np.testing.assert_allclose(maps[32], want.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(maps[1], maps[32], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(maps[4], maps[32], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dims,shape", [(1, (2, 3, 32)), (3, (1, 3, 6, 6, 6))])
def test_torch_perturbation_methods_in_1d_and_3d(dims, shape):
    torch = pytest.importorskip("torch")
    from tests.torch_models import SmallResNet

    torch.manual_seed(0)
    model = SmallResNet(classes=4, dims=dims)
    x = torch.randn(*shape)
    for method in ("scorecam", "ablationcam"):
        # relu=False: a random model's map may be negative everywhere (Grad-CAM's too)
        maps = ic.explain(model, x, method=method, layer="layer2", batch_size=7, relu=False)
        assert maps.shape == (shape[0], *shape[2:])
        assert np.isfinite(maps).all() and maps.max() == pytest.approx(1.0)
