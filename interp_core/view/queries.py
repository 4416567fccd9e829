"""DuckDB over the results: filters, sorts, counts and the overview, never the table in Python.

One in-memory DuckDB database per server (:class:`Database`), with few threads and a memory
limit; every request takes its own cursor (DuckDB connections are not shared between threads,
cursors are). An audit is a view over ``read_parquet`` of its ``results.parquet``: DuckDB
reads only the columns and row groups a query needs, so the file is never loaded whole (the
``map`` column is read for one row at a time). An explain folder's few lines are a small table.

A view rather than a table loaded at start-up, measured on 1,000,000 rows (2 cores): the
view answers a filter plus sort in ~0.15 s and the server peaks at ~200 MB; a table (every
column but ``map``) answers in ~0.015 s but takes 1.1 s to load and ~250 MB more, growing
with the rows. The view meets the goals (first page < 0.5 s, filter plus sort < 1 s) with
room, and its memory stays within DuckDB's limit whatever the file's size
(``benchmarks/view.py``).

Every value from a request goes into SQL as a parameter (``?``). Column names are never
taken from a request as they are: a sort column must be one of the table's own columns
(:meth:`Table.sort_column`), and identifiers are quoted by :func:`ident`.

Pages are found in two steps: the positions (``index``) of the page's rows are sorted and
cut first (a sort over two narrow columns), then only those rows are read in full, with a
range on ``index`` that lets the Parquet reader skip the other row groups. A page deep in a
million rows so costs a sort of two columns, not of every column.

DuckDB writes nothing next to the data: the database is in memory and its temporary
directory (for sorts larger than the memory limit) is a new folder in the system's temporary
directory, removed by :meth:`Database.close`.
"""

from __future__ import annotations

import math
import shutil
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import astuple, dataclass
from typing import Any

from interp_core.audit.stats import t_half_width, wilson
from interp_core.view.folders import Source, ViewError, read_only_config

NULL = "__null__"  # a filter value meaning "no value"
MAX_LIMIT = 500
DEFAULT_LIMIT = 60
NUMERIC = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT",
           "UINTEGER", "UBIGINT", "FLOAT", "DOUBLE", "REAL", "DECIMAL")
FACET_COLUMNS = ("label", "group", "prediction", "target")
RANGE_COLUMNS = ("prediction_score", "energy_in_box", "score")
OVERVIEW_KEYS = {"by_class": "label", "by_group": "group"}


class NotFoundError(LookupError):
    """No such row (404)."""


def ident(name: str) -> str:
    """A column name quoted for SQL (names come from the table's schema, never a request)."""
    return '"' + name.replace('"', '""') + '"'


