"""Every module that moved keeps its old import path for one release, in one way
(:func:`interp_core.backend.moved.moved_module`): a name used from the old path is the new
home's object, with a DeprecationWarning that names the new home and points at the user's
line. Nothing warns on import alone, and the repo itself uses no old path."""

from __future__ import annotations

import importlib
import re
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: old module -> (new home, names used from the old path). Adapters' rows need their framework.
MOVED = {
    "interp_core.backend.registration": ("interp_core.backend.hookspecs",
                                         ["BackendRegistration", "registers", "loads_files"]),
    "interp_core.backend.plugins": ("interp_core.backend.registry", ["TolerantPluginManager"]),
    "interp_core.backend.policy": ("interp_core.backend.layers",
                                   ["first_leaf", "UnknownLayerError", "resolve_layer_paths"]),
    "interp_core.backend.targets": ("interp_core.backend.target_spec",
                                    ["TargetSpec", "resolve_targets", "select_output"]),
    "interp_core.methods.gradient": ("interp_core.methods.grad_cam",
                                     ["GradCAM", "GradCAMPlusPlus", "gradcam_weights"]),
    "interp_core.methods.attribution": ("interp_core.methods.input_gradients",
                                        ["Saliency", "IntegratedGradients", "InputAttribution"]),
    "interp_core.methods.tokens": ("interp_core.backend.grids", ["grid_layout", "as_grid"]),
    "interp_core.methods.layer_choice": ("interp_core.backend.layer_choice",
                                         ["choose_layer", "default_layer"]),
    "interp_torch.logger": ("interp_torch.training", ["CAMLogger", "FeatureMapLogger"]),
    "interp_tensorflow.callbacks": ("interp_tensorflow.training", ["CAMLogger"]),
}
FRAMEWORK_OF = {"interp_torch": "torch", "interp_tensorflow": "tensorflow"}


def _module(name: str):
    framework = FRAMEWORK_OF.get(name.split(".")[0])
    if framework:
        pytest.importorskip(framework)
    return importlib.import_module(name)


@pytest.mark.parametrize("old", sorted(MOVED))
def test_a_name_from_an_old_path_is_the_new_object_with_a_warning(old):
    new, names = MOVED[old]
    module = _module(old)
    home = importlib.import_module(new)
    for name in names:
        with pytest.warns(DeprecationWarning, match=re.escape(f"import {name} from ")) as got:
            value = getattr(module, name)
        assert value is getattr(home, name), name
        assert got[0].filename == __file__  # it points at the line that used the old name
    with pytest.raises(AttributeError, match="no attribute 'not_a_name'"):
        module.not_a_name  # noqa: B018
    with pytest.raises(AttributeError, match="no attribute 'np'"):  # no home's own imports
        module.np  # noqa: B018


def test_importing_an_old_path_alone_does_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        importlib.import_module("interp_core.methods.tokens")
        from interp_core.backend import registration  # noqa: F401


def test_the_repo_itself_uses_no_old_path():
    """Library code, scripts, tutorials and docs use the new homes (tests may use an old path
    on purpose, to test it)."""
    names = "|".join(re.escape(m) for m in MOVED)
    parents = "|".join(re.escape(m.rpartition(".")[0]) for m in MOVED)
    leaves = "|".join(re.escape(m.rpartition(".")[2]) for m in MOVED)
    pattern = re.compile(rf"^\s*(?:from|import)\s+(?:{names})\b"
                         rf"|^\s*from\s+(?:{parents})\s+import\s+[^\n]*\b(?:{leaves})\b",
                         re.MULTILINE)
    offenders = []
    for folder in ("interp_core", "backends", "scripts", "benchmarks", "tutorials", "docs"):
        for path in sorted((ROOT / folder).rglob("*")):
            if path.suffix not in {".py", ".md"}:
                continue
            source = path.read_text(encoding="utf-8")
            offenders += [f"{path.relative_to(ROOT)}:{source[:m.start()].count(chr(10)) + 1}"
                          for m in pattern.finditer(source)]
    assert not offenders, "old module paths in use:\n" + "\n".join(offenders)
