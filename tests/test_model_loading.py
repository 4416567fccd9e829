"""Loading models safely: ``interp_core.io.models.load_model``, the adapters' file and weights
hooks, ``trust``, and what a model declares it takes (``input_spec``)."""

from __future__ import annotations

import io
import logging
import sys
import textwrap
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest

import interp_core as ic
from interp_core.backend import registry
from interp_core.backend.protocol import InputSpec, input_spec
from interp_core.io import ModelLoadError
from interp_core.io.models import load_model
from tests.conftest import require_framework

torch = require_framework("torch", "torch")
nn = torch.nn

FACTORY = """
import torch
from torch import nn


def build():
    torch.manual_seed({seed})
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 3))


def build_on_meta():
    with torch.device("meta"):
        return build()


def needs_arguments(width):
    return build()
"""


class Payload:
    """Unpickles by evaluating ``code``: what a malicious ``.pt`` file does."""

    def __init__(self, code: str) -> None:
        self.code = code

    def __reduce__(self):
        import builtins

        return (builtins.eval, (self.code,))


def _payload(marker: Path) -> Payload:
    """Writes ``marker`` when unpickled, and gives an ``nn.Linear`` (a loadable model)."""
    return Payload(f"(__import__('pathlib').Path({str(marker)!r}).write_text('ran'), "
                   "__import__('torch').nn.Linear(2, 2))[1]")


@pytest.fixture
def factory(tmp_path) -> str:
    """``module:factory`` for a .py file; its weights differ from :func:`net`'s."""
    path = tmp_path / "nets.py"
    path.write_text(FACTORY.format(seed=1))
    return f"{path}:build"


@pytest.fixture
def net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, 3)).eval()


@pytest.fixture
def x():
    return torch.randn(2, 1, 10, 10, generator=torch.Generator().manual_seed(3))


@pytest.fixture
def clean_registry():
    ic.reset_registry()
    yield
    ic.reset_registry()


def _same(a, b, x):
    with torch.no_grad():
        np.testing.assert_allclose(a.eval()(x).numpy(), b.eval()(x).numpy(), atol=1e-6)


# -- pickles ------------------------------------------------------------------------------
def test_a_malicious_pt_file_runs_nothing_without_trust(tmp_path):
    marker = tmp_path / "marker.txt"
    path = tmp_path / "model.pt"
    torch.save({"model": _payload(marker)}, path)
    with pytest.raises(ModelLoadError, match=r"trust=True") as caught:
        load_model(path)
    assert not marker.exists()
    message = str(caught.value)
    assert "pickle" in message and "run the code" in message and "weights=" in message
    cli = caught.value.cli_message()
    assert "--trust-model" in cli and "--weights" in cli and "trust=True" not in cli
    # The payload does run once trusted: the check above can fail.
    torch.save(_payload(marker), path)
    assert isinstance(load_model(path, trust=True), nn.Linear)
    assert marker.read_text() == "ran"


def test_a_whole_module_needs_trust(tmp_path, net, x):
    path = tmp_path / "net.pth"
    torch.save(net, path)
    with pytest.raises(ModelLoadError, match=r"pickled torch module.*Sequential"):
        load_model(str(path))
    _same(load_model(str(path), trust=True), net, x)


def test_a_state_dict_points_to_weights(tmp_path, net):
    path = tmp_path / "weights.pt"
    torch.save(net.state_dict(), path)
    with pytest.raises(ModelLoadError, match="state dict") as caught:
        load_model(path)
    assert "weights=" in str(caught.value)
    assert f"module:factory --weights {path}" in caught.value.cli_message()


def test_a_checkpoint_dict_and_junk_get_clear_errors(tmp_path, net):
    path = tmp_path / "checkpoint.pt"
    torch.save({"epoch": 3, "state_dict": net.state_dict()}, path)
    with pytest.raises(ModelLoadError, match=r"keys \['epoch', 'state_dict'\]"):
        load_model(path)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a torch file")
    with pytest.raises(ModelLoadError, match="not a torch file"):
        load_model(junk)


def test_torchscript_keeps_its_error(tmp_path, net):
    path = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.script(net), path)
    with pytest.raises(ModelLoadError, match=r"TorchScript.*torch\.save\(model, path\)"):
        load_model(path)
    with pytest.raises(ModelLoadError, match="TorchScript"):
        load_model(path.rename(tmp_path / "scripted.ts"))


