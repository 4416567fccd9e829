"""Agreement with the pytorch-grad-cam package itself (not a re-implementation of it).

pytorch-grad-cam needs torchvision, which does not load beside the dev venv's torch, so these
tests run in the zoo venv (``make test-zoo``; they skip elsewhere, and fail there when the
package is missing). :mod:`tests.test_methods_peers` checks the same methods against its
algorithms written out, in every venv. Each test calls the package's class with
``ClassifierOutputTarget`` targets and ours with the same class indices, on a small
convolutional network with batch norm and a ReLU before the explained layer's output.
"""

from __future__ import annotations

import numpy as np
import pytest
import zoo_env

import interp_core as ic
from interp_core.methods import KPCACAM, FullGrad, GuidedBackprop

torch = pytest.importorskip("torch")
pgc = zoo_env.require("pytorch_grad_cam", module_level=True)
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402

nn = torch.nn
TARGETS = [0, 3, 1]


def _net() -> nn.Module:
    """Conv-BN-ReLU stem, two conv-ReLU blocks, global average pooling, a dense head."""
    torch.manual_seed(3)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 12, 3, padding=1, stride=2), nn.ReLU(),
        nn.Conv2d(12, 16, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 5),
    )
    with torch.no_grad():  # non-trivial running statistics, as a trained model has
        model[1].running_mean.uniform_(-0.2, 0.2)
        model[1].running_var.uniform_(0.5, 1.5)
    return model.eval()


@pytest.fixture(scope="module")
def model() -> nn.Module:
    return _net()


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(5).random((3, 3, 16, 20), dtype=np.float32))


def _theirs(cls: type, model: nn.Module, x: torch.Tensor, layers: list[nn.Module],
            **call: object) -> np.ndarray:
    with cls(model=model, target_layers=layers) as cam:
        return cam(input_tensor=x, targets=[ClassifierOutputTarget(t) for t in TARGETS], **call)


@pytest.mark.parametrize("ours, theirs, layer", [
    (ic.GradCAM, "GradCAM", "5"),
    (ic.GradCAM, "GradCAM", "4"),
    (ic.HiResCAM, "HiResCAM", "5"),
    (ic.GradCAMPlusPlus, "GradCAMPlusPlus", "5"),
    (ic.XGradCAM, "XGradCAM", "5"),
    (ic.LayerCAM, "LayerCAM", "5"),
    (ic.ScoreCAM, "ScoreCAM", "5"),
    (ic.AblationCAM, "AblationCAM", "5"),
])
def test_cam_methods_equal_the_package(model, x, ours, theirs, layer):
    want = _theirs(getattr(pgc, theirs), model, x, [model[int(layer)]])
    got = ours(model, layer)(x, TARGETS)
    np.testing.assert_allclose(got, want, atol=1e-4)


@pytest.mark.parametrize("layers", [["2", "5"], ["4", "6"]])
def test_multi_layer_fusion_equals_the_package(model, x, layers):
    """Each layer is min-max scaled before the mean; pytorch-grad-cam divides by
    ``max + 1e-7`` where we divide by ``max - min`` exactly, so a layer whose ReLU'd map peaks
    at ``p`` differs by about ``1e-7 / p`` (this model's early layers peak near 1e-4); the
    bound below is that, from the raw maps, and the maps must agree within it."""
    want = _theirs(pgc.GradCAM, model, x, [model[int(name)] for name in layers])
    exp = ic.GradCAM(model, layers).explain(x, TARGETS)
    relu = [np.maximum(exp.raw[name], 0).reshape(len(x), -1) for name in layers]
    spreads = np.stack([r.max(axis=1) - r.min(axis=1) for r in relu])  # (layers, N)
    # A constant layer map is 0 in both; the others differ by about 1e-7 / spread.
    share = np.where(spreads > 0, 1e-7 / np.where(spreads > 0, spreads, 1.0), 0.0)
    bound = 4 * share.max(axis=0) + 2e-6  # (N,): the guard's share, with room for the rest
    for got, expected, tolerance in zip(exp.maps, want, bound, strict=True):
        np.testing.assert_allclose(got, expected, atol=tolerance)


def test_fullgrad_equals_the_package(model, x):
    want = _theirs(pgc.FullGrad, model, x, [])
    np.testing.assert_allclose(FullGrad(model)(x, TARGETS), want, atol=1e-4)


def test_aug_smooth_equals_the_package(model, x):
    want = _theirs(pgc.GradCAM, model, x, [model[5]], aug_smooth=True)
    got = ic.GradCAM(model, "5", aug_smooth=True)(x, TARGETS)
    np.testing.assert_allclose(got, want, atol=1e-3)


