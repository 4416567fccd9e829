"""Wrapped and converted torch models: DataParallel / DistributedDataParallel (layer names with or
without ``module.``), torch.compile (a clear error naming ``_orig_mod``), and torch.export
programs saved as ``.pt2`` and loaded by ``interp explain``."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

import interp_core as ic  # noqa: E402
from interp_core.backend.registry import load_model_file  # noqa: E402
from interp_core.cli import main  # noqa: E402


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
                                      nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU())
        self.fc = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean(dim=(2, 3)))


@pytest.fixture
def net() -> Net:
    return Net().eval()


@pytest.fixture
def x() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(2, 3, 16, 16)


def test_data_parallel_takes_names_with_or_without_module(net, x):
    plain = ic.GradCAM(net, "features").explain(x)
    wrapped = nn.DataParallel(net)
    for name in ("features", "module.features"):
        exp = ic.GradCAM(wrapped, name).explain(x)
        assert exp.layers == ["module.features"]
        np.testing.assert_allclose(exp.maps, plain.maps, atol=1e-6)
    assert ic.GradCAM(wrapped).explain(x).layers == ["module.features"]
    # Names copied from code that wrapped the model also work on the plain model.
    np.testing.assert_allclose(ic.GradCAM(net, "module.features")(x), plain.maps, atol=1e-6)
    with pytest.raises(ValueError, match=r"unknown layer 'module\.nope'"):
        ic.GradCAM(wrapped, "module.nope")(x)


def test_distributed_data_parallel(net, x, tmp_path):
    dist = torch.distributed
    if not dist.is_available():
        pytest.skip("torch.distributed is not available")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0,
                            world_size=1)
    try:
        wrapped = nn.parallel.DistributedDataParallel(net)
        plain = ic.GradCAM(net, "features")(x)
        for name in ("features", "module.features"):
            np.testing.assert_allclose(ic.GradCAM(wrapped, name)(x), plain, atol=1e-6)
            np.testing.assert_allclose(ic.GradCAM(wrapped, name)(x), plain, atol=1e-6)  # again
    finally:
        dist.destroy_process_group()


def test_compiled_modules_get_an_error_naming_the_original(net, x):
    compiled = torch.compile(net, backend="eager")
    for layer in ("features", None):
        with pytest.raises(ValueError, match=r"torch.compile'd.*model\._orig_mod"):
            ic.GradCAM(compiled, layer)(x)
    np.testing.assert_allclose(ic.GradCAM(compiled._orig_mod, "features")(x),
                               ic.GradCAM(net, "features")(x), atol=1e-6)


def test_exported_programs_load_unflattened(net, x, tmp_path):
    path = tmp_path / "net.pt2"
    torch.export.save(torch.export.export(net, (x[:1],)), path)
    loaded = load_model_file(path)
    assert "features.2" in ic.get_backend(loaded).layer_names(loaded)
    np.testing.assert_allclose(ic.GradCAM(loaded, "features")(x[:1]),
                               ic.GradCAM(net, "features")(x[:1]), atol=1e-5)
    assert ic.GradCAM(loaded).explain(x[:1]).layers == ["features"]


def test_interp_explain_reads_a_pt2_file(net, x, tmp_path):
    from PIL import Image

    path = tmp_path / "net.pt2"
    torch.export.save(torch.export.export(net, (x[:1],)), path)
    image = tmp_path / "image.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (16, 16, 3), np.uint8)).save(image)
    out = tmp_path / "out"
    # The program was exported for one 16x16 image: the CLI feeds it that shape.
    assert main(["explain", str(path), str(image), "--out", str(out), "--size", "16",
                 "--batch-size", "1"]) == 0
    (line,) = (out / "results.jsonl").read_text().splitlines()
    assert json.loads(line)["layer"] == "features"


def test_a_file_that_is_not_an_exported_program(tmp_path):
    path = tmp_path / "model.pt2"
    path.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match=r"not a torch\.export program"):
        load_model_file(path)