# -- weights ------------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_factory_with_weights_gives_the_original_outputs(tmp_path, factory, net, x, suffix):
    path = tmp_path / f"weights{suffix}"
    if suffix == ".safetensors":
        safetensors = pytest.importorskip("safetensors.torch")
        safetensors.save_model(net, str(path))
    else:
        torch.save(net.state_dict(), path)
    fresh = load_model(factory)
    with torch.no_grad():
        assert not np.allclose(fresh(x).numpy(), net(x).numpy())  # the weights matter
    _same(load_model(factory, weights=path), net, x)


def test_tied_weights_saved_once_fill_both_names(tmp_path):
    safetensors = pytest.importorskip("safetensors.torch")

    def tied():
        model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
        model[1].weight = model[0].weight
        return model

    torch.manual_seed(0)
    original = tied()
    path = tmp_path / "tied.safetensors"
    safetensors.save_model(original, str(path))  # stores the shared weight once
    (tmp_path / "tied_nets.py").write_text(textwrap.dedent("""
        from torch import nn

        def build():
            model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
            model[1].weight = model[0].weight
            return model
    """))
    loaded = load_model(f"{tmp_path / 'tied_nets.py'}:build", weights=path)
    _same(loaded, original, torch.randn(3, 4))


def test_weights_that_do_not_fit_name_the_keys(tmp_path, factory):
    path = tmp_path / "other.pt"
    torch.save(nn.Sequential(nn.Conv2d(1, 5, 3), nn.Linear(2, 2)).state_dict(), path)
    with pytest.raises(ModelLoadError, match="do not fit") as caught:
        load_model(factory, weights=path)
    message = str(caught.value)
    assert "'4.weight'" in message and "(5, 1, 3, 3)" in message
    assert "interp layers MODEL" in caught.value.cli_message()
    torch.save({"module." + k: v for k, v in nn.Sequential(
        nn.Conv2d(1, 4, 3)).state_dict().items()}, path)
    with pytest.raises(ModelLoadError, match=r"strip 'module\.'"):
        load_model(factory, weights=path)


def test_weights_files_that_cannot_be_read(tmp_path, factory, net, monkeypatch):
    onnx = tmp_path / "w.onnx"
    onnx.write_bytes(b"\0")
    with pytest.raises(ModelLoadError, match=r"\.safetensors, \.pt, \.pth, \.bin"):
        load_model(factory, weights=onnx)
    with pytest.raises(ModelLoadError, match="does not exist") as caught:
        load_model(factory, weights=tmp_path / "missing.pt")
    assert caught.value.cli_message().startswith("--weights")
    whole = tmp_path / "whole.pt"
    torch.save(net, whole)
    with pytest.raises(ModelLoadError, match=r"pickled Python objects.*not a state dict"):
        load_model(factory, weights=whole)
    st = tmp_path / "w.safetensors"
    st.write_bytes(b"\0")
    monkeypatch.setitem(sys.modules, "safetensors", None)
    monkeypatch.setitem(sys.modules, "safetensors.torch", None)
    with pytest.raises(ModelLoadError, match="pip install safetensors"):
        load_model(factory, weights=st)


def test_weights_into_a_trusted_model_file(tmp_path, net, x):
    model_file = tmp_path / "net.pt"
    torch.manual_seed(5)
    torch.save(nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                             nn.Flatten(), nn.Linear(4, 3)), model_file)
    weights = tmp_path / "w.pt"
    torch.save(net.state_dict(), weights)
    _same(load_model(model_file, trust=True, weights=weights), net, x)


def test_weights_into_a_model_no_backend_handles(tmp_path):
    (tmp_path / "plain.py").write_text("class Model:\n    pass\n")
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"\0")
    with pytest.raises(ModelLoadError, match="no installed backend loads weights") as caught:
        load_model(f"{tmp_path / 'plain.py'}:Model", weights=weights)
    assert "--weights" in caught.value.cli_message()


# -- torch.export -------------------------------------------------------------------------
def test_an_exported_program_loads_without_trust(tmp_path, net, x):
    path = tmp_path / "net.pt2"
    torch.export.save(torch.export.export(net, (x,)), path)
    loaded = load_model(path)
    with torch.no_grad():
        np.testing.assert_allclose(loaded(x).numpy(), net(x).numpy(), atol=1e-6)
    assert ic.get_backend(loaded).input_spec(loaded) == InputSpec(1, 2, "channels_first")


