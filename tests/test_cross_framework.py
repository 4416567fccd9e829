"""The headline claim: torch, tensorflow and jax give the same maps and scores.

Same demo weights, same images, every gradient method and CAM: maps agree to 1e-4 (max abs),
target scores to 1e-4 (relative), top-1 classes exactly.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from interp_core.testing.agreement import AGREEMENT_METHODS, explain_everywhere
from tests.conftest import installed_frameworks

ALL = ("torch", "tensorflow", "jax")


def _available() -> list[str]:
    return installed_frameworks(ALL)


@pytest.fixture(scope="module")
def results():
    names = _available()
    if len(names) < 2:
        pytest.skip(f"cross-framework agreement needs two backends, installed: {names}")
    return explain_everywhere(names, n=16)


@pytest.mark.parametrize("method", AGREEMENT_METHODS)
def test_maps_and_scores_agree(results, method):
    for a, b in itertools.combinations(results, 2):
        ea, eb = results[a][method], results[b][method]
        np.testing.assert_array_equal(ea.targets, eb.targets, err_msg=f"{a} vs {b}")
        np.testing.assert_allclose(ea.scores, eb.scores, rtol=1e-4, atol=1e-6,
                                   err_msg=f"{method}: scores {a} vs {b}")
        diff = np.abs(ea.maps - eb.maps).max()
        assert diff <= 1e-4, f"{method}: max |map {a} - map {b}| = {diff:.2e}"
        assert ea.maps.shape == (16, 64, 64)
