"""The Ray engine on a real two-node cluster, and the faults clusters have.

A module fixture starts a head node and a worker node on this machine (``ray start``, one CPU
each; :mod:`tests.ray_cluster`) and stops both afterwards. Every audit runs as its own driver
process (``interp audit ... --ray-address``, or the Python API with ``ray_address=``) in a
folder that holds the model module ``faultmodel.py``: the module exists nowhere else (not on
the nodes' ``PYTHONPATH``, not in their working folder), so the workers import the copy the
job's ``runtime_env`` carries. The model records where it was built and each forward pass as
marker files, which the fault tests wait for to act in the middle of a run.

Each run ends with every image exactly once in ``results.parquet`` and nothing in
``errors.jsonl`` but the two broken files: an unreadable one, and a blank image the model
raises on.

Marked ``cluster`` (``make test-cluster``); skips without Ray unless ``INTERP_TEST_RAY`` is
set. Every wait has a timeout.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import require_framework, require_ray

require_framework("torch", "torch")
require_ray()
pq = pytest.importorskip("pyarrow.parquet")

from interp_core.viz import save_png  # noqa: E402
from tests.ray_cluster import LocalCluster  # noqa: E402
from tests.test_audit import write_dataset  # noqa: E402

pytestmark = [pytest.mark.cluster,
              pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.*")]
ROOT = Path(__file__).resolve().parents[1]
#: The drivers' PYTHONPATH: the project and its torch adapter, as an installed one would be.
DRIVER_PATH = os.pathsep.join(str(ROOT / p) for p in ("", "backends/torch"))
N = 96  # readable images; with the two broken ones, 98 rows
BATCH = 8
RUN_TIMEOUT = 150  # seconds for one audit run
BUDGET = 290.0  # seconds for the whole module (cluster start included): CI's limit is 5 min
DEADLINE = [time.monotonic() + BUDGET]  # set again when the cluster starts


def limit(seconds: float) -> float:
    """``seconds``, or less where the module's budget ends sooner."""
    left = DEADLINE[0] - time.monotonic()
    if left <= 0:
        pytest.fail(f"the cluster tests ran past their budget of {BUDGET:.0f} s")
    return min(seconds, left)
CLASSES = "circle,square,triangle,cross,ring"

MODEL = '''
    """The demo model, with markers: where it was built, and each forward pass."""
    import os
    import time

    import ray

    from interp_core.datasets.demo import demo_model

    EVENTS = {events!r}
    PAUSE = {pause!r}


    def build():
        node = ray.get_runtime_context().get_node_id()
        pid = os.getpid()
        with open(os.path.join(EVENTS, f"built-{{pid}}-{{time.time_ns()}}"), "w") as f:
            f.write(f"{{node}}\\n{{__file__}}\\n")
        model = demo_model("torch")
        inner = model.forward
        calls = [0]

        def forward(x):
            if any(float(s.max()) == float(s.min()) for s in x):
                raise RuntimeError("this model cannot take a blank image")
            calls[0] += 1
            with open(os.path.join(EVENTS, f"pass-{{node}}-{{pid}}-{{calls[0]}}"), "w"):
                pass
            time.sleep(PAUSE)
            return inner(x)

        model.forward = forward
        return model
'''


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    DEADLINE[0] = time.monotonic() + BUDGET
    with LocalCluster(workers=1, cpus=1, timeout=60) as started:
        assert len(started.alive_nodes()) == 2
        yield started


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("clusterdata")
    found = write_dataset(root, N, seed=25)
    (root / "imgs" / "circle" / "broken.png").write_bytes(b"not an image")
    save_png(root / "imgs" / "ring" / "blank.png", np.full((64, 64, 3), 0.5, np.float32))
    lines = Path(found["manifest"]).read_text().splitlines()
    # The blank image sits in the middle of a batch: the model raises on it, the batch's
    # other images are explained one by one.
    lines.insert(1 + 3 * BATCH + 3, "imgs/ring/blank.png,ring,B,1,1,5,5")
    lines.append("imgs/circle/broken.png,circle,A,1,1,5,5")
    Path(found["manifest"]).write_text("\n".join(lines) + "\n")
    return found


