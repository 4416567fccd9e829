"""Fixtures every test group of the conformance suite shares.

Required of a subclass: ``backend``, ``reference_model``, ``to_input``. Optional hooks (each
defaults to ``None``, and the tests that need it skip, naming it): ``model_state``,
``stateful_model``, ``structured_output_model``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import interp_core as ic
from interp_core.testing import reference as ref

ATOL = 1e-5
#: The variants whose gradients the suite checks by default: constant over space ("gap") and
#: varying over space and channels on a non-square map ("flatten").
GRADIENT_VARIANTS = ("gap", "flatten")

Builder = Callable[[ref.ReferenceWeights, str], Any]


def require(impl: Any, capability: str) -> None:
    """Skip unless ``impl`` declares ``capability``."""
    if capability not in impl.capabilities:
        pytest.skip(f"{impl.name} does not declare the {capability!r} capability")


def require_hook(hook: Any, name: str) -> Any:
    """``hook``, or a skip that names the optional fixture to override."""
    if hook is None:
        pytest.skip(f"optional hook not provided: override the {name!r} fixture to run this test")
    return hook


class SuiteFixtures:
    """The fixtures; a subclass overrides the three required ones and any optional hook."""

    # -- required -------------------------------------------------------------------------
    @pytest.fixture
    def backend(self) -> Any:  # pragma: no cover - subclasses override
        raise NotImplementedError("subclass BackendConformance and define the backend fixture")

    @pytest.fixture
    def reference_model(self) -> Builder:  # pragma: no cover
        raise NotImplementedError(
            "define reference_model: a builder (weights, variant) -> the reference model in "
            "your framework"
        )

    @pytest.fixture
    def to_input(self) -> Callable[[np.ndarray], Any]:  # pragma: no cover
        raise NotImplementedError("define to_input: NumPy (N, H, W, 3), channels last -> native")

    # -- optional hooks -------------------------------------------------------------------
    @pytest.fixture
    def model_state(self) -> Callable[[Any], Any] | None:
        """``snapshot(model)``: nested dicts/lists of plain values and NumPy arrays holding
        everything the adapter must leave unchanged (flags, weights, buffers, hooks)."""
        return None

    @pytest.fixture
    def stateful_model(self) -> tuple[Any, Any, Any] | None:
        """``(model, layer, native_input)``: a classifier with training-time state (batch
        norm, dropout) left in a mixed train/eval state, one of its spatial layers, a batch."""
        return None

    @pytest.fixture
    def structured_output_model(self) -> Callable[[Any, str], tuple[Any, Any]] | None:
        """``wrap(model, kind) -> (wrapped, layer)``: ``model`` returning ``(logits, aux)``
        (``kind="tuple"``) or ``{"aux": aux, "logits": logits}`` (``"dict"``) with
        ``aux = -logits``, and the name of its ``"features"`` layer."""
        return None

    # -- derived --------------------------------------------------------------------------
    @pytest.fixture
    def impl(self, backend: Any) -> Any:
        return ic.get_backend(backend)

    @pytest.fixture
    def build(self, reference_model: Any) -> Builder:
        """The subclass's builder, with a clear error where it is not one."""

        def build(weights: ref.ReferenceWeights, variant: str) -> Any:
            try:
                return reference_model(weights, variant)
            except TypeError as exc:
                raise TypeError(
                    "the reference_model fixture must return a builder called as "
                    "builder(weights, variant) (for example interp_torch.testing.reference_model"
                    f"), got {type(reference_model).__name__}: {exc}"
                ) from exc

        return build

    @pytest.fixture(params=GRADIENT_VARIANTS)
    def variant(self, request: pytest.FixtureRequest) -> str:
        return request.param

    @pytest.fixture
    def weights(self, variant: str) -> ref.ReferenceWeights:
        return ref.reference_weights(variant=variant)

    @pytest.fixture
    def model(self, build: Builder, weights: ref.ReferenceWeights, variant: str) -> Any:
        """The adapter's reference model of ``variant``."""
        return build(weights, variant)

    @pytest.fixture
    def oracle_model(self, weights: ref.ReferenceWeights, variant: str) -> ref.ReferenceModel:
        """The same model in NumPy."""
        return ref.ReferenceModel(weights, variant)

    @pytest.fixture
    def oracle(self) -> ref.ReferenceBackend:
        """The closed-form NumPy backend the adapter is compared with."""
        return ref.ReferenceBackend()

    @pytest.fixture
    def x_np(self, variant: str) -> np.ndarray:
        return ref.reference_inputs(4, variant=variant)

    @pytest.fixture
    def x(self, to_input: Callable[[np.ndarray], Any], x_np: np.ndarray) -> Any:
        return to_input(x_np)
