"""The layers of docs/architecture.md, checked statically over every module.

The core imports no framework: only ``interp_core/testing/`` (which third parties run inside
their framework's tests) may import torch, tensorflow, keras, jax or flax. Everything else
reaches a framework through an adapter's hooks (model files, demo models) or not at all
(TensorBoard event files); a subprocess checks what actually loads. Each core package imports
only the packages of its row (``ALLOWED_IMPORTS``), and each adapter module only
``interp_core.backend`` and the exceptions of ``ADAPTER_ALLOWED``, never another adapter.
"""

from __future__ import annotations

import ast
import importlib.util
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType

import pytest

CORE = Path(__file__).resolve().parent.parent / "interp_core"
FRAMEWORKS = frozenset({"torch", "tensorflow", "keras", "jax", "flax"})
ALLOWED = CORE / "testing"


def _load_script(name: str) -> ModuleType:
    """A module of ``scripts/`` (not a package), loaded from its file."""
    spec = importlib.util.spec_from_file_location(name, CORE.parent / "scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


#: The import graph of the code, as scripts/draw_layers.py reads it for the picture: the same
#: parser serves the picture and the rules.
DRAW = _load_script("draw_layers")
imported_modules = DRAW.imported_modules


def framework_imports(source: str) -> list[tuple[int, str]]:
    """``(line, module)`` for each import of a framework in ``source``: ``import x``,
    ``from x.y import z``, ``importlib.import_module("x")``, anywhere (also inside functions)."""
    return [(line, name) for line, name in imported_modules(source)
            if name.split(".")[0] in FRAMEWORKS]


def core_modules() -> list[Path]:
    return sorted(p for p in CORE.rglob("*.py") if ALLOWED not in p.parents)


def test_the_check_finds_every_kind_of_import():
    source = textwrap.dedent("""
        import numpy, torch.nn as nn
        from keras import layers
        def f():
            import jax.numpy as jnp
            from flax import nnx
            return importlib.import_module("tensorflow")
        from interp_core import torch_like      # a name, not a framework
        from . import torch                     # relative: the package's own module
    """)
    assert [m for _, m in framework_imports(source)] == [
        "torch.nn", "keras", "jax.numpy", "flax", "tensorflow"]


def test_no_core_module_imports_a_framework():
    modules = core_modules()
    assert len(modules) > 30 and CORE / "cli" / "command.py" in modules
    offenders = [
        f"{path.relative_to(CORE.parent)}:{line}: {name}"
        for path in modules
        for line, name in framework_imports(path.read_text(encoding="utf-8"))
    ]
    assert not offenders, "framework imports in the core:\n" + "\n".join(offenders)


def _run_isolated(*parts: str) -> str:
    code = "\n".join(textwrap.dedent(part) for part in parts)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr + result.stdout
    return result.stdout


#: Fails the script if a framework was imported so far.
NO_FRAMEWORK_LOADED = """
    loaded = sorted(m for m in ("torch", "tensorflow", "keras", "jax", "flax") if m in sys.modules)
    assert not loaded, loaded
"""


def test_cli_listings_and_model_file_dispatch_import_no_framework():
    out = _run_isolated("""
        import sys
        from interp_core.backend.registry import load_model_file
        from interp_core.cli import main
        assert main(["backends"]) == 0
        assert main(["methods"]) == 0
        assert load_model_file("model.onnx") is None   # no adapter claims it; none imported
    """, NO_FRAMEWORK_LOADED)
    assert "torch" in out.split() and "gradcam" in out.split()


def test_tensorboard_sink_writes_images_without_a_framework(tmp_path):
    pytest.importorskip("tensorboard")
    out = _run_isolated(f"""
        import sys
        import numpy as np
        from interp_core.logging.sinks import TensorBoardSink
        sink = TensorBoardSink({str(tmp_path)!r})
        image = np.arange(5 * 7 * 3, dtype=np.uint8).reshape(5, 7, 3)
        sink.log_images("gradcam/layer4", {{"sample_000": image}}, step=3)
        sink.close()
    """, NO_FRAMEWORK_LOADED, """
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
        acc = EventAccumulator(sink.logdir, size_guidance={"images": 0})
        acc.Reload()
        event, = acc.Images("gradcam/layer4/sample_000")
        import io
        from PIL import Image
        decoded = np.asarray(Image.open(io.BytesIO(event.encoded_image_string)))
        print(event.step, decoded.shape, np.array_equal(decoded, image))
    """)
    assert out.split()[-1] == "True" and out.startswith("3 (5, 7, 3)")


# -- the package rules of docs/architecture.md ---------------------------------------------------
#: What each package of the core may import of the others ("*": any). Entry scripts
#: (``__main__.py``) are programs, imported by nothing, and are not held to their package's row.
ALLOWED_IMPORTS: dict[str, set[str]] = {
    "targets": set(),
    "split": set(),
    "backend": {"targets"},
    "detection": {"backend"},
    "imaging": {"backend"},
    "methods": {"backend", "imaging", "targets"},
    "viz": {"methods"},
    "features": {"backend", "imaging", "methods", "viz", "targets"},
    "metrics": {"backend", "imaging", "methods", "targets"},
    "datasets": {"backend"},
    "io": {"backend", "methods"},
    "api": {"methods", "backend", "targets"},
    "logging": {"backend", "features", "methods", "viz", "targets"},
    "audit": {"backend", "datasets", "io", "logging", "methods", "metrics", "viz", "targets"},
    "cli": {"api", "audit", "backend", "datasets", "io", "methods", "viz", "features",
            "metrics", "targets", "view"},
    "view": {"audit", "io", "methods", "viz"},
    "testing": {"interp_core", "backend", "datasets", "methods", "targets"},
    "interp_core": {"*"},
}


def _package_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "interp_core"


def core_imports(path: Path) -> list[tuple[int, str]]:
    """``(line, package)`` for each import of another core package in ``path``."""
    return [(line, _package_of(name))
            for line, name in imported_modules(path.read_text(encoding="utf-8"))
            if name == "interp_core" or name.startswith("interp_core.")]


def test_every_core_package_imports_only_what_the_architecture_allows():
    offenders = []
    packages = set()
    for path in sorted(CORE.rglob("*.py")):
        rel = path.relative_to(CORE)
        own = rel.parts[0].removesuffix(".py") if len(rel.parts) > 1 or rel.name != (
            "__init__.py") else "interp_core"
        packages.add(own)
        if path.name == "__main__.py":
            continue
        allowed = ALLOWED_IMPORTS.get(own)
        assert allowed is not None, f"{rel}: package {own!r} has no row in ALLOWED_IMPORTS"
        for line, other in core_imports(path):
            if other != own and "*" not in allowed and other not in allowed:
                offenders.append(f"interp_core/{rel}:{line}: {own} imports {other}")
    assert not offenders, "imports the architecture forbids:\n" + "\n".join(offenders)
    assert {"io", "cli", "audit", "backend"} <= packages


def test_the_package_rule_check_catches_a_back_edge(tmp_path):
    bad = tmp_path / "m.py"
    bad.write_text("def f():\n    from interp_core.cli.errors import CLIError\n")
    assert core_imports(bad) == [(2, "cli")]
    assert "cli" not in ALLOWED_IMPORTS["audit"] and "audit" not in ALLOWED_IMPORTS["io"]


# -- the adapter rules of docs/architecture.md ---------------------------------------------------
BACKENDS = CORE.parent / "backends"
#: The first-party adapter packages, by framework folder.
ADAPTERS = {"torch": "interp_torch", "tensorflow": "interp_tensorflow", "jax": "interp_jax"}

#: What a module of an adapter may import of the core: ``(adapter, file, module, why)``, where
#: ``adapter`` and ``file`` may be ``"*"`` and a ``module`` ending in ``".*"`` also allows its
#: submodules. Everything else of ``interp_core`` (``methods``, ``logging`` internals, ``io``,
#: ...) is off limits: an adapter reports what its framework sees, and the core decides.
ADAPTER_ALLOWED: list[tuple[str, str, str, str]] = [
    ("*", "*", "interp_core.backend.*",
     "the adapter layer: the protocol, hooks, targets, scoring, shared behaviour, layer choice"),
    ("*", "training.py", "interp_core",
     "the training hooks sit on the public API: top-level names (ic.CAMMethod)"),
    ("*", "training.py", "interp_core.logging",
     "and the public names of interp_core.logging (its __init__), never its modules"),
    ("*", "testing.py", "interp_core.testing.*",
     "the conformance suite's reference models, built from its NumPy weights"),
    ("*", "demo_vit.py", "interp_core.datasets.demo_vit",
     "the demo ViT's sizes (ViTConfig) and layer-norm epsilon, read with its weights"),
    ("*", "loading.py", "interp_core.io.errors",
     "the model-file hooks raise the door's ModelLoadError, which carries the command line's "
     "phrasing (interp_core.io.errors imports nothing of the core)"),
    ("interp_jax", "*", "interp_core.split",
     "ic.Split is a model type the JAX adapter explains and its plugin claims (interp_core.split "
     "imports nothing of the core)"),
]


def _allows(pattern: str, module: str) -> bool:
    if pattern.endswith(".*"):
        base = pattern[:-2]
        return module == base or module.startswith(base + ".")
    return module == pattern


def adapter_offences(package: str, path: Path) -> list[str]:
    """What the module ``path`` of adapter ``package`` imports against the rules: core
    modules outside :data:`ADAPTER_ALLOWED`, and other adapters."""
    found = []
    for line, module in imported_modules(path.read_text(encoding="utf-8")):
        top = module.split(".")[0]
        if top == "interp_core":
            if not any(a in ("*", package) and f in ("*", path.name) and _allows(m, module)
                       for a, f, m, _ in ADAPTER_ALLOWED):
                found.append(f"{path.name}:{line}: imports {module}")
        elif top.startswith("interp_") and top != package:
            found.append(f"{path.name}:{line}: imports another adapter, {module}")
    return found


def adapter_modules() -> list[tuple[str, Path]]:
    return [(package, path)
            for folder, package in ADAPTERS.items()
            for path in sorted((BACKENDS / folder / package).rglob("*.py"))]


def test_adapters_import_only_the_adapter_layer_of_the_core():
    modules = adapter_modules()
    assert {p.name for _, p in modules} >= {"plugin.py", "backend.py", "layers.py", "ops.py",
                                            "training.py", "testing.py"}
    assert {package for package, _ in modules} == set(ADAPTERS.values())
    offenders = [f"backends/{path.relative_to(BACKENDS).parent}/{offence}"
                 for package, path in modules for offence in adapter_offences(package, path)]
    assert not offenders, "adapter imports the architecture forbids:\n" + "\n".join(offenders)
    assert ALLOWED_IMPORTS["backend"] == {"targets"}  # what adapters import stays low


#: Former module paths kept for one release as re-exports of ``training.py`` (documented API);
#: they forward to their adapter's ``training`` module and import nothing else.
DEPRECATED_ADAPTER_MODULES = {"logger.py", "callbacks.py"}


def test_deprecated_adapter_modules_only_re_export_the_training_module():
    for package, path in adapter_modules():
        if path.name in DEPRECATED_ADAPTER_MODULES:
            modules = {m for _, m in imported_modules(path.read_text(encoding="utf-8"))}
            assert modules == {"interp_core.backend.moved"}, (path, modules)
            assert f'"{package}.training"' in path.read_text(encoding="utf-8"), path


def test_the_adapter_rule_check_catches_forbidden_imports(tmp_path):
    bad = tmp_path / "backend.py"
    bad.write_text("from interp_core.methods.layer_choice import choose_layer\n"
                   "from interp_core.backend.grids import grid_layout\n"
                   "import interp_core\n"
                   "def f():\n    from interp_torch.layers import resolve\n")
    assert adapter_offences("interp_jax", bad) == [
        "backend.py:1: imports interp_core.methods.layer_choice",
        "backend.py:3: imports interp_core",
        "backend.py:5: imports another adapter, interp_torch.layers"]
    hooks = tmp_path / "training.py"
    hooks.write_text("import interp_core\nfrom interp_core.logging import CAMLog\n"
                     "from interp_core.logging.training import CAMLog\n"
                     "from interp_core.methods.base import CAMMethod\n")
    assert adapter_offences("interp_torch", hooks) == [
        "training.py:3: imports interp_core.logging.training",
        "training.py:4: imports interp_core.methods.base"]
    split = tmp_path / "layers.py"
    split.write_text("from interp_core.split import Split\n")
    assert adapter_offences("interp_jax", split) == []
    assert adapter_offences("interp_torch", split) == ["layers.py:1: imports interp_core.split"]


def test_the_layer_picture_is_drawn_from_the_code_as_it_is():
    """docs/images/layers.svg is what scripts/draw_layers.py draws from today's imports (so
    the picture in docs/architecture.md cannot go stale), and the package graph has no
    cycle."""
    levels = DRAW.rows(DRAW.import_graph())  # raises on an import cycle
    assert levels[0] == ["split", "targets"] and "backend" in levels[1]
    assert DRAW.main(["--check"]) == 0, "run: python scripts/draw_layers.py"


# -- one room per role: the adapter skeleton of docs/architecture.md ----------------------------
#: The roles every adapter has, one file name each.
ADAPTER_ROLES = {"__init__.py", "plugin.py", "backend.py", "ops.py", "layers.py", "demo.py",
                 "demo_vit.py", "attention.py", "testing.py"}
#: Roles an adapter has where its framework does: guided backpropagation (where its backend
#: takes ``guided=``), training hooks, model files.
OPTIONAL_ADAPTER_ROLES = {"guided.py", "training.py", "loading.py"}
#: The framework specifics docs/architecture.md names, by adapter package.
FRAMEWORK_SPECIFICS = {
    "interp_torch": {"folding.py"},
    "interp_tensorflow": {"compiled.py", "hvp.py"},
    "interp_jax": {"structure.py", "nnx_model.py", "split_model.py"},
}


def adapter_files(package: str) -> set[str]:
    folder = next(f for f, p in ADAPTERS.items() if p == package)
    return {p.name for p in (BACKENDS / folder / package).glob("*.py")}


def supports_guided(package: str) -> bool:
    """Whether the adapter's backend takes ``guided=`` (guided backpropagation)."""
    folder = next(f for f, p in ADAPTERS.items() if p == package)
    tree = ast.parse((BACKENDS / folder / package / "backend.py").read_text(encoding="utf-8"))
    return any(arg.arg == "guided" for node in ast.walk(tree)
               if isinstance(node, ast.FunctionDef)
               for arg in [*node.args.args, *node.args.kwonlyargs])


@pytest.mark.parametrize("package", sorted(ADAPTERS.values()))
def test_every_adapter_has_one_file_per_role(package):
    files = adapter_files(package)
    assert files >= ADAPTER_ROLES, f"{package} lacks {sorted(ADAPTER_ROLES - files)}"
    assert supports_guided(package) == ("guided.py" in files), (
        f"{package}: guided backpropagation lives in guided.py, and only where the backend "
        "takes guided=")
    known = (ADAPTER_ROLES | OPTIONAL_ADAPTER_ROLES | FRAMEWORK_SPECIFICS[package]
             | DEPRECATED_ADAPTER_MODULES)
    assert files <= known, (
        f"{package} has modules that are no role of docs/architecture.md's adapter skeleton: "
        f"{sorted(files - known)}; give the role the file name it has in the other adapters, "
        "or list the framework specific in the skeleton and in FRAMEWORK_SPECIFICS")


def test_the_architecture_doc_names_every_adapter_file():
    doc = (CORE.parent / "docs" / "architecture.md").read_text(encoding="utf-8")
    named = set(re.findall(r"\b(\w+\.py)\b", doc))
    documented = (ADAPTER_ROLES | OPTIONAL_ADAPTER_ROLES
                  | set().union(*FRAMEWORK_SPECIFICS.values())) - {"__init__.py"}
    assert documented <= named, sorted(documented - named)


def test_guided_backpropagation_lives_in_guided_py_only():
    """No adapter module but ``guided.py`` defines guided-ReLU machinery."""
    offenders = []
    for package, path in adapter_modules():
        if path.name == "guided.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        offenders += [f"{package}/{path.name}:{node.lineno}: {node.name}"
                      for node in ast.walk(tree)
                      if isinstance(node, ast.FunctionDef | ast.ClassDef)
                      and "guided" in node.name.lower() and "relu" in node.name.lower()]
    assert not offenders, offenders
