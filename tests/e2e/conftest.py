"""Browser tests: Playwright driving Debian's headless Chromium against a live server with a real Celery worker
and a dispatcher ticking every 0.5 s.

Skipped when /usr/bin/chromium (or Playwright) is missing, unless ECHOFLOW_REQUIRE_BROWSER=1 (CI): then they fail.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.db import connection

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
REQUIRE_BROWSER = os.environ.get("ECHOFLOW_REQUIRE_BROWSER", "") in {"1", "true", "yes"}
SCREENSHOTS = Path(settings.BASE_DIR) / "test-artifacts" / "screenshots"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}


def _missing() -> str:
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is not installed (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed"
    return ""


MISSING = _missing()
# Locally a missing browser skips; in CI (ECHOFLOW_REQUIRE_BROWSER=1) the fixture below fails instead.
needs_browser = pytest.mark.skipif(bool(MISSING) and not REQUIRE_BROWSER, reason=f"browser tests: {MISSING}")


@pytest.fixture
def dispatcher(celery_worker_thread: object) -> Iterator[list[BaseException]]:
    """dispatch_tick() every 0.5 s in a background thread, as Celery Beat would call it; yields its errors."""
    from runs.dispatcher import dispatch_tick

    stop = threading.Event()
    errors: list[BaseException] = []

    def loop() -> None:
        try:
            while not stop.is_set():
                try:
                    dispatch_tick()
                except Exception as exc:  # recorded and asserted on by the test; the loop goes on like beat would
                    errors.append(exc)
                stop.wait(0.5)
        finally:
            connection.close()

    thread = threading.Thread(target=loop, name="test-dispatcher", daemon=True)
    thread.start()
    yield errors
    stop.set()
    thread.join(timeout=10)


@pytest.fixture
def browser(dispatcher: list[BaseException]) -> Iterator[Any]:
    """Headless Chromium, started after the worker and the dispatcher and stopped before them.

    The order matters: while Playwright's event loop runs in this thread, asgiref hands Django a different
    database connection here (async context). Stopping the browser first means the worker fixture's cleanup,
    which ends every other connection, runs with the same connection the test database teardown uses.
    """
    if MISSING:
        pytest.fail(f"ECHOFLOW_REQUIRE_BROWSER=1 but {MISSING}")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def screenshot(page: Any, name: str, *, scroll_to: str = "") -> Path:
    """A screenshot for the docs: toasts (which come and go) are dismissed, ``scroll_to`` is brought to the top."""
    page.evaluate("document.querySelectorAll('#toasts .toast').forEach(t => t.remove())")
    if scroll_to:
        page.locator(scroll_to).first.evaluate("e => e.scrollIntoView({block: 'start'})")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path))
    return path
