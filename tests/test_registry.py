"""Plugin registry: entry points, tolerance to broken plugins, detection without imports."""

from __future__ import annotations

import dataclasses
import importlib
import subprocess
import sys
import textwrap
import tomllib
import types
import warnings
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest

import interp_core as ic
from interp_core.backend import registry
from interp_core.testing.conformance import BackendConformance
from interp_core.testing.reference import ReferenceModel


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
    def reference_model(self):
        return ReferenceModel  # (weights, variant) -> the model, here in NumPy

    @pytest.fixture
    def to_input(self):
        return lambda x: x

    @pytest.fixture
    def model_state(self):
        return lambda model: {"weights": dataclasses.asdict(model.weights),
                              "variant": model.variant}


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


@pytest.fixture
def clean_registry():
    ic.reset_registry()
    yield
    ic.reset_registry()


def _fake_backend(name: str):
    return lambda: types.SimpleNamespace(name=name, capabilities=frozenset(), capture=None)


@pytest.mark.usefixtures("clean_registry")
def test_a_plugin_with_only_a_registration_claims_its_framework_models(monkeypatch):
    class Minimal:  # the whole of a minimal third-party plugin
        @ic.hookimpl
        def interp_core_register_backends(self):
            return [ic.BackendRegistration("fake", factory=_fake_backend("fake"),
                                           frameworks=("fakefw",))]

    registry.register_backend(Minimal())
    net = type("Net", (), {"__module__": "fakefw.nn"})
    user_net = type("UserNet", (net,), {"__module__": "user_code"})
    # einops-style: a framework that was never imported cannot have made the model
    assert registry.claimed_by(net()) is None
    monkeypatch.setitem(sys.modules, "fakefw", types.ModuleType("fakefw"))
    assert registry.claimed_by(net()) == "fake"
    assert registry.claimed_by(user_net()) == "fake"  # a subclass in user code
    assert ic.get_backend(user_net()).name == "fake"
    assert registry.claimed_by(object()) is None


@pytest.mark.usefixtures("clean_registry")
def test_claims_follow_pluggy_order_firstresult_and_wrappers():
    calls: list[str] = []

    def claimer(label: str, answer: str | None, **opts):
        class Plugin:
            @ic.hookimpl(**opts)
            def interp_core_claim_model(self, model):
                calls.append(label)
                return answer if not isinstance(model, int) else None
        return Plugin()

    registry.register_backend(claimer("first-tryfirst", None, tryfirst=True))
    registry.register_backend(claimer("early", "early"))
    registry.register_backend(claimer("late", "late"))
    registry.register_backend(claimer("last-trylast", "never", trylast=True))
    assert registry.claimed_by("a model") == "late"
    assert calls == ["first-tryfirst", "late"]  # firstresult: "early" is never asked
    calls.clear()
    assert registry.claimed_by(3) is None  # everyone says no, the default claim too
    assert calls == ["first-tryfirst", "late", "early", "last-trylast"]

    class Upper:
        @ic.hookimpl(wrapper=True)
        def interp_core_claim_model(self, model):
            answer = yield
            return answer.upper() if answer else answer

    registry.register_backend(Upper())
    assert registry.claimed_by("a model") == "LATE"


@pytest.mark.usefixtures("clean_registry")
def test_broken_hooks_and_wrappers_only_warn():
    class RaisesOnRegister:
        @ic.hookimpl
        def interp_core_register_backends(self):
            raise RuntimeError("kaputt")

    class ReturnsJunk:
        @ic.hookimpl
        def interp_core_register_backends(self):
            return ["not a registration", ic.BackendRegistration("junk-ok", factory="a.b:C")]

    class BrokenWrapper:
        @ic.hookimpl(wrapper=True)
        def interp_core_claim_model(self, model):
            yield
            raise RuntimeError("wrapper broke")

    for plugin in (RaisesOnRegister(), ReturnsJunk(), BrokenWrapper()):
        registry.register_backend(plugin)
    with pytest.warns(RuntimeWarning) as caught:
        names = ic.backends()
        assert registry.claimed_by(object()) is None
    messages = " | ".join(str(w.message) for w in caught)
    assert "'RaisesOnRegister@" in messages and "kaputt" in messages
    assert "'ReturnsJunk@" in messages and "'not a registration'" in messages
    assert "hook wrapper raised" in messages and "wrapper broke" in messages
    assert "torch" in names and "junk-ok" in names


