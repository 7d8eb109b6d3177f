"""Headless Chromium for the page tests: Debian's ``chromium`` driven by Playwright.

Playwright's own browser download needs the internet, so the tests use the system browser;
``.ci/run`` installs it (apt) when it is missing. A missing browser fails the test, never
skips it: CI must not pass without having run the browser tests.

>>> with sync_playwright() as playwright:                     # doctest: +SKIP
...     browser = launch_chromium(playwright)
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page, Playwright

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# Not RAG_*: the hermetic autouse fixture clears those before every test.
ARTIFACTS_VARIABLE = "TEST_ARTIFACTS_DIR"


def chromium_executable() -> str:
    """The system ``chromium``; fails the test with how to get it."""
    found = shutil.which("chromium")
    if found is None:
        pytest.fail(
            "the browser tests need Debian's `chromium` on PATH (Playwright's own download "
            "cannot work offline): .ci/run installs it; locally run "
            "`sudo apt-get install -y chromium`",
            pytrace=False,
        )
    return found


def launch_chromium(playwright: Playwright) -> Browser:
    return playwright.chromium.launch(executable_path=chromium_executable(), args=CHROMIUM_ARGS)


class Screenshots:
    """Saves screenshots under ``folder`` and, when ``TEST_ARTIFACTS_DIR`` names a folder,
    copies them there too (for CI to keep)."""

    def __init__(self, folder: Path, prefix: str = "") -> None:
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        extra = os.environ.get(ARTIFACTS_VARIABLE)
        self.extra = Path(extra) if extra else None
        self.prefix = prefix

    def named(self, prefix: str) -> Screenshots:
        """The same folders, file names starting with ``prefix-``."""
        other = Screenshots(self.folder, f"{prefix}-")
        other.extra = self.extra
        return other

    def take(self, page: Page, name: str, *, full_page: bool = False) -> Path:
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", self.prefix + name)
        path = self.folder / f"{safe}.png"
        page.screenshot(path=str(path), full_page=full_page)
        if self.extra is not None:
            self.extra.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, self.extra / path.name)
        return path
