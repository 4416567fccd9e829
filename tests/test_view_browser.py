"""``interp view`` in a real browser: every view opened, filtered, sorted and clicked through.

The real server (:class:`interp_core.view.BackgroundServer`: uvicorn on 127.0.0.1, a free port,
in a thread, stopped when the fixture ends) shows the folders of ``tests/view_fixtures.py``;
headless Chromium (Debian's package, driven by Playwright through ``executable_path``) opens
the page. Every check compares what the page shows (counts, texts, ``src`` attributes,
computed styles) with what the API answers for the same question. A page must load without
console errors, page errors, dialogs or failed requests, and request nothing from another
host (such requests are aborted and reported).

Screenshots (1280x800) go to ``build/screenshots/`` and are copied into ``docs/images/``
(``view_overview.png``, ``view_grid.png``, ``view_detail.png``, ``view_compare.png``,
``view_training.png``) when they differ from the ones there. The training picture shows the
Keras tutorial's own log (``build/tutorials/run/why_dog_keras/runs/circle``, written when
``make docs`` executes the tutorial) when it exists, else the fixture's log.

Run by ``make docs`` (``INTERP_TEST_DOCS=1 pytest -m docs tests/test_view_browser.py``); with
that variable set, a missing browser, Playwright or ``view`` extra is a failure. Elsewhere
the tests skip. ``INTERP_CHROMIUM`` overrides the browser binary.
"""

from __future__ import annotations

import json
import shutil
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlparse

import pytest

from tests.browser_support import (
    REQUIRED,
    ROOT,
    VIEWPORT,
    keep_screenshot,
    launched_chromium,
    unavailable,
)

pytestmark = pytest.mark.docs

TUTORIAL_LOG = ROOT / "build" / "tutorials" / "run" / "why_dog_keras" / "runs" / "circle"
TIMEOUT = 15.0


if not REQUIRED:
    pytest.skip("the interp view browser tests run with make docs (INTERP_TEST_DOCS=1)",
                allow_module_level=True)

for _module in ("duckdb", "starlette", "uvicorn", "torch"):
    try:
        __import__(_module)
    except ImportError:
        unavailable(f"{_module} is not installed: pip install -r requirements-dev.txt")

from interp_core.view import BackgroundServer  # noqa: E402
from tests.view_fixtures import NASTY_CLASS, NASTY_GROUP, NASTY_ID  # noqa: E402


# -- fixtures --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from tests.view_fixtures import make_compare, make_explain, make_training_log

    root = tmp_path_factory.mktemp("view-browser")
    a, b = make_compare(root / "cmp")
    training = (TUTORIAL_LOG if (TUTORIAL_LOG / "log.json").is_file()
                else make_training_log(root / "training", epochs=5))
    return {"a": a, "b": b, "training": training, "explain": make_explain(root / "explain")}


@pytest.fixture(scope="module")
def compare_url(folders: dict[str, Path]) -> Iterator[str]:
    server = BackgroundServer([folders["a"], folders["b"]])
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture(scope="module")
def training_url(folders: dict[str, Path]) -> Iterator[str]:
    server = BackgroundServer([folders["training"]])
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    yield from launched_chromium()