def test_first_party_plugins_need_no_claim_hook_except_jax_for_split():
    torch_plugin = pytest.importorskip("interp_torch.plugin")
    tf_plugin = pytest.importorskip("interp_tensorflow.plugin")
    jax_plugin = pytest.importorskip("interp_jax.plugin")
    assert not hasattr(torch_plugin, "interp_core_claim_model")
    assert not hasattr(tf_plugin, "interp_core_claim_model")
    assert jax_plugin.interp_core_claim_model(model=ic.Split(abs, abs)) == "jax"
    assert jax_plugin.interp_core_claim_model(model=object()) is None
    regs = registry.registrations()
    assert regs["torch"].frameworks == ("torch",)
    assert {"keras", "tensorflow"} <= set(regs["tensorflow"].frameworks)
    assert {"jax", "flax"} <= set(regs["jax"].frameworks)


@pytest.mark.usefixtures("clean_registry")
def test_model_files_go_to_the_plugin_that_claims_them(tmp_path):
    class ToyFiles:
        @ic.hookimpl
        def interp_core_load_model(self, path):
            return {"loaded": path.name} if path.suffix == ".toy" else None

    registry.register_backend(ToyFiles())
    assert registry.load_model_file(tmp_path / "net.toy") == {"loaded": "net.toy"}
    assert registry.load_model_file(tmp_path / "net.onnx") is None


@pytest.mark.usefixtures("clean_registry")
def test_plugin_hooks_built_from_values(tmp_path):
    from interp_core.backend.hookspecs import claims, loads_files, registers

    reg = ic.BackendRegistration("valued", factory="interp_core.testing.reference:ReferenceBackend")
    plugin = types.SimpleNamespace(
        interp_core_register_backends=registers(reg),
        interp_core_claim_model=claims("valued", lambda model: isinstance(model, frozenset)),
        interp_core_load_model=loads_files((".npy",), "numpy:load"),
    )
    with open(tmp_path / "w.NPY", "wb") as f:  # the suffix matches in any case
        np.save(f, np.arange(3))
    registry.register_backend(plugin)
    assert registry.registrations()["valued"] is reg
    assert registry.claimed_by(frozenset()) == "valued"
    assert registry.claimed_by(()) != "valued"
    np.testing.assert_array_equal(registry.load_model_file(tmp_path / "w.NPY"), np.arange(3))
    assert registry.load_model_file(tmp_path / "w.onnx") is None
    with pytest.raises(ValueError, match=r"package\.module:function"):
        loads_files((".npy",), "numpy.load")


@pytest.mark.parametrize("frameworks", ["torch", ("torch.nn",), ("",)])
def test_frameworks_must_be_top_level_module_names(frameworks):
    with pytest.raises(ValueError, match="top-level module names"):
        ic.BackendRegistration("ok", factory="a.b:C", frameworks=frameworks)


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


# -- framework facts: the plugins are the source of truth ------------------------------------
FIRST_PARTY = ("torch", "tensorflow", "jax")
ROOT = Path(__file__).resolve().parent.parent


def test_install_hints_are_what_the_first_party_plugins_declare():
    """``KNOWN_FRAMEWORKS`` is a copy (an adapter that is not installed cannot be asked): it
    must say what each first-party ``plugin.py`` declares in its ``REGISTRATION``."""
    assert set(registry.KNOWN_FRAMEWORKS) == set(FIRST_PARTY)
    checked = 0
    for name in FIRST_PARTY:
        plugin = importlib.import_module(f"interp_{name}.plugin")  # light: no framework
        reg = plugin.REGISTRATION
        assert plugin.interp_core_register_backends() == [reg]
        known = registry.KNOWN_FRAMEWORKS[name]
        declared = registry.KnownAdapter(reg.distribution, reg.frameworks,
                                         model_types=known.model_types,
                                         model_files=reg.model_files)
        assert known == declared, f"KNOWN_FRAMEWORKS[{name!r}] differs from interp_{name}.plugin"
        # the model types a hint names are those the plugin's own claim takes
        for type_name in known.model_types:
            module_name, _, qualname = type_name.rpartition(".")
            cls = getattr(importlib.import_module(module_name), qualname)
            assert plugin.interp_core_claim_model(model=cls.__new__(cls)) == name
        # the distribution is the one that ships the plugin, under the entry point group
        project = tomllib.loads((ROOT / "backends" / name / "pyproject.toml").read_text())
        assert reg.distribution == project["project"]["name"]
        entry_points = project["project"]["entry-points"]["interp_core.backends"]
        assert entry_points == {name: f"interp_{name}.plugin"}
        checked += 1
    assert checked == len(FIRST_PARTY)