class Job:
    """One audit driver: its folder (the model module, the events), output and command."""

    def __init__(self, cluster: LocalCluster, data: dict[str, object], folder: Path,
                 pause: float = 0.05) -> None:
        self.cluster = cluster
        self.folder = folder
        self.events = folder / "events"
        self.events.mkdir(parents=True)
        self.work = folder / "driver"  # the driver's working folder: the model lives here
        self.work.mkdir()
        (self.work / "faultmodel.py").write_text(textwrap.dedent(
            MODEL.format(events=str(self.events), pause=pause)))
        self.out = folder / "out"
        self.manifest = str(data["manifest"])
        self.env = {**os.environ, **cluster.env, "PYTHONPATH": DRIVER_PATH}
        self.env.pop("RAY_ADDRESS")  # the address is given on the command line

    def command(self, *extra: str) -> list[str]:
        return [sys.executable, "-m", "interp_core.cli", "audit", "faultmodel:build",
                self.manifest, "--out", str(self.out), "--engine", "ray",
                "--ray-address", self.cluster.address, "--layer", "block3", "--size", "64",
                "--classes", CLASSES, "--batch-size", str(BATCH), "--part-size", str(BATCH),
                "--no-progress", "--no-report", *extra]

    def start(self, *extra: str) -> subprocess.Popen[str]:
        return subprocess.Popen(self.command(*extra), cwd=self.work, env=self.env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def finish(self, proc: subprocess.Popen[str], timeout: float = RUN_TIMEOUT) -> str:
        timeout = limit(timeout)
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
            pytest.fail(f"the audit did not end in {timeout} s:\n{out[-3000:]}")
        return out

    def run(self, *extra: str) -> str:
        proc = self.start(*extra)
        out = self.finish(proc)
        assert proc.returncode == 0, out[-3000:]
        return out

    def passes(self, at_least: int = 1, node: str | None = None) -> list[Path]:
        """Marker files of forward passes number ``at_least`` or later (of actors: the
        set-up check makes one pass per model)."""
        found = []
        for p in self.events.glob("pass-*"):
            _, where, _, k = p.name.split("-")
            if int(k) >= at_least and (node is None or where == node):
                found.append(p)
        return found

    def builds(self) -> list[tuple[str, str]]:
        """(node id, the module's __file__) of every model built."""
        return [tuple(p.read_text().split("\n")[:2]) for p in self.events.glob("built-*")]

    def parts(self) -> list[Path]:
        return sorted((self.out / "parts").glob("part-*.parquet"))


def wait_for(condition: Callable[[], object], what: str, timeout: float = 90.0,
             proc: subprocess.Popen[str] | None = None) -> object:
    timeout = limit(timeout)
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        found = condition()
        if found:
            return found
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"the audit ended before {what}:\n{proc.stdout.read()[-3000:]}")
        time.sleep(0.05)
    if proc is not None:
        proc.kill()
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


def assert_each_image_once(job: Job) -> None:
    """Every image exactly once; errors only for the two broken files."""
    table = pq.read_table(job.out / "results.parquet", columns=["id"])
    ids = table.column("id").to_pylist()
    assert len(ids) == len(set(ids)) == N
    assert not any(i.endswith(("broken.png", "blank.png")) for i in ids)
    errors = [json.loads(line) for line in (job.out / "errors.jsonl").read_text().splitlines()]
    assert sorted(Path(e["path"]).name for e in errors) == ["blank.png", "broken.png"]
    blank = next(e for e in errors if e["path"].endswith("blank.png"))
    assert "cannot take a blank image" in blank["error"]
    meta = json.loads((job.out / "audit.json").read_text())
    assert (meta["status"], meta["images"], meta["failed"]) == ("complete", N, 2)


def test_the_audit_runs_on_both_nodes_with_the_model_from_the_drivers_folder(
        cluster, data, tmp_path):
    job = Job(cluster, data, tmp_path, pause=0.25)
    out = job.run()
    assert_each_image_once(job)
    nodes = set(cluster.alive_nodes())
    meta = json.loads((job.out / "audit.json").read_text())
    assert set(meta["nodes"]) == nodes  # rows were explained on both nodes
    assert sum(meta["nodes"].values()) == N + 2
    assert "rows per Ray node (2 node(s))" in out
    # Every model (the set-up check's and each actor's) imported the copy Ray unpacked for
    # the job, on both nodes, never the driver's file.
    builds = job.builds()
    assert {node for node, _ in builds} == nodes
    for _, file in builds:
        assert "runtime_resources" in file and not file.startswith(str(job.work)), file