def test_an_exported_program_that_unpickles_needs_trust(tmp_path, net, x, monkeypatch):
    """``torch.export.load`` falls back to ``weights_only=False`` for sample inputs it cannot
    read safely: a crafted archive runs code there, so it is refused without trust."""
    # torch's warning about that fallback has a broken format string, which pytest's log
    # capture turns into an error
    monkeypatch.setattr(logging.getLogger("torch._export.serde.serialize"), "disabled", True)
    clean = tmp_path / "net.pt2"
    torch.export.save(torch.export.export(net, (x,)), clean)
    marker = tmp_path / "marker.txt"
    payload = io.BytesIO()
    torch.save(Payload(f"(__import__('pathlib').Path({str(marker)!r}).write_text('ran'), "
                       f"((__import__('torch').zeros({tuple(x.shape)}),), {{}}))[1]"), payload)
    crafted = tmp_path / "crafted.pt2"
    with zipfile.ZipFile(clean) as src, zipfile.ZipFile(crafted, "w") as out:
        for info in src.infolist():
            data = src.read(info.filename)
            if info.filename.endswith("data/sample_inputs/model.pt"):
                data = payload.getvalue()
            out.writestr(info.filename, data)
    with pytest.raises(ModelLoadError, match=r"sample inputs.*trust=True") as caught:
        load_model(crafted)
    assert "--trust-model" in caught.value.cli_message()
    assert not marker.exists()
    load_model(crafted, trust=True)
    assert marker.read_text() == "ran"  # the risk is real


# -- the meta device ----------------------------------------------------------------------
def test_a_meta_device_model_gets_our_error(tmp_path, x):
    (tmp_path / "meta_nets.py").write_text(FACTORY.format(seed=0))
    model = load_model(f"{tmp_path / 'meta_nets.py'}:build_on_meta")
    assert next(model.parameters()).is_meta
    for run in (lambda: ic.GradCAM(model, "0")(x), lambda: ic.ScoreCAM(model, "0")(x),
                lambda: ic.CAM(model, "0")(x)):
        with pytest.raises(ValueError, match=r"meta device.*to_empty\(device='cpu'\)"):
            run()
    weights = tmp_path / "w.pt"
    torch.manual_seed(0)
    torch.save(load_model(f"{tmp_path / 'meta_nets.py'}:build").state_dict(), weights)
    loaded = load_model(f"{tmp_path / 'meta_nets.py'}:build_on_meta", weights=weights)
    assert not any(p.is_meta for p in loaded.parameters())
    assert ic.GradCAM(loaded, "0")(x).shape == (2, 10, 10)


# -- specs --------------------------------------------------------------------------------
def test_specs_that_name_no_model(tmp_path, factory):
    with pytest.raises(ModelLoadError, match="no such file") as caught:
        load_model(tmp_path / "missing.pt")
    assert caught.value.cli_message().startswith("MODEL ")
    with pytest.raises(ModelLoadError, match="no such file"):
        load_model("nomodel.py:thing")
    with pytest.raises(ModelLoadError, match=r"has no attribute 'buidl'.*did you mean build"):
        load_model(factory.replace(":build", ":buidl"))
    with pytest.raises(ModelLoadError, match="needs arguments"):
        load_model(factory.replace(":build", ":needs_arguments"))
    with pytest.raises(ModelLoadError, match="no module named 'no_such_package_xyz'"):
        load_model("no_such_package_xyz.nets:build")
    with pytest.raises(ModelLoadError, match="is a folder"):
        load_model(tmp_path)


def test_dotted_modules_and_the_cli_reexport(tmp_path, monkeypatch):
    from interp_core.cli import models as cli_models

    assert cli_models.load_model is load_model
    (tmp_path / "dotted_nets.py").write_text(FACTORY.format(seed=0))
    monkeypatch.chdir(tmp_path)
    assert isinstance(cli_models.load_model("dotted_nets:build"), nn.Sequential)
    sys.modules.pop("dotted_nets", None)