def json_value(value: Any) -> Any:
    """A value as JSON carries it: non-finite floats become null, bytes are left out."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, bytes | bytearray | memoryview):
        return None
    return value


@dataclass
class Filters:
    """The filters of ``/api/rows`` (and of side A of ``/api/compare``), parsed."""

    values: dict[str, list[str]]
    correct: bool | None = None
    pointing: bool | None = None
    score_min: float | None = None
    score_max: float | None = None
    energy_min: float | None = None
    energy_max: float | None = None
    q: str | None = None


def _bool(text: str | None, true: str, false: str, name: str) -> bool | None:
    if text in (None, ""):
        return None
    if text == true:
        return True
    if text == false:
        return False
    raise ViewError(f"{name}={text!r}: expected {true} or {false}")


def _number(text: str | None, name: str) -> float | None:
    if text in (None, ""):
        return None
    try:
        value = float(str(text))
    except ValueError:
        raise ViewError(f"{name}={text!r} is not a number") from None
    if not math.isfinite(value):
        raise ViewError(f"{name}={text!r} must be finite")
    return value


def parse_filters(params: Any) -> Filters:
    """:class:`Filters` from query parameters (a Starlette ``QueryParams`` or a dict of lists)."""
    def get_list(key: str) -> list[str]:
        if hasattr(params, "getlist"):
            return list(params.getlist(key))
        value = params.get(key, [])
        return list(value) if isinstance(value, list | tuple) else [value]

    def get(key: str) -> str | None:
        values = get_list(key)
        return values[-1] if values else None

    return Filters(
        values={key: get_list(key) for key in FACET_COLUMNS if get_list(key)},
        correct=_bool(get("correct"), "true", "false", "correct"),
        pointing=_bool(get("pointing"), "hit", "miss", "pointing"),
        score_min=_number(get("score_min"), "score_min"),
        score_max=_number(get("score_max"), "score_max"),
        energy_min=_number(get("energy_min"), "energy_min"),
        energy_max=_number(get("energy_max"), "energy_max"),
        q=get("q") or None,
    )


def _order_by(column: str, direction: str, prefix: str = "") -> str:
    """``ORDER BY`` terms: ``column`` (nulls last), then ``index`` so that pages are stable."""
    terms = f"{prefix}{ident(column)} {direction} NULLS LAST"
    if column != "index":
        terms += f", {prefix}{ident('index')} {direction}"
    return terms


class Table:
    """One source's rows as DuckDB sees them: its view name, columns and types."""

    def __init__(self, source: Source, name: str, columns: Sequence[tuple[str, str]]) -> None:
        self.source = source
        self.name = name
        self.columns = [(c, t) for c, t in columns]
        self.types = dict(self.columns)
        self.sql = ident(name)

    @property
    def kind(self) -> str:
        return self.source.kind

    def has(self, column: str) -> bool:
        return column in self.types

    def column_kind(self, column: str) -> str:
        t = self.types[column].upper()
        if t == "BOOLEAN":
            return "bool"
        if t.startswith(NUMERIC):
            return "number"
        return "text"

    @property
    def row_columns(self) -> list[str]:
        """Every column but the map bytes."""
        return [c for c, t in self.columns if t.upper() != "BLOB"]

    @property
    def sortable(self) -> list[str]:
        return [c for c in self.row_columns if self.column_kind(c) == "number" or c == "id"]

    def sort_column(self, sort: str | None) -> str:
        """``sort`` checked against the sortable columns (default ``index``)."""
        if sort in (None, ""):
            return "index"
        if sort not in self.sortable:
            raise ViewError(f"sort={sort!r} is not a column to sort by; one of: "
                            f"{', '.join(self.sortable)}")
        return str(sort)

    @property
    def score_column(self) -> str:
        return "prediction_score" if self.has("prediction_score") else "score"

    def where(self, f: Filters, alias: str = "") -> tuple[str, list[Any]]:
        """``WHERE`` clause (or ``""``) and its parameters for ``f``."""
        p = f"{alias}." if alias else ""
        clauses: list[str] = []
        params: list[Any] = []
        for column, values in f.values.items():
            if not self.has(column):
                raise ViewError(f"filter {column}= does not apply: this {self.kind} table "
                                f"has no {column} column")
            parts = []
            wanted: list[Any] = [v for v in values if v != NULL]
            if wanted:
                if self.column_kind(column) == "number":
                    wanted = [self._class_number(column, v) for v in wanted]
                parts.append(f"{p}{ident(column)} IN ({', '.join('?' * len(wanted))})")
                params.extend(wanted)
            if NULL in values:
                parts.append(f"{p}{ident(column)} IS NULL")
            clauses.append("(" + " OR ".join(parts) + ")")
        for column, value in (("correct", f.correct), ("pointing_game", f.pointing)):
            if value is not None:
                if not self.has(column):
                    raise ViewError(f"this {self.kind} table has no {column} column to "
                                    "filter on")
                clauses.append(f"{p}{ident(column)} = ?")
                params.append(value)
        for column, low, high in ((self.score_column, f.score_min, f.score_max),
                                  ("energy_in_box", f.energy_min, f.energy_max)):
            if (low is not None or high is not None) and not self.has(column):
                raise ViewError(f"this {self.kind} table has no {column} column to filter on")
            if low is not None:
                clauses.append(f"{p}{ident(column)} >= ?")
                params.append(low)
            if high is not None:
                clauses.append(f"{p}{ident(column)} <= ?")
                params.append(high)
        if f.q:
            text = [c for c in ("id", "path", "file") if self.has(c)]
            clauses.append("(" + " OR ".join(
                f"contains(lower({p}{ident(c)}), ?)" for c in text) + ")")
            params.extend([f.q.lower()] * len(text))
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", params

    def _class_number(self, column: str, value: str) -> int:
        """A number filter value: the number, or a class name of the audit."""
        try:
            return int(value)
        except ValueError:
            pass
        classes = self.source.classes or ()
        if value in classes:
            return classes.index(value)
        raise ViewError(f"{column}={value!r} is neither a class number nor one of the "
                        f"classes {list(classes)}")

    def display_prediction(self, prediction: Any) -> str | None:
        if prediction is None:
            return None
        classes = self.source.classes or ()
        if isinstance(prediction, int) and 0 <= prediction < len(classes):
            return classes[prediction]
        return str(prediction)