def test_an_address_where_no_cluster_answers_is_an_error_not_a_ray_of_our_own(data, tmp_path):
    from tests.ray_cluster import free_port

    done = subprocess.run(
        [sys.executable, "-m", "interp_core.cli", "audit", "demo:torch", str(data["manifest"]),
         "--out", str(tmp_path / "out"), "--engine", "ray", "--ray-address",
         f"127.0.0.1:{free_port()}", "--no-progress"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": DRIVER_PATH})
    assert done.returncode == 2
    assert "no Ray cluster answers at ray_address='127.0.0.1:" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "out" / "results.parquet").exists()


def test_the_python_api_joins_the_cluster_given(cluster, data, tmp_path):
    job = Job(cluster, data, tmp_path, pause=0.25)
    code = textwrap.dedent(f"""
        import json, ray
        from interp_core.audit import audit
        result = audit("faultmodel:build", {job.manifest!r}, {str(job.out)!r}, engine="ray",
                       ray_address={cluster.address!r}, layer="block3", size=64,
                       classes={CLASSES.split(",")!r}, batch_size={BATCH}, part_size={BATCH},
                       progress=False, report=False)
        print(json.dumps({{"nodes": result.nodes, "ray_left": ray.is_initialized()}}))
    """)
    done = subprocess.run([sys.executable, "-c", code], cwd=job.work, env=job.env,
                          capture_output=True, text=True, timeout=limit(RUN_TIMEOUT))
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(found["nodes"]) == set(cluster.alive_nodes())
    assert found["ray_left"] is False  # connected for the run, disconnected after it
    assert_each_image_once(job)


def test_a_worker_killed_with_sigkill_is_restarted_and_its_batch_retried(
        cluster, data, tmp_path):
    job = Job(cluster, data, tmp_path, pause=0.3)
    proc = job.start()
    # An actor in the middle of the run: its second forward pass has started.
    marker = wait_for(lambda: job.passes(at_least=2), "an actor's second batch", proc=proc)[0]
    victim = int(marker.name.split("-")[2])
    built_before = len(job.builds())
    os.kill(victim, signal.SIGKILL)
    out = job.finish(proc)
    print(out)  # what Ray and the engine did (shown with pytest -s)
    assert proc.returncode == 0, out[-3000:]
    assert len(job.builds()) > built_before  # Ray restarted the actor
    assert_each_image_once(job)


def test_an_interrupted_driver_resumes_on_the_same_cluster(cluster, data, tmp_path):
    job = Job(cluster, data, tmp_path, pause=0.3)
    proc = job.start()
    wait_for(lambda: job.parts() and job.passes(at_least=3), "parts and a third batch",
             proc=proc)
    proc.send_signal(signal.SIGINT)
    out = job.finish(proc, timeout=60)
    assert proc.returncode != 0, out[-3000:]
    assert not (job.out / "results.parquet").exists()
    done_before = sum(pq.read_metadata(p).num_rows for p in job.parts())
    assert 0 < done_before < N + 2
    out = job.run("--resume")
    meta = json.loads((job.out / "audit.json").read_text())
    assert 0 < meta["resumed"] < N + 2
    assert f"{meta['resumed']} already done" in out
    assert_each_image_once(job)


RETRY_SCRIPT = '''
import importlib
import os

from interp_core.audit import audit

engine = importlib.import_module("interp_core.audit.engine_ray")

MARKER = {marker!r}


class CrashAfterWriting(engine.RayBatchWorker):
    """Writes its block's part, then its process dies, once: Ray restarts the actor and
    retries the block, whose part is written a second time."""

    def __call__(self, block):
        status = super().__call__(block)
        try:
            fd = os.open(MARKER, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return status
        os.write(fd, str(status.column("rows")[0].as_py()).encode())
        os.close(fd)
        os._exit(1)


engine.run_ray.__kwdefaults__["worker_class"] = CrashAfterWriting
audit("faultmodel:build", {manifest!r}, {out!r}, engine="ray", ray_address={address!r},
      layer="block3", size=64, classes={classes!r}, batch_size={batch}, part_size={batch},
      progress=False, report=False)
'''


def test_a_retried_block_adds_no_duplicate_rows(cluster, data, tmp_path):
    job = Job(cluster, data, tmp_path)
    marker = tmp_path / "crashed"
    code = RETRY_SCRIPT.format(marker=str(marker), manifest=job.manifest, out=str(job.out),
                               address=cluster.address, classes=CLASSES.split(","),
                               batch=BATCH)
    done = subprocess.run([sys.executable, "-c", code], cwd=job.work, env=job.env,
                          capture_output=True, text=True, timeout=limit(RUN_TIMEOUT))
    assert done.returncode == 0, done.stderr[-3000:]
    assert marker.exists()  # an actor died after writing its block's part
    in_parts = sum(pq.read_metadata(p).num_rows for p in job.parts())
    assert in_parts == N + 2 + int(marker.read_text())  # that block's rows twice in the parts
    assert_each_image_once(job)  # once in the results


def test_the_run_completes_on_the_head_when_the_worker_node_stops(cluster, data, tmp_path):
    # Last in the module: the worker node does not come back.
    head, worker = cluster.alive_nodes()
    job = Job(cluster, data, tmp_path, pause=0.3)
    proc = job.start()
    wait_for(lambda: job.passes(at_least=2, node=worker), "a batch on the worker node",
             proc=proc)
    cluster.stop_node(1)
    out = job.finish(proc)
    print(out)  # what Ray and the engine did (shown with pytest -s)
    assert proc.returncode == 0, out[-3000:]
    assert_each_image_once(job)
    assert cluster.alive_nodes() == [head]
    meta = json.loads((job.out / "audit.json").read_text())
    assert meta["nodes"].get(head, 0) > 0