class _Tab:
    """One browser page on the viewer that collects every problem it meets.

    Requests to any host but 127.0.0.1 are aborted and reported; so are console errors,
    page errors, dialogs (an ``alert`` from injected markup would be one) and HTTP errors.
    """

    def __init__(self, browser: Any, base: str) -> None:
        self.base = base
        self.problems: list[str] = []
        self.context = browser.new_context(viewport=VIEWPORT)
        self.context.route("**/*", self._route)
        self.page = self.context.new_page()
        self.page.on("console", lambda m: self.problems.append(f"console {m.type}: {m.text}")
                     if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        self.page.on("dialog", self._dialog)
        self.page.on("response", lambda r: self.problems.append(f"HTTP {r.status}: {r.url}")
                     if r.status >= 400 else None)
        self.page.on("requestfailed", self._failed)

    def _dialog(self, dialog: Any) -> None:
        self.problems.append(f"dialog {dialog.type}: {dialog.message}")
        dialog.dismiss()

    def _failed(self, request: Any) -> None:
        # ERR_ABORTED: a lazy thumbnail the next page no longer needs.
        if "ERR_ABORTED" not in str(request.failure):
            self.problems.append(f"failed request: {request.url} ({request.failure})")

    def _route(self, route: Any) -> None:
        url = route.request.url
        if url.startswith("data:") or urlparse(url).hostname == "127.0.0.1":
            route.continue_()
        else:
            self.problems.append(f"request to another host: {url}")
            route.abort()

    # -- the app -----------------------------------------------------------------------------
    def api(self, path: str, **params: Any) -> Any:
        query = urlencode(params, doseq=True)
        with urllib.request.urlopen(f"{self.base.rstrip('/')}{path}{'?' + query if query else ''}",
                                    timeout=30) as response:
            return json.loads(response.read())

    def js(self, expression: str) -> Any:
        return self.page.evaluate(expression)

    def renders(self) -> int:
        return int(self.js("Number(document.body.dataset.renders || 0)"))

    def until(self, expression: str, what: str = "") -> Any:
        """Poll ``expression`` until it is truthy (the page's CSP forbids the string
        predicates of ``wait_for_function``, so the polling happens here)."""
        deadline = time.monotonic() + TIMEOUT
        while True:
            value = self.js(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what or expression}; "
                                     f"problems: {self.problems}")
            time.sleep(0.03)

    def settled(self, before: int) -> None:
        """Wait until a route has finished since ``before`` and its images have loaded."""
        self.until(f"Number(document.body.dataset.renders || 0) > {before} && "
                   "document.body.dataset.state === 'ready'", "the view to render")
        self.until("Array.from(document.images).filter(i => i.loading !== 'lazy' || "
                   "i.getBoundingClientRect().top < innerHeight).every(i => i.complete)",
                   "the images to load")

    def act(self, action: Any) -> None:
        """Run ``action`` (a click, a choice) and wait for the view it leads to."""
        before = self.renders()
        action()
        self.settled(before)

    def open(self, hash_: str) -> None:
        """Load the app afresh at ``hash_`` (a new document: its render count starts at 0)."""
        self.page.goto("about:blank")
        self.page.goto(self.base + hash_, wait_until="load")
        self.settled(0)

    def reload(self) -> None:
        self.page.reload(wait_until="load")
        self.settled(0)

    def texts(self, selector: str) -> list[str]:
        return list(self.js(f"Array.from(document.querySelectorAll({selector!r}))"
                            ".map(n => n.textContent)"))

    def attrs(self, selector: str, name: str) -> list[str | None]:
        return list(self.js(f"Array.from(document.querySelectorAll({selector!r}))"
                            f".map(n => n.getAttribute({name!r}))"))

    def count(self, selector: str) -> int:
        return int(self.js(f"document.querySelectorAll({selector!r}).length"))

    def clean(self) -> None:
        broken = self.js("Array.from(document.images).filter(i => i.complete && "
                         "i.getAttribute('src') && !(i.naturalWidth > 0)).map(i => i.src)")
        assert not broken, f"images that did not decode: {broken}"
        assert not self.problems, "\n".join(self.problems)

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def tab(browser: Any, compare_url: str) -> Iterator[_Tab]:
    opened = _Tab(browser, compare_url)
    try:
        yield opened
    finally:
        opened.close()


def _pager(total: int, offset: int, shown: int) -> str:
    first = offset + 1 if total else 0
    return f"rows {first:,}\N{EN DASH}{offset + shown:,} of {total:,}"


