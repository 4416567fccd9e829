"""``interp view``: the server's endpoints against values computed here from the files.

The app runs in uvicorn on 127.0.0.1 with a free port, in a thread, stopped by the fixtures.
Every answer is checked against pyarrow / NumPy over ``results.parquet`` (or the jsonl and
log.json files) and against ``interp_core.audit.stats``; traversal attempts go out as raw
request lines (``http.client``), so no client normalises them first.
"""

from __future__ import annotations

import hashlib
import http.client
import io
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote, urlencode, urlsplit

import numpy as np
import pytest

from tests.conftest import require_framework

pytest.importorskip("duckdb", reason="interp view needs duckdb (interp-core[view])")
pytest.importorskip("starlette", reason="interp view needs starlette (interp-core[view])")
pytest.importorskip("uvicorn", reason="interp view needs uvicorn (interp-core[view])")
pq = pytest.importorskip("pyarrow.parquet", reason="the audit fixtures need pyarrow")
require_framework("torch", "torch")

from PIL import Image  # noqa: E402

from interp_core.audit.results import decode_map  # noqa: E402
from interp_core.audit.stats import mean_interval, wilson  # noqa: E402
from interp_core.view import BackgroundServer, ViewError, is_loopback  # noqa: E402
from interp_core.view.folders import detect, detect_all  # noqa: E402
from tests.view_fixtures import (  # noqa: E402
    CLASS_NAMES,
    NASTY_CLASS,
    NASTY_FILE,
    NASTY_GROUP,
    NASTY_ID,
    make_compare,
    make_explain,
    make_training_log,
)

ROOT = Path(__file__).resolve().parent.parent


# -- fixtures ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("view")
    a, b = make_compare(root / "cmp")
    outside = root / "secret.txt"
    outside.write_text("not to be served")
    os.symlink(outside, a / "link_out.txt")
    os.symlink(a / "report.html", a / "link_in.html")
    return {"a": a, "b": b, "explain": make_explain(root / "explain"),
            "training": make_training_log(root / "training"), "root": root}


