"""The results schema, part files written atomically, and the final merge.

Schema version 3 of ``results.parquet`` (one row per image; the file's metadata holds
``interp_audit_schema_version`` = ``"3"`` and ``interp_audit_config``, the run's settings
as JSON):

==================  ==========  ===============================================================
column              type        meaning
==================  ==========  ===============================================================
id                  string      unique id of the image (manifest ``id``, else its path)
index               int64       position in the source; rows are sorted by it
path                string      absolute path of the image file
label               string      true label as given (sub-folder or manifest), null if none
label_index         int32       class index of the label, null if none
group               string      manifest ``group``, null if none
width, height       int32       size of the original image in pixels
prediction          int32       top-1 class of the model
prediction_score    float32     the model's output for that class (logit or probability)
correct             bool        prediction == label_index; null without a label
target              int32       the class explained; -1 for target-free methods (Eigen-CAM,
                                KPCA-CAM, FEM), whose faithfulness columns are still measured
                                for the class the audit's target names
score               float32     the model's output for the target class; null for
                                target-free methods
layer               string      the layer(s) explained, comma-separated (the default's name
                                when none was given)
map                 binary      the map (in [0, 1]), float16 little-endian, row-major
map_height          int32       ``np.frombuffer(map, "<f2").reshape(map_height, map_width)``
map_width           int32
overlay             string      overlay PNG relative to the output folder; null if not written
box_x0, box_y0      float32     the box given: top-left corner in original pixels; null if none
box_x1, box_y1      float32     bottom-right corner, end-exclusive; null if none
mask                string      path of the mask image given, null if none
pointing_game       bool        the map's maximum lies on the box/mask; null without one
energy_in_box       float32     share of the map's sum on the box/mask; null without one
deletion_auc        float32     deletion AUC (lower is better); null unless asked
insertion_auc       float32     insertion AUC (higher is better); null unless asked
average_drop        float32     drop in score when the map masks the input; null unless asked
map_array           string      the full map as ``.npy`` (``maps/...``, relative to the output
                                folder) for array inputs (volumes); null for images. ``map``
                                then holds the middle slice.
==================  ==========  ===============================================================

Version history: 1 (0.1.0); 2 adds ``layer``; 3 adds ``map_array``.

Metrics are computed on the full-resolution map before it is stored at reduced size.
Images that could not be read are not rows: they are in ``errors.jsonl``.

Nothing is lost when a run dies: workers write ``parts/part-*.parquet`` (the columns above
plus ``error``, the reason an image has no result, and ``node``, the id of the Ray node that
explained it, null on the local engine) to a temporary name and rename it, so a part is
either complete or absent; :func:`finalise` merges the parts, keeps one row per id (a batch
done twice, by a retry or a resumed run, adds nothing) and writes ``results.parquet`` and
``errors.jsonl`` the same way. ``node`` stays in the parts (:func:`finalise` counts the
merged rows per node as it goes), and ``results.parquet`` keeps schema version 3.
"""

from __future__ import annotations

import json
import os
import uuid
from collections import Counter, OrderedDict
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

SCHEMA_VERSION = 3
VERSION_KEY = b"interp_audit_schema_version"
CONFIG_KEY = b"interp_audit_config"
PARTS = "parts"
TMP_PREFIX = ".tmp-"
MERGE_WINDOW = 1024  # rows per write of the final merge: memory stays flat in the row count
PART_CACHE = 4  # part files held in memory during the merge


@lru_cache(maxsize=1)
def result_schema() -> Any:
    """The pyarrow schema of ``results.parquet`` (see the module docstring)."""
    import pyarrow as pa

    f32, i32, s = pa.float32(), pa.int32(), pa.string()
    return pa.schema([
        ("id", s), ("index", pa.int64()), ("path", s), ("label", s), ("label_index", i32),
        ("group", s), ("width", i32), ("height", i32), ("prediction", i32),
        ("prediction_score", f32), ("correct", pa.bool_()), ("target", i32), ("score", f32),
        ("layer", s), ("map", pa.binary()), ("map_height", i32), ("map_width", i32), ("overlay", s),
        ("box_x0", f32), ("box_y0", f32), ("box_x1", f32), ("box_y1", f32), ("mask", s),
        ("pointing_game", pa.bool_()), ("energy_in_box", f32), ("deletion_auc", f32),
        ("insertion_auc", f32), ("average_drop", f32), ("map_array", s),
    ], metadata={VERSION_KEY: str(SCHEMA_VERSION).encode()})


