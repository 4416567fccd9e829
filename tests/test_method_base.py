"""The methods layer: one ``Method`` base, declarations read by the registry, exports, old paths."""

from __future__ import annotations

import inspect
import subprocess
import sys
import tomllib
import warnings
from pathlib import Path

import numpy as np
import pytest

import interp_core as ic
from interp_core.backend.protocol import (
    ACTIVATION_PATCH,
    ALL_CAPABILITIES,
    ATTENTION,
    BIAS_GRADIENTS,
    GRADIENTS,
    GUIDED_BACKPROP,
    HVP,
    LINEAR_WEIGHTS,
    SCORE_INPUT_GRADIENTS,
)
from interp_core.methods import (
    METHODS,
    AttentionMethod,
    CAMMethod,
    InputGradientMethod,
    Method,
    method_table,
    required_capabilities,
)
from interp_core.methods.catalog import NEEDS
from interp_core.methods.method import GRADIENT_CAPABILITIES
from interp_core.testing import reference as ref

CLASSES = sorted(METHODS.values(), key=lambda cls: cls.name)
IDS = [cls.name for cls in CLASSES]

#: What each method needs beyond "gradients", as the issue states it.
EXPECTED_CAPABILITIES = {
    "cam": (LINEAR_WEIGHTS,),
    "ablationcam": (ACTIVATION_PATCH,),
    "fullgrad": (BIAS_GRADIENTS,),
    "shapleycam": (HVP,),
    "guidedbackprop": (SCORE_INPUT_GRADIENTS, GUIDED_BACKPROP),
    "guidedgradcam": (SCORE_INPUT_GRADIENTS, GUIDED_BACKPROP),
    **{name: (SCORE_INPUT_GRADIENTS,)
       for name in ("saliency", "inputxgradient", "smoothgrad", "integratedgradients")},
    **{name: (ATTENTION,) for name in ("attentionrollout", "gradientrollout", "legrad")},
}


def _declared_below_method(cls: type, attr: str) -> bool:
    """Whether ``attr`` is set by ``cls`` or a base between it and :class:`Method`."""
    return any(attr in vars(k) for k in cls.__mro__ if k is not Method and issubclass(k, Method))


# -- exports --------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_every_method_class_is_exported_from_interp_core(cls):
    assert getattr(ic, cls.__name__) is cls
    assert cls.__name__ in ic.__all__


def test_the_bases_and_the_design_names_are_exported():
    for name in ("Method", "CAMMethod", "ChannelWeightCAM", "InputGradientMethod", "Explanation",
                 "CAM", "GradCAM", "GradCAMPlusPlus", "XGradCAM", "HiResCAM",
                 "GradCAMElementWise", "LayerCAM", "EigenCAM", "EigenGradCAM", "ScoreCAM",
                 "AblationCAM"):
        assert name in ic.__all__ and hasattr(ic, name), name
    assert set(ic.__all__) <= set(dir(ic))


# -- one base, declarations -----------------------------------------------------------------
@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_every_method_derives_from_method_and_declares_its_needs(cls):
    assert issubclass(cls, Method)
    for attr in ("requires", "needs", "takes_layer"):
        assert _declared_below_method(cls, attr), f"{cls.__name__} does not declare {attr}"
    assert isinstance(cls.requires, tuple) and set(cls.requires) <= ALL_CAPABILITIES
    assert len(set(cls.requires)) == len(cls.requires)
    assert cls.needs in NEEDS and isinstance(cls.takes_layer, bool)
    assert cls.needs_gradients == bool(GRADIENT_CAPABILITIES & set(cls.requires))
    # the declarations agree with one another
    if cls.needs == "gradients":
        assert GRADIENTS in cls.requires
    if cls.needs == "input gradients":
        assert {SCORE_INPUT_GRADIENTS, BIAS_GRADIENTS} & set(cls.requires)
    if cls.needs in ("activations", "forward per channel", "attention"):
        assert not cls.needs_gradients
    if cls.needs.startswith("attention"):
        assert ATTENTION in cls.requires and issubclass(cls, AttentionMethod)
        assert cls.needs_gradients == (cls.needs == "attention gradients")
    # the taxonomy is in the bases: a layer method is a CAMMethod, and the other way round
    assert cls.takes_layer == issubclass(cls, CAMMethod)
    if issubclass(cls, InputGradientMethod):
        assert cls.needs == "input gradients" and not cls.takes_layer


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_required_capabilities_is_what_the_class_declared(cls):
    declared = tuple(c for c in cls.requires if c != GRADIENTS)
    assert required_capabilities(cls.name) == declared
    assert declared == EXPECTED_CAPABILITIES.get(cls.name, ())


