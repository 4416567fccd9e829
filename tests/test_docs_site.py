"""The built documentation site and the ``interp demo`` gallery, opened in a real browser.

Serves ``build/site`` (``make docs`` builds it) and a fresh ``interp demo`` gallery from
127.0.0.1 and opens every page in headless Chromium (Debian's package, driven by Playwright
through ``executable_path``; no browser is downloaded). Each page must load without console
errors, page errors or failed requests, request nothing from another host, and every ``<img>``
must have a non-zero natural size. Screenshots of the home page and the gallery are written to
``build/screenshots/`` and copied into ``docs/images/`` (``site_home.png``, ``gallery.png``)
when they differ from the ones there.

Run by ``make docs`` (``INTERP_TEST_DOCS=1 pytest -m docs tests/test_docs_site.py``); with that
variable set, a missing site, browser or Playwright is a failure. Elsewhere the tests skip.
``INTERP_DOCS_SITE`` and ``INTERP_CHROMIUM`` override the site folder and the browser binary.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlparse

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

SITE = Path(os.environ.get("INTERP_DOCS_SITE", ROOT / "build" / "site"))


if not REQUIRED:
    pytest.skip("the docs site test runs with make docs (INTERP_TEST_DOCS=1)",
                allow_module_level=True)


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@functools.cache
def _serve(folder: str) -> str:
    """Serve ``folder`` on 127.0.0.1 (a daemon thread for the session); returns its URL."""
    handler = functools.partial(_QuietHandler, directory=folder)
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}/"


def _pages(folder: Path) -> list[str]:
    """Every HTML page of a built site, as paths relative to its root (``404.html`` aside)."""
    pages = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.html"))
    return [p for p in pages if p != "404.html"]


@pytest.fixture(scope="module")
def site_url() -> str:
    if not (SITE / "index.html").is_file():
        unavailable(f"no built site in {SITE}: run make docs (mkdocs build --strict)")
    return _serve(str(SITE))


@pytest.fixture(scope="module")
def gallery_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    out = tmp_path_factory.mktemp("gallery")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    subprocess.run([sys.executable, "-m", "interp_core.cli", "demo", "--backend", "torch",
                    "--out", str(out), "--overwrite"], check=True, capture_output=True, env=env,
                   timeout=300)
    assert (out / "index.html").is_file()
    return _serve(str(out))


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    yield from launched_chromium()


class _Tab:
    """One browser page that collects the problems of whatever it opens.

    Requests to any host but ``local`` are aborted and reported: the site and the gallery
    must work offline.
    """

    def __init__(self, browser: object, local: str) -> None:
        self.problems: list[str] = []
        self.context = browser.new_context(viewport=VIEWPORT)  # type: ignore[attr-defined]
        self.context.route("**/*", self._route)
        self.page = self.context.new_page()
        self.local = local
        self.page.on("console", lambda m: self.problems.append(f"console {m.type}: {m.text}")
                     if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        self.page.on("requestfailed", self._failed)

    def _failed(self, request: object) -> None:
        # ERR_ABORTED: the browser cancelled the request because the next page was opened
        # (a favicon still loading); a missing file is a 404, reported on the console.
        url, failure = request.url, request.failure  # type: ignore[attr-defined]
        if urlparse(url).hostname == self.local and "ERR_ABORTED" not in str(failure):
            self.problems.append(f"failed request: {url} ({failure})")

    def _route(self, route: object) -> None:
        url = route.request.url  # type: ignore[attr-defined]
        if url.startswith("data:") or urlparse(url).hostname == self.local:
            route.continue_()  # type: ignore[attr-defined]
        else:
            self.problems.append(f"request to another host: {url}")
            route.abort()  # type: ignore[attr-defined]

    def open(self, url: str) -> list[str]:
        """Load ``url`` and check its images; returns the problems found on it."""
        self.problems = []
        response = self.page.goto(url, wait_until="load")
        if response is None or not response.ok:
            self.problems.append(f"HTTP {None if response is None else response.status}")
        self.page.wait_for_function("Array.from(document.images).every(i => i.complete)",
                                    timeout=15_000)
        images = self.page.evaluate(
            "Array.from(document.images).map(i => [i.getAttribute('src'), i.naturalWidth,"
            " i.naturalHeight])")
        self.problems += [f"image {src!r} has natural size {w}x{h}" for src, w, h in images
                          if not (w > 0 and h > 0)]
        return self.problems

    def count(self, selector: str) -> int:
        return int(self.page.evaluate(f"document.querySelectorAll({selector!r}).length"))

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def tab(browser: object) -> Iterator[_Tab]:
    opened = _Tab(browser, "127.0.0.1")
    yield opened
    opened.close()


def test_every_site_page_loads_cleanly(site_url: str, tab: _Tab) -> None:
    pages = _pages(SITE)
    assert len(pages) >= 20, f"only {len(pages)} pages in {SITE}"
    failures = {}
    images = 0
    for rel in pages:
        problems = tab.open(site_url + rel)
        images += tab.count("img")
        if rel == "index.html":
            keep_screenshot(tab.page, "site_home.png")
        if problems:
            failures[rel] = problems
    assert not failures, "\n".join(f"{rel}: {p}" for rel, ps in failures.items() for p in ps)
    assert images >= 20, f"only {images} images on the whole site"


def test_tutorial_pages_show_their_outputs(site_url: str, tab: _Tab) -> None:
    """The executed tutorials are on the site, with their outputs and pictures."""
    tutorials = [p for p in _pages(SITE) if p.startswith("tutorials/") and p.count("/") == 2]
    assert len(tutorials) >= 5, tutorials
    pictures = 0
    for rel in tutorials:
        assert not tab.open(site_url + rel), rel
        outputs = tab.count(".output")
        assert outputs >= 1, f"{rel} shows no cell output"
        pictures += tab.count("img[src*='_files/figure_']")
    assert pictures >= 10, f"the tutorials show {pictures} pictures"


def test_demo_gallery_loads_cleanly(gallery_url: str, tab: _Tab) -> None:
    problems = tab.open(gallery_url + "index.html")
    assert not problems, problems
    assert tab.count("img") >= 8 * 2, f"the gallery shows {tab.count('img')} images"
    keep_screenshot(tab.page, "gallery.png")