@lru_cache(maxsize=1)
def part_schema() -> Any:
    """The schema of part files: the result columns plus ``error`` (null on success) and
    ``node`` (the Ray node id that explained the row; null on the local engine)."""
    import pyarrow as pa

    return result_schema().append(pa.field("error", pa.string())).append(
        pa.field("node", pa.string()))


def layers_used(results: str | os.PathLike[str]) -> tuple[str, ...]:
    """The layer names in the ``layer`` column of ``results.parquet`` (each value is a
    comma-separated list), each once, in order of first appearance."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    column = pq.read_table(results, columns=["layer"]).column("layer")
    values = pc.unique(column.drop_null()).to_pylist()
    return tuple(dict.fromkeys(name for v in values for name in str(v).split(",")))


def decode_map(blob: bytes, height: int, width: int) -> np.ndarray:
    """A stored map as float32 ``(height, width)``."""
    return np.frombuffer(blob, dtype="<f2").reshape(height, width).astype(np.float32)


def encode_maps(maps: np.ndarray) -> list[bytes]:
    """float32 ``(N, h, w)`` maps as float16 little-endian bytes, one per map."""
    half = np.ascontiguousarray(maps, dtype="<f2")
    return [m.tobytes() for m in half]


# -- parts ---------------------------------------------------------------------------------
def write_atomic_parquet(table: Any, path: Path, schema: Any | None = None) -> Path:
    """Write ``table`` to ``path`` via a temporary name in the same folder and a rename."""
    import pyarrow.parquet as pq

    tmp = path.with_name(f"{TMP_PREFIX}{uuid.uuid4().hex}-{path.name}")
    try:
        pq.write_table(table if schema is None else table.cast(schema), tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def write_part(table: Any, parts_dir: str | os.PathLike[str]) -> Path | None:
    """One part file of result rows (``part_schema()``); None when ``table`` is empty."""
    if table.num_rows == 0:
        return None
    folder = Path(parts_dir)
    folder.mkdir(parents=True, exist_ok=True)
    first = int(np.min(table.column("index").to_numpy()))
    name = f"part-{first:010d}-{uuid.uuid4().hex[:12]}.parquet"
    return write_atomic_parquet(table, folder / name, part_schema())


def part_files(parts_dir: str | os.PathLike[str]) -> list[Path]:
    """Complete part files, in name order."""
    folder = Path(parts_dir)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("part-*.parquet") if p.is_file())


def remove_stale(parts_dir: str | os.PathLike[str]) -> int:
    """Delete temporary files left by a killed run; returns how many."""
    folder = Path(parts_dir)
    stale = list(folder.glob(f"{TMP_PREFIX}*")) if folder.is_dir() else []
    for p in stale:
        p.unlink(missing_ok=True)
    return len(stale)


def finished_ids(parts_dir: str | os.PathLike[str]) -> Any:
    """The ids that have a row (result or error) in some part: a pyarrow string array."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    chunks = [pq.read_table(p, columns=["id"]).column("id") for p in part_files(parts_dir)]
    if not chunks:
        return pa.array([], type=pa.string())
    return pa.chunked_array([c for ch in chunks for c in ch.chunks], type=pa.string()
                            ).combine_chunks()


