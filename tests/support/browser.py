"""Headless Chromium for the browser tests, driven by Playwright's Python package.

Playwright cannot download its own browsers on our machines, so it drives the system's
Chromium (Debian's `chromium`, which `.ci/run` installs when it is missing) through
`executable_path`. `FLOWLINE_CHROMIUM` names another binary.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
# Where each run's screenshots go (`make test` prints nothing about them; they are for people
# looking at a failure, and for refreshing docs/screenshots).
ARTIFACTS = ROOT / "test-artifacts"
DOCS_SCREENSHOTS = ROOT / "docs" / "screenshots"


def chromium_path() -> str | None:
    named = os.environ.get("FLOWLINE_CHROMIUM")
    if named:
        return named
    for candidate in CANDIDATES:
        found = shutil.which(candidate)
        if found:
            return found
    return None


def run_directory() -> Path:
    """This test run's artifacts: one folder per run, named by its start time."""
    stamp = os.environ.setdefault("FLOWLINE_TEST_RUN", time.strftime("%Y%m%d-%H%M%S"))
    path = ARTIFACTS / stamp
    path.mkdir(parents=True, exist_ok=True)
    return path


def screenshot_name(test_name: str, page_name: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{test_name}--{page_name}").strip("-")
    return f"{safe}.png"