class Database:
    """The server's DuckDB database: one view (or table) per source.

    Parameters
    ----------
    sources : list of Source
        Audit and explain sources get a table; training logs none.
    threads : int
        DuckDB's worker threads.
    memory_limit : str
        DuckDB's memory limit (its buffers; the server's Python objects come on top).
    """

    def __init__(self, sources: Sequence[Source], threads: int = 2,
                 memory_limit: str = "300MB") -> None:
        import duckdb

        self._tmp = tempfile.mkdtemp(prefix="interp-view-duckdb-")
        self.con = duckdb.connect(":memory:", config={
            **read_only_config(), "threads": threads, "memory_limit": memory_limit,
            "temp_directory": self._tmp,
        })
        self._lock = threading.Lock()
        self._pairs_lock = threading.Lock()
        self._cache: dict[tuple[Any, ...], Any] = {}
        self.tables: dict[int, Table] = {}
        self.sources = {source.index: source for source in sources}
        for source in sources:
            name = f"source_{source.index}"
            if source.kind == "audit":
                self.con.read_parquet(str(source.data)).create_view(name)
            elif source.kind == "explain":
                self._explain_table(name, source.entries)
                source.entries = []  # the table holds them now
            else:
                continue
            columns = [(r[0], r[1]) for r in self.con.execute(
                f"DESCRIBE SELECT * FROM {ident(name)}").fetchall()]
            self.tables[source.index] = Table(source, name, columns)

    def _explain_table(self, name: str, entries: list[dict[str, Any]]) -> None:
        columns = (("id", "VARCHAR"), ("index", "BIGINT"), ("file", "VARCHAR"),
                   ("target", "INTEGER"), ("score", "DOUBLE"), ("method", "VARCHAR"),
                   ("layer", "VARCHAR"), ("backend", "VARCHAR"), ("overlay", "VARCHAR"))
        self.con.execute(f"CREATE TABLE {ident(name)} ("
                         + ", ".join(f"{ident(c)} {t}" for c, t in columns) + ")")
        if entries:  # one statement with a list per column (executemany: ~2,500 rows/s)
            self.con.execute(
                f"INSERT INTO {ident(name)} SELECT "
                + ", ".join(f"unnest(?::{t}[])" for _, t in columns),
                [[e[c] for e in entries] for c, _ in columns])

    def close(self) -> None:
        """Close the database and remove its temporary folder."""
        self.con.close()
        shutil.rmtree(self._tmp, ignore_errors=True)

    # -- helpers -------------------------------------------------------------------------
    def table(self, source: int) -> Table:
        if source not in self.tables:
            if source in self.sources:
                raise ViewError(f"source {source} is a {self.sources[source].kind} folder: it "
                                "has no table of rows (/api/training lists its images)")
            raise ViewError(f"source={source} has no table; sources with one: "
                            f"{sorted(self.tables)}")
        return self.tables[source]

    def query(self, sql: str, params: Sequence[Any] = ()
              ) -> tuple[list[str], list[tuple[Any, ...]]]:
        """Column names and rows of ``sql``, on a cursor of this request's own."""
        with self._lock:  # cursors are made one at a time; each then runs on its own
            cursor = self.con.cursor()
        try:
            result = cursor.execute(sql, list(params))
            names = [d[0] for d in result.description or []]
            return names, result.fetchall()
        finally:
            cursor.close()

    def cached(self, key: tuple[Any, ...], compute: Callable[[], Any]) -> Any:
        """``compute()`` once per ``key`` (the data never change while the server runs)."""
        with self._lock:
            if key in self._cache:
                return self._cache[key]
        value = compute()
        with self._lock:
            self._cache[key] = value
        return value

    def rows_by_index(self, table: Table, indexes: Sequence[int]) -> dict[int, dict[str, Any]]:
        """Whole rows (but the map) by position, read with a range the reader can prune on."""
        if not indexes:
            return {}
        columns = table.row_columns
        sql = (f"SELECT {', '.join(ident(c) for c in columns)} FROM {table.sql} "
               f"WHERE {ident('index')} BETWEEN ? AND ? AND {ident('index')} IN "
               f"({', '.join('?' * len(indexes))})")
        names, rows = self.query(sql, [min(indexes), max(indexes), *indexes])
        out = {}
        for row in rows:
            item = {n: json_value(v) for n, v in zip(names, row, strict=True)}
            out[int(item["index"])] = item
        return out

    # -- endpoints -----------------------------------------------------------------------
    def count(self, table: Table) -> int:
        return int(self.cached(("count", table.name), lambda: self.query(
            f"SELECT count(*) FROM {table.sql}")[1][0][0]))

    def rows(self, source: int, filters: Filters, sort: str | None = None,
             order: str | None = None, offset: int = 0,
             limit: int = DEFAULT_LIMIT) -> dict[str, Any]:
        """One page of rows (without the map) and the number of rows the filters keep."""
        table = self.table(source)
        column = table.sort_column(sort)
        direction = _direction(order)
        offset, limit = _page(offset, limit)
        where, params = table.where(filters)
        total = int(self.query(f"SELECT count(*) FROM {table.sql}{where}", params)[1][0][0])
        order_by = _order_by(column, direction)
        _, found = self.query(
            f"SELECT {ident('index')} FROM {table.sql}{where} ORDER BY {order_by} "
            "LIMIT ? OFFSET ?", [*params, limit, offset])
        indexes = [int(r[0]) for r in found]
        full = self.rows_by_index(table, indexes)
        return {"total": total, "offset": offset,
                "rows": [full[i] for i in indexes if i in full]}

    def row(self, source: int, id_: str) -> dict[str, Any]:
        """The row of ``id_`` (without the map); :class:`NotFoundError` if none."""
        table = self.table(source)
        columns = table.row_columns
        names, rows = self.query(
            f"SELECT {', '.join(ident(c) for c in columns)} FROM {table.sql} "
            f"WHERE {ident('id')} = ? LIMIT 1", [id_])
        if not rows:
            raise NotFoundError(f"no row with id {id_!r} in source {source}")
        return {n: json_value(v) for n, v in zip(names, rows[0], strict=True)}

    def map_of(self, source: int, id_: str) -> tuple[bytes, int, int]:
        """The stored map bytes and their height and width."""
        table = self.table(source)
        if not table.has("map"):
            raise NotFoundError(f"source {source} stores no maps")
        _, rows = self.query(
            f"SELECT map, map_height, map_width FROM {table.sql} WHERE {ident('id')} = ? "
            "LIMIT 1", [id_])
        if not rows or rows[0][0] is None:
            raise NotFoundError(f"no map for id {id_!r} in source {source}")
        blob, height, width = rows[0]
        return bytes(blob), int(height), int(width)

    def facets(self, source: int) -> dict[str, Any]:
        """Counts per value of the categorical columns and ranges of the numeric ones."""
        table = self.table(source)

        def compute() -> dict[str, Any]:
            out: dict[str, Any] = {}
            for column in FACET_COLUMNS:
                if table.has(column):
                    _, rows = self.query(
                        f"SELECT {ident(column)}, count(*) AS n FROM {table.sql} "
                        f"GROUP BY {ident(column)} ORDER BY n DESC, {ident(column)} NULLS LAST")
                    out[column] = [[v, int(n)] for v, n in rows]
            ranges = {}
            for column in RANGE_COLUMNS:
                if table.has(column):
                    _, rows = self.query(
                        f"SELECT min({ident(column)}), max({ident(column)}) FROM {table.sql} "
                        f"WHERE isfinite({ident(column)})")
                    low, high = rows[0]
                    ranges[column] = [json_value(low), json_value(high)]
            out["ranges"] = ranges
            return out

        result: dict[str, Any] = self.cached(("facets", source), compute)
        return result

    def overview(self, source: int) -> dict[str, Any]:
        """Accuracy, pointing game and energy in box overall, per class and per group, with
        95% intervals and the flags of :func:`flags`."""
        table = self.table(source)
        result: dict[str, Any] = self.cached(("overview", source),
                                             lambda: self._overview(table))
        return result

    def _aggregates(self, table: Table, key: str | None) -> list[tuple[Any, Aggregate]]:
        metrics = []
        if table.has("correct"):
            metrics += ["count(correct)", "sum(CAST(correct AS INTEGER))"]
        else:
            metrics += ["0", "0"]
        if table.has("pointing_game"):
            metrics += ["count(pointing_game)", "sum(CAST(pointing_game AS INTEGER))"]
        else:
            metrics += ["0", "0"]
        if table.has("energy_in_box"):
            e = "CAST(energy_in_box AS DOUBLE)"
            ok = "FILTER (WHERE isfinite(energy_in_box))"
            metrics += [f"count({e}) {ok}", f"sum({e}) {ok}", f"sum({e} * {e}) {ok}"]
        else:
            metrics += ["0", "0", "0"]
        select = ", ".join(["count(*)", *metrics])
        if key is None:
            _, rows = self.query(f"SELECT NULL, {select} FROM {table.sql}")
        else:
            _, rows = self.query(f"SELECT {ident(key)}, {select} FROM {table.sql} "
                                 f"GROUP BY {ident(key)} ORDER BY {ident(key)} NULLS LAST")
        return [(r[0], Aggregate(*(0 if v is None else v for v in r[1:]))) for r in rows]

    def _overview(self, table: Table) -> dict[str, Any]:
        if table.kind == "explain":
            _, rows = self.query(f"SELECT target, count(*) FROM {table.sql} GROUP BY target "
                                 "ORDER BY target NULLS LAST")
            empty = {"accuracy": None, "pointing_game": None, "energy_in_box": None}
            return {
                "overall": {"n": self.count(table), **empty},
                "by_class": [{"key": None if t is None else str(t), "n": int(n), **empty,
                              "flags": []} for t, n in rows],
                "by_group": [],
            }
        overall = self._aggregates(table, None)[0][1]
        out: dict[str, Any] = {"overall": overall.stats()}
        for name, key in OVERVIEW_KEYS.items():
            out[name] = [] if not table.has(key) else [
                {"key": value, **agg.stats(), "flags": flags(agg, overall - agg)}
                for value, agg in self._aggregates(table, key)]
        return out

    def _pairs(self) -> tuple[str, int]:
        """The table of ids in both audits, made once: positions in A and B and whether the
        prediction and the pointing game changed (~20 bytes an id); and its row count."""
        def compute() -> tuple[str, int]:
            a, b = self.table(0), self.table(1)
            pred = ("a.prediction IS DISTINCT FROM b.prediction" if a.has("prediction")
                    and b.has("prediction") else "FALSE")
            point = ("a.pointing_game IS DISTINCT FROM b.pointing_game"
                     if a.has("pointing_game") and b.has("pointing_game") else "FALSE")
            self.con.execute(
                f"CREATE TABLE compare_pairs AS SELECT a.{ident('index')} AS ai, "
                f"b.{ident('index')} AS bi, ({pred}) AS pc, ({point}) AS gc "
                f"FROM {a.sql} AS a JOIN {b.sql} AS b ON a.{ident('id')} = b.{ident('id')}")
            return "compare_pairs", int(self.query("SELECT count(*) FROM compare_pairs")[1][0][0])

        with self._pairs_lock:
            result: tuple[str, int] = self.cached(("pairs",), compute)
        return result

    def compare(self, filters: Filters, changed: str | None = None, sort: str | None = None,
                order: str | None = None, offset: int = 0,
                limit: int = DEFAULT_LIMIT) -> dict[str, Any]:
        """The ids of sources 0 (A) and 1 (B) side by side; see :data:`CHANGED`.

        ``counts``: ``both``, ``prediction_changed``, ``pointing_changed`` and ``only_a`` count
        the A rows the filters keep; ``only_b`` the B ids not in A (no filter).
        """
        a, b = self.table(0), self.table(1)
        kind = (changed or "none").lower()
        if kind not in CHANGED:
            raise ViewError(f"changed={changed!r}: expected one of {', '.join(CHANGED)}")
        column = a.sort_column(sort)
        direction = _direction(order)
        offset, limit = _page(offset, limit)
        pairs_table, n_pairs = self._pairs()
        where, params = a.where(filters, alias="a")
        join = f"FROM {a.sql} AS a JOIN {pairs_table} AS p ON p.ai = a.{ident('index')}"
        condition = CHANGED[kind].format(pred="p.pc", point="p.gc")
        _, counted = self.query(
            "SELECT count(*), count(*) FILTER (WHERE p.pc), count(*) FILTER (WHERE p.gc), "
            f"count(*) FILTER (WHERE {condition}) {join}{where}", params)
        both, pred_changed, point_changed, total = (int(v) for v in counted[0])
        kept_a = (self.count(a) if not where else
                  int(self.query(f"SELECT count(*) FROM {a.sql} AS a{where}", params)[1][0][0]))
        filtered = where + (f" AND ({condition})" if where else f" WHERE ({condition})")
        order_by = _order_by(column, direction, "a.")
        _, pairs = self.query(
            f"SELECT p.ai, p.bi, p.pc, p.gc {join}{filtered} ORDER BY {order_by} "
            "LIMIT ? OFFSET ?", [*params, limit, offset])
        rows_a = self.rows_by_index(a, [int(p[0]) for p in pairs])
        rows_b = self.rows_by_index(b, [int(p[1]) for p in pairs])
        rows = []
        for ia, ib, p_changed, g_changed in pairs:
            if int(ia) in rows_a and int(ib) in rows_b:
                row_a = rows_a[int(ia)]
                rows.append({"id": row_a["id"], "a": row_a, "b": rows_b[int(ib)],
                             "changed": [n for n, c in (("prediction", p_changed),
                                                        ("pointing", g_changed)) if c]})
        return {"total": total, "offset": offset, "rows": rows, "counts": {
            "both": both, "only_a": kept_a - both, "only_b": self.count(b) - n_pairs,
            "prediction_changed": pred_changed, "pointing_changed": point_changed}}