class Client:
    """GETs to a running server; raw paths go out as written."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host, self.port = parts.hostname, parts.port

    def raw(self, path: str, headers: dict[str, str] | None = None
            ) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        try:
            conn.putrequest("GET", path, skip_host=bool(headers and "Host" in headers),
                            skip_accept_encoding=True)
            for k, v in (headers or {}).items():
                conn.putheader(k, v)
            conn.endheaders()
            response = conn.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            conn.close()

    def json(self, path: str, status: int = 200, **params: object) -> dict:
        query = urlencode(params, doseq=True)
        code, headers, body = self.raw(path + ("?" + query if query else ""))
        assert code == status, (path, params, code, body[:300])
        assert headers["content-type"].startswith("application/json")
        return json.loads(body)


@pytest.fixture(scope="module")
def audit_server(folders):
    with BackgroundServer([folders["a"]]) as url:
        yield Client(url)


@pytest.fixture(scope="module")
def compare_server(folders):
    with BackgroundServer([folders["a"], folders["b"]]) as url:
        yield Client(url)


def table_rows(folder: Path) -> list[dict]:
    return pq.read_table(folder / "results.parquet").to_pylist()


def no_map(row: dict) -> dict:
    return {k: v for k, v in row.items() if k != "map"}


# -- info, rows, facets --------------------------------------------------------------------
def test_info_describes_the_audit(audit_server, folders):
    info = audit_server.json("/api/info")
    assert info["kind"] == "audit" and info["views"] == ["overview", "grid"]
    (source,) = info["sources"]
    assert source["rows"] == 60 and source["method"] == "gradcam"
    assert source["layer"] == "block3" and source["model"] == "demo:torch"
    assert source["classes"] == list(CLASS_NAMES) and source["kind"] == "audit"
    assert source["path"] == str(folders["a"].resolve())
    types = {c["name"]: c["type"] for c in info["columns"]}
    assert "map" not in types
    assert types["energy_in_box"] == "number" and types["correct"] == "bool"
    assert types["id"] == "text" and types["index"] == "number"


def expected_order(rows: list[dict], column: str, descending: bool) -> list[str]:
    """Ids sorted as the contract says: by the column, nulls last, ties by index."""
    valued = [r for r in rows if r[column] is not None and not (
        isinstance(r[column], float) and math.isnan(r[column]))]
    nulls = [r for r in rows if r not in valued]
    valued.sort(key=lambda r: (r[column], r["index"]), reverse=descending)
    nulls.sort(key=lambda r: r["index"], reverse=descending)
    return [r["id"] for r in valued + nulls]


FILTER_CASES = [
    ({}, lambda r: True),
    ({"group": [NASTY_GROUP]}, lambda r: r["group"] == NASTY_GROUP),
    ({"group": ["north", "east"], "correct": "true"},
     lambda r: r["group"] in ("north", "east") and r["correct"] is True),
    ({"label": [NASTY_CLASS, "circle"]}, lambda r: r["label"] in (NASTY_CLASS, "circle")),
    ({"pointing": "miss"}, lambda r: r["pointing_game"] is False),
    ({"pointing": "hit", "energy_min": "0.3", "energy_max": "0.7"},
     lambda r: r["pointing_game"] is True and r["energy_in_box"] is not None
     and 0.3 <= r["energy_in_box"] <= 0.7),
    ({"score_min": "6", "prediction": ["3", "circle"]},
     lambda r: r["prediction_score"] >= 6 and r["prediction"] in (3, 0)),
    ({"q": "PHOTO ÉTÉ"}, lambda r: "photo été" in r["id"].lower()),
    ({"q": "«Ünïcödé»"}, lambda r: r["id"] == NASTY_ID),
    ({"group": ["' OR 1=1 --"]}, lambda r: False),
]


@pytest.mark.parametrize("params,keep", FILTER_CASES)
def test_filters_and_sorts_match_the_table(audit_server, folders, params, keep):
    rows = table_rows(folders["a"])
    kept = [r for r in rows if keep(r)]
    for sort, order in (("index", "asc"), ("energy_in_box", "desc"),
                        ("prediction_score", "asc"), ("id", "desc")):
        page = audit_server.json("/api/rows", **params, sort=sort, order=order, limit=500)
        assert page["total"] == len(kept) and page["offset"] == 0
        assert [r["id"] for r in page["rows"]] == expected_order(kept, sort, order == "desc")
    by_id = {r["id"]: no_map(r) for r in rows}
    for got in page["rows"]:
        want = by_id[got["id"]]
        assert {k: got[k] for k in want} == pytest.approx(want)
        assert got["thumb"] == "/files/" + quote(want["overlay"])
        assert got["display_prediction"] == CLASS_NAMES[want["prediction"]]
        assert "map" not in got


def test_paging_walks_every_row_once(audit_server, folders):
    rows = table_rows(folders["a"])
    want = expected_order(rows, "energy_in_box", True)
    seen = []
    for offset in range(0, 60, 7):
        page = audit_server.json("/api/rows", sort="energy_in_box", order="desc",
                                 offset=offset, limit=7)
        seen += [r["id"] for r in page["rows"]]
    assert seen == want
    assert audit_server.json("/api/rows", offset=1000)["rows"] == []


@pytest.mark.parametrize("params,needle", [
    ({"sort": "map"}, "energy_in_box"),
    ({"sort": "label; DROP TABLE x"}, "one of"),
    ({"sort": "correct"}, "prediction_score"),
    ({"order": "sideways"}, "asc or desc"),
    ({"limit": "501"}, "500"),
    ({"limit": "ten"}, "integers"),
    ({"offset": "-1"}, ">= 0"),
    ({"correct": "maybe"}, "true or false"),
    ({"pointing": "yes"}, "hit or miss"),
    ({"score_min": "nan"}, "finite"),
    ({"prediction": "dog"}, "classes"),
    ({"source": "3"}, "out of range"),
])
def test_bad_parameters_get_400_with_our_message(audit_server, params, needle):
    answer = audit_server.json("/api/rows", status=400, **params)
    assert needle in answer["error"] and "Traceback" not in answer["error"]


def test_facets_count_every_value(audit_server, folders):
    rows = table_rows(folders["a"])
    facets = audit_server.json("/api/facets")
    for column in ("label", "group", "prediction", "target"):
        got = {v: n for v, n in facets[column]}
        want: dict = {}
        for r in rows:
            want[r[column]] = want.get(r[column], 0) + 1
        assert got == want
    assert NASTY_GROUP in dict(facets["group"]) and NASTY_CLASS in dict(facets["label"])
    energy = [r["energy_in_box"] for r in rows if r["energy_in_box"] is not None]
    assert facets["ranges"]["energy_in_box"] == pytest.approx([min(energy), max(energy)])
    scores = [r["prediction_score"] for r in rows]
    assert facets["ranges"]["prediction_score"] == pytest.approx([min(scores), max(scores)])


def test_null_filter_value_selects_rows_without_one(folders, tmp_path):
    rows = table_rows(folders["a"])
    with BackgroundServer([folders["a"]]) as url:
        client = Client(url)
        page = client.json("/api/rows", label=["__null__"])
        assert page["total"] == sum(r["label"] is None for r in rows) == 0
        page = client.json("/api/rows", label=["__null__", "circle"], limit=500)
        assert page["total"] == sum(r["label"] == "circle" for r in rows)


# -- overview --------------------------------------------------------------------------------
def stat(values: np.ndarray, proportion: bool) -> dict | None:
    v = values[~np.isnan(values)]
    if len(v) == 0:
        return None
    if proportion:
        p, low, high = wilson(int(v.sum()), len(v))
        return {"value": p, "low": low, "high": high, "n": len(v)}
    mean, low, high, n = mean_interval(v)
    return {"value": mean, "low": None if math.isnan(low) else low,
            "high": None if math.isnan(high) else high, "n": n}


def metric_arrays(rows: list[dict]) -> dict[str, np.ndarray]:
    def col(name):
        return np.array([np.nan if r[name] is None else float(r[name]) for r in rows])
    return {"accuracy": col("correct"), "pointing_game": col("pointing_game"),
            "energy_in_box": col("energy_in_box")}


def stats_of(rows: list[dict]) -> dict:
    arrays = metric_arrays(rows)
    return {"n": len(rows), **{m: stat(arrays[m], m != "energy_in_box") for m in arrays}}


def apart(a: dict | None, b: dict | None) -> bool:
    if a is None or b is None or None in (a["low"], b["low"]):
        return False
    return not (a["low"] <= b["value"] <= a["high"]) and not (
        b["low"] <= a["value"] <= b["high"])


def close(got: object, want: object) -> bool:
    """Nested dicts equal, floats to 1e-9."""
    if isinstance(want, dict):
        return isinstance(got, dict) and got.keys() >= want.keys() and all(
            close(got[k], v) for k, v in want.items())
    if isinstance(want, float) and isinstance(got, float):
        return math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-9)
    return got == want


def check_overview(overview: dict, rows: list[dict]) -> None:
    assert close(overview["overall"], stats_of(rows)), (overview["overall"], stats_of(rows))
    for part, key in (("by_class", "label"), ("by_group", "group")):
        keys = sorted({r[key] for r in rows}, key=lambda k: (k is None, k))
        assert [item["key"] for item in overview[part]] == keys
        for item in overview[part]:
            mine = [r for r in rows if r[key] == item["key"]]
            rest = [r for r in rows if r[key] != item["key"]]
            want, other = stats_of(mine), stats_of(rest)
            assert close(item, want), (item, want)
            assert item["flags"] == [m for m in ("accuracy", "pointing_game", "energy_in_box")
                                     if apart(want[m], other[m])]


def test_overview_equals_the_audit_statistics(audit_server, compare_server, folders):
    check_overview(audit_server.json("/api/overview"), table_rows(folders["a"]))
    overview_b = compare_server.json("/api/overview", source=1)
    rows_b = table_rows(folders["b"])
    check_overview(overview_b, rows_b)
    # the changed model gets classes wrong: accuracy varies, and some class is flagged
    assert any(item["flags"] for item in overview_b["by_class"])


def test_flag_rule_on_constructed_groups():
    from interp_core.view.queries import Aggregate, flags

    # 10 of 100 correct vs 90 of 100: apart on accuracy; same energy: not flagged
    low = Aggregate(n=100, n_correct=100, correct=10, n_energy=100, energy_sum=50.0,
                    energy_squares=30.0)
    high = Aggregate(n=100, n_correct=100, correct=90, n_energy=100, energy_sum=50.0,
                     energy_squares=30.0)
    assert flags(low, high) == ["accuracy"]
    # 5 of 10 vs 50 of 100: overlapping intervals, nothing flagged
    assert flags(Aggregate(n=10, n_correct=10, correct=5),
                 Aggregate(n=100, n_correct=100, correct=50)) == []


# -- one row, maps, images -------------------------------------------------------------------
def test_row_detail_carries_raw_text_box_and_others(compare_server, folders):
    rows = {r["id"]: r for r in table_rows(folders["a"])}
    detail = compare_server.json("/api/row", id=NASTY_ID)
    want = no_map(rows[NASTY_ID])
    assert {k: detail["row"][k] for k in want} == pytest.approx(want)
    assert detail["row"]["id"] == NASTY_ID  # raw, not escaped: the page escapes
    assert detail["box"] == [want["box_x0"], want["box_y0"], want["box_x1"], want["box_y1"]]
    assert (detail["width"], detail["height"]) == (64, 64)
    assert detail["map"] == f"/api/map.png?source=0&id={quote(NASTY_ID, safe='')}"
    assert detail["overlay"] == "/files/" + quote(want["overlay"])
    (other,) = detail["others"]
    assert other["source"] == 1 and other["method"] == "gradcam++" and other["name"] == "b"
    assert other["row"]["id"] == NASTY_ID and other["overlay"].endswith("?source=1")
    missing = compare_server.json("/api/row", status=404, id="no such id")
    assert "no such id" in missing["error"]
    assert "id= is required" in compare_server.json("/api/row", status=400)["error"]


def test_row_with_a_mask_and_without_a_box(audit_server, folders):
    rows = table_rows(folders["a"])
    masked = next(r for r in rows if r["mask"])
    detail = audit_server.json("/api/row", id=masked["id"])
    assert detail["box"] is None and detail["mask"].startswith("/api/mask.png?")
    status, headers, body = audit_server.raw(detail["mask"])
    assert status == 200 and headers["content-type"] == "image/png"
    mask = np.asarray(Image.open(io.BytesIO(body)))
    assert mask.shape == (64, 64, 4) and 0 < (mask[..., 3] > 0).sum() < 64 * 64
    bare = next(r for r in rows if not r["mask"] and r["box_x0"] is None)
    assert audit_server.json("/api/row", id=bare["id"])["box"] is None


def png(client: Client, path: str) -> np.ndarray:
    status, headers, body = client.raw(path)
    assert status == 200, body[:200]
    assert headers["content-type"] == "image/png"
    return np.asarray(Image.open(io.BytesIO(body)))


def test_map_png_is_the_stored_map(compare_server, folders):
    for source, folder in ((0, folders["a"]), (1, folders["b"])):
        row = table_rows(folder)[4]
        stored = decode_map(row["map"], row["map_height"], row["map_width"])
        url = f"/api/map.png?source={source}&id={quote(row['id'], safe='')}"
        rgba = png(compare_server, url)
        assert rgba.shape == (row["map_height"], row["map_width"], 4)
        np.testing.assert_array_equal(rgba[..., 3], np.round(np.clip(stored, 0, 1) * 255))
        assert (png(compare_server, url + "&mode=opaque")[..., 3] == 255).all()
    assert compare_server.raw("/api/map.png?id=nope")[0] == 404


def test_image_is_the_source_file_as_8_bit(audit_server, folders):
    rows = table_rows(folders["a"])
    sixteen = rows[3]  # the 16-bit grayscale file
    original = np.asarray(Image.open(sixteen["path"]))
    assert original.dtype != np.uint8
    rgb = png(audit_server, f"/api/image?id={quote(sixteen['id'], safe='')}")
    assert rgb.shape == (64, 64, 3) and rgb.dtype == np.uint8
    want = np.round(original.astype(np.float64) / 65535 * 255)
    assert np.abs(rgb[..., 0] - want).max() <= 1
    accent = next(r for r in rows if r["path"].endswith(NASTY_FILE))
    rgb = png(audit_server, f"/api/image?id={quote(accent['id'], safe='')}")
    np.testing.assert_array_equal(rgb, np.asarray(Image.open(accent["path"]).convert("RGB")))


def test_unreadable_image_is_404(folders, tmp_path):
    import shutil

    copy = tmp_path / "audit"
    shutil.copytree(folders["a"], copy, symlinks=True)
    table = pq.read_table(copy / "results.parquet")
    paths = table.column("path").to_pylist()
    paths[0] = str(tmp_path / "gone.png")
    pq.write_table(table.set_column(table.schema.get_field_index("path"), "path",
                                    __import__("pyarrow").array(paths)), copy / "results.parquet")
    with BackgroundServer([copy]) as url:
        id_ = quote(table['id'][0].as_py(), safe="")
        status, _, body = Client(url).raw(f"/api/image?id={id_}")
        assert status == 404 and b"cannot be read" in body
        # the detail names the missing file and offers the overlay instead of a broken image
        detail = json.loads(Client(url).raw(f"/api/row?id={id_}")[2])
        assert detail["image"] is None and detail["image_missing"] == paths[0]
        assert detail["overlay"] and detail["map"]
        kept_id = quote(table["id"][1].as_py(), safe="")
        kept = json.loads(Client(url).raw(f"/api/row?id={kept_id}")[2])
        assert kept["image"] and kept["image_missing"] is None


# -- files under the folder only -----------------------------------------------------------
@pytest.mark.parametrize("path", [
    "/files/../secret.txt", "/files/%2e%2e/secret.txt", "/files/%2E%2E%2Fsecret.txt",
    "/files/overlays/../../secret.txt", "/files/overlays/%2e%2e/%2e%2e/secret.txt",
    "/files//etc/passwd", "//etc/passwd", "/files/%2Fetc%2Fpasswd", "/files/link_out.txt",
    "/files/..%5csecret.txt", "/files/C:/Windows/win.ini", "/files/%00", "/files/overlays",
    "/files/", "/files/nothing.png", "/static/../results.parquet", "/static/%2e%2e/app.py",
])
def test_files_outside_the_folder_are_404(audit_server, path):
    status, _, body = audit_server.raw(path)
    assert status == 404, (path, body[:200])
    assert b"not to be served" not in body and b"root:" not in body


def test_files_inside_the_folder_are_served(audit_server, folders):
    row = table_rows(folders["a"])[0]
    status, headers, body = audit_server.raw("/files/" + quote(row["overlay"]))
    assert status == 200 and headers["content-type"] == "image/png"
    assert body == (folders["a"] / row["overlay"]).read_bytes()
    status, headers, body = audit_server.raw("/files/link_in.html")  # a link staying inside
    assert status == 200 and body == (folders["a"] / "report.html").read_bytes()
    # the folder's own HTML opens sandboxed: no script, no calls to the API as the page
    assert headers["content-security-policy"].startswith("sandbox;")
    assert headers["x-content-type-options"] == "nosniff"


def test_page_and_headers(audit_server):
    status, headers, body = audit_server.raw("/")
    assert body.lower().startswith(b"<!doctype html")
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in headers["content-security-policy"]
    assert audit_server.raw("/static/nothing.js")[0] == 404
    status, _, _ = audit_server.raw("/api/info", headers={"Host": "evil.example"})
    assert status == 400  # DNS rebinding: only loopback names are answered
    assert audit_server.raw("/api/nothing")[0] == 404


# -- read-only ---------------------------------------------------------------------------------
def snapshot(*folders: Path) -> dict[str, tuple[str, int]]:
    out = {}
    for folder in folders:
        for path in sorted(folder.rglob("*")):
            if path.is_file() and not path.is_symlink():
                out[str(path)] = (hashlib.sha256(path.read_bytes()).hexdigest(),
                                  path.stat().st_mtime_ns)
            else:
                out[str(path)] = ("", 0)
    return out


def test_nothing_under_the_folders_changes(folders):
    watched = [folders["a"], folders["b"], folders["a"].parent / "images", folders["explain"],
               folders["training"]]
    before = snapshot(*watched)
    cwd = os.getcwd()
    os.chdir(folders["a"])  # DuckDB must not write .tmp/ or a .wal into the current folder
    try:
        for paths in ([folders["a"], folders["b"]], [folders["explain"]], [folders["training"]]):
            server = BackgroundServer(paths)
            with server as url:
                client = Client(url)
                info = client.json("/api/info")
                if info["kind"] == "training":
                    client.json("/api/training")
                    continue
                client.json("/api/facets")
                client.json("/api/overview")
                page = client.json("/api/rows", sort="score", order="desc", limit=500)
                for row in page["rows"][:5]:
                    detail = client.json("/api/row", id=row["id"])
                    for key in ("image", "map", "overlay"):
                        if detail[key]:
                            assert client.raw(detail[key])[0] == 200
                if info["kind"] == "compare":
                    client.json("/api/compare", changed="any")
            assert not Path(server.app.state.viewer.db._tmp).exists()  # DuckDB's temp folder
    finally:
        os.chdir(cwd)
    assert snapshot(*watched) == before


# -- compare ----------------------------------------------------------------------------------
def test_compare_counts_and_changes(compare_server, folders):
    a = {r["id"]: r for r in table_rows(folders["a"])}
    b = {r["id"]: r for r in table_rows(folders["b"])}
    both = [i for i in a if i in b]
    pred = [i for i in both if a[i]["prediction"] != b[i]["prediction"]]
    point = [i for i in both if a[i]["pointing_game"] != b[i]["pointing_game"]]
    assert pred and point  # the fixture makes both kinds of change
    answer = compare_server.json("/api/compare", changed="none", limit=500)
    assert answer["counts"] == {"both": len(both), "only_a": len(set(a) - set(b)),
                                "only_b": len(set(b) - set(a)),
                                "prediction_changed": len(pred), "pointing_changed": len(point)}
    assert answer["total"] == len(both)
    assert [r["id"] for r in answer["rows"]] == sorted(both, key=lambda i: a[i]["index"])
    for item in answer["rows"]:
        i = item["id"]
        assert item["a"]["prediction"] == a[i]["prediction"]
        assert item["b"]["prediction"] == b[i]["prediction"]
        assert item["changed"] == [n for n, ids in (("prediction", pred), ("pointing", point))
                                   if i in ids]
        assert item["a"]["thumb"].startswith("/files/")
        assert item["b"]["thumb"].endswith("?source=1")
    for changed, want in (("prediction", pred), ("pointing", point),
                          ("any", sorted(set(pred) | set(point))),
                          ("unchanged", sorted(set(both) - set(pred) - set(point)))):
        answer = compare_server.json("/api/compare", changed=changed, limit=500)
        assert sorted(r["id"] for r in answer["rows"]) == sorted(want)
        assert answer["total"] == len(want)
    filtered = compare_server.json("/api/compare", group="north", changed="prediction",
                                   sort="energy_in_box", order="desc", limit=500)
    want = [i for i in pred if a[i]["group"] == "north"]
    assert filtered["total"] == len(want)
    assert [r["id"] for r in filtered["rows"]] == expected_order(
        [a[i] for i in want], "energy_in_box", True)
    assert filtered["counts"]["both"] == sum(a[i]["group"] == "north" for i in both)
    assert "changed" in compare_server.json("/api/compare", status=400, changed="x")["error"]


def test_info_of_a_comparison(compare_server):
    info = compare_server.json("/api/info")
    assert info["kind"] == "compare" and "compare" in info["views"]
    assert [s["rows"] for s in info["sources"]] == [60, 57]
    assert [s["method"] for s in info["sources"]] == ["gradcam", "gradcam++"]


# -- explain and training -------------------------------------------------------------------
def test_explain_folder(folders):
    lines = [json.loads(x) for x in
             (folders["explain"] / "results.jsonl").read_text().splitlines()]
    with BackgroundServer([folders["explain"]]) as url:
        client = Client(url)
        info = client.json("/api/info")
        assert info["kind"] == "explain" and info["sources"][0]["rows"] == len(lines)
        page = client.json("/api/rows", sort="score", order="desc", limit=500)
        assert [r["id"] for r in page["rows"]] == [
            x["file"] for x in sorted(lines, key=lambda x: -x["score"])]
        for row in page["rows"]:
            assert row["thumb"] == "/files/" + quote(Path(row["overlay"]).name)
            assert client.raw(row["thumb"])[0] == 200
        accent = client.json("/api/rows", q="été")
        assert accent["total"] == 1 and accent["rows"][0]["id"].endswith(NASTY_FILE)
        detail = client.json("/api/row", id=accent["rows"][0]["id"])
        assert png(client, detail["image"]).shape == (64, 64, 3)
        facets = client.json("/api/facets")
        targets: dict = {}
        for x in lines:
            targets[x["target"]] = targets.get(x["target"], 0) + 1
        assert dict((v, n) for v, n in facets["target"]) == targets
        overview = client.json("/api/overview")
        assert overview["overall"]["n"] == len(lines)
        assert {item["key"]: item["n"] for item in overview["by_class"]} == {
            str(k): n for k, n in targets.items()}
        assert client.json("/api/rows", status=400, group="x")["error"]


def test_training_listing(folders):
    entries = json.loads((folders["training"] / "log.json").read_text())
    with BackgroundServer([folders["training"]]) as url:
        client = Client(url)
        info = client.json("/api/info")
        assert info["kind"] == "training" and info["views"] == ["training"]
        listing = client.json("/api/training")
        assert listing["steps"] == [0, 1, 2, 3]
        assert listing["tags"] == ["gradcam/block3", "features/block2"]
        assert [s["name"] for s in listing["samples"]] == ["sample_000", "sample_001",
                                                           "sample_002"]
        for sample in listing["samples"]:
            kinds = {t["tag"]: t["kind"] for t in sample["tracks"]}
            assert kinds == {"gradcam/block3": "cam", "features/block2": "features"}
            for track in sample["tracks"]:
                for step, frame in track["frames"].items():
                    (entry,) = [e for e in entries if (e["name"], e["tag"], e["step"]) == (
                        sample["name"], track["tag"], int(step))]
                    assert frame == "/files/" + quote(entry["path"])
                    status, _, body = client.raw(frame)
                    assert status == 200
                    assert body == (folders["training"] / entry["path"]).read_bytes()
        assert "training" in client.json("/api/rows", status=400)["error"]


# -- folders -------------------------------------------------------------------------------
def test_folder_errors_name_what_was_found(folders, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ViewError, match="holds nothing; expected an audit folder"):
        detect(tmp_path / "empty")
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("x")
    (other / "pics").mkdir()
    with pytest.raises(ViewError, match=r"holds notes\.txt, pics/; expected .*results\.parquet"):
        detect(other)
    with pytest.raises(ViewError, match="does not exist"):
        detect(tmp_path / "nope")
    with pytest.raises(ViewError, match="is a file, not a folder"):
        detect(other / "notes.txt")
    assert detect(folders["a"] / "results.parquet").kind == "audit"
    with pytest.raises(ViewError, match="compare only as two audits"):
        detect_all([folders["a"], folders["explain"]])
    with pytest.raises(ViewError, match="3 folders given"):
        detect_all([folders["a"]] * 3)
    unfinished = tmp_path / "unfinished"
    (unfinished / "parts").mkdir(parents=True)
    (unfinished / "audit.json").write_text("{}")
    with pytest.raises(ViewError, match="has not finished"):
        detect(unfinished)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "results.parquet").write_bytes(b"not parquet")
    with pytest.raises(ViewError, match="not a readable Parquet file"):
        detect(broken)
    bad_log = tmp_path / "badlog"
    bad_log.mkdir()
    (bad_log / "log.json").write_text('{"tag": 1}')
    with pytest.raises(ViewError, match="not the list"):
        detect(bad_log)


def test_loopback_detection():
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert is_loopback("127.0.0.2")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.4")
    assert not is_loopback("example.com")


# -- the command line ------------------------------------------------------------------------
def test_cli_serves_until_ctrl_c(folders):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), str(ROOT / "backends" / "torch"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(
        [sys.executable, "-m", "interp_core.cli", "view", str(folders["a"]), "--no-browser",
         "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        assert line.startswith("interp view: serving audit ") and "(Ctrl-C stops)" in line
        url = line.split(" at ")[1].split()[0]
        assert url.startswith("http://127.0.0.1:")
        info = Client(url).json("/api/info")
        assert info["sources"][0]["rows"] == 60
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err  # Ctrl-C is how it ends
    assert out == "interp view: stopped\n" and err == ""


def test_cli_warns_off_loopback_and_stops_on_sigterm(folders):
    # is_loopback is made to say no, so that the warning shows while the socket stays on
    # 127.0.0.1 (tests bind nothing else)
    code = ("import sys, interp_core.view as v; v.is_loopback = lambda host: False; "
            "from interp_core.cli.command import main; sys.exit(main(sys.argv[1:]))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(ROOT), str(ROOT / "backends" / "torch"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "view", str(folders["training"]), "--no-browser",
         "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        assert "serving training" in line
        url = line.split(" at ")[1].split()[0]
        assert Client(url).json("/api/training")["steps"] == [0, 1, 2, 3]
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert "warning: --host 127.0.0.1 serves the viewed folders to every machine" in err
    assert proc.returncode == 143 and "Traceback" not in err
    assert err.endswith("interp: terminated (SIGTERM)\n")


def test_cli_errors_are_one_line(folders, tmp_path, capsys, monkeypatch):
    from interp_core.cli.command import main

    assert main(["view", str(tmp_path), "--no-browser"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("interp: error: ") and "expected an audit folder" in err
    assert main(["view", str(folders["a"]), str(folders["training"]), "--no-browser"]) == 2
    assert "compare only as two audits" in capsys.readouterr().err
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "duckdb" else real(name, *a))
    assert main(["view", str(folders["a"]), "--no-browser"]) == 2
    assert "pip install 'interp-core[view]'" in capsys.readouterr().err


def test_cli_refuses_a_bad_port(capsys):
    from interp_core.cli.command import main

    with pytest.raises(SystemExit):
        main(["view", ".", "--port", "70000"])
    assert "between 0" in capsys.readouterr().err


def test_a_port_in_use_is_our_error_and_leaves_no_database_behind(folders, monkeypatch,
                                                                  tmp_path):
    import socket
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # DuckDB's spill folder goes here
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        with pytest.raises(ViewError, match=r"cannot listen on 127\.0\.0\.1"):
            BackgroundServer([folders["a"]], port=taken.getsockname()[1])
    assert not list(tmp_path.glob("interp-view-duckdb-*"))


def test_importing_the_viewer_loads_no_extra():
    code = ("import sys, interp_core, interp_core.cli.command, interp_core.view, "
            "interp_core.view.folders; "
            "print(sorted(m for m in ('duckdb', 'starlette', 'uvicorn', 'PIL') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True)
    assert out.stdout.strip() == "[]"


def test_a_served_page_survives_concurrent_requests(audit_server):
    from concurrent.futures import ThreadPoolExecutor

    paths = ["/api/rows?sort=energy_in_box&order=desc&limit=60", "/api/overview",
             "/api/facets", "/api/rows?group=north&correct=true"] * 8
    start = time.perf_counter()
    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda p: audit_server.raw(p)[0], paths))
    assert statuses == [200] * len(paths)
    assert time.perf_counter() - start < 20


def test_an_internal_error_is_json_without_a_traceback(folders):
    server = BackgroundServer([folders["a"]])
    with server as url:
        def broken(source: int) -> dict:
            raise RuntimeError("disk on fire")

        server.app.state.viewer.db.facets = broken
        status, headers, body = Client(url).raw("/api/facets")
    assert status == 500 and headers["content-type"].startswith("application/json")
    assert json.loads(body) == {"error": "internal error: RuntimeError: disk on fire"}
