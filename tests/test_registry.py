"""Plugin registry: entry points, tolerance to broken plugins, detection without imports."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import types
import warnings
from importlib import metadata

import numpy as np
import pytest

import interp_core as ic
from interp_core.backend import registry
from interp_core.testing.conformance import BackendConformance
from interp_core.testing.reference import ReferenceModel, reference_weights


def _toy_plugin() -> types.ModuleType:
    """A third-party plugin module, as a package would ship it."""
    mod = types.ModuleType("interp_toy_plugin")

    @ic.hookimpl
    def interp_core_register_backends():
        return [ic.BackendRegistration(
            name="reference",
            factory="interp_core.testing.reference:ReferenceBackend",
            install_hint="pip install interp-toy",
        )]

    @ic.hookimpl
    def interp_core_claim_model(model):
        return "reference" if isinstance(model, ReferenceModel) else None

    mod.interp_core_register_backends = interp_core_register_backends
    mod.interp_core_claim_model = interp_core_claim_model
    return mod


class _FakeEntryPoint:
    def __init__(self, name: str, value: str, load) -> None:
        self.name, self.value, self._load = name, value, load

    def load(self):
        return self._load()


def _broken():
    raise ImportError("interp_broken needs a module that is not there")


@pytest.fixture
def fake_entry_points(monkeypatch):
    """Installed plugins: the real ones plus a toy adapter and a broken one."""
    real = list(metadata.entry_points(group="interp_core.backends"))
    toy = _toy_plugin()
    fakes = [
        _FakeEntryPoint("toy", "interp_toy_plugin", lambda: toy),
        _FakeEntryPoint("broken", "interp_broken.plugin", _broken),
    ]

    def entry_points(group=None, **kw):
        assert group == "interp_core.backends"
        return real + fakes

    monkeypatch.setattr(registry.metadata, "entry_points", entry_points)
    ic.reset_registry()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        ic.backends()
    yield
    ic.reset_registry()


@pytest.mark.usefixtures("fake_entry_points")
class TestToyThirdPartyAdapter(BackendConformance):
    """A third-party adapter, installed through an entry point, passes the same suite."""

    @pytest.fixture
    def backend(self) -> str:
        return "reference"

    @pytest.fixture
    def reference_model(self) -> ReferenceModel:
        return ReferenceModel(reference_weights())

    @pytest.fixture
    def to_input(self):
        return lambda x: x


def test_broken_plugin_warns_by_name_and_others_work(monkeypatch):
    real = list(metadata.entry_points(group="interp_core.backends"))
    monkeypatch.setattr(
        registry.metadata, "entry_points",
        lambda group=None, **kw: [*real, _FakeEntryPoint("broken", "interp_broken.plugin",
                                                        _broken)],
    )
    ic.reset_registry()
    try:
        with pytest.warns(RuntimeWarning, match="'broken'.*interp_broken.plugin.*failed"):
            names = ic.backends()
        assert "torch" in names and "broken" not in names
    finally:
        ic.reset_registry()


def test_plugin_raising_in_a_hook_only_warns():
    class Bad:
        @ic.hookimpl
        def interp_core_claim_model(self, model):
            raise RuntimeError("boom")

    registry.register_backend(Bad())
    try:
        with (pytest.warns(RuntimeWarning, match="boom"),
              pytest.raises(ValueError, match="no installed backend")):
            ic.get_backend(object())
    finally:
        ic.reset_registry()


def test_register_backend_in_process_and_duplicate_names():
    reg = ic.BackendRegistration("mine", factory=lambda: types.SimpleNamespace(
        name="mine", capabilities=frozenset(), capture=None))
    ic.register_backend(reg, claim=lambda m: isinstance(m, dict))
    try:
        assert "mine" in ic.backends()
        assert ic.get_backend({}).name == "mine"
        assert ic.get_backend("mine") is ic.get_backend("MINE")

        class Dup:
            @ic.hookimpl
            def interp_core_register_backends(self):
                return [ic.BackendRegistration("mine", factory="x.y:Z")]

        registry.register_backend(Dup())
        with pytest.warns(RuntimeWarning, match="already taken"):
            ic.backends()
    finally:
        ic.reset_registry()


@pytest.mark.parametrize("name", ["Torch", "my backend", "", "1abc", None])
def test_registration_names_are_validated(name):
    with pytest.raises(ValueError, match="lower-case"):
        ic.BackendRegistration(name, factory="a.b:C")


def test_factory_must_be_a_path():
    with pytest.raises(ValueError, match=r"package\.module:attribute"):
        ic.BackendRegistration("ok", factory="no_colon_here")


def test_unknown_model_lists_installed_backends():
    with pytest.raises(ValueError, match=r"installed backends: \[.*'torch'"):
        ic.get_backend(object())
    with pytest.raises(ValueError, match="not installed"):
        ic.get_backend("nosuchbackend")


def test_install_hint_for_a_framework_without_adapter(monkeypatch):
    monkeypatch.setattr(registry.metadata, "entry_points", lambda group=None, **kw: [])
    ic.reset_registry()
    try:
        fake_torch_model = type("Module", (), {"__module__": "torch.nn.modules.module"})()
        with pytest.raises(ValueError, match=r"looks like a torch model but interp-torch is not "
                                             r"installed: pip install interp-torch"):
            ic.get_backend(fake_torch_model)
        with pytest.raises(ValueError, match="pip install interp-jax"):
            ic.get_backend(ic.Split(lambda x: x, lambda x: x))
        assert ic.backends() == []
    finally:
        ic.reset_registry()


def test_factory_import_error_carries_the_install_hint():
    ic.register_backend(ic.BackendRegistration(
        "ghost", factory="ghost_framework_adapter.backend:Ghost", install_hint="pip install ghost"))
    try:
        with pytest.raises(ImportError, match="pip install ghost"):
            ic.get_backend("ghost")
    finally:
        ic.reset_registry()


def test_import_and_listing_backends_import_no_framework():
    code = textwrap.dedent("""
        import sys
        import numpy as np
        import interp_core as ic
        names = ic.backends()
        ic.methods()
        from interp_core.testing.reference import ReferenceModel
        try:
            ic.get_backend(ReferenceModel())
        except ValueError:
            pass
        ic.overlay(np.zeros((4, 4, 3)), np.ones((4, 4)))
        loaded = [m for m in ("torch", "tensorflow", "keras", "jax", "flax") if m in sys.modules]
        print(names, loaded)
        assert not loaded, loaded
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr + result.stdout
    assert "'torch'" in result.stdout


def test_get_backend_passes_backend_objects_through():
    from interp_core.testing.reference import ReferenceBackend

    b = ReferenceBackend()
    assert ic.get_backend(b) is b
    maps = ic.GradCAM(ReferenceModel(), "features", backend=b)(np.zeros((1, 10, 10, 3)))
    assert maps.shape == (1, 10, 10)
