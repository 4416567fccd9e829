"""The backend conformance suite: what every adapter must do, checked against closed forms.

Subclass :class:`BackendConformance` in your adapter's tests and give it three fixtures::

    import pytest
    from interp_core.testing.conformance import BackendConformance

    class TestMyLibConformance(BackendConformance):
        @pytest.fixture
        def backend(self):
            return "mylib"                       # the registered name (or a Backend instance)

        @pytest.fixture
        def reference_model(self):
            return build_reference_model         # (weights, variant) -> model in your framework

        @pytest.fixture
        def to_input(self):
            return lambda x: mylib.asarray(x)    # NumPy (N, H, W, 3), channels last -> native

The reference models are described in :mod:`interp_core.testing.reference`: the builder gets
:class:`~interp_core.testing.reference.ReferenceWeights` and a variant name (``"gap"``,
``"flatten"``, ``"segmentation"``); the spatial layer must be addressable as ``"features"`` and
the dense layer as ``"fc"``. Results are compared with
:class:`~interp_core.testing.reference.ReferenceBackend` (pure NumPy) to ``ATOL``. Gradient
tests run on ``"gap"`` (gradient constant over space) and ``"flatten"`` (gradient varying over
space and channels, 9x12 input), so averaging gradients over space, swapping H and W or
mixing up the batch order of targets fails.

Optional hooks, fixtures that default to ``None`` (the tests that need one skip and name it):

- ``model_state``: ``snapshot(model)`` -> nested dicts/lists of plain values and NumPy arrays
  (training flags, weights, buffers, hook counts); enables the model-hygiene tests.
- ``stateful_model``: ``(model, layer, native_input)``, a classifier with batch norm and
  dropout in a mixed train/eval state; the hygiene tests run on it too.
- ``structured_output_model``: ``wrap(model, kind) -> (wrapped, layer)``, the model returning
  ``(logits, -logits)`` (``kind="tuple"``) or ``{"aux": -logits, "logits": logits}``
  (``"dict"``), for the ``output=`` tests.
- ``reference_transformer``: ``build(weights, config)``, the demo ViT architecture
  (:mod:`interp_core.datasets.demo_vit`) in your framework, for the ``attention`` capability's
  tests (:mod:`interp_core.testing.suite.attention`).

The first-party adapters ship all of these in ``interp_<fw>.testing``;
:class:`ConformanceFromModule` takes such a module as a class argument. A suite test that
finds a known bug of your adapter can be marked as such, for your class only, with
:func:`known_failure`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, ClassVar

import pytest

from interp_core.testing.suite.attention import AttentionTests
from interp_core.testing.suite.capabilities import CapabilityTests
from interp_core.testing.suite.capture import CaptureTests
from interp_core.testing.suite.fixtures import ATOL, GRADIENT_VARIANTS
from interp_core.testing.suite.hvp import HvpTests
from interp_core.testing.suite.hygiene import HygieneTests
from interp_core.testing.suite.methods import MethodTests
from interp_core.testing.suite.targets import TargetTests

__all__ = ["ATOL", "GRADIENT_VARIANTS", "BackendConformance", "ConformanceFromModule",
           "known_failure"]


class BackendConformance(CaptureTests, MethodTests, TargetTests, CapabilityTests, HvpTests,
                         HygieneTests, AttentionTests):
    """Abstract pytest suite; subclasses provide ``backend``, ``reference_model``, ``to_input``
    (and, optionally, ``model_state``, ``stateful_model``, ``structured_output_model``)."""


class ConformanceFromModule(BackendConformance):
    """:class:`BackendConformance` with its fixtures given as class arguments.

    ``backend`` is the ``backend`` fixture's value (a registered name or a Backend instance);
    ``helpers`` a module such as ``interp_torch.testing``, whose ``reference_model`` and
    ``to_input`` are the required fixtures and whose ``model_state`` and
    ``structured_output_model``, where it has them, the optional hooks. Fixtures the subclass
    defines itself (``stateful_model``, or a ``backend`` built per test) take precedence::

        from interp_torch import testing

        class TestMyTorchBackend(ConformanceFromModule, backend="mytorch", helpers=testing):
            pass
    """

    backend_name: ClassVar[Any] = None
    helpers: ClassVar[Any] = None

    def __init_subclass__(cls, *, backend: Any = None, helpers: Any = None,
                          **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if backend is not None:
            cls.backend_name = backend
        if helpers is not None:
            cls.helpers = helpers

    @pytest.fixture
    def backend(self) -> Any:
        return self._given("backend_name", "backend='yourname' (or define the backend fixture)")

    @pytest.fixture
    def reference_model(self) -> Callable[..., Any]:
        return self._helpers().reference_model

    @pytest.fixture
    def to_input(self) -> Callable[[Any], Any]:
        return self._helpers().to_input

    @pytest.fixture
    def model_state(self) -> Callable[[Any], Any] | None:
        return getattr(self._helpers(), "model_state", None)

    @pytest.fixture
    def structured_output_model(self) -> Callable[[Any, str], tuple[Any, Any]] | None:
        return getattr(self._helpers(), "structured_output_model", None)

    @pytest.fixture
    def reference_transformer(self) -> Callable[..., Any] | None:
        return getattr(self._helpers(), "reference_transformer", None)

    def _helpers(self) -> Any:
        return self._given("helpers", "helpers=<a module with reference_model and to_input>")

    def _given(self, attribute: str, argument: str) -> Any:
        value = getattr(self, attribute)
        if value is None:
            raise NotImplementedError(
                f"{type(self).__name__} lacks {attribute!r}: subclass ConformanceFromModule "
                f"with {argument}"
            )
        return value


def known_failure(test: Callable[..., Any], reason: str) -> Callable[..., Any]:
    """``test`` (a suite method) marked as a strict expected failure, for one subclass only.

    Use as a class attribute of your subclass::

        test_segmentation_target = known_failure(
            BackendConformance.test_segmentation_target, reason="issue 42: ...")

    Strict: once the bug is fixed the test passes, the run fails, and the mark must go.
    """

    @functools.wraps(test)
    def marked(*args: Any, **kwargs: Any) -> Any:
        return test(*args, **kwargs)

    return pytest.mark.xfail(strict=True, reason=reason)(marked)