# -- third-party plugins ------------------------------------------------------------------
@pytest.mark.usefixtures("clean_registry")
def test_a_load_model_hook_written_before_trust_still_works(tmp_path):
    class OldStyle:  # a third-party plugin from before the hook gained ``trust``
        @ic.hookimpl
        def interp_core_load_model(self, path):
            return {"loaded": path.name} if path.suffix == ".toy" else None

    class NewStyle:
        @ic.hookimpl
        def interp_core_load_model(self, path, trust):
            return {"trusted": trust} if path.suffix == ".toy2" else None

    registry.register_backend(OldStyle())
    registry.register_backend(NewStyle())
    for name in ("net.toy", "net.toy2"):
        (tmp_path / name).write_bytes(b"\0")
    assert load_model(tmp_path / "net.toy") == {"loaded": "net.toy"}
    assert load_model(tmp_path / "net.toy", trust=True) == {"loaded": "net.toy"}
    assert load_model(tmp_path / "net.toy2", trust=True) == {"trusted": True}
    assert registry.load_model_file(tmp_path / "net.toy2") == {"trusted": False}


@pytest.mark.usefixtures("clean_registry")
def test_loads_files_passes_trust_only_to_loaders_that_take_it(tmp_path):
    from interp_core.backend.hookspecs import loads_files, loads_weights

    seen = {}
    module = types.ModuleType("toy_loaders")
    module.with_trust = lambda path, *, trust=False: seen.setdefault("trust", trust) or path

    def weights(model, path):
        model.weights = path.name
        return model

    module.weights = weights
    toy_model = type("ToyModel", (), {"__module__": "toy_framework.models"})
    sys.modules["toy_loaders"] = module
    try:
        plugin = types.SimpleNamespace(
            interp_core_load_model=loads_files((".toy",), "toy_loaders:with_trust"),
            interp_core_load_weights=loads_weights(("toy_framework",), "toy_loaders:weights"),
        )
        registry.register_backend(plugin)
        (tmp_path / "m.toy").write_bytes(b"\0")
        (tmp_path / "w.bin").write_bytes(b"\0")
        registry.load_model_file(tmp_path / "m.toy", trust=True)
        assert seen == {"trust": True}
        assert registry.load_weights_file(toy_model(), tmp_path / "w.bin").weights == "w.bin"
        assert registry.load_weights_file({"a": 1}, tmp_path / "w.bin") is None  # not its model
    finally:
        sys.modules.pop("toy_loaders", None)
    with pytest.raises(ValueError, match=r"package\.module:function"):
        loads_weights(("torch",), "no_colon")


# -- input specs --------------------------------------------------------------------------
class _PositionEmbedded(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.position = nn.Parameter(torch.zeros(1, 8, 1, 1))  # the root's own parameter
        self.patch = nn.Conv2d(3, 8, 4, stride=4)

    def forward(self, x):
        return self.patch(x) + self.position


@pytest.mark.parametrize("model,expected", [
    (lambda: nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU()), (1, 2)),
    (lambda: nn.Sequential(nn.Conv3d(2, 8, 3)), (2, 3)),
    (lambda: nn.Sequential(nn.Conv1d(12, 8, 3)), (12, 1)),
    (lambda: nn.Sequential(nn.ConvTranspose2d(5, 8, 3)), (5, 2)),
    (lambda: nn.Sequential(nn.BatchNorm2d(3), nn.Conv2d(3, 8, 3)), (3, 2)),
    (lambda: _PositionEmbedded(), (3, 2)),
    (lambda: nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 2)), None),
    (lambda: nn.Sequential(nn.Embedding(10, 4), nn.Conv1d(4, 4, 3)), None),
])
def test_torch_input_spec(model, expected):
    backend = ic.get_backend("torch")
    spec = input_spec(backend, model())
    if expected is None:
        assert spec is None
    else:
        assert spec == InputSpec(*expected, "channels_first")


def test_the_model_error_names_the_first_convolution(x):
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.LazyLinear(2))
    with pytest.raises(ValueError, match=r"first convolution '0' takes 3 input channels"):
        ic.GradCAM(model, "0")(x)


def test_input_spec_values_are_checked():
    with pytest.raises(ValueError, match="layout"):
        InputSpec(1, 2, "nchw")
    with pytest.raises(ValueError, match="channels"):
        InputSpec(0, 2, "channels_last")
    assert input_spec(types.SimpleNamespace(), object()) is None  # optional method