def _their_raw_maps(cls: type, model: nn.Module, x: torch.Tensor, layer: nn.Module,
                    **options: object) -> np.ndarray:
    """The package's per-layer map before ReLU and scaling (``BaseCAM.get_cam_image``)."""
    cam = cls(model=model, target_layers=[layer], **options)
    try:
        outputs = cam.activations_and_grads(x)
        targets = [ClassifierOutputTarget(t) for t in TARGETS]
        sum(t(o) for t, o in zip(targets, outputs, strict=True)).backward()
        store = cam.activations_and_grads
        acts, grads = store.activations[0].numpy(), store.gradients[0].numpy()
        return cam.get_cam_image(x, layer, targets, acts, grads, cls is pgc.GradCAM)
    finally:
        cam.activations_and_grads.release()


def _assert_equal_up_to_sign(method: ic.CAMMethod, x: torch.Tensor, theirs_raw: np.ndarray,
                             theirs_maps: np.ndarray, layer: str, tolerance: float) -> None:
    """A principal component's sign is arbitrary: the package takes whatever its SVD or
    kernel PCA returns (and it flips with round-off), we fix it. Each sample's raw map must be
    the package's or its negative, and the final map the package's pipeline applied to it."""
    exp = method.explain(x, TARGETS)
    ours_raw = exp.raw[layer]
    for i in range(len(x)):
        sign = np.sign((ours_raw[i] * theirs_raw[i]).sum())
        np.testing.assert_allclose(ours_raw[i], sign * theirs_raw[i], rtol=tolerance,
                                   atol=tolerance * np.abs(theirs_raw[i]).max())
        if sign > 0:
            np.testing.assert_allclose(exp.maps[i], theirs_maps[i], atol=tolerance)
        else:  # the package's map is ours with the component turned round
            flipped = method.postprocess([-ours_raw[i : i + 1]], x.shape[-2:])[0]
            np.testing.assert_allclose(flipped, theirs_maps[i], atol=tolerance)


def test_eigen_smooth_equals_the_package(model, x):
    theirs = _theirs(pgc.GradCAM, model, x, [model[5]], eigen_smooth=True)
    raw = _their_raw_maps(pgc.GradCAM, model, x, model[5])
    _assert_equal_up_to_sign(ic.GradCAM(model, "5", eigen_smooth=True), x, raw, theirs, "5",
                             1e-3)


def test_kpca_cam_equals_the_package(model, x):
    pytest.importorskip("sklearn")
    theirs = _theirs(pgc.KPCA_CAM, model, x, [model[5]])
    raw = _their_raw_maps(pgc.KPCA_CAM, model, x, model[5])
    # The package hands scikit-learn float32 activations, and KernelPCA then works in float32
    # (we work in float64): agreement to about 1% of the map's scale, not to round-off.
    _assert_equal_up_to_sign(KPCACAM(model, "5"), x, raw, theirs, "5", 2e-2)


def test_guided_backprop_equals_the_package(model, x):
    guided = pgc.GuidedBackpropReLUModel(model, device="cpu")
    for i, t in enumerate(TARGETS):
        want = guided(x[i : i + 1], target_category=t)  # (H, W, C)
        got = GuidedBackprop(model).explain(x[i : i + 1], [t])
        raw = next(iter(got.raw.values()))[0]
        raw = raw if raw.shape == want.shape else np.moveaxis(raw, 0, -1)
        np.testing.assert_allclose(raw, want, atol=1e-5)


# -- the methods of 2025 (issue 23): FEM, Finer-CAM, Seg-Eigen-CAM, RefineCAM --------------------
@pytest.fixture
def net() -> nn.Module:
    """A fresh model: the package's guided backpropagation above leaves one ReLU module shared
    by every position in the module-scoped one, and a shared layer cannot be explained."""
    return _net()


@pytest.mark.parametrize("layer", ["2", "4", "5"])
def test_fem_equals_the_package(net, x, layer):
    from pytorch_grad_cam.fem import FEM

    with FEM(model=net, target_layers=[net[int(layer)]]) as cam:
        want = cam(input_tensor=x, targets=None)
    exp = ic.FEM(net, layer).explain(x, TARGETS)  # target-free: the targets are ignored
    np.testing.assert_allclose(exp.maps, want, atol=1e-4)
    assert exp.maps.max() == 1


@pytest.mark.parametrize("layer", ["2", "4", "5"])
def test_segeigencam_equals_the_package(net, x, layer):
    from pytorch_grad_cam.seg_eigen_cam import SegEigenCAM

    want = _theirs(SegEigenCAM, net, x, [net[int(layer)]])
    np.testing.assert_allclose(ic.SegEigenCAM(net, layer)(x, TARGETS), want, atol=1e-4)
    assert (want.reshape(3, -1).max(axis=1) > 0.99).all()


@pytest.mark.parametrize("layer", ["2", "5"])
@pytest.mark.parametrize("main", [None, 1])
def test_finercam_equals_the_package(net, x, layer, main):
    """The package picks the comparison classes from the logits (its ``targets=None`` path;
    ``target_idx`` is the main class for every sample), we in the same forward pass."""
    from pytorch_grad_cam.finer_cam import FinerCAM

    cam = FinerCAM(model=net, target_layers=[net[int(layer)]])
    try:
        want = cam(x, target_idx=main)
    finally:
        cam.base_cam.activations_and_grads.release()
    got = ic.FinerCAM(net, layer).explain(x, main)
    np.testing.assert_allclose(got.maps, want, atol=1e-4)
    assert (want.reshape(3, -1).max(axis=1) > 0.99).all()  # no empty map agrees vacuously
    with torch.no_grad():
        logits = net(x).numpy()
    np.testing.assert_array_equal(got.targets, logits.argmax(1) if main is None else [main] * 3)