# -- the views -------------------------------------------------------------------------------
def test_overview_charts_every_class_and_group_with_flags(tab: _Tab) -> None:
    tab.open("#/overview")
    data = tab.api("/api/overview")
    assert tab.texts("#overview-n") == [str(data["overall"]["n"])]
    classes = [item["key"] for item in data["by_class"]]
    groups = [item["key"] for item in data["by_group"]]
    for section, keys in (("by_class", classes), ("by_group", groups)):
        for metric in ("accuracy", "pointing_game", "energy_in_box"):
            rows = f"#overview-{section} svg[data-metric={metric}] .chart-row"
            assert tab.attrs(rows, "data-key") == keys, (section, metric)
            # a dot per row, and an error bar (three lines) per row with an interval
            assert tab.count(f"{rows} circle") == len(keys)
            with_interval = sum(1 for item in data[section]
                                if item[metric] and item[metric]["low"] is not None)
            assert tab.count(f"{rows} line.ci") == 3 * with_interval
            flagged = [item["key"] for item in data[section] if metric in item["flags"]]
            assert tab.attrs(f"{rows}.flagged", "data-key") == flagged, (section, metric)
            assert all(t.startswith("⚑") for t in tab.texts(f"{rows}.flagged .row-label"))
    assert sum(len(item["flags"]) for item in data["by_class"] + data["by_group"]) >= 1
    assert tab.count("#flag-note") == 1
    # the nasty class and group are text in the table, never markup
    table_text = " ".join(tab.texts("#overview-by_class td a")
                          + tab.texts("#overview-by_group td a"))
    assert NASTY_CLASS in table_text and NASTY_GROUP in table_text
    assert tab.count("img[src='x'], b[onmouseover]") == 0
    keep_screenshot(tab.page, "view_overview.png")
    tab.clean()


def test_grid_filters_sort_search_paging_and_history(tab: _Tab) -> None:
    tab.open("#/grid")
    info = tab.api("/api/info")
    everything = tab.api("/api/rows", limit=60)
    assert tab.texts(".pager .range")[0] == _pager(everything["total"], 0, len(everything["rows"]))
    assert tab.attrs("#cards .card", "data-id") == [r["id"] for r in everything["rows"]]
    thumbs = tab.attrs("#cards .card img", "src")
    assert thumbs == [r["thumb"] for r in everything["rows"] if r["thumb"]]
    keep_screenshot(tab.page, "view_grid.png")

    # one filter of each kind, then a sort: what is shown is what the API answers
    tab.act(lambda: tab.page.select_option("#f-label", "circle"))
    assert "label=circle" in tab.page.url
    circles = tab.api("/api/rows", label="circle")
    assert tab.texts(".pager .range")[0] == _pager(circles["total"], 0, len(circles["rows"]))
    assert set(tab.texts("#cards .card .label")) == {"circle"}
    tab.act(lambda: tab.page.select_option("#f-pointing", "miss"))
    misses = tab.api("/api/rows", label="circle", pointing="miss")
    assert tab.attrs("#cards .card", "data-id") == [r["id"] for r in misses["rows"]]
    assert set(tab.texts("#cards .card .badge.bad")) == {"miss"}
    tab.act(lambda: tab.page.click("#reset"))
    tab.act(lambda: tab.page.select_option("#f-correct", "true"))
    tab.act(lambda: tab.page.fill("#f-energy_min", "0.5"))
    tab.act(lambda: tab.page.select_option("#f-sort", "prediction_score"))
    tab.act(lambda: tab.page.select_option("#f-order", "desc"))
    expected = tab.api("/api/rows", correct="true", energy_min="0.5", sort="prediction_score",
                       order="desc")
    assert tab.attrs("#cards .card", "data-id") == [r["id"] for r in expected["rows"]]
    assert tab.texts(".pager .range")[0] == _pager(expected["total"], 0, len(expected["rows"]))
    assert 0 < expected["total"] < everything["total"]

    # the filters live in the hash: reload and back keep them
    tab.reload()
    assert tab.page.input_value("#f-sort") == "prediction_score"
    assert tab.page.input_value("#f-energy_min") == "0.5"
    assert tab.attrs("#cards .card", "data-id") == [r["id"] for r in expected["rows"]]
    tab.act(lambda: tab.page.go_back())  # before "descending"
    ascending = tab.api("/api/rows", correct="true", energy_min="0.5", sort="prediction_score")
    assert tab.attrs("#cards .card", "data-id") == [r["id"] for r in ascending["rows"]]
    assert tab.page.input_value("#f-order") == ""

    # search by id (typed: the search waits for a pause), and every sortable column is offered
    tab.act(lambda: tab.page.click("#reset"))
    tab.act(lambda: tab.page.fill("#q", "img01"))
    found = tab.api("/api/rows", q="img01")
    assert tab.attrs("#cards .card", "data-id") == [r["id"] for r in found["rows"]]
    assert all("img01" in i for i in tab.attrs("#cards .card", "data-id"))
    numbers = {c["name"] for c in info["columns"] if c["type"] == "number"} - {"index"}
    assert numbers <= set(tab.attrs("#f-sort option", "value"))
    tab.clean()