# -- Keras --------------------------------------------------------------------------------
@pytest.fixture
def keras():
    require_framework("tensorflow", "tensorflow")
    require_framework("tensorflow", "interp_tensorflow")
    return require_framework("tensorflow", "keras")


def _grayscale(keras):
    return keras.Sequential([keras.Input((16, 16, 1)), keras.layers.Conv2D(4, 3, name="conv"),
                             keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2)])


def test_a_grayscale_keras_model_saved_as_hdf5_loads(tmp_path, keras):
    model = _grayscale(keras)
    path = tmp_path / "gray.hdf5"
    model.save(path)
    loaded = load_model(path)
    images = np.random.default_rng(0).random((2, 16, 16, 1), np.float32)
    np.testing.assert_allclose(loaded(images), model(images), atol=1e-6)
    assert ic.get_backend(loaded).input_spec(loaded) == InputSpec(1, 2, "channels_last")


def test_a_keras_lambda_layer_needs_trust(tmp_path, keras):
    model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Lambda(lambda t: t * 2.0),
                              keras.layers.Conv2D(2, 3)])
    path = tmp_path / "lambda.keras"
    model.save(path)
    with pytest.raises(ModelLoadError, match=r"Lambda.*trust=True") as caught:
        load_model(path)
    assert "--trust-model" in caught.value.cli_message()
    images = np.ones((1, 8, 8, 3), np.float32)
    np.testing.assert_allclose(load_model(path, trust=True)(images), model(images), atol=1e-6)


def test_keras_factory_with_weights(tmp_path, keras):
    model = _grayscale(keras)
    weights = tmp_path / "gray.weights.h5"
    model.save_weights(weights)
    (tmp_path / "keras_nets.py").write_text(textwrap.dedent("""
        import keras

        def build():
            return keras.Sequential([keras.Input((16, 16, 1)), keras.layers.Conv2D(4, 3),
                                     keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2)])

        def other():
            return keras.Sequential([keras.Input((16, 16, 1)), keras.layers.Conv2D(5, 3)])
    """))
    loaded = load_model(f"{tmp_path / 'keras_nets.py'}:build", weights=weights)
    images = np.random.default_rng(1).random((2, 16, 16, 1), np.float32)
    np.testing.assert_allclose(loaded(images), model(images), atol=1e-6)
    with pytest.raises(ModelLoadError, match="do not fit"):
        load_model(f"{tmp_path / 'keras_nets.py'}:other", weights=weights)
    with pytest.raises(ModelLoadError, match="weights only") as caught:
        load_model(weights)
    assert "--weights" in caught.value.cli_message()


def test_keras_input_spec(keras):
    backend = ic.get_backend("tensorflow")
    inputs = keras.Input((64, 64, 1))
    functional = keras.Model(inputs, keras.layers.Conv2D(2, 3)(inputs))
    assert backend.input_spec(functional) == InputSpec(1, 2, "channels_last")
    volume = keras.Sequential([keras.Input((8, 8, 8, 2)), keras.layers.Conv3D(2, 3)])
    assert backend.input_spec(volume) == InputSpec(2, 3, "channels_last")
    unbuilt = keras.Sequential([keras.layers.Conv1D(2, 3)])
    assert backend.input_spec(unbuilt) == InputSpec(None, 1, "channels_last")
    dense = keras.Sequential([keras.Input((10,)), keras.layers.Dense(2)])
    assert backend.input_spec(dense) is None


# -- JAX ----------------------------------------------------------------------------------
def test_jax_input_spec():
    require_framework("jax", "jax")
    require_framework("jax", "interp_jax")
    nnx = require_framework("jax", "flax.nnx")

    class Net(nnx.Module):
        def __init__(self, rngs):
            self.conv = nnx.Conv(4, 8, kernel_size=(3, 3), rngs=rngs)
            self.fc = nnx.Linear(8, 2, rngs=rngs)

    class Mlp(nnx.Module):
        def __init__(self, rngs):
            self.fc = nnx.Linear(8, 2, rngs=rngs)
            self.conv = nnx.Conv(2, 2, kernel_size=(3,), rngs=rngs)

    backend = ic.get_backend("jax")
    assert backend.input_spec(Net(nnx.Rngs(0))) == InputSpec(4, 2, "channels_last")
    assert backend.input_spec(Mlp(nnx.Rngs(0))) is None
    assert backend.input_spec(ic.Split(abs, abs)) is None
