"""The report in a real browser (the system's chromium): read with JavaScript off, it shows the
cards, the timeline and the comparison; with it on, nothing in a model's answer runs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.browser import chromium, off_the_browser_loop
from tests.clirunner import invoke
from tests.test_report import run_flow

if TYPE_CHECKING:
    from playwright.sync_api import Browser


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as found:
        yield found


@pytest.fixture
def report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The report of a run whose prompt (and so whose answers) hold markup, as a file:// URL."""
    monkeypatch.chdir(tmp_path)
    run_id = off_the_browser_loop(lambda: run_flow(tmp_path))
    code, _, err = off_the_browser_loop(lambda: invoke("report", run_id, "-o", "report.html"))
    assert code == 0, err
    return (tmp_path / "report.html").as_uri()


def test_with_javascript_off_the_report_shows_its_sections(browser: Browser, report: str) -> None:
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    page.goto(report)
    assert page.locator("article.card").count() == 5
    assert page.locator("article.card.failed").count() == 1
    assert page.locator("article.card.recommended h3").inner_text().startswith("a")
    bars = page.locator("#timeline .bar")
    assert bars.count() == 5
    boxes = [bars.nth(i).bounding_box() for i in range(5)]
    assert all(box is not None and box["width"] > 0 for box in boxes)
    # The fanout's two answered reviews (second and third to start) overlap on screen.
    b, c = boxes[1], boxes[2]
    assert b is not None and c is not None
    assert b["x"] < c["x"] + c["width"] and c["x"] < b["x"] + b["width"]
    assert page.locator("#comparison .recommendation").is_visible()
    assert "Recommended: a of final" in page.locator("#comparison").inner_text()
    assert page.locator("#graph svg g.node.skipped").count() == 1
    context.close()


def test_markup_in_an_answer_shows_as_text_and_runs_nothing(browser: Browser, report: str) -> None:
    context = browser.new_context(java_script_enabled=True)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(report)
    assert page.evaluate("typeof window.pwned") == "undefined"
    assert page.locator("img").count() == 0
    first = page.locator("article.card pre.content").first.inner_text()
    assert '<script>pwned=1</script>"><img src=x onerror=pwned=2> {{ 7*7 }}' in first
    assert errors == []
    context.close()
