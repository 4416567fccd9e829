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

import pytest
import zoo_env

for _module in ("torchvision", "timm", "transformers"):
    zoo_env.require(_module, module_level=True)

import zoo_common  # noqa: E402
import zoo_torch  # noqa: E402  (needs the zoo environment checked above)


@pytest.mark.parametrize("case", [zoo_common.param(c) for c in zoo_torch.CASES])
def test_gradcam_default_and_named_layer_match_the_reference(case: zoo_torch.Case) -> None:
    result = zoo_torch.check(case)
    zoo_common.record(result, "torch")
    zoo_common.assert_passed(result)


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