#: ``changed=`` of :meth:`Database.compare`: which ids in both audits to list.
CHANGED = {
    "none": "TRUE",  # no filter on changes: every id in both
    "all": "TRUE",
    "any": "({pred}) OR ({point})",
    "prediction": "{pred}",
    "pointing": "{point}",
    "unchanged": "NOT (({pred}) OR ({point}))",
}


def _direction(order: str | None) -> str:
    if order in (None, "", "asc"):
        return "ASC"
    if order == "desc":
        return "DESC"
    raise ViewError(f"order={order!r}: expected asc or desc")


def _page(offset: Any, limit: Any) -> tuple[int, int]:
    try:
        offset, limit = int(offset), int(limit)
    except (TypeError, ValueError):
        raise ViewError(f"offset={offset!r} and limit={limit!r} must be integers") from None
    if offset < 0:
        raise ViewError(f"offset={offset} must be >= 0")
    if not 1 <= limit <= MAX_LIMIT:
        raise ViewError(f"limit={limit} must be between 1 and {MAX_LIMIT}")
    return offset, limit


# -- statistics from aggregates ---------------------------------------------------------------
@dataclass(frozen=True)
class Aggregate:
    """Counts and sums of one set of rows, from which the overview's statistics follow."""

    n: int = 0
    n_correct: int = 0
    correct: int = 0
    n_pointing: int = 0
    hits: int = 0
    n_energy: int = 0
    energy_sum: float = 0.0
    energy_squares: float = 0.0

    def __sub__(self, other: Aggregate) -> Aggregate:
        return Aggregate(*(x - y for x, y in zip(astuple(self), astuple(other), strict=True)))

    def stats(self) -> dict[str, Any]:
        """``{"n", "accuracy", "pointing_game", "energy_in_box"}``, each a stat or None."""
        return {"n": int(self.n),
                "accuracy": proportion(int(self.correct), int(self.n_correct)),
                "pointing_game": proportion(int(self.hits), int(self.n_pointing)),
                "energy_in_box": mean_from_sums(int(self.n_energy), float(self.energy_sum),
                                                float(self.energy_squares))}