# -- the final merge -----------------------------------------------------------------------
def _merge_keys(files: Sequence[Path], wanted_ids: Any) -> Any:
    """One row per id to keep: (part, row) sorted by source index.

    Where an id has several rows (a resumed run redid a batch), a result beats an error and
    a later part beats an earlier one. Ids not in ``wanted_ids`` are dropped.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    pieces = []
    for k, path in enumerate(files):
        t = pq.read_table(path, columns=["id", "index", "error"])
        n = t.num_rows
        pieces.append(pa.table({
            "id": t.column("id"), "index": t.column("index"),
            "ok": pc.cast(pc.is_null(t.column("error")), pa.int8()),
            "part": pa.array(np.full(n, k, dtype=np.int32)),
            "row": pa.array(np.arange(n, dtype=np.int64)),
        }))
    keys = pa.concat_tables(pieces) if pieces else pa.table({
        "id": pa.array([], pa.string()), "index": pa.array([], pa.int64()),
        "ok": pa.array([], pa.int8()), "part": pa.array([], pa.int32()),
        "row": pa.array([], pa.int64())})
    if wanted_ids is not None:
        keys = keys.filter(pc.is_in(keys.column("id"), value_set=wanted_ids))
    order = pc.sort_indices(keys, sort_keys=[("id", "ascending"), ("ok", "descending"),
                                             ("part", "descending")])
    keys = keys.take(order)
    ids = keys.column("id").combine_chunks()
    if len(ids) > 1:
        first = np.ones(len(ids), dtype=bool)
        first[1:] = pc.not_equal(ids.slice(1), ids.slice(0, len(ids) - 1)).to_numpy(
            zero_copy_only=False)
        keys = keys.filter(pa.array(first))
    return keys.take(pc.sort_indices(keys, sort_keys=[("index", "ascending"),
                                                      ("id", "ascending")]))


class _PartCache:
    """The last few part files read, so windows of neighbouring rows re-read nothing."""

    def __init__(self, files: Sequence[Path], size: int = PART_CACHE) -> None:
        self.files = files
        self.size = size
        self.tables: OrderedDict[int, Any] = OrderedDict()

    def get(self, k: int) -> Any:
        import pyarrow.parquet as pq

        if k in self.tables:
            self.tables.move_to_end(k)
            return self.tables[k]
        table = pq.read_table(self.files[k], schema=part_schema())
        self.tables[k] = table
        if len(self.tables) > self.size:
            self.tables.popitem(last=False)
        return table


class Merged(NamedTuple):
    """What :func:`finalise` wrote."""

    results: int  #: rows in ``results.parquet``
    errors: int  #: lines in ``errors.jsonl``
    nodes: dict[str, int]  #: rows kept per Ray node id (most first); empty for the local engine


def finalise(out: str | os.PathLike[str], wanted_ids: Any = None,
             config: dict[str, Any] | None = None) -> Merged:
    """Merge the parts of ``out`` into ``results.parquet`` and ``errors.jsonl``.

    Memory holds the merge keys (id, index; a few dozen bytes a row) and a few parts, never
    all rows.

    Parameters
    ----------
    out : path
        The audit folder (parts in ``out/parts``).
    wanted_ids : pyarrow array, optional
        Keep only these ids (the current source); None keeps every id.
    config : dict, optional
        Run settings stored as JSON in the Parquet metadata.

    Returns
    -------
    Merged
        Result rows and error rows written, and the rows kept per Ray node (the parts'
        ``node`` column, counted in the same pass).
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    out = Path(out)
    files = part_files(out / PARTS)
    keys = _merge_keys(files, wanted_ids)
    schema = result_schema().with_metadata({
        **result_schema().metadata,
        CONFIG_KEY: json.dumps(config or {}, sort_keys=True).encode(),
    })
    names = schema.names
    results_tmp = out / f"{TMP_PREFIX}results.parquet"
    errors_tmp = out / f"{TMP_PREFIX}errors.jsonl"
    cache = _PartCache(files)
    n_ok = n_err = 0
    nodes: Counter[str] = Counter()
    part = keys.column("part").to_numpy()
    row = keys.column("row").to_numpy()
    try:
        with pq.ParquetWriter(results_tmp, schema) as writer, \
                open(errors_tmp, "w", encoding="utf-8") as errors:
            for start in range(0, keys.num_rows, MERGE_WINDOW):
                w_part, w_row = part[start:start + MERGE_WINDOW], row[start:start + MERGE_WINDOW]
                pieces, positions = [], []
                for k in np.unique(w_part):
                    at = np.flatnonzero(w_part == k)
                    pieces.append(cache.get(int(k)).take(pa.array(w_row[at])))
                    positions.append(at)
                window = pa.concat_tables(pieces).take(
                    pa.array(np.argsort(np.concatenate(positions), kind="stable")))
                failed = pc.is_valid(window.column("error"))
                good = window.filter(pc.invert(failed))
                bad = window.filter(failed)
                if good.num_rows:
                    writer.write_table(good.select(names).cast(schema))
                for item in bad.select(["id", "index", "path", "error"]).to_pylist():
                    errors.write(json.dumps(item) + "\n")
                n_ok += good.num_rows
                n_err += bad.num_rows
                for count in pc.value_counts(window.column("node").drop_null()).to_pylist():
                    nodes[count["values"]] += int(count["counts"])
        os.replace(results_tmp, out / "results.parquet")
        os.replace(errors_tmp, out / "errors.jsonl")
    finally:
        results_tmp.unlink(missing_ok=True)
        errors_tmp.unlink(missing_ok=True)
    return Merged(n_ok, n_err, dict(sorted(nodes.items(), key=lambda kv: (-kv[1], kv[0]))))


def read_config(results: str | os.PathLike[str]) -> dict[str, Any]:
    """The schema version and run settings stored in a ``results.parquet``."""
    import pyarrow.parquet as pq

    meta = pq.read_schema(results).metadata or {}
    return {
        "schema_version": int(meta.get(VERSION_KEY, b"0")),
        "config": json.loads(meta.get(CONFIG_KEY, b"{}")),
    }