def test_grid_pages_through_rows_server_side(tab: _Tab) -> None:
    tab.open("#/grid?sort=energy_in_box")
    total = tab.api("/api/rows")["total"]
    assert total == 60  # one full page and nothing more: the next page is empty
    second = tab.api("/api/rows", sort="energy_in_box", offset=30, limit=60)
    tab.open("#/grid?sort=energy_in_box&offset=30")
    assert tab.texts(".pager .range")[0] == _pager(total, 30, len(second["rows"]))
    assert tab.attrs("#cards .card", "data-id") == [r["id"] for r in second["rows"]]
    tab.act(lambda: tab.page.click("#prev-page"))
    assert tab.texts(".pager .range")[0] == _pager(total, 0, 60)
    assert "offset" not in tab.page.url
    tab.clean()


def test_detail_shows_image_map_box_row_and_other_source(tab: _Tab) -> None:
    tab.open("#/grid?pointing=hit&sort=energy_in_box&order=desc")
    first = tab.api("/api/rows", pointing="hit", sort="energy_in_box", order="desc")["rows"]
    at = next(i for i, r in enumerate(first) if r["box_x0"] is not None)  # a box, not a mask
    tab.act(lambda: tab.page.click(f"#cards .card >> nth={at}"))
    row = tab.api("/api/row", id=first[at]["id"])
    assert tab.texts("#detail-id") == [first[at]["id"]]
    assert tab.attrs("#detail-image", "src") == [row["image"]]
    assert tab.attrs("#detail-map", "src") == [row["map"]]
    # every column of the row, with its value
    shown = dict(zip(tab.texts("#detail-row th"), tab.texts("#detail-row td"), strict=True))
    columns = {c["name"] for c in tab.api("/api/info")["columns"]}
    assert columns <= set(shown)
    assert shown["id"] == row["row"]["id"] and shown["label"] == row["row"]["label"]
    # the box, scaled to the shown image
    x0, y0, x1, y1 = row["box"]
    left = tab.js("parseFloat(document.querySelector('#detail-box').style.left)")
    width = tab.js("parseFloat(document.querySelector('#detail-box').style.width)")
    assert left == pytest.approx(100 * x0 / row["width"], abs=1e-3)
    assert width == pytest.approx(100 * (x1 - x0) / row["width"], abs=1e-3)
    assert y1 > y0
    # the opacity slider changes the map layer's computed opacity
    opacity = "Number(getComputedStyle(document.querySelector('#detail-map')).opacity)"
    assert tab.js(opacity) == pytest.approx(0.6)
    tab.page.fill("#opacity", "15")
    assert tab.js(opacity) == pytest.approx(0.15)
    assert tab.texts("#opacity-value") == ["15%"]
    tab.page.fill("#opacity", "85")
    assert tab.js(opacity) == pytest.approx(0.85)
    # the other audit's map of the same id, side by side
    assert [o["map"] for o in row["others"]] == tab.attrs("#others .stage .map", "src")
    assert len(row["others"]) == 1
    keep_screenshot(tab.page, "view_detail.png")
    # prev / next within the filtered list
    assert tab.texts("#row-position") == [f"{at + 1} of {len(first)}"]
    tab.act(lambda: tab.page.click("#next-row"))
    assert tab.texts("#detail-id") == [first[at + 1]["id"]]
    tab.act(lambda: tab.page.keyboard.press("ArrowLeft"))
    assert tab.texts("#detail-id") == [first[at]["id"]]
    tab.act(lambda: tab.page.click("#back"))
    assert tab.count("#cards .card") == len(first)
    tab.clean()


