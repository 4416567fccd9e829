"""The attention methods (attention rollout, gradient-weighted rollout, LeGrad) against direct
transcriptions of their papers' equations, on the NumPy reference transformer, with no framework.

The transcriptions below are written per sample and per block with plain loops, as the papers
state them, independently of :mod:`interp_core.methods.attention`'s batched code.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import interp_core as ic
from interp_core.datasets.demo_vit import ViTConfig, random_vit_weights
from interp_core.methods import method_table, required_capabilities
from interp_core.methods.postprocess import finish_maps
from interp_core.testing.reference import REFERENCE_VIT, ReferenceBackend, ReferenceModel
from interp_core.testing.reference_transformer import (
    ReferenceTransformer,
    ReferenceTransformerBackend,
    attention,
)
from interp_core.testing.suite.attention import AttentionTests

ATOL = 1e-5
BACKEND = ReferenceTransformerBackend()


def _model(config: ViTConfig = REFERENCE_VIT, seed: int = 0) -> ReferenceTransformer:
    weights = random_vit_weights(config, seed)
    # sharper attention than at initialisation, so that the methods disagree visibly
    for key in weights:
        if "/query/" in key or "/key/" in key:
            weights[key] = weights[key] * 6.0
    return ReferenceTransformer(weights, config)


def _inputs(config: ViTConfig = REFERENCE_VIT, n: int = 3) -> np.ndarray:
    return np.random.default_rng(7).random((n, *config.input_size, 3)).astype(np.float32)


# -- the papers, transcribed -------------------------------------------------------------------
def paper_rollout(attentions: list[np.ndarray], sample: int, discard_ratio: float = 0.0,
                  row: str = "class") -> np.ndarray:
    """Abnar & Zuidema 2020: A_hat = 0.5 A + 0.5 I, rows renormalised, A~_l = A_hat_l A~_{l-1}
    (with jacobgil/vit-explain's discarding of the lowest attentions)."""
    t = attentions[0].shape[-1]
    joint = np.eye(t)
    for layer in attentions:
        fused = layer[sample].astype(np.float64).mean(axis=0)
        if discard_ratio:
            flat = fused.reshape(-1)
            order = np.argsort(flat, kind="stable")[: int(t * t * discard_ratio)]
            for index in order:
                if index != 0:
                    flat[index] = 0.0
        a_hat = 0.5 * fused + 0.5 * np.eye(t)
        for i in range(t):
            a_hat[i] = a_hat[i] / a_hat[i].sum()
        joint = a_hat @ joint
    return joint[0] if row == "class" else joint.mean(axis=0)


def paper_gradient_rollout(attentions: list[np.ndarray], gradients: list[np.ndarray],
                           sample: int, row: str = "class") -> np.ndarray:
    """Chefer, Gur & Wolf 2021, eqs. 5-6: A_bar = E_h((grad A . A)^+), R = R + A_bar R."""
    t = attentions[0].shape[-1]
    relevance = np.eye(t)
    for a, g in zip(attentions, gradients, strict=True):
        heads = a.shape[1]
        a_bar = sum(np.maximum(g[sample, h].astype(np.float64) * a[sample, h], 0)
                    for h in range(heads)) / heads
        relevance = relevance + a_bar @ relevance
    return relevance[0] if row == "class" else relevance.mean(axis=0)


def paper_legrad(gradients: list[np.ndarray], sample: int) -> np.ndarray:
    """Bousselham et al. 2024: E_l = mean over heads and queries of ReLU(ds_l / dA_l); the
    blocks averaged."""
    total = 0.0
    for g in gradients:
        rectified = np.maximum(g[sample].astype(np.float64), 0)
        total = total + rectified.mean(axis=0).mean(axis=0)
    return total / len(gradients)


def _tokens(method: type[ic.Method], model: ReferenceTransformer, x: np.ndarray,
            **options: object) -> ic.Explanation:
    return method(model, backend=BACKEND, **options).explain(x)


# -- agreement with the papers -----------------------------------------------------------------
@pytest.mark.parametrize("discard_ratio", [0.0, 0.5])
def test_rollout_equals_the_paper(discard_ratio: float) -> None:
    model, x = _model(), _inputs()
    exp = _tokens(ic.AttentionRollout, model, x, discard_ratio=discard_ratio)
    probs = attention(model.weights, x, config=model.config).attentions
    for i in range(len(x)):
        np.testing.assert_allclose(exp.raw["tokens"][i],
                                   paper_rollout(probs, i, discard_ratio), atol=ATOL)


@pytest.mark.parametrize(("method", "mode"), [(ic.GradientRollout, "output"),
                                           (ic.LeGrad, "per_block")])
def test_gradient_methods_equal_their_papers(method: type[ic.Method], mode: str) -> None:
    model, x = _model(), _inputs()
    exp = _tokens(method, model, x)
    cap = attention(model.weights, x, gradients=mode, config=model.config)
    assert cap.gradients is not None
    for i in range(len(x)):
        want = (paper_gradient_rollout(cap.attentions, cap.gradients, i)
                if method is ic.GradientRollout else paper_legrad(cap.gradients, i))
        np.testing.assert_allclose(exp.raw["tokens"][i], want, atol=ATOL)


def test_targets_change_the_gradient_methods_but_not_rollout() -> None:
    model, x = _model(), _inputs(n=1)
    for method, differs in ((ic.AttentionRollout, False), (ic.GradientRollout, True),
                            (ic.LeGrad, True)):
        maps = [method(model, backend=BACKEND).explain(x, targets=k).raw["tokens"]
                for k in range(3)]
        same = all(np.allclose(maps[0], m, atol=1e-7) for m in maps[1:])
        assert same is not differs, method.name


# -- the map -----------------------------------------------------------------------------------
@pytest.mark.parametrize("method", [ic.AttentionRollout, ic.GradientRollout, ic.LeGrad])
def test_the_map_is_the_patch_tokens_on_a_non_square_grid(method: type[ic.Method]) -> None:
    model, x = _model(), _inputs()
    exp = method(model, backend=BACKEND).explain(x)
    assert exp.maps.shape == (3, 12, 16) and exp.maps.dtype == np.float32
    tokens = exp.raw["tokens"]
    assert tokens.shape == (3, 1 + 12)
    grid = tokens[:, 1:].reshape(3, 3, 4)  # rows of the 3x4 patch grid, row-major
    np.testing.assert_allclose(exp.maps, finish_maps([grid], (12, 16)), atol=1e-6)
    assert exp.layers == ["blocks.0.attn", "blocks.1.attn"]
    assert exp.method == method.name and exp.backend == "reference-vit"
    scores = exp.scores
    np.testing.assert_allclose(scores, attention(model.weights, x, config=model.config).scores,
                               atol=ATOL)


def test_register_tokens_are_found_from_the_token_count() -> None:
    config = ViTConfig(patch=4, grid=(3, 4), dim=8, heads=2, blocks=2, mlp=16, classes=3,
                       registers=4)
    model, x = _model(config), _inputs(config)
    exp = ic.AttentionRollout(model, backend=BACKEND).explain(x)
    probs = attention(model.weights, x, config=config).attentions
    grid = np.stack([paper_rollout(probs, i)[5:] for i in range(len(x))]).reshape(3, 3, 4)
    np.testing.assert_allclose(exp.maps, finish_maps([grid], (12, 16)), atol=ATOL)


def test_a_model_without_class_token_reads_the_mean_and_says_so() -> None:
    config = ViTConfig(patch=4, grid=(3, 4), dim=8, heads=2, blocks=2, mlp=16, classes=3,
                       class_token=False)
    model, x = _model(config), _inputs(config)
    with pytest.warns(UserWarning, match="no class token"):
        exp = ic.GradientRollout(model, backend=BACKEND).explain(x)
    cap = attention(model.weights, x, gradients="output", config=config)
    assert cap.gradients is not None
    for i in range(len(x)):
        np.testing.assert_allclose(
            exp.raw["tokens"][i],
            paper_gradient_rollout(cap.attentions, cap.gradients, i, row="mean"), atol=ATOL)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ic.GradientRollout(model, backend=BACKEND).explain(x)  # once per model
        ic.AttentionRollout(model, backend=BACKEND, token="mean").explain(x)


def test_start_block_keeps_the_later_blocks() -> None:
    model, x = _model(), _inputs()
    exp = ic.LeGrad(model, backend=BACKEND, start_block=-1).explain(x)
    cap = attention(model.weights, x, gradients="per_block", config=model.config)
    assert cap.gradients is not None and exp.layers == ["blocks.1.attn"]
    np.testing.assert_allclose(exp.raw["tokens"][0], paper_legrad(cap.gradients[1:], 0),
                               atol=ATOL)


# -- what users get wrong ----------------------------------------------------------------------
@pytest.mark.parametrize(("options", "match"), [
    ({"token": "cls"}, "token='cls'"),
    ({"prefix": -1}, "prefix=-1"),
    ({"discard_ratio": 1.0}, "discard_ratio=1.0"),
    ({"head_fusion": "median"}, "head_fusion='median'"),
    ({"batch_size": 0}, "batch_size must be a positive int, got 0"),
])
def test_bad_options_are_named(options: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ic.AttentionRollout(_model(), backend=BACKEND, **options)


def test_out_of_range_start_block_and_wrong_prefix_are_named() -> None:
    model, x = _model(), _inputs()
    with pytest.raises(ValueError, match="start_block=5 is outside the model's 2"):
        ic.LeGrad(model, backend=BACKEND, start_block=5).explain(x)
    with pytest.raises(ValueError, match="prefix=3"):
        ic.AttentionRollout(model, backend=BACKEND, prefix=3).explain(x)
    exp = ic.AttentionRollout(model, backend=BACKEND, prefix=1).explain(x)
    assert exp.maps.shape == (3, 12, 16)


def test_a_backend_without_attention_names_token_gradcam() -> None:
    with pytest.raises(NotImplementedError, match="token Grad-CAM"):
        ic.LeGrad(ReferenceModel(), backend=ReferenceBackend())


def test_eigen_smooth_is_refused() -> None:
    with pytest.raises(TypeError, match="eigen_smooth"):
        ic.AttentionRollout(_model(), backend=BACKEND, eigen_smooth=True)


# -- the catalogue -----------------------------------------------------------------------------
def test_the_methods_are_listed_with_what_they_need() -> None:
    assert {"attentionrollout", "gradientrollout", "legrad"} <= set(ic.methods())
    rows = {row.name: row for row in method_table()}
    assert rows["attentionrollout"].needs == "attention"
    assert rows["gradientrollout"].needs == rows["legrad"].needs == "attention gradients"
    for name in ("attentionrollout", "gradientrollout", "legrad"):
        assert required_capabilities(name) == ("attention",)
        assert rows[name].takes_layer is False
    assert ic.LeGrad.needs_gradients and ic.GradientRollout.needs_gradients
    assert not ic.AttentionRollout.needs_gradients


# -- the conformance suite's attention tests, on the NumPy adapter -----------------------------
class TestReferenceTransformerConformance(AttentionTests):
    """The suite's ``attention`` tests pass on the reference transformer's own adapter (the
    oracle agrees with itself, and the tests' plumbing works for a third-party adapter)."""

    @pytest.fixture
    def backend(self) -> ReferenceTransformerBackend:
        return ReferenceTransformerBackend()

    @pytest.fixture
    def reference_model(self):
        return lambda weights, variant: ReferenceModel(weights, variant)

    @pytest.fixture
    def to_input(self):
        return lambda x: x

    @pytest.fixture
    def reference_transformer(self):
        return ReferenceTransformer

    @pytest.fixture
    def model_state(self):
        return lambda model: {k: v.copy() for k, v in model.weights.items()}
