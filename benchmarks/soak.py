"""Long runs: does resident memory grow over many Grad-CAM explanations of one model?

For each adapter (torch, tensorflow, jax) a fresh Python process builds the bundled demo model
(:func:`interp_core.datasets.demo.demo_model`), then runs ``--warmup`` Grad-CAM explanations
followed by ``--calls`` more, each on a new batch of shapes images
(:func:`interp_core.datasets.make_shapes`, a new seed per call) with new random class targets.
Resident memory (VmRSS) is read after the warm-up and at the end, each time after
``gc.collect()``, and sampled along the way. Printed per adapter:

- ``growth/1000``: (RSS at the end - RSS after warm-up) / calls * 1000, in MB;
- ``slope/1000``: the least-squares slope of the sampled RSS against the call count, per 1,000
  calls, in MB (less sensitive to one late allocator jump than the two-point growth);
- ``calls/s``: explanations per second after warm-up (the explanation calls only, not the
  making of the images).

Each adapter runs in its own subprocess, so one framework's memory does not mix with
another's. Run::

    python benchmarks/soak.py                              # 1000 calls after 50, all adapters
    python benchmarks/soak.py --backends torch --calls 200 --warmup 30
    python benchmarks/soak.py --new-explainer              # ic.GradCAM(...) built on every call
    python benchmarks/soak.py --vary-batch --batch 8       # batch sizes 1..8 in turn
    python benchmarks/soak.py --threads 1                  # OMP_NUM_THREADS=1 (busy machine)
    python benchmarks/soak.py --json                       # one JSON list on stdout

Memory comes from ``/proc/self/status`` (Linux), else ``psutil`` if installed, else
``resource.getrusage`` (peak, not current: growth then reads as the rise of the peak).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

ADAPTERS = ("torch", "tensorflow", "jax")
#: Prefix of the worker's result line, so frameworks' own prints on stdout cannot confuse it.
RESULT_MARK = "SOAK_RESULT "
#: Adapters whose demo model takes channels-first images (N, C, H, W).
CHANNELS_FIRST = frozenset({"torch"})


@dataclass(frozen=True)
class SoakResult:
    """One adapter's long run.

    Attributes
    ----------
    backend : str
        Adapter name.
    calls, warmup, batch : int
        Explanations measured, explanations before the first reading, images per call (the
        largest, with ``--vary-batch``).
    rss_after_warmup_mb, rss_end_mb : float
        Resident memory after the warm-up and after the last call (MB, after ``gc.collect``).
    growth_per_1000_mb : float
        ``(rss_end - rss_after_warmup) / calls * 1000``.
    slope_per_1000_mb : float
        Least-squares slope of the sampled RSS per 1,000 calls.
    calls_per_s : float
        Explanations per second over the measured calls (the explanation only: making the
        images and reading memory are not counted).
    memory_source : str
        Where the RSS numbers come from.
    """

    backend: str
    calls: int
    warmup: int
    batch: int
    rss_after_warmup_mb: float
    rss_end_mb: float
    growth_per_1000_mb: float
    slope_per_1000_mb: float
    calls_per_s: float
    memory_source: str


# -- memory ----------------------------------------------------------------------------------
def resident_mb() -> tuple[float, str]:
    """Current resident memory of this process in MB, and where the number came from."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0, "/proc/self/status VmRSS"
    try:
        import psutil
    except ImportError:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        scale = 1024.0 * 1024.0 if sys.platform == "darwin" else 1024.0  # bytes on macOS
        return peak / scale, "resource ru_maxrss (peak)"
    return psutil.Process().memory_info().rss / 2**20, "psutil rss"


def settled_mb() -> tuple[float, str]:
    """:func:`resident_mb` after a full garbage collection."""
    gc.collect()
    return resident_mb()