def test_install_hint_for_a_model_file_without_adapter(monkeypatch, tmp_path):
    from interp_core.io import ModelLoadError
    from interp_core.io.models import load_model

    monkeypatch.setattr(registry.metadata, "entry_points", lambda group=None, **kw: [])
    ic.reset_registry()
    try:
        for file, distribution in (("net.pt2", "interp-torch"), ("net.keras", "interp-tensorflow")):
            (tmp_path / file).write_bytes(b"\0")
            with pytest.raises(ModelLoadError, match=f"pip install {distribution}"):
                load_model(tmp_path / file)
    finally:
        ic.reset_registry()


@pytest.mark.parametrize("field, value", [
    ("model_files", ".pt"), ("model_files", ("pt",)), ("model_files", (".PT",)),
    ("model_files", (".weights.h5",)), ("distribution", None),
])
def test_declared_facts_are_validated(field, value):
    with pytest.raises(ValueError, match=field):
        ic.BackendRegistration("ok", factory="a.b:C", **{field: value})


# -- the old module paths ----------------------------------------------------------------------
OLD_PLUGIN = '''
from interp_core.backend.registration import BackendRegistration, registers, loads_files
from interp_core.backend.plugins import TolerantPluginManager

interp_core_register_backends = registers(BackendRegistration(
    "oldstyle", factory="interp_core.testing.reference:ReferenceBackend"))
interp_core_load_model = loads_files((".old",), "numpy:load")
'''


@pytest.mark.usefixtures("clean_registry")
def test_a_plugin_written_against_the_old_module_paths_still_works(monkeypatch, tmp_path):
    (tmp_path / "interp_oldstyle_plugin.py").write_text(OLD_PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.warns(DeprecationWarning) as caught:
        plugin = importlib.import_module("interp_oldstyle_plugin")
    messages = [str(w.message) for w in caught]
    assert all(w.filename.endswith("interp_oldstyle_plugin.py") for w in caught)  # the importer
    assert ("interp_core.backend.registration is deprecated and goes in the next release: "
            "import BackendRegistration from interp_core.backend.hookspecs") in messages
    assert ("interp_core.backend.plugins is deprecated and goes in the next release: import "
            "TolerantPluginManager from interp_core.backend.registry") in messages
    assert plugin.TolerantPluginManager is registry.TolerantPluginManager
    registry.register_backend(plugin)
    assert "oldstyle" in ic.backends()
    assert ic.get_backend("oldstyle").name == "reference"
    with open(tmp_path / "w.old", "wb") as f:
        np.save(f, np.arange(2))
    np.testing.assert_array_equal(registry.load_model_file(tmp_path / "w.old"), np.arange(2))
    from interp_core.backend import registration

    with pytest.warns(DeprecationWarning, match="import KNOWN_FRAMEWORKS from "
                                                "interp_core.backend.registry"):
        assert registration.KNOWN_FRAMEWORKS is registry.KNOWN_FRAMEWORKS
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        registration.nothing_here  # noqa: B018


def test_the_package_and_first_party_plugins_raise_no_deprecation_warning():
    code = textwrap.dedent(f"""
        import importlib, warnings
        warnings.filterwarnings("error", category=DeprecationWarning, module="interp_")
        import interp_core, interp_core.backend
        for name in {FIRST_PARTY!r}:
            importlib.import_module(f"interp_{{name}}.plugin")
        print(interp_core.backends())
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr + result.stdout