def test_the_method_table_reads_the_declarations():
    rows = method_table()
    assert [row.name for row in rows] == ic.methods() == sorted(METHODS)
    for row in rows:
        cls = METHODS[row.name]
        assert (row.needs, row.requires, row.takes_layer) == (
            cls.needs, cls.requires, cls.takes_layer)


def test_a_missing_capability_is_named_with_what_to_use_instead():
    model = ref.ReferenceModel()
    backend = ref.ReferenceBackend()
    for cls in (ic.Saliency, ic.GuidedBackprop, ic.FullGrad, ic.GuidedGradCAM):
        missing = [c for c in required_capabilities(cls.name) if c not in backend.capabilities]
        with pytest.raises(NotImplementedError) as err:
            cls(model, ref.LAYER, backend=backend)
        message = str(err.value)
        assert message.startswith(f"{cls.__name__} needs the {missing[0]!r}")
        assert all(repr(c) in message for c in missing) and "capabilit" in message
        assert repr(backend.name) in message and cls.instead in message


def test_a_subclass_written_against_needs_gradients_still_works():
    """Third-party CAM methods that set only ``needs_gradients`` (the contract before
    ``requires``) capture without gradients when it is False."""

    class Mean(CAMMethod):
        name = "mean-activation"
        needs_gradients = False

        def layer_map(self, activations, gradients, ctx):
            assert gradients is None
            return activations.mean(axis=-1)

    assert Mean.requires == () and not Mean.needs_gradients
    assert GRADIENTS in type("G", (CAMMethod,), {"needs_gradients": True}).requires
    maps = Mean(ref.ReferenceModel(), ref.LAYER, backend=ref.ReferenceBackend())(
        ref.reference_inputs(2), [0, 1])
    assert maps.shape == (2, *ref.input_shape("gap")[:2]) and np.isfinite(maps).all()


# -- public hooks only ------------------------------------------------------------------------
def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_no_method_overrides_a_private_method_of_a_base_from_another_module(cls):
    offenders = []
    for klass in cls.__mro__:
        if klass is object:
            continue
        for name in vars(klass):
            if not _private(name):
                continue
            for base in klass.__mro__[1:]:
                if base.__module__ != klass.__module__ and name in vars(base):
                    offenders.append(f"{klass.__qualname__}.{name} overrides "
                                     f"{base.__module__}.{base.__qualname__}.{name}")
    assert not offenders, offenders


@pytest.mark.parametrize("cls", CLASSES, ids=IDS)
def test_every_method_has_one_public_hook_and_the_uniform_signature(cls):
    assert cls.explain is Method.explain and cls.__call__ is Method.__call__
    assert cls.compute is not Method.compute
    params = inspect.signature(cls).parameters
    assert list(params)[:2] == ["model", "layer"]


# -- the old module paths ---------------------------------------------------------------------
def test_the_guided_methods_live_in_one_module():
    guided = {cls.__module__ for cls in (ic.GuidedBackprop, ic.GuidedGradCAM,
                                         ic.GuidedGradientsGradCAM)}
    assert guided == {"interp_core.methods.guided"}


def test_the_package_imports_no_deprecated_path():
    code = ("import warnings; warnings.simplefilter('error', DeprecationWarning); "
            "import interp_core, interp_core.methods, interp_core.testing.agreement, "
            "interp_core.logging.training; "
            "import sys; assert 'interp_core.methods.gradient' not in sys.modules; "
            "assert 'interp_core.methods.attribution' not in sys.modules")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stderr


def test_the_deprecation_warning_does_not_fail_the_suite():
    """pytest's ``filterwarnings`` (pyproject.toml) turns no DeprecationWarning into an error,
    so a test (or a user's suite) that imports an old path still passes."""
    config = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    filters = config["tool"]["pytest"]["ini_options"].get("filterwarnings", [])
    assert not [f for f in filters if f.split(":")[0] == "error"
                and (len(f.split(":")) < 3 or f.split(":")[2] in ("", "DeprecationWarning"))]
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        from interp_core.methods.attribution import Saliency
    assert Saliency is ic.Saliency
