"""``interp view`` on a million rows: first page, filter plus sort, counts, deep page, memory.

Writes a ``results.parquet`` of ``--rows`` (1,000,000) rows with the audit schema
(:func:`interp_core.audit.results.result_schema`) as ``interp audit`` writes it (windows of
1,024 rows, so row groups of 1,024; the run's settings in the metadata): 10 classes, 8 groups
(2% without one), ~85% correct, ~5% without a box (pointing game and energy in box null),
8x8 maps. Then starts ``interp view DIR --no-browser --port 0`` in a subprocess on 127.0.0.1
and times requests over HTTP, each on a fresh connection, in this order (the first of each is
cold: nothing cached by the server):

1. first page: ``/api/info`` + ``/api/rows`` (default order, 60 rows), what the grid asks first;
2. filter + sort: ``/api/rows?group=g3&correct=false&sort=energy_in_box&order=desc``;
3. count by group: ``/api/facets`` (counts of every categorical column) and
   ``/api/overview`` (per class and group statistics);
4. deep page: ``/api/rows?offset=990000``, and the same sorted by ``energy_in_box``;
5. the server's peak memory (``VmHWM`` of its process, read before it is stopped);
6. ``interp view DIR DIR-b`` (the same file twice): ``/api/compare``, first page and a
   filter plus sort, and that server's peak memory.

Goals on a 2-core machine: first page < 0.5 s, filter plus sort < 1 s, memory < 500 MB.

    python benchmarks/view.py [--rows 1000000] [--keep DIR] [--repeats 3] [--no-compare]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
GOALS = {"first page": 0.5, "filter + sort": 1.0, "peak memory (MB)": 500.0}
CLASSES = [f"class_{i}" for i in range(10)]
GROUPS = [f"g{i}" for i in range(8)]
WINDOW = 1024  # rows per write: the row groups interp audit's merge writes


def write_results(path: Path, rows: int, seed: int = 0) -> float:
    """A results.parquet of ``rows`` generated rows; returns its size in MB."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from interp_core.audit.results import CONFIG_KEY, result_schema

    rng = np.random.default_rng(seed)
    config = {"method": "gradcam", "layer": "layer4", "model": "resnet50.pt2",
              "classes": CLASSES, "map_size": 8}
    schema = result_schema().with_metadata({**result_schema().metadata,
                                            CONFIG_KEY: json.dumps(config).encode()})
    map_h = map_w = 8
    with pq.ParquetWriter(path, schema) as writer:
        for start in range(0, rows, 64 * WINDOW):
            n = min(64 * WINDOW, rows - start)
            index = np.arange(start, start + n, dtype=np.int64)
            label = rng.integers(0, 10, n).astype(np.int32)
            correct = rng.random(n) < 0.85
            prediction = np.where(correct, label, (label + rng.integers(1, 10, n)) % 10
                                  ).astype(np.int32)
            score = (rng.normal(6, 2, n) + 3 * correct).astype(np.float32)
            group = rng.integers(0, 8, n)
            group_names = np.array(GROUPS, dtype=object)[group]
            group_names[rng.random(n) < 0.02] = None
            has_box = rng.random(n) >= 0.05
            x0 = rng.uniform(0, 150, n).astype(np.float32)
            y0 = rng.uniform(0, 150, n).astype(np.float32)
            x1 = x0 + rng.uniform(20, 74, n).astype(np.float32)
            y1 = y0 + rng.uniform(20, 74, n).astype(np.float32)
            energy = np.clip(rng.beta(2 + group * 0.1, 2, n), 0, 1).astype(np.float32)
            hit = rng.random(n) < energy
            maps = rng.random((n, map_h, map_w)).astype("<f2")
            names = [f"img{i:07d}" for i in index]
            labels = np.array(CLASSES, dtype=object)[label]
            table = pa.table({
                "id": [f"imgs/{c}/{m}.png" for c, m in zip(labels, names, strict=True)],
                "index": index,
                "path": [f"/data/imgs/{c}/{m}.png" for c, m in zip(labels, names, strict=True)],
                "label": labels, "label_index": label, "group": group_names,
                "width": np.full(n, 224, np.int32), "height": np.full(n, 224, np.int32),
                "prediction": prediction, "prediction_score": score, "correct": correct,
                "target": prediction, "score": score,
                "layer": np.full(n, "layer4", dtype=object),
                "map": [m.tobytes() for m in maps],
                "map_height": np.full(n, map_h, np.int32),
                "map_width": np.full(n, map_w, np.int32),
                "overlay": [f"overlays/{m}.png" for m in names],
                "box_x0": pa.array(x0, mask=~has_box), "box_y0": pa.array(y0, mask=~has_box),
                "box_x1": pa.array(x1, mask=~has_box), "box_y1": pa.array(y1, mask=~has_box),
                "mask": pa.nulls(n, pa.string()),
                "pointing_game": pa.array(hit, mask=~has_box),
                "energy_in_box": pa.array(energy, mask=~has_box),
                "deletion_auc": pa.nulls(n, pa.float32()),
                "insertion_auc": pa.nulls(n, pa.float32()),
                "average_drop": pa.nulls(n, pa.float32()),
                "map_array": pa.nulls(n, pa.string()),
            }).cast(schema)
            for w in range(0, n, WINDOW):
                writer.write_table(table.slice(w, WINDOW))
    return path.stat().st_size / 1e6