def test_finercam_alpha_and_explicit_classes_equal_the_package(net, x):
    """The package's own target with explicit classes and alpha, against ContrastTarget."""
    from pytorch_grad_cam.finer_cam import FinerCAM
    from pytorch_grad_cam.utils.model_targets import FinerWeightedTarget

    cam = FinerCAM(model=net, target_layers=[net[5]])
    try:
        want = cam(x, targets=[FinerWeightedTarget(t, [(t + 1) % 5, (t + 3) % 5], 0.6)
                               for t in TARGETS])
    finally:
        cam.base_cam.activations_and_grads.release()
    targets = [ic.ContrastTarget(t, comparisons=[(t + 1) % 5, (t + 3) % 5], alpha=0.6)
               for t in TARGETS]
    np.testing.assert_allclose(ic.FinerCAM(net, "5")(x, targets), want, atol=1e-4)
    assert (want.reshape(3, -1).max(axis=1) > 0.99).all()


@pytest.mark.parametrize("layers", [["2", "5"], ["4", "6"], ["2", "4", "6"]])
def test_refinecam_equals_the_package(net, x, layers):
    from pytorch_grad_cam.refine_cam import RefineCAM

    cam = RefineCAM(net, [net[int(name)] for name in layers])
    want = cam(x, [ClassifierOutputTarget(t) for t in TARGETS])
    for base in cam.base_cam_per_layer:
        base.activations_and_grads.release()
    np.testing.assert_allclose(ic.RefineCAM(net, layers)(x, TARGETS), want, atol=1e-4)
    assert (want.reshape(3, -1).max(axis=1) > 0.99).all()


# -- ShapleyCAM: needs a Hessian-vector product that is not zero --------------------------------
def _silu_net() -> nn.Module:
    """Conv-BN-SiLU blocks and a GELU before pooling: smooth above every layer, so the
    Hessian of a logit at the layers (and ShapleyCAM's ``H A`` term) is not zero."""
    torch.manual_seed(7)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.SiLU(),
        nn.Conv2d(8, 12, 3, padding=1, stride=2), nn.SiLU(),
        nn.Conv2d(12, 16, 3, padding=1), nn.GELU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 5),
    )
    with torch.no_grad():
        model[1].running_mean.uniform_(-0.2, 0.2)
        model[1].running_var.uniform_(0.5, 1.5)
    return model.eval()


def _softmax_targets() -> tuple[list, list]:
    """The package's ``ClassifierOutputSoftmaxTarget`` and ours, for :data:`TARGETS`."""
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

    theirs = [ClassifierOutputSoftmaxTarget(t) for t in TARGETS]
    ours = [ic.OutputTarget(lambda o, k=t: torch.softmax(o, dim=-1)[:, k]) for t in TARGETS]
    return theirs, ours


@pytest.mark.parametrize("layer", ["2", "4"])
def test_shapleycam_equals_the_package_on_a_smooth_network(x, layer):
    model = _silu_net()
    want = _theirs(pgc.ShapleyCAM, model, x, [model[int(layer)]])
    got = ic.ShapleyCAM(model, layer)(x, TARGETS)
    np.testing.assert_allclose(got, want, atol=1e-4)
    # the test can fail: with the Hessian term the maps are not Grad-CAM's
    assert np.abs(ic.GradCAM(model, layer)(x, TARGETS) - want).max() > 1e-2


@pytest.mark.parametrize("target", ["logit", "softmax"])
def test_shapleycam_equals_the_package_on_resnet18(target):
    """torchvision's ResNet-18 (random weights, nothing downloaded). Piecewise linear, so with
    logit targets ``H A = 0`` and ShapleyCAM is Grad-CAM; with softmax targets it is not."""
    models = zoo_env.require("torchvision.models")
    torch.manual_seed(0)
    model = models.resnet18(weights=None, num_classes=5).eval()
    images = torch.from_numpy(np.random.default_rng(6).random((3, 3, 64, 64), dtype=np.float32))
    if target == "logit":
        theirs, ours = [ClassifierOutputTarget(t) for t in TARGETS], TARGETS
    else:
        theirs, ours = _softmax_targets()
    with pgc.ShapleyCAM(model=model, target_layers=[model.layer4]) as cam:
        want = cam(input_tensor=images, targets=theirs)
    got = ic.ShapleyCAM(model, "layer4")(images, ours)
    np.testing.assert_allclose(got, want, atol=1e-4)
    gradcam = ic.GradCAM(model, "layer4")(images, ours)
    if target == "logit":
        np.testing.assert_allclose(got, gradcam, atol=1e-5)
    else:
        assert np.abs(gradcam - want).max() > 1e-2