def proportion(successes: int, n: int) -> dict[str, Any] | None:
    """A Wilson 95% interval (:func:`interp_core.audit.stats.wilson`) as a stat; None if n = 0."""
    if n <= 0:
        return None
    p, low, high = wilson(successes, n)
    return {"value": p, "low": low, "high": high, "n": n}


def mean_from_sums(n: int, total: float, squares: float) -> dict[str, Any] | None:
    """The mean and Student t 95% interval from ``n``, the sum and the sum of squares: the
    interval of :func:`interp_core.audit.stats.mean_interval` without the values. None if
    n = 0; the bounds are null for n = 1."""
    if n <= 0:
        return None
    mean = total / n
    if n == 1:
        return {"value": mean, "low": None, "high": None, "n": 1}
    variance = max(0.0, (squares - total * total / n) / (n - 1))
    half = t_half_width(math.sqrt(variance), n)
    return {"value": mean, "low": mean - half, "high": mean + half, "n": n}


def _apart(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None) -> bool:
    """Whether two stats differ beyond their intervals: each value lies outside the other's
    95% interval."""
    if a is None or b is None or None in (a["low"], a["high"], b["low"], b["high"]):
        return False
    return (not a["low"] <= b["value"] <= a["high"]) and (not b["low"] <= a["value"] <= b["high"])


def flags(group: Aggregate, rest: Aggregate) -> list[str]:
    """The metrics on which a class or group differs from the rest of the rows.

    A metric is flagged when the rest's value lies outside the group's 95% interval AND the
    group's value lies outside the rest's (Wilson for accuracy and pointing game, Student t
    for energy in box; a side needs two values for a t interval). The rest is every other
    row, rows without a class or group included.
    """
    mine, theirs = group.stats(), rest.stats()
    return [m for m in ("accuracy", "pointing_game", "energy_in_box")
            if _apart(mine[m], theirs[m])]
