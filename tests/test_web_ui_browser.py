"""The web UI in a real browser (the system's chromium) against a real server on 127.0.0.1
with the offline provider: run a workflow and watch it, the history, the statistics, and
markup in an answer kept as text."""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from flowengine import Workflow
from tests.browser import chromium
from tests.conftest import ROOT
from tests.serving import listening
from tests.test_report import FLOW, HOSTILE

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

#: Milliseconds a step may take before the test fails: offline runs take well under a second.
WAIT_MS = 15_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as found:
        yield found


@contextmanager
def serving(workflows: dict[str, Workflow], **options: Any) -> Iterator[str]:
    """A server on its own thread and event loop (Playwright's sync API holds this one)."""
    found: queue.Queue[str | BaseException] = queue.Queue()
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()

    async def serve() -> None:
        try:
            async with listening(workflows, **options) as (address, _):
                found.put(address)
                await stop.wait()
        except BaseException as exc:
            found.put(exc)
            raise

    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),))
    thread.start()
    address = found.get(timeout=30)
    try:
        assert isinstance(address, str), address
        yield address
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(30)
        loop.close()


@pytest.fixture(params=[None])
def server(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """A server of critique and review (whose answers echo its prompt), with a key or none."""
    (tmp_path / "flow.yaml").write_text(FLOW)
    workflows = [
        Workflow.load(ROOT / "workflows" / "critique.yaml"),
        Workflow.load(tmp_path / "flow.yaml"),
    ]
    with serving({w.name: w for w in workflows}, api_key=request.param) as address:
        yield address


@pytest.fixture
def page(browser: Browser, server: str) -> Iterator[Page]:
    context = browser.new_context(base_url=server)
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda exc: errors.append(str(exc)))
    yield opened
    context.close()
    assert errors == []


def run(page: Page, workflow: str, prompt: str) -> None:
    """Open the UI, run ``workflow`` on ``prompt``, and wait for its report."""
    page.goto("/")
    page.select_option("#workflow", workflow)
    page.fill("textarea[name=prompt]", prompt)
    page.click("#start")
    page.locator("#run-report").wait_for(state="visible", timeout=WAIT_MS)


def status(page: Page) -> str | None:
    return page.locator("#run-status").text_content()


def test_a_run_streams_its_answer_and_shows_its_cards_comparison_history_and_stats(
    page: Page,
) -> None:
    run(page, "critique", "Why?")
    assert status(page) == "succeeded"
    answer = page.locator("#answer").inner_text()
    assert answer.startswith("[offline answer from") and "Question: Why?" in answer  # streamed
    graph = page.locator("#graph-live svg.dag")
    assert graph.locator("g.node.succeeded").count() == 3
    assert graph.locator("path.edge").count() == 2
    assert graph.locator("g.node[data-node=critiques] .state").text_content() == (
        "fanout · succeeded · 5 calls"
    )

    report = page.frame_locator("#run-report")
    assert report.locator("article.card").count() == 6  # the primary answer, five critiques
    assert report.locator("article.card.recommended").count() == 1
    assert "Recommended:" in report.locator("#comparison .recommendation").inner_text()
    assert report.locator("#timeline .bar").count() == 6
    run_id = page.locator("#run-id").inner_text()

    page.click("nav a[data-page=history]")
    row = page.locator(f"#runs tr[data-run='{run_id}']")
    row.wait_for(timeout=WAIT_MS)
    cells = row.locator("td").all_text_contents()
    assert cells[1:3] == ["critique", "succeeded"] and cells[4] == "6"  # workflow, status, calls
    row.locator("a").click()
    history = page.frame_locator("#history-report")
    history.locator("#timeline .bar").first.wait_for(timeout=WAIT_MS)
    boxes = [bar.bounding_box() for bar in history.locator("#timeline .bar").all()]
    critiques = [box for box in boxes[1:] if box is not None]
    assert len(critiques) == 5
    first, second = critiques[0], critiques[1]  # three critiques at once: their bars overlap
    assert first["x"] < second["x"] + second["width"] and second["x"] < first["x"] + first["width"]

    page.click("nav a[data-page=stats]")
    page.locator("#charts figure").first.wait_for(timeout=WAIT_MS)
    captions = page.locator("#charts figcaption").all_inner_texts()
    assert captions[:4] == ["Calls", "Success rate", "Latency p50", "Latency p95"]
    calls = page.locator("#charts figure").first
    assert calls.locator("g.row").count() == 6
    assert calls.locator("g.row[data-label=gpt-oss] .value").text_content() == "1"
    assert calls.locator("g.row rect").count() == 6


def test_markup_in_an_answer_shows_as_text_and_runs_nothing(page: Page) -> None:
    run(page, "review", HOSTILE)
    assert status(page) == "partial"  # one review model is down
    assert HOSTILE in page.locator("#answer").inner_text()
    report = page.frame_locator("#run-report")
    assert HOSTILE in report.locator("article.card pre.content").first.inner_text()
    assert report.locator("img").count() == 0
    assert page.locator("img").count() == 0
    assert page.evaluate("typeof window.pwned") == "undefined"
    frame = page.frame_locator("#run-report").locator("body")
    assert frame.evaluate("() => typeof window.pwned") == "undefined"


@pytest.mark.parametrize("server", ["sesame"], indirect=True)
def test_with_an_api_key_the_page_asks_for_it_and_then_runs(page: Page) -> None:
    page.goto("/")
    page.locator("#key-form").wait_for(timeout=WAIT_MS)
    assert "no API key" in page.locator("#problem").inner_text()
    page.fill("#key", "sesame")
    page.click("#key-form button")
    page.locator("#workflow option").first.wait_for(state="attached", timeout=WAIT_MS)
    assert page.locator("#key-form").is_hidden()
    run(page, "review", "Why?")
    assert status(page) == "partial"
    assert page.frame_locator("#run-report").locator("article.card").count() == 5