def test_nasty_id_label_and_group_show_as_text(tab: _Tab) -> None:
    tab.open("#/grid?" + urlencode({"q": "<script>"}))
    assert tab.attrs("#cards .card", "data-id") == [NASTY_ID]
    assert tab.texts("#cards .card-id") == [NASTY_ID]
    scripts = tab.count("script")
    tab.open("#/grid?" + urlencode({"group": NASTY_GROUP}))
    assert tab.page.input_value("#f-group") == NASTY_GROUP
    nasty_rows = tab.api("/api/rows", group=NASTY_GROUP)
    assert tab.texts(".pager .range")[0] == _pager(nasty_rows["total"], 0,
                                                   len(nasty_rows["rows"]))
    tab.open(f"#/detail/0/{quote(NASTY_ID, safe='')}")
    assert tab.texts("#detail-id") == [NASTY_ID]
    shown = dict(zip(tab.texts("#detail-row th"), tab.texts("#detail-row td"), strict=True))
    assert shown["id"] == NASTY_ID
    # no element was made from the data: one script (app.js), no <img src=x>, no <b onmouseover>
    assert tab.count("script") == scripts == 1
    assert tab.count("img[src='x'], b[onmouseover], [onerror]") == 0
    tab.open("#/grid?" + urlencode({"label": NASTY_CLASS}))
    assert set(tab.attrs("#cards .card .label", "title")) == {NASTY_CLASS}
    assert all(NASTY_CLASS.startswith(t[:-1]) for t in tab.texts("#cards .card .label"))
    assert tab.count("img[src='x'], [onerror]") == 0
    tab.clean()


def test_api_error_is_shown_not_swallowed(tab: _Tab) -> None:
    tab.open("#/detail/0/no-such-id")
    message = tab.texts("#messages .message")
    assert len(message) == 1 and "no row with id 'no-such-id'" in message[0]
    tab.problems = [p for p in tab.problems if "404" not in p]  # the 404 is the point here
    tab.clean()


def test_compare_shows_changed_rows_as_the_api_does(tab: _Tab) -> None:
    tab.open("#/compare")
    for changed in ("any", "prediction", "pointing"):
        if changed != "any":
            tab.act(lambda c=changed: tab.page.select_option("#f-changed", c))
            assert f"changed={changed}" in tab.page.url
        data = tab.api("/api/compare", changed=changed, limit=60)
        assert tab.attrs("#compare-rows .compare-row", "data-id") == [r["id"] for r in data["rows"]]
        assert tab.attrs("#compare-rows .compare-row", "data-changed") == [
            " ".join(r["changed"]) for r in data["rows"]]
        assert data["total"] >= 1 and all(changed in r["changed"] for r in data["rows"]
                                          if changed != "any")
        assert tab.attrs("#compare-rows .side img", "src") == [
            r[side]["thumb"] for r in data["rows"] for side in "ab"]
        counts = dict(zip(tab.attrs("#compare-counts .stat", "data-count"),
                          tab.texts("#compare-counts .stat-value"), strict=True))
        assert {k: int(v) for k, v in counts.items()} == data["counts"]
        if changed == "any":
            assert data["counts"]["only_a"] == 3
            keep_screenshot(tab.page, "view_compare.png")
    # a filter on A narrows the pairs too
    tab.act(lambda: tab.page.select_option("#f-label", "triangle"))
    data = tab.api("/api/compare", changed="pointing", label="triangle")
    assert tab.texts(".pager .range")[0] == _pager(data["total"], 0, len(data["rows"]))
    tab.clean()


