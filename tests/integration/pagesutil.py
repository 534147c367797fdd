"""Headless Chromium for the pages' tests and benchmark: Debian's ``chromium`` driven by
Playwright through ``executable_path`` (Playwright's own browser download does not work
offline; scripts/bootstrap installs the Debian package)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from playwright.sync_api import Browser, ConsoleMessage, Page, Request, Route, sync_playwright

from tests.integration.stackutil import REPO

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Screenshots for a person to look at (git-ignored).
SCREENSHOTS = REPO / "test-artifacts" / "screenshots"
LOCAL_HOSTS = ("127.0.0.1", "localhost")


@contextmanager
def chromium() -> Iterator[Browser]:
    """One headless browser (no sandbox: the tests may run as root)."""
    if not Path(CHROMIUM).exists():
        raise RuntimeError(f"no Chromium at {CHROMIUM}: run scripts/bootstrap (Debian chromium)")
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
        )
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class Watched:
    """A page with its console errors, uncaught exceptions and off-machine requests."""

    page: Page
    errors: list[str] = field(default_factory=list)
    external: list[str] = field(default_factory=list)


def watched_page(browser: Browser, width: int = 1400, height: int = 900) -> Watched:
    """A fresh page that records console errors and refuses (and records) every request
    leaving the machine: the pages must work offline."""
    page = browser.new_page(viewport={"width": width, "height": height})
    w = Watched(page)

    def on_console(msg: ConsoleMessage) -> None:
        if msg.type == "error":
            w.errors.append(f"console: {msg.text}")

    def on_route(route: Route, request: Request) -> None:
        host = urlsplit(request.url).hostname or ""
        if request.url.startswith("data:") or host in LOCAL_HOSTS:
            route.continue_()
        else:
            w.external.append(request.url)
            route.abort()

    page.on("console", on_console)
    page.on("pageerror", lambda e: w.errors.append(f"pageerror: {e}"))
    page.route("**/*", on_route)
    return w


def wait_ready(page: Page, timeout_ms: float = 60_000) -> None:
    """Until the page's script says it has drawn what it loaded (``slaDashboard.ready``)."""
    page.wait_for_function(
        "() => document.body.dataset.ready === 'true' && window.slaDashboard"
        " && (window.slaDashboard.ready || window.slaDashboard.errors.length > 0)",
        timeout=timeout_ms,
    )


def screenshot(page: Page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
