"""The PyTorch model sweep: Grad-CAM with the default and a named layer on torchvision, timm and
Hugging Face classifiers (random weights, small inputs), each against a hand-written autograd
reference (``tests/zoo_torch.py``).

Runs in the zoo environment (``requirements-zoo.txt``: torch, torchvision, timm, transformers).
Where torchvision does not import the module skips, unless ``INTERP_TEST_ZOO=1``, which makes
the missing environment a failure (CI sets it for the zoo run). The slower half of the models is
marked ``slow``. With ``INTERP_ZOO_RESULTS=DIR`` each model's outcome is appended to
``DIR/torch.jsonl``, from which ``scripts/make_models_table.py`` writes ``docs/models.md``.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
from pathlib import Path

import pytest


def _require_zoo() -> None:
    try:
        for module in ("torchvision", "timm", "transformers"):
            importlib.import_module(module)
    except ImportError as exc:
        if os.environ.get("INTERP_TEST_ZOO") == "1":
            raise RuntimeError(
                f"INTERP_TEST_ZOO=1 but the zoo environment is incomplete: {exc} (create it "
                "with: python3 -m venv .venv-zoo && .venv-zoo/bin/pip install -r "
                "requirements-zoo.txt)"
            ) from exc
        pytest.skip(f"the model zoo needs torchvision, timm and transformers: {exc}",
                    allow_module_level=True)


_require_zoo()

import zoo_torch  # noqa: E402  (needs the zoo environment checked above)


def record(result: zoo_torch.Result) -> None:
    """Append ``result`` to ``$INTERP_ZOO_RESULTS/torch.jsonl`` when that is set."""
    folder = os.environ.get("INTERP_ZOO_RESULTS")
    if folder:
        path = Path(folder) / "torch.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(dataclasses.asdict(result)) + "\n")


def _param(case: zoo_torch.Case) -> object:
    marks = [pytest.mark.slow] if case.slow else []
    return pytest.param(case, id=case.id, marks=marks)


@pytest.mark.parametrize("case", [_param(c) for c in zoo_torch.CASES])
def test_gradcam_default_and_named_layer_match_the_reference(case: zoo_torch.Case) -> None:
    result = zoo_torch.check(case)
    record(result)
    assert not result.error, result.error
    assert result.default_ok and result.named_ok


def test_the_sweep_is_as_wide_as_promised() -> None:
    sources = [c.source for c in zoo_torch.CASES]
    assert sources.count("torchvision") >= 30
    assert sources.count("timm") >= 20
    assert len({c.family for c in zoo_torch.CASES if c.source == "torchvision"}) >= 15
    timm_families = {c.family for c in zoo_torch.CASES if c.source == "timm"}
    for family in ("ViT", "DeiT", "Swin", "ConvNeXt", "LeViT", "MaxViT", "MobileViT",
                   "EfficientFormer", "RepVGG"):
        assert family in timm_families, family
    hf = {c.family for c in zoo_torch.CASES if c.source == "transformers"}
    assert hf >= {"ViT", "DeiT", "Swin", "ConvNeXt", "ResNet", "MobileViT"}
    assert sum(c.slow for c in zoo_torch.CASES) >= len(zoo_torch.CASES) // 3


def test_the_reference_is_not_the_library() -> None:
    # A wrong layout in the reference must show: reading a ViT's tokens without dropping the
    # class token gives a different grid and the comparison fails.
    case = next(c for c in zoo_torch.CASES if c.id == "timm/deit_tiny_patch16_224")
    model = zoo_torch.build(case)
    x = zoo_torch.make_input(case.size)
    with pytest.raises(AssertionError):
        zoo_torch.reference_gradcam(model, x, case.layer, prefix=0)
