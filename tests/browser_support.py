"""What the browser tests share: Debian's Chromium through Playwright, and kept screenshots.

``make docs`` sets ``INTERP_TEST_DOCS=1``: then a missing browser or Playwright fails the
run; elsewhere the tests skip. ``INTERP_CHROMIUM`` overrides the browser binary. Nothing is
downloaded: Playwright drives the system's Chromium through ``executable_path`` (never
``playwright install``).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHOTS = ROOT / "build" / "screenshots"
IMAGES = ROOT / "docs" / "images"
REQUIRED = os.environ.get("INTERP_TEST_DOCS") == "1"
VIEWPORT = {"width": 1280, "height": 800}
#: Mean absolute difference (0-255) above which a screenshot counts as changed.
CHANGED = 1.0


def unavailable(reason: str) -> None:
    """Fail under ``make docs`` (``INTERP_TEST_DOCS=1``), skip elsewhere."""
    if REQUIRED:
        pytest.fail(reason)
    pytest.skip(reason)


def chromium_path() -> str:
    """Debian's Chromium (or ``INTERP_CHROMIUM``); unavailable when there is none."""
    path = os.environ.get("INTERP_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).exists():
        unavailable(f"no Chromium at {path}: apt-get install chromium (or set INTERP_CHROMIUM)")
    return path


def launched_chromium() -> Iterator[Any]:
    """Headless Chromium for a module's tests (the body of a ``browser`` fixture)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("playwright is not installed: pip install -r requirements-docs.txt")
    with sync_playwright() as playwright:
        # --no-sandbox: Chromium's sandbox refuses to start as root (CI runs as root).
        chromium = playwright.chromium.launch(executable_path=chromium_path(),
                                              args=["--no-sandbox"])
        try:
            yield chromium
        finally:
            chromium.close()


def keep_screenshot(page: Any, name: str, **options: Any) -> Path:
    """Screenshot into build/screenshots; copied to docs/images when it changed."""
    from PIL import Image

    SHOTS.mkdir(parents=True, exist_ok=True)
    shot = SHOTS / name
    page.screenshot(path=str(shot), **options)
    kept = IMAGES / name
    new = np.asarray(Image.open(shot).convert("RGB"), dtype=np.int16)
    if kept.is_file():
        old = np.asarray(Image.open(kept).convert("RGB"), dtype=np.int16)
        if old.shape == new.shape and np.abs(old - new).mean() <= CHANGED:
            return kept
    shutil.copyfile(shot, kept)
    return kept
