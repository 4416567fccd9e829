"""The Ray engine on a local cluster started by the test: the same rows as the local engine.

Runs where Ray Data is installed (``pip install 'interp-core[ray]'``, as in
requirements-dev.txt); skips elsewhere, unless ``INTERP_TEST_RAY`` is set, where a missing Ray
fails the run (CI sets it).
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import require_framework, require_ray

require_framework("torch", "torch")
ray = require_ray()
pq = pytest.importorskip("pyarrow.parquet")

from interp_core.audit import audit  # noqa: E402
from interp_core.audit.results import decode_map  # noqa: E402
from tests.test_audit import write_dataset  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.*")]
N = 200

CRASHING_MODEL = """
    import os

    from interp_core.datasets.demo import demo_model

    MARKER = {marker!r}


    def build():
        model = demo_model("torch")
        inner = model.forward

        def forward(x):
            try:  # the first forward pass anywhere kills its process, once
                fd = os.open(MARKER, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                return inner(x)
            os.close(fd)
            os._exit(1)

        model.forward = forward
        return model
"""


@pytest.fixture(scope="module")
def cluster():
    """A local Ray head for this module: 2 CPUs, no dashboard."""
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes200")
    found = write_dataset(root, N, seed=21)
    (root / "imgs" / "circle" / "broken.png").write_bytes(b"not an image")
    with open(found["manifest"], "a") as handle:
        handle.write("imgs/circle/broken.png,circle,A,1,1,5,5\n")
    return found


@pytest.fixture(scope="module")
def local_run(data, tmp_path_factory):
    return audit("demo:torch", data["manifest"], tmp_path_factory.mktemp("local") / "out",
                 progress=False)


@pytest.fixture(scope="module")
def ray_run(cluster, data, tmp_path_factory):
    return audit("demo:torch", data["manifest"], tmp_path_factory.mktemp("ray") / "out",
                 engine="ray", workers=2, threads=1, part_size=64, progress=False)


def assert_same_rows(a, b) -> None:
    ta, tb = pq.read_table(a.results), pq.read_table(b.results)
    assert ta.num_rows == tb.num_rows == N
    assert ta.drop(["map"]).equals(tb.drop(["map"]))
    maps_a = [decode_map(m, 32, 32) for m in ta.column("map").to_pylist()]
    maps_b = [decode_map(m, 32, 32) for m in tb.column("map").to_pylist()]
    np.testing.assert_allclose(np.stack(maps_a), np.stack(maps_b), rtol=0, atol=1e-6)
    assert a.errors.read_text() == b.errors.read_text()


def test_ray_engine_gives_the_local_engine_rows(local_run, ray_run):
    assert (ray_run.images, ray_run.failed) == (N, 1)
    assert len(list((ray_run.out / "parts").glob("part-*.parquet"))) >= 2  # written by Ray
    assert_same_rows(local_run, ray_run)
    assert ray_run.summary == local_run.summary
    overlays = pq.read_table(ray_run.results, columns=["overlay"]).column(0).to_pylist()
    assert all((ray_run.out / o).is_file() for o in overlays)
    assert json.loads((ray_run.out / "audit.json").read_text())["engine"] == "ray"
    # One Ray node here; every kept row (results and the error) counted once for it.
    assert list(ray_run.nodes.values()) == [N + 1] and local_run.nodes == {}


def test_ray_resume_redoes_only_lost_parts(data, local_run, ray_run):
    parts = sorted((ray_run.out / "parts").glob("part-*.parquet"))
    for lost in parts[::2]:
        lost.unlink()
    again = audit("demo:torch", data["manifest"], ray_run.out, engine="ray", workers=2,
                  threads=1, part_size=64, progress=False, resume=True)
    assert 0 < again.resumed < N + 1 and again.images == N
    assert_same_rows(local_run, again)


def test_a_dead_worker_is_retried(cluster, data, local_run, tmp_path):
    marker = tmp_path / "crashed"
    spec = tmp_path / "crashing_model.py"
    spec.write_text(textwrap.dedent(CRASHING_MODEL.format(marker=str(marker))))
    result = audit(f"{spec}:build", data["manifest"], tmp_path / "out", engine="ray",
                   workers=2, threads=1, layer="block3", size=64,
                   classes=("circle", "square", "triangle", "cross", "ring"), progress=False)
    assert marker.exists()  # a worker did die
    assert (result.images, result.failed) == (N, 1)
    ours = pq.read_table(result.results).drop(["map"])
    theirs = pq.read_table(local_run.results).drop(["map"])
    assert ours.equals(theirs)


def test_ray_is_imported_only_for_the_ray_engine():
    import subprocess
    import sys

    code = ("import sys, interp_core.audit.run, interp_core.audit.engine_local; "
            "print('ray' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parents[1]).stdout
    assert out.strip() == "False"