# -- the worker (one adapter, one process) ---------------------------------------------------
def run_worker(backend: str, calls: int, warmup: int, batch: int, new_explainer: bool,
               vary_batch: bool = False, samples: int = 20) -> SoakResult:
    """Run ``warmup + calls`` Grad-CAM explanations of the demo model on ``backend``.

    With ``vary_batch`` call ``i`` explains ``1 + i % batch`` images, so compiled adapters see
    ``batch`` input shapes in turn (their compile caches must stay bounded).
    """
    import interp_core as ic
    from interp_core.datasets import make_shapes
    from interp_core.datasets.demo import CLASSES, LAYER, demo_model

    model = demo_model(backend)
    adapter = ic.get_backend(backend)
    rng = np.random.default_rng(0)
    cam = ic.GradCAM(model, LAYER, backend=backend)

    def one_call(i: int) -> float:
        """Explain a new batch; returns the seconds the explanation took."""
        n = 1 + i % batch if vary_batch else batch
        shapes = make_shapes(n, seed=i)
        images = shapes.channels_first() if backend in CHANNELS_FIRST else shapes.images
        x = adapter.from_numpy(images, model)
        targets = rng.integers(0, len(CLASSES), n).tolist()
        start = time.perf_counter()
        explainer = ic.GradCAM(model, LAYER, backend=backend) if new_explainer else cam
        maps = explainer(x, targets)
        seconds = time.perf_counter() - start
        if maps.shape != shapes.masks.shape:  # (batch, H, W)
            raise AssertionError(f"map shape {maps.shape}, expected {shapes.masks.shape}")
        return seconds

    for i in range(warmup):
        one_call(i)
    start_mb, source = settled_mb()
    every = max(1, calls // samples)
    xs, ys = [0], [start_mb]
    elapsed = 0.0
    for k in range(calls):
        elapsed += one_call(warmup + k)
        if (k + 1) % every == 0 and k + 1 < calls:
            xs.append(k + 1)
            ys.append(resident_mb()[0])
    end_mb, _ = settled_mb()
    xs.append(calls)
    ys.append(end_mb)
    slope = float(np.polyfit(np.asarray(xs, float), np.asarray(ys, float), 1)[0])
    return SoakResult(
        backend=backend, calls=calls, warmup=warmup, batch=batch,
        rss_after_warmup_mb=round(start_mb, 2), rss_end_mb=round(end_mb, 2),
        growth_per_1000_mb=round((end_mb - start_mb) / calls * 1000, 2),
        slope_per_1000_mb=round(slope * 1000, 2),
        calls_per_s=round(calls / elapsed, 1), memory_source=source,
    )


# -- the parent: one subprocess per adapter --------------------------------------------------
def soak_in_subprocess(backend: str, calls: int, warmup: int, batch: int,
                       new_explainer: bool = False, vary_batch: bool = False,
                       threads: int | None = None, timeout: float = 1800.0) -> SoakResult:
    """Run :func:`run_worker` for ``backend`` in a fresh interpreter and return its result.

    ``threads`` sets ``OMP_NUM_THREADS`` in the worker (torch's intra-op threads): on a
    machine shared with other jobs, OpenMP threads that wait on each other make torch many
    times slower; memory is not affected.

    Raises
    ------
    RuntimeError
        The worker failed or printed no result; the message holds the end of its output.
    """
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", backend,
           "--calls", str(calls), "--warmup", str(warmup), "--batch", str(batch)]
    if new_explainer:
        cmd.append("--new-explainer")
    if vary_batch:
        cmd.append("--vary-batch")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env,
                          check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_MARK)]
    if proc.returncode != 0 or not lines:
        tail = (proc.stdout + proc.stderr)[-3000:]
        raise RuntimeError(f"soak worker for {backend!r} exited {proc.returncode}:\n{tail}")
    return SoakResult(**json.loads(lines[-1][len(RESULT_MARK):]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backends", default=",".join(ADAPTERS),
                        help="comma-separated adapters (default: torch,tensorflow,jax)")
    parser.add_argument("--calls", type=int, default=1000, help="measured explanations")
    parser.add_argument("--warmup", type=int, default=50, help="explanations before measuring")
    parser.add_argument("--batch", type=int, default=4, help="images per explanation")
    parser.add_argument("--new-explainer", action="store_true",
                        help="build a new ic.GradCAM for every call (as ic.explain does)")
    parser.add_argument("--vary-batch", action="store_true",
                        help="call i explains 1 + i %% batch images (several input shapes)")
    parser.add_argument("--threads", type=int, default=None,
                        help="OMP_NUM_THREADS for the workers (default: inherited)")
    parser.add_argument("--json", action="store_true", help="print one JSON list, no table")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.calls < 1 or args.warmup < 0 or args.batch < 1:
        parser.error(f"need --calls >= 1, --warmup >= 0, --batch >= 1; got {args.calls}, "
                     f"{args.warmup}, {args.batch}")
    if args.worker:
        result = run_worker(args.worker, args.calls, args.warmup, args.batch,
                            args.new_explainer, args.vary_batch)
        print(RESULT_MARK + json.dumps(asdict(result)), flush=True)
        return 0
    names = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = sorted(set(names) - set(ADAPTERS))
    if unknown:
        parser.error(f"unknown backends {unknown}; choose from {list(ADAPTERS)}")
    results = []
    if not args.json:
        batches = f"batch 1..{args.batch} in turn" if args.vary_batch else f"batch {args.batch}"
        print(f"{args.calls} Grad-CAM calls after {args.warmup} warm-up, {batches}, "
              f"{'new' if args.new_explainer else 'one'} explainer per call")
        print(f"{'backend':<11} {'RSS warm MB':>11} {'RSS end MB':>10} {'growth/1000':>11} "
              f"{'slope/1000':>10} {'calls/s':>8}")
    for name in names:
        r = soak_in_subprocess(name, args.calls, args.warmup, args.batch, args.new_explainer,
                               args.vary_batch, args.threads)
        results.append(r)
        if not args.json:
            print(f"{r.backend:<11} {r.rss_after_warmup_mb:>11.1f} {r.rss_end_mb:>10.1f} "
                  f"{r.growth_per_1000_mb:>11.2f} {r.slope_per_1000_mb:>10.2f} "
                  f"{r.calls_per_s:>8.1f}", flush=True)
    if args.json:
        print(json.dumps([asdict(r) for r in results]))
    else:
        print(f"(memory: {results[0].memory_source}; growth and slope in MB per 1,000 calls)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
