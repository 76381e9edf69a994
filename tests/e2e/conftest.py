"""Shared by the browser tests: Debian's chromium driven by Playwright (never a downloaded browser).

Without chromium or playwright a browser test is skipped, unless HAZARDCTL_REQUIRE_BROWSER=1 (set by
`make test`), where it fails instead.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import ROOT

CHROMIUM = os.environ.get("HAZARDCTL_CHROMIUM", "/usr/bin/chromium")
#: the flags this offline machine needs (no background networking, no component updates)
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = ROOT / "test-artifacts"


def _missing(why: str):
    if os.environ.get("HAZARDCTL_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{why} (make test installs it with scripts/install-chromium.sh)")
    pytest.skip(f"{why}: run scripts/install-chromium.sh")


@pytest.fixture(scope="module")
def browser():
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        _missing(f"no chromium at {CHROMIUM}")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing("playwright (python) is not installed")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()
