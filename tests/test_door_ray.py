"""The file door on the Ray engine: the same reader, the same error lines and the same arrays
as the local engine and ``interp explain`` (a small local cluster, started and stopped here;
not marked slow, so ``make test`` runs it)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import require_framework, require_ray

require_framework("torch", "torch")
ray = require_ray()
pq = pytest.importorskip("pyarrow.parquet")

from interp_core import cli  # noqa: E402
from interp_core.audit import audit  # noqa: E402
from tests.door_models import recorded  # noqa: E402
from tests.test_door import GRAY, claim_png_size, noise_png, ramp16  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.*")


@pytest.fixture(scope="module")
def seen(tmp_path_factory):
    """Where every process records the model's inputs (set before Ray starts its workers)."""
    folder = tmp_path_factory.mktemp("seen-ray")
    before = os.environ.get("INTERP_RECORD_INPUTS")
    os.environ["INTERP_RECORD_INPUTS"] = str(folder)
    yield folder
    if before is None:
        os.environ.pop("INTERP_RECORD_INPUTS", None)
    else:
        os.environ["INTERP_RECORD_INPUTS"] = before


@pytest.fixture(scope="module")
def cluster(seen):
    """A local Ray head on 127.0.0.1 for this module: 2 CPUs, no dashboard."""
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             _node_ip_address="127.0.0.1",
             runtime_env={"env_vars": {"INTERP_RECORD_INPUTS": str(seen)}})
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("door-ray") / "in"
    ramp16(root / "good" / "ramp16.png")
    noise_png(root / "good" / "rgb.png", 1)
    claim_png_size(noise_png(root / "bad" / "huge.png", 2, 8), 20000, 20000)
    (root / "bad" / "text.png").write_text("not an image")
    (root / "bad" / "dangling.png").symlink_to(root / "nowhere.png")
    (root / "bad" / "loop.png").symlink_to(root / "bad" / "loop.png")
    return root


def _errors(result) -> dict[str, str]:
    return {Path(e["path"]).name: e["error"] for e in
            map(json.loads, result.errors.read_text().splitlines())}


def test_ray_engine_reads_through_the_same_door(cluster, seen, folder, tmp_path):
    result = audit(GRAY, folder, tmp_path / "ray", size=32, engine="ray", workers=2,
                   threads=1, progress=False)
    from_ray = recorded(seen)
    for f in seen.iterdir():
        f.unlink()
    local = audit(GRAY, folder, tmp_path / "local", size=32, progress=False)
    from_local = recorded(seen)
    assert (result.images, result.failed) == (local.images, local.failed) == (2, 4)
    assert len(from_ray) == 2
    for a, b in zip(from_ray, from_local, strict=True):
        np.testing.assert_array_equal(a, b)  # the 16-bit ramp too, with its 16 bits
    assert _errors(result) == _errors(local)
    assert "decompression bomb" in _errors(result)["huge.png"]
    assert "broken symbolic link" in _errors(result)["dangling.png"]
    ours = pq.read_table(result.results).drop(["map"])
    assert ours.equals(pq.read_table(local.results).drop(["map"]))


def test_ray_cli_refuses_a_pickled_model_and_a_typo_before_starting(cluster, folder,
                                                                     tmp_path, capsys):
    import torch

    from tests.door_models import GrayNet

    torch.save(GrayNet(), tmp_path / "gray.pt")
    out = tmp_path / "out"
    assert cli.main(["audit", str(tmp_path / "gray.pt"), str(folder), "--out", str(out),
                     "--engine", "ray", "--no-progress"]) == 2
    assert "--trust-model" in capsys.readouterr().err
    assert cli.main(["audit", GRAY, str(folder), "--out", str(out), "--engine", "ray",
                     "--method", "gradcm", "--no-progress"]) == 2
    assert "did you mean 'gradcam'" in capsys.readouterr().err
    assert cli.main(["audit", str(tmp_path / "gray.pt"), str(folder), "--out", str(out),
                     "--engine", "ray", "--trust-model", "--size", "32", "--workers", "2",
                     "--threads", "1", "--no-progress"]) == 0
