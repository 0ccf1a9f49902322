"""The system's chromium, driven by Playwright, for tests of pages as a browser shows them.

Never a downloaded browser: the path comes from ``require_program("chromium")``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import TYPE_CHECKING, TypeVar

from tests.conftest import require_program

if TYPE_CHECKING:
    from playwright.sync_api import Browser

T = TypeVar("T")

ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


@contextmanager
def chromium() -> Iterator[Browser]:
    path = require_program("chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=path, args=ARGS)
        try:
            yield browser
        finally:
            browser.close()


def off_the_browser_loop(work: Callable[[], T]) -> T:
    """``work()`` on another thread: Playwright's sync API keeps an event loop running on this
    one, where the command line could not start its own."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(work).result()
