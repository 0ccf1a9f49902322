"""`flowengine run` on a terminal: a live view of every node and call on stderr.

The view listens to the run's events (:class:`~flowengine.cli.run_board.Board` keeps what they
tell) and a rich ``Live`` display redraws it several times a second from its own thread, so
that elapsed times move while calls wait; a lock keeps the two threads apart. It starts with
the run's first event, so that an error found before the run prints alone, and it stops
leaving its last picture on the screen. Model output is never shown here; the texts that are
(error messages, reasons) are plain text, never markup.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from types import TracebackType

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from flowengine.cli.run_board import Board, CallLine, NodeLine
from flowengine.events import Event

SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
ICONS = {
    "waiting": "·",
    "done": "✓",
    "failed": "✗",
    "skipped": "–",
    "cancelled": "⊘",
    "not run": "·",
    "retrying": "↻",
}
STYLES = {
    "waiting": "dim",
    "running": "cyan",
    "retrying": "yellow",
    "done": "green",
    "failed": "red",
    "skipped": "dim",
    "cancelled": "yellow",
    "not run": "dim",
    "fallback": "yellow",
}
REFRESH_PER_S = 8


class LiveView:
    """A listener that shows the run as a table on ``console`` (a terminal) while it goes on.

    Example::

        with LiveView(Console(stderr=True), "critique", ["select", "primary"]) as view:
            result = asyncio.run(Engine(listeners=[view]).run(wf, prompt="..."))
    """

    def __init__(self, console: Console, workflow: str, nodes: Iterable[str]) -> None:
        self.board = Board(workflow, nodes)
        self.lock = threading.Lock()
        self.console = console
        self.live = Live(
            console=console,
            refresh_per_second=REFRESH_PER_S,
            redirect_stdout=False,  # stdout has the run's data, maybe streamed, never the view
            redirect_stderr=True,  # log lines go above the view, not through it
            get_renderable=self.render,
        )
        self.done = False

    def __call__(self, event: Event) -> None:
        with self.lock:
            self.board.on_event(event)
        if not self.live.is_started and not self.done:
            self.live.start()

    def __enter__(self) -> LiveView:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def stop(self) -> None:
        """Draw the last picture and stop; later events change nothing on the screen."""
        self.done = True
        if self.live.is_started:
            self.live.stop()

    def render(self) -> RenderableType:
        width, height = self.console.size
        with self.lock:
            return render_board(self.board, width, max(height - 2, 4))


def render_board(board: Board, width: int, max_rows: int) -> RenderableType:
    """A heading, then a line per node and per call, each cut to ``width``; the calls of
    finished nodes fold into their node's line when the whole would not fit in ``max_rows``."""
    lines = board.nodes.values()
    fold = sum(1 + (line.fallback is not None) + len(line.calls) for line in lines) > max_rows
    rows = []
    for line in lines:
        folded = fold and line.state in ("done", "skipped")
        rows.append(_node_row(board, line, folded))
        if line.fallback is not None:
            model, reason = line.fallback
            style = STYLES["fallback"]
            rows.append(
                (Text(f"  ↪ {model}", style), Text("fallback", style), Text(), Text(reason))
            )
        if not folded:
            rows.extend(_call_row(board, call) for call in line.calls.values())
    table = Table.grid(padding=(0, 1))
    # Names, states and times keep their width; the details take what is left, cut short.
    widths = [max((row[i].cell_len for row in rows), default=0) for i in range(3)]
    for i, column in enumerate(widths):
        table.add_column(no_wrap=True, width=column, justify="right" if i == 2 else "left")
    table.add_column(no_wrap=True)
    left = max(width - sum(widths) - len(widths), 1)
    for *fixed, details in rows:
        details.truncate(left, overflow="ellipsis")
        table.add_row(*fixed, details)
    heading = _heading(board)
    heading.truncate(width, overflow="ellipsis")
    return Group(heading, table)


def _heading(board: Board) -> Text:
    text = Text(board.workflow, style="bold")
    if board.run_id:
        text.append(f" · run {board.run_id}", style="dim")
    if board.status is not None:
        took = f" in {board.duration:.2f}s" if board.duration is not None else ""
        text.append(f" · {board.status}{took}", style=_status_style(board.status))
    elif board.started is not None:
        text.append(f" · running {board.clock() - board.started:.1f}s", style="cyan")
    return text


def _status_style(status: str) -> str:
    return {"succeeded": "green", "partial": "yellow"}.get(status, "red")


def _icon(board: Board, state: str) -> str:
    if state == "running":
        return SPINNER[int(board.clock() * 10) % len(SPINNER)]
    return ICONS[state]


def _seconds(value: float | None, running: bool) -> Text:
    if value is None:
        return Text("")
    return Text(f"{value:.1f}s" if running else f"{value:.2f}s")


def _node_row(board: Board, line: NodeLine, folded: bool) -> tuple[Text, Text, Text, Text]:
    state = line.state
    style = STYLES[state]
    details = []
    if line.note:
        details.append(line.note)
    if folded and line.calls:
        count = sum(call.count for call in line.calls.values())
        details.append(f"{count} call{'s' if count != 1 else ''}")
    return (
        Text(f"{_icon(board, state)} {line.node}", style=style),
        Text(state, style=style),
        _seconds(board.elapsed(line), state == "running"),
        Text(" · ".join(details)),
    )


def _call_row(board: Board, call: CallLine) -> tuple[Text, Text, Text, Text]:
    state = board.call_state(call)
    style = STYLES[state]
    details = []
    if call.count > 1:
        details.append(f"call {call.count}")
    if state == "retrying":
        wait = max((call.retry_at or 0.0) - board.clock(), 0.0)
        details.append(f"attempt {call.retries} failed ({call.last_error}), next in {wait:.1f}s")
    elif call.retries:
        plural = "retry" if call.retries == 1 else "retries"
        details.append(f"{call.retries} {plural}, last: {call.last_error}")
    if state == "failed" and call.error:
        details.append(call.error)
    if call.cached:
        details.append("cached")
    return (
        Text(f"  {_icon(board, state)} {call.model}", style=style),
        Text(state, style=style),
        _seconds(board.elapsed(call), state in ("running", "retrying")),
        Text(" · ".join(details), style="red" if state == "failed" else ""),
    )