def test_training_epoch_slider_and_play(browser: Any, training_url: str) -> None:
    tab = _Tab(browser, training_url)
    try:
        tab.open("#/training")
        data = tab.api("/api/training")
        steps = data["steps"]
        assert len(steps) >= 3
        assert tab.attrs("#samples .sample", "data-sample") == [s["name"] for s in data["samples"]]
        sample = tab.page.locator("#sample-0")
        track = data["samples"][0]["tracks"][0]
        frame = f"#sample-0 img.frame[data-tag='{track['tag']}']"
        label = "#sample-0 .epoch-label"
        # the last epoch first; the slider goes back to the first
        assert tab.attrs(frame, "src") == [track["frames"][str(steps[-1])]]
        # the loggers' step is the epoch counted from 0; the page counts from 1, as Keras does
        assert tab.texts(label) == [f"epoch {steps[-1] + 1}"]
        sample.locator("input.epoch").fill("0")
        assert tab.attrs(frame, "src") == [track["frames"][str(steps[0])]]
        assert tab.texts(label) == [f"epoch {steps[0] + 1}"]
        features = [t for t in data["samples"][0]["tracks"] if t["kind"] == "features"]
        if features:
            shown = tab.attrs(f"#sample-0 img.frame[data-tag='{features[0]['tag']}']", "src")
            assert shown == [features[0]["frames"][str(steps[0])]]
        # play moves through the epochs; pause stops
        sample.locator("button.play").click()
        tab.until(f"document.querySelector({label!r}).textContent !== 'epoch {steps[0] + 1}'",
                  "play to move on")
        sample.locator("button.play").click()
        paused = tab.texts(label)
        time.sleep(1.0)
        assert tab.texts(label) == paused
        assert tab.attrs(frame, "src") == [track["frames"][str(int(paused[0].split()[-1]) - 1)]]
        # the slider of all samples
        tab.page.fill("#epoch-all", str(len(steps) - 1))
        assert set(tab.texts("#samples .epoch-label")) == {f"epoch {steps[-1] + 1}"}
        keep_screenshot(tab.page, "view_training.png")
        tab.clean()
    finally:
        tab.close()


def test_explain_folder_grid_detail_and_counts(browser: Any, folders: dict[str, Path]) -> None:
    server = BackgroundServer([folders["explain"]])
    tab = _Tab(browser, server.start())
    try:
        tab.open("#/overview")
        overview = tab.api("/api/overview")
        assert tab.texts("#overview-n") == [str(overview["overall"]["n"])]
        assert tab.count("#overview-by_class svg .bar") == len(overview["by_class"])
        tab.open("#/grid?sort=score&order=desc")
        rows = tab.api("/api/rows", sort="score", order="desc")["rows"]
        assert tab.attrs("#cards .card", "data-id") == [r["id"] for r in rows]
        assert tab.attrs("#cards .card img", "src") == [r["thumb"] for r in rows]
        tab.act(lambda: tab.page.select_option("#f-target", str(rows[0]["target"])))
        same = tab.api("/api/rows", target=rows[0]["target"], sort="score", order="desc")
        assert tab.attrs("#cards .card", "data-id") == [r["id"] for r in same["rows"]]
        tab.act(lambda: tab.page.click("#cards .card >> nth=0"))
        row = tab.api("/api/row", id=rows[0]["id"])
        assert row["map"] is None  # explain keeps no map: its overlay goes over the image
        assert tab.attrs("#detail-image", "src") == [row["image"]]
        assert tab.attrs("#detail-map", "src") == [row["overlay"]]
        tab.clean()
    finally:
        tab.close()
        server.stop()


def test_detail_without_the_original_image_shows_the_overlay(browser: Any, folders: dict[str, Path],
                                                             tmp_path: Path) -> None:
    """An audit whose images moved (or were never copied along): no broken picture."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    copy = tmp_path / "moved"
    shutil.copytree(folders["a"], copy)
    table = pq.read_table(copy / "results.parquet")
    paths = [str(tmp_path / "elsewhere" / Path(p).name) for p in table.column("path").to_pylist()]
    column = table.schema.get_field_index("path")
    pq.write_table(table.set_column(column, "path", pa.array(paths)), copy / "results.parquet")
    server = BackgroundServer([copy])
    tab = _Tab(browser, server.start())
    try:
        id_ = table.column("id")[0].as_py()
        row = tab.api("/api/row", id=id_)
        assert row["image"] is None and row["image_missing"] == paths[0]
        tab.open(f"#/detail/0/{quote(id_, safe='')}")
        assert paths[0] in tab.texts("#image-missing")[0]
        assert tab.attrs("#detail-image", "src") == [row["overlay"]]
        assert tab.js("document.querySelector('#detail-image').naturalWidth") > 0
        assert tab.count("#detail-map") == 0  # the overlay already holds the map
        tab.clean()
    finally:
        tab.close()
        server.stop()