def get(url: str, path: str) -> tuple[float, dict]:
    """Seconds for one GET on a fresh connection, and the JSON answer."""
    parts = urlsplit(url)
    start = time.perf_counter()
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=120)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read()
    finally:
        conn.close()
    seconds = time.perf_counter() - start
    if response.status != 200:
        raise RuntimeError(f"{path}: {response.status} {body[:200]!r}")
    is_json = response.getheader("content-type", "").startswith("application/json")
    return seconds, json.loads(body) if is_json else {}


def stop(proc: subprocess.Popen[str]) -> None:
    """Ctrl-C the server and wait for it."""
    proc.send_signal(signal.SIGINT)
    try:
        proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()


def peak_mb(pid: int) -> float:
    """Peak resident memory (VmHWM) of process ``pid`` in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=3, help="warm repeats per request")
    parser.add_argument("--no-compare", dest="compare", action="store_false",
                        help="skip the comparison of two million-row audits")
    parser.add_argument("--keep", default=None,
                        help="folder for the generated audit (kept; reused when it exists)")
    args = parser.parse_args()

    folder = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="view-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    results = folder / "results.parquet"
    if not results.exists():
        start = time.perf_counter()
        size = write_results(results, args.rows)
        print(f"wrote {results} ({args.rows:,} rows, {size:.0f} MB) in "
              f"{time.perf_counter() - start:.1f} s")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), os.environ.get("PYTHONPATH", "")])}
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "interp_core.cli", "view", str(folder),
                             "--no-browser", "--port", "0"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    measured: list[tuple[str, float, float | None, str]] = []
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        if " at " not in line:
            raise RuntimeError(f"interp view did not start: {line}{proc.stderr.read()}")
        url = line.split(" at ")[1].split()[0]
        startup = time.perf_counter() - started
        measured.append(("start-up (process to address printed)", startup, None, ""))

        t_info, info = get(url, "/api/info")
        t_rows, page = get(url, "/api/rows")
        assert info["sources"][0]["rows"] == args.rows and len(page["rows"]) == 60
        measured.append(("first page", t_info + t_rows, GOALS["first page"],
                         f"info {t_info:.3f} + rows {t_rows:.3f}"))

        def timed(label: str, path: str, goal: float | None = None) -> dict:
            cold, answer = get(url, path)
            warm = [get(url, path)[0] for _ in range(args.repeats)]
            note = f"warm median {statistics.median(warm):.3f} s" if warm else ""
            measured.append((label, cold, goal, note))
            return answer

        answer = timed("filter + sort", "/api/rows?group=g3&correct=false&sort=energy_in_box"
                       "&order=desc", GOALS["filter + sort"])
        total = answer["total"]
        timed("count by group (/api/facets)", "/api/facets")
        timed("overview (/api/overview)", "/api/overview")
        timed("deep page (offset 990000)", f"/api/rows?offset={max(0, args.rows - 10_000)}")
        timed("deep page sorted by energy_in_box",
              f"/api/rows?offset={max(0, args.rows - 10_000)}&sort=energy_in_box&order=desc")
        timed("search by id (q=img0999)", "/api/rows?q=img0999")
        timed("one row (/api/row)", f"/api/row?id={page['rows'][5]['id']}")
        timed("map of one row (/api/map.png)", f"/api/map.png?id={page['rows'][5]['id']}")
        memory = peak_mb(proc.pid)
        measured.append(("peak memory (MB)", memory, GOALS["peak memory (MB)"], "VmHWM"))
    finally:
        stop(proc)
    if args.compare:
        # the same file under a second folder (a hard link, else a copy): the join of two
        # million-row audits on id, every id in both
        other = folder.parent / f"{folder.name}-b"
        other.mkdir(exist_ok=True)
        if not (other / "results.parquet").exists():
            try:
                os.link(results, other / "results.parquet")
            except OSError:
                shutil.copy(results, other / "results.parquet")
        proc = subprocess.Popen([sys.executable, "-m", "interp_core.cli", "view", str(folder),
                                 str(other), "--no-browser", "--port", "0"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=env)
        try:
            line = proc.stdout.readline() if proc.stdout else ""
            url = line.split(" at ")[1].split()[0]
            timed("compare: first page (joins the ids)", "/api/compare")
            timed("compare: group=g3 sorted by energy", "/api/compare?group=g3"
                  "&sort=energy_in_box&order=desc")
            measured.append(("compare: peak memory (MB)", peak_mb(proc.pid), None, "VmHWM"))
        finally:
            stop(proc)
            if not args.keep:
                shutil.rmtree(other, ignore_errors=True)
    if not args.keep:
        shutil.rmtree(folder, ignore_errors=True)

    print(f"\ninterp view on {args.rows:,} rows (filter + sort keeps {total:,}); "
          f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}")
    print(f"{'measure':40s} {'value':>9s} {'goal':>7s} {'ratio':>6s}  note")
    for label, value, goal, note in measured:
        unit = "" if "MB" in label else " s"
        goal_text = "" if goal is None else f"{goal:g}{unit}"
        ratio = "" if goal is None else f"{value / goal:.2f}"
        print(f"{label:40s} {value:7.3f}{unit or '  '} {goal_text:>7s} {ratio:>6s}  {note}")
    missed = [label for label, value, goal, _ in measured if goal is not None and value > goal]
    print("all goals met" if not missed else f"missed: {', '.join(missed)}")
    return 0 if not missed else 1


if __name__ == "__main__":
    sys.exit(main())
