"""Audit throughput and driver memory: the engines against a hand-written loop.

On ``--images`` (2,000) generated shapes images (64x64 PNGs with a manifest of boxes), the
demo torch model, Grad-CAM on ``block3`` plus the pointing game:

1. local engine images/s / a hand-written loop (load PNG, forward + backward with
   ``torch.autograd.grad`` on the layer's output, Grad-CAM, upsample, pointing game, overlay
   PNG): target >= 0.85. Both run with one CPU thread.
2. Ray engine with 2 actors of 1 thread / local engine with 1 thread: target >= 1.6 on 2
   cores. Reported end to end with Ray already running (a cluster is started once, not per
   run; the time of ``ray.init`` is printed too), and for the batches alone: images over the
   time from the first batch's start to the last batch's end in the workers (no start-up,
   no merge), from a trace the benchmark adds to the engines' batch worker. CPU time per
   image in the workers is printed as well.
3. Driver peak memory (max RSS) of a run over 2,000 rows vs 20,000 rows (the same files
   listed ten times under different ids): target < 1.2x; for both engines.

Each measurement runs in a fresh process (threads fixed by OMP/MKL/OPENBLAS_NUM_THREADS
before numpy and torch load; peak memory from ``getrusage``). Torch is imported before the
clock starts in every variant, and so are pyarrow and the pandas it loads on first use (about
1 s: library imports, not throughput). The load average is printed before and after: on a busy
machine the wall-clock ratios are noise; run it on a quiet one.

    python benchmarks/audit.py [--images 2000] [--size 64] [--big 20000] [--repeats 2]
                               [--skip-ray] [--skip-memory]

Cluster mode (``--cluster``): on ``--cluster-images`` (20,000) generated images, images per
second per CPU for the local engine (1 CPU), Ray on one node (``ray start --head
--num-cpus=1``) and Ray on two nodes (a head and a worker node, 1 CPU each; both on this
machine, :mod:`tests.ray_cluster`), each in a fresh driver process that joins the cluster
through ``RAY_ADDRESS``. Steady state: the images over the time from the first batch's start
to the last batch's end in the workers (no start-up, no merge), divided by the CPUs; also the
rate while every actor is at work, and the CPU each cluster process used (in all, and in the
steady state). Ray's start-up is reported separately: starting the nodes (``ray start``),
and from the audit call to the first batch (joining, the set-up check, the actor pool).
Goal: Ray's steady-state images/s/CPU >= 0.8x local's.

    python benchmarks/audit.py --cluster [--cluster-images 20000]
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import functools
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BATCH = 32
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


# -- data ---------------------------------------------------------------------------------
def shape_rows(root: Path, n: int, size: int, seed: int, first: int = 0) -> list[dict]:
    """``n`` shapes PNGs ``images/<first + i>.png`` under ``root``, and their manifest rows
    (id, path, label, group, box)."""
    from interp_core.datasets import CLASSES, make_shapes
    from interp_core.viz import save_png

    data = make_shapes(n, size=size, seed=seed)
    rows = []
    for j in range(n):
        name = f"{first + j:05d}"
        save_png(root / "images" / f"{name}.png", data.images[j])
        y0, x0, y1, x1 = (int(v) for v in data.boxes[j])
        rows.append({"id": name, "path": f"images/{name}.png",
                     "label": CLASSES[int(data.labels[j])], "group": "ab"[(first + j) % 2],
                     "x0": x0, "y0": y0, "x1": x1, "y1": y1})
    return rows


def write_manifest(path: Path, rows: list[dict]) -> Path:
    """``rows`` as the CSV manifest ``path``."""
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def make_data(root: Path, n: int, repeats: int, size: int = 64) -> tuple[Path, Path]:
    """``n`` shapes PNGs; a manifest of them and one listing them ``repeats`` times."""
    rows = shape_rows(root, n, size, seed=11)

    def copies(k: int) -> list[dict]:
        return [{**r, "id": f"{i}-{r['id']}"} for i in range(k) for r in rows]

    return (write_manifest(root / "manifest.csv", copies(1)),
            write_manifest(root / "manifest_big.csv", copies(repeats)))


def make_many(root: Path, n: int, size: int = 64, chunk: int = 2000) -> Path:
    """``n`` distinct shapes PNGs (made ``chunk`` at a time) and their manifest."""
    rows = []
    for start in range(0, n, chunk):
        rows += shape_rows(root, min(chunk, n - start), size, seed=100 + start, first=start)
    return write_manifest(root / "manifest.csv", rows)


# -- the variants (each in its own process) ------------------------------------------------
def hand_loop(manifest: Path, out: Path) -> int:
    """What a user would write by hand with torch: no library pipeline, no result files."""
    import numpy as np
    import torch
    import torch.nn.functional as F  # noqa: N812  (the usual torch spelling)
    from PIL import Image

    from interp_core.datasets.demo import demo_model
    from interp_core.viz import overlay, save_png

    with open(manifest, newline="") as handle:
        rows = list(csv.DictReader(handle))
    model = demo_model("torch")
    captured: dict[str, torch.Tensor] = {}
    model.block3.register_forward_hook(lambda m, i, o: captured.__setitem__("a", o))
    hits = []
    for s in range(0, len(rows), BATCH):
        chunk = rows[s:s + BATCH]
        images = np.stack([np.asarray(Image.open(manifest.parent / r["path"]).convert("RGB"),
                                      dtype=np.float32) / 255.0 for r in chunk])
        x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
        logits = model(x)
        top = logits.argmax(1)
        (grads,) = torch.autograd.grad(logits.gather(1, top[:, None]).sum(), captured["a"])
        with torch.no_grad():
            acts = captured["a"]
            cam = torch.relu((grads.mean((2, 3), keepdim=True) * acts).sum(1, keepdim=True))
            cam = F.interpolate(cam, size=x.shape[2:], mode="bilinear", align_corners=False)[:, 0]
            lo = cam.amin((1, 2), keepdim=True)
            hi = cam.amax((1, 2), keepdim=True)
            maps = ((cam - lo) / (hi - lo).clamp_min(1e-12)).numpy()
        for j, r in enumerate(chunk):
            y, xx = np.unravel_index(int(maps[j].argmax()), maps[j].shape)
            hits.append(int(r["y0"]) <= y < int(r["y1"]) and int(r["x0"]) <= xx < int(r["x1"]))
            save_png(out / f"{r['id']}.png", overlay(images[j], maps[j]))
    return len(hits)


def traced(cls: type, path: str) -> type:
    """``cls`` (the engines' batch worker) that appends each batch's wall and CPU times to
    ``path``: the steady-state rate of the workers, without start-up and merge."""

    class Traced(cls):  # type: ignore[misc, valid-type]
        def __call__(self, batch: object) -> object:
            wall, cpu = time.time(), time.process_time()
            rows = super().__call__(batch)
            with open(path, "a") as handle:
                handle.write(json.dumps([os.getpid(), wall, time.time(),
                                         time.process_time() - cpu, batch.num_rows]) + "\n")
            return rows

    return Traced


def steady_state(path: Path) -> dict[str, float]:
    """Images/s from the first batch's start to the last batch's end, and CPU s per image.

    Also ``busy_rate``: images/s while every worker was at work, from the last worker's
    first batch to the first worker's last batch (images of the batches that straddle either
    end counted by the share of their time inside): the rate without the workers' staggered
    start-up and the tail where some have nothing left.
    """
    records = [json.loads(line) for line in path.read_text().splitlines()]
    first, last = min(r[1] for r in records), max(r[2] for r in records)
    window = last - first
    images = sum(r[4] for r in records)
    pids = {r[0] for r in records}
    start = max(min(r[1] for r in records if r[0] == p) for p in pids)
    end = min(max(r[2] for r in records if r[0] == p) for p in pids)
    busy = 0.0
    for _, a, b, _, n in records:
        inside = min(b, end) - max(a, start)
        if inside > 0:
            busy += n * inside / (b - a)
    return {"steady_rate": images / window, "cpu_per_image": sum(r[3] for r in records) / images,
            "workers": len(pids), "first": first, "last": last,
            "busy_rate": busy / (end - start) if end > start else 0.0,
            "busy_seconds": max(0.0, end - start)}


def child(kind: str, manifest: Path, out: Path, size: int) -> dict[str, object]:
    """One timed run of one variant in this (fresh) process; peak memory of the process."""
    # Libraries load before the clock in every variant (torch; and pyarrow, which imports
    # pandas on first use, for the engines): imports are set-up, not throughput.
    import pyarrow as pa
    import torch  # noqa: F401

    from interp_core.audit import audit, engine_local

    pa.array([0])  # pyarrow's lazy pandas import happens here, not in the timed run
    from interp_core.datasets.demo import demo_model

    demo_model("torch")  # adapter and weights loaded once, as a warm process has them
    trace = out / "batches.jsonl"
    init = 0.0
    if kind == "ray-cluster":  # join the cluster RAY_ADDRESS names
        from interp_core.audit import engine_ray

        engine_ray.run_ray = functools.partial(
            engine_ray.run_ray, worker_class=traced(engine_ray.RayBatchWorker, str(trace)))
    elif kind == "ray":
        import logging

        import ray

        from interp_core.audit import engine_ray

        engine_ray.run_ray = functools.partial(
            engine_ray.run_ray, worker_class=traced(engine_ray.RayBatchWorker, str(trace)))
        t = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING,
                 log_to_driver=False)
        init = time.perf_counter() - t
    elif kind == "local":
        engine_local.run_local = functools.partial(
            engine_local.run_local, worker_class=traced(engine_local.BatchWorker, str(trace)))
    start, cpu = time.perf_counter(), time.process_time()
    if kind == "hand":
        images = hand_loop(manifest, out / "run")
    else:
        result = audit("demo:torch", manifest, out / "run", threads=1, size=size,
                       engine="local" if kind == "local" else "ray",
                       workers=2 if kind == "ray" else None, progress=False)
        images = result.images
        if kind == "ray-cluster" and trace.exists():
            first = min(json.loads(line)[1] for line in trace.read_text().splitlines())
            init += first - (time.time() - (time.perf_counter() - start))
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB (Linux)
    found = {"seconds": seconds, "cpu": cpu, "images": images, "ray_init": init,
             "peak_mb": peak}
    return {**found, **(steady_state(trace) if trace.exists() else {})}


def run_child(kind: str, manifest: Path, out: Path, size: int,
              env_extra: dict[str, str] | None = None) -> dict[str, object]:
    env = {**os.environ, **dict.fromkeys(THREAD_VARS, "1"), "TF_CPP_MIN_LOG_LEVEL": "2",
           **(env_extra or {})}
    shutil.rmtree(out, ignore_errors=True)
    (out / "run").mkdir(parents=True)
    os.sync()  # the previous run's files are flushed before this one's clock starts
    proc = subprocess.run(
        [sys.executable, __file__, "--child", kind, str(manifest), str(out), str(size)],
        env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{kind} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


class CPUSampler:
    """CPU seconds used by a cluster's processes (Ray's own and the workers), sampled from
    ``/proc`` every ``every`` seconds while a run goes on (the last sample of a process that
    ends is kept), in all and within a time window (:meth:`by_name`)."""

    def __init__(self, cluster: object, every: float = 0.25) -> None:
        import threading

        self.cluster = cluster
        self.every = every
        self.series: dict[int, list[tuple[float, float]]] = {}
        self.names: dict[int, str] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.tick = os.sysconf("SC_CLK_TCK")

    def _run(self) -> None:
        while not self.stop.is_set():
            now = time.time()
            for pid in self.cluster.processes():  # type: ignore[attr-defined]
                try:
                    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                cpu = (int(fields[11]) + int(fields[12])) / self.tick
                self.series.setdefault(pid, []).append((now, cpu))
                name = self.names.get(pid, "")
                if not name.startswith("ray::") or name == "ray::IDLE":  # retitled later
                    with contextlib.suppress(OSError):
                        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                        words = [w.decode() for w in cmd if w][:3]
                        name = next((w for w in words if w.startswith("ray::")), None) or next(
                            (Path(w).name for w in words if w.endswith(".py")),
                            Path(words[0]).name if words else "?")
                        self.names[pid] = name.split("(")[0].split(" ")[0][:40]
            self.stop.wait(self.every)

    def __enter__(self) -> CPUSampler:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()

    @property
    def seconds(self) -> float:
        return sum(points[-1][1] for points in self.series.values())

    def used(self, start: float | None = None, end: float | None = None) -> dict[int, float]:
        """CPU seconds of each process between wall-clock times ``start`` and ``end`` (the
        samples at or before each; None: the whole run)."""

        def at(points: list[tuple[float, float]], when: float | None) -> float:
            if when is None:
                return points[-1][1]
            before = [c for t, c in points if t <= when]
            return before[-1] if before else 0.0  # not started yet

        return {pid: at(points, end) - (0.0 if start is None else at(points, start))
                for pid, points in self.series.items()}

    def by_name(self, top: int = 6, start: float | None = None, end: float | None = None
                ) -> str:
        """The largest CPU users, by process name (in a window, if given)."""
        totals: dict[str, float] = {}
        counts: dict[str, int] = {}
        for pid, cpu in self.used(start, end).items():
            name = self.names.get(pid, "?")
            totals[name] = totals.get(name, 0.0) + cpu
            counts[name] = counts.get(name, 0) + 1
        ranked = sorted(totals.items(), key=lambda kv: -kv[1])[:top]
        return ", ".join(f"{name} {cpu:.1f} s ({counts[name]})" for name, cpu in ranked)


def cluster_mode(n: int, size: int) -> None:
    """Images/s per CPU: local, Ray on one node, Ray on two nodes (see the docstring)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.ray_cluster import LocalCluster

    root = Path(tempfile.mkdtemp(prefix="interp-audit-cluster-"))
    try:
        t = time.perf_counter()
        manifest = make_many(root, n, size)
        print(f"{n} shapes PNGs {size}x{size} written in {time.perf_counter() - t:.1f} s; "
              f"Grad-CAM block3 + pointing game + overlays, batch {BATCH}, 1 thread per "
              f"process/actor; cores: {os.cpu_count()}; load average before: "
              f"{os.getloadavg()[0]:.1f}")
        rates: dict[str, float] = {}
        busy: dict[str, float] = {}
        local = run_child("local", manifest, root / "out-local", size)
        rates["local"] = local["steady_rate"]
        print(f"  local, 1 CPU:        {local['steady_rate']:6.1f} images/s/CPU steady "
              f"({n / local['seconds']:6.1f} images/s end to end, {local['seconds']:.1f} s); "
              f"{1 / local['cpu_per_image']:6.1f} images per CPU-second in the worker; "
              f"{n / local['cpu']:6.1f} images per CPU-second in all")
        for label, workers in (("Ray, 1 node", 0), ("Ray, 2 nodes", 1)):
            cpus = 1 + workers
            with LocalCluster(workers=workers, cpus=1) as cluster, CPUSampler(cluster) as used:
                found = run_child("ray-cluster", manifest, root / f"out-{cpus}", size,
                                  env_extra=cluster.env)
            everything = found["cpu"] + used.seconds  # the driver's, and the cluster's
            window = found["last"] - found["first"]
            in_window = sum(used.used(found["first"], found["last"]).values())
            rates[label] = found["steady_rate"] / cpus
            busy[label] = found["busy_rate"] / cpus
            print(f"  {label + ',':<13} {cpus} CPU: {rates[label]:6.1f} images/s/CPU steady "
                  f"({found['steady_rate']:6.1f} images/s, {found['workers']} actors; "
                  f"{n / found['seconds']:6.1f} images/s end to end, {found['seconds']:.1f} s)"
                  f"; {1 / found['cpu_per_image']:6.1f} images per CPU-second in the workers"
                  f", {n / everything:6.1f} in all (driver {found['cpu']:.1f} s, cluster "
                  f"{used.seconds:.1f} s of CPU, start-up included)"
                  f"; start-up: nodes {cluster.start_seconds:.1f} s, audit call to first "
                  f"batch {found['ray_init']:.1f} s\n      all {found['workers']} actors "
                  f"at work: {found['busy_rate'] / cpus:6.1f} images/s/CPU over "
                  f"{found['busy_seconds']:.1f} s of the {found['last'] - found['first']:.1f} s"
                  f"\n      cluster CPU by process, whole run: {used.by_name()}"
                  f"\n      ... in the steady state ({window:.1f} s, {cpus} CPUs: "
                  f"{cpus * window:.1f} CPU-s; cluster {in_window:.1f} s): "
                  f"{used.by_name(8, found['first'], found['last'])}")
        for label in ("Ray, 1 node", "Ray, 2 nodes"):
            print(f"{label} / local, steady images/s/CPU: {rates[label] / rates['local']:.2f} "
                  f"(goal >= 0.8); all actors at work: {busy[label] / rates['local']:.2f}")
        print(f"load average after: {os.getloadavg()[0]:.1f}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--size", type=int, default=64, help="image side in pixels")
    parser.add_argument("--big", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=2,
                        help="processes per variant, run in turn (the fastest is kept)")
    parser.add_argument("--skip-ray", action="store_true")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--cluster", action="store_true",
                        help="cluster mode: local vs Ray on one and two nodes")
    parser.add_argument("--cluster-images", type=int, default=20000)
    parser.add_argument("--child", nargs=4, metavar=("KIND", "MANIFEST", "OUT", "SIZE"))
    args = parser.parse_args()
    if args.child:
        kind, manifest, out, size = args.child
        print(json.dumps(child(kind, Path(manifest), Path(out), int(size))))
        return
    if args.cluster:
        cluster_mode(args.cluster_images, args.size)
        return

    root = Path(tempfile.mkdtemp(prefix="interp-audit-bench-"))
    try:
        small, big = make_data(root, args.images, max(1, args.big // args.images), args.size)
        print(f"{args.images} shapes images {args.size}x{args.size}, Grad-CAM block3 + "
              f"pointing game, batch {BATCH}, 1 thread per process/actor; "
              f"cores: {os.cpu_count()}; load average before: {os.getloadavg()[0]:.1f}")
        kinds = ("hand", "local") + (() if args.skip_ray else ("ray",))
        found: dict[str, list[dict[str, object]]] = {k: [] for k in kinds}
        for _ in range(args.repeats):  # kinds take turns, so machine noise hits them alike
            for kind in kinds:
                found[kind].append(run_child(kind, small, root / f"out-{kind}", args.size))
        best = {k: min(v, key=lambda r: r["seconds"]) for k, v in found.items()}
        steady = {k: max(r.get("steady_rate", 0.0) for r in v) for k, v in found.items()}
        n = args.images
        for kind in kinds:
            r = best[kind]
            extra = f"; {1000 * r['cpu'] / n:.2f} ms CPU/image in the process"
            if kind != "hand":
                extra += (f"; batches alone {steady[kind]:6.1f} images/s, "
                          f"{1000 * r['cpu_per_image']:.2f} ms CPU/image in the workers")
            print(f"  {kind:<6} {n / r['seconds']:6.1f} images/s ({r['seconds']:6.2f} s){extra}")
        cpu = {k: min(r["cpu"] for r in v) for k, v in found.items()}
        print(f"local engine / hand loop: {best['hand']['seconds'] / best['local']['seconds']:.2f}"
              f" wall clock, {cpu['hand'] / cpu['local']:.2f} in CPU time of the process "
              "(both single-threaded; load-independent) (target >= 0.85)")
        if not args.skip_ray:
            ray = best["ray"]
            print(f"ray 2 actors x 1 thread / local 1 thread: "
                  f"{best['local']['seconds'] / ray['seconds']:.2f} end to end, Ray running "
                  f"(+ {ray['ray_init']:.1f} s to start Ray); "
                  f"{steady['ray'] / steady['local']:.2f} batches alone (target >= 1.6)")
        if not args.skip_memory:
            engines = ["local"] + ([] if args.skip_ray else ["ray"])
            for engine in engines:
                a = run_child(engine, small, root / f"mem-{engine}-small", args.size)
                b = run_child(engine, big, root / f"mem-{engine}-big", args.size)
                print(f"driver peak memory, {engine}: {a['images']} rows {a['peak_mb']:.0f} MiB,"
                      f" {b['images']} rows {b['peak_mb']:.0f} MiB: "
                      f"{b['peak_mb'] / a['peak_mb']:.2f}x (target < 1.2)")
        print(f"load average after: {os.getloadavg()[0]:.1f}")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
