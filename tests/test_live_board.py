"""The live view's picture of a run, drawn from events with a clock the test moves."""

from __future__ import annotations

import io
import logging
from typing import Any

import pytest
from rich.console import Console

from flowengine.cli.live import render_board
from flowengine.cli.run_board import Board
from flowengine.events import Event
from flowengine.results import ErrorInfo
from flowengine.run.log import log_event


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def board_of(*nodes: str) -> tuple[Board, Clock, Any]:
    clock = Clock()
    board = Board("wf", nodes, clock=clock)

    def emit(kind: Any, **fields: Any) -> None:
        board.on_event(Event(kind, "0123456789abcdef", "wf", **fields))

    emit("run_started")
    return board, clock, emit


def screen(board: Board, width: int = 100, rows: int = 40) -> str:
    console = Console(file=io.StringIO(), width=width, color_system=None)
    console.print(render_board(board, width, rows))
    text: str = console.file.getvalue()  # type: ignore[attr-defined]
    return "\n".join(line.rstrip() for line in text.splitlines())


def test_nodes_wait_then_run_and_a_retried_call_says_why_and_when() -> None:
    board, clock, emit = board_of("primary", "meta")
    emit("node_started", node="primary")
    emit("call_started", node="primary", model="gpt-oss", attempt=1)
    clock.now += 0.5
    error = ErrorInfo(type="rate_limit", status=429, message="slow down")
    emit("call_retried", node="primary", model="gpt-oss", attempt=1, delay_s=1.0, error=error)
    clock.now += 0.25
    assert screen(board).splitlines() == [
        "wf · run 0123456789abcdef · running 0.8s",
        "⠧ primary   running  0.8s",  # the spinner's frame follows the clock
        "  ↻ gpt-oss retrying 0.8s attempt 1 failed (rate_limit 429: slow down), next in 0.8s",
        "· meta      waiting",
    ]
    clock.now += 1.0  # the wait is over: the second attempt runs
    assert screen(board).splitlines()[2] == (
        "  ⠧ gpt-oss running 1.8s 1 retry, last: rate_limit 429: slow down"
    )
    emit("call_finished", node="primary", model="gpt-oss", duration_s=1.9, status="succeeded")
    emit("node_finished", node="primary", duration_s=1.95)
    emit("node_skipped", node="meta", reason="condition is false: not quick")
    emit("run_finished", status="succeeded", duration_s=2.0)
    assert screen(board).splitlines() == [
        "wf · run 0123456789abcdef · succeeded in 2.00s",
        "✓ primary   done    1.95s",
        "  ✓ gpt-oss done    1.90s 1 retry, last: rate_limit 429: slow down",
        "– meta      skipped       condition is false: not quick",
    ]


def test_each_fanout_model_has_its_line_failed_and_cached_ones_too() -> None:
    board, clock, emit = board_of("critiques", "synthesis")
    emit("node_started", node="critiques")
    for model in ("a", "b", "c"):
        emit("call_started", node="critiques", model=model, attempt=1)
    error = ErrorInfo(type="server_error", status=500, message="upstream broke")
    emit(
        "call_finished",
        node="critiques",
        model="a",
        duration_s=0.0,
        status="succeeded",
        cached=True,
    )
    emit("call_finished", node="critiques", model="b", duration_s=0.4, status="failed", error=error)
    clock.now += 0.5
    emit(
        "run_finished",
        status="failed",
        duration_s=0.5,
        error=ErrorInfo(type="cancelled", message="x"),
    )
    assert screen(board).splitlines() == [
        "wf · run 0123456789abcdef · cancelled in 0.50s",
        "⊘ critiques cancelled 0.50s",
        "  ✓ a       done      0.00s cached",
        "  ✗ b       failed    0.40s server_error 500: upstream broke",
        "  ⊘ c       cancelled 0.50s",
        "· synthesis not run",
    ]


def test_a_node_that_times_out_leaves_no_call_running() -> None:
    board, clock, emit = board_of("slow")
    emit("node_started", node="slow")
    emit("call_started", node="slow", model="m", attempt=1)
    clock.now += 0.2
    error = ErrorInfo(type="timeout", message="node timed out after 0.2s")
    emit("node_failed", node="slow", duration_s=0.2, error=error)
    clock.now += 5.0  # the run goes on with other nodes: this call's time stands still
    assert screen(board).splitlines()[1:] == [
        "✗ slow failed    0.20s node timed out after 0.2s",
        "  ⊘ m  cancelled 0.20s",
    ]


def test_a_fallback_shows_under_its_select_node() -> None:
    board, _, emit = board_of("select")
    emit("node_started", node="select")
    emit("selector_fallback", node="select", model="gpt-oss", reason="selector 'ml' failed: down")
    emit("node_finished", node="select", duration_s=0.01)
    assert screen(board).splitlines()[1:] == [
        "✓ select    done     0.01s",
        "  ↪ gpt-oss fallback       selector 'ml' failed: down",
    ]


def test_text_from_servers_is_shown_as_text_on_one_line_cut_to_the_width() -> None:
    board, _, emit = board_of("primary")
    emit("node_started", node="primary")
    emit("call_started", node="primary", model="m", attempt=1)
    message = "[bold]not markup[/bold]\x1b[2J\nsecond line " + "x" * 200
    error = ErrorInfo(type="api_error", message=message)
    emit("call_finished", node="primary", model="m", duration_s=0.1, status="failed", error=error)
    emit("node_failed", node="primary", duration_s=0.1, error=error)
    text = screen(board, width=60)
    assert "\x1b" not in text and len(text.splitlines()) == 3
    call_line = text.splitlines()[2]
    assert call_line.startswith("  ✗ m     failed 0.10s api_error: [bold]not markup[/bold]�[")
    assert call_line.endswith("…") and len(call_line) == 60


def test_the_calls_of_finished_nodes_fold_when_the_screen_is_short() -> None:
    board, _, emit = board_of("done", "busy")
    for node in ("done", "busy"):
        emit("node_started", node=node)
        for model in ("a", "b", "c"):
            emit("call_started", node=node, model=model, attempt=1)
    for model in ("a", "b", "c"):
        emit("call_finished", node="done", model=model, duration_s=0.1, status="succeeded")
    emit("node_finished", node="done", duration_s=0.2)
    assert len(screen(board, rows=20).splitlines()) == 9
    folded = screen(board, rows=6).splitlines()
    assert folded[1] == "✓ done done    0.20s 3 calls"
    assert [line.split()[1] for line in folded[2:]] == ["busy", "a", "b", "c"]


@pytest.mark.parametrize(("level", "logged"), [(logging.INFO, False), (logging.DEBUG, True)])
def test_call_started_is_logged_only_at_debug(
    caplog: pytest.LogCaptureFixture, level: int, logged: bool
) -> None:
    caplog.set_level(level, logger="flowengine.run")
    log_event(Event("call_started", "r1", "wf", node="primary", model="m", attempt=1))
    assert ("wf r1: primary/m: call started" in caplog.messages) is logged
