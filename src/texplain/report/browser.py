"""Open a written report in headless Chromium (playwright) and take screenshots of its pages.

A report is a single offline HTML file whose sections are shown one at a
time; a screenshot of each section is what a reader sees. Chromium comes from
the system (Debian's ``chromium``), not from playwright's own download, so
nothing is fetched at run time. Needs the ``browser`` extra.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from texplain.errors import TexplainError
from texplain.optional import require

CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run"]
"""Headless flags for a sandbox-less machine with no network."""


def chromium_path() -> str | None:
    """The system Chromium, or None when it is not installed."""
    found = shutil.which("chromium")
    if found:
        return found
    return "/usr/bin/chromium" if os.path.isfile("/usr/bin/chromium") else None


def screenshot_sections(index: Path, out: Path, links: Sequence[str] = ()) -> list[Path]:
    """Screenshot the report's first page, then the page each nav link (a CSS selector) opens.

    Writes ``out/page-0.png``, ``out/page-1.png``, ... (full page, 1280 px
    wide) and returns their paths.
    """
    chromium = chromium_path()
    if chromium is None:
        raise TexplainError("screenshots need Chromium (apt-get install chromium chromium-driver)")
    sync_playwright = require("playwright.sync_api", "report screenshots", extra="browser").sync_playwright
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(Path(index).resolve().as_uri(), wait_until="load")
            for i, link in enumerate([None, *links]):
                if link is not None:
                    page.click(link)
                paths.append(out / f"page-{i}.png")
                page.screenshot(path=str(paths[-1]), full_page=True)
        finally:
            browser.close()
    return paths
