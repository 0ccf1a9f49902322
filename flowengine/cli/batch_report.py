"""A batch's progress on stderr while it runs, and its summary when it ends."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress, ProgressColumn, Task, TextColumn, TimeElapsedColumn
from rich.progress_bar import ProgressBar
from rich.table import Column
from rich.text import Text

from flowengine.batch.rows import Row
from flowengine.batch.runner import Batch, Totals
from flowengine.cli.base import err


class Reporter:
    """Progress on stderr: a rich bar on a terminal, else a plain line every ``every_s``.

    The bar is there from the start and its figures are read at every redraw, so that rows in
    flight, the elapsed time and a resumed batch's earlier rows show before any row finishes.
    """

    def __init__(self, batch: Batch, total: int, every_s: float) -> None:
        self.batch = batch
        self.total = total
        self.every_s = every_s
        self.console = Console(stderr=True)
        self.live = self.console.is_terminal
        self.last_line = 0.0
        self.progress: Progress | None = None

    def __enter__(self) -> Reporter:
        if self.live:
            self.progress = Progress(
                TextColumn("[bold]{task.description}"),
                _Bar(self),
                _Figures(self.counts, Column(no_wrap=True)),
                TimeElapsedColumn(),
                # The one column that gives way on a narrow terminal, cut short on one line.
                _Figures(lambda: f"{self.stats()} · {self.eta()}", Column(overflow="ellipsis")),
                console=self.console,
            )
            self.progress.add_task(self.batch.workflow.name, total=self.total)
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()

    def row_done(self, row: Row, status: str, error: str | None) -> None:
        if status == "invalid":
            notice = Text(f"{self.batch.input}: skipped row {row.number}, {error}", "yellow")
            self.console.print(notice, soft_wrap=True)  # soft: a log line is never re-wrapped
        self.update()

    def done(self) -> int:
        """Rows in the output: finished this time, and those a resumed batch found there."""
        return self.batch.totals.done + self.batch.totals.skipped

    def counts(self) -> str:
        t = self.batch.totals
        return f"{self.done()}/{self.total} rows · {t.rows - t.done} in flight"

    def stats(self) -> str:
        t = self.batch.totals
        cost = f"${t.cost:.4f}" if t.cost is not None else "cost n/a"
        return (
            f"{t.failed} failed · {t.invalid} invalid · {t.calls / self.elapsed():.1f} calls/s · "
            f"{t.tokens} tokens · {cost}"
        )

    def elapsed(self) -> float:
        return max(time.perf_counter() - self.batch.started, 1e-9)

    def eta(self) -> str:
        t = self.batch.totals
        left = self.total - t.done - t.skipped
        if left <= 0:
            return "ETA 0s"
        if not t.done:
            return "ETA -"
        return f"ETA {left * self.elapsed() / t.done:.0f}s"  # at this session's pace

    def update(self) -> None:
        if self.progress is not None:
            self.progress.refresh()
            return
        done = self.done()
        now = time.perf_counter()
        if now - self.last_line >= self.every_s or done == self.total:
            self.last_line = now
            counts = f"{done}/{self.total} rows"
            err(f"{self.batch.workflow.name}: {counts} · {self.stats()} · {self.eta()}")


class _Figures(ProgressColumn):
    """Text that is read again at every redraw."""

    def __init__(self, text: Callable[[], str], column: Column) -> None:
        super().__init__(table_column=column)
        self.text = text

    def render(self, task: Task) -> Text:
        return Text(self.text(), no_wrap=True, overflow="ellipsis")


class _Bar(ProgressColumn):
    """The bar of rows in the output, read again at every redraw."""

    def __init__(self, reporter: Reporter) -> None:
        super().__init__()
        self.reporter = reporter

    def render(self, task: Task) -> ProgressBar:
        total = self.reporter.total
        return ProgressBar(total=max(total, 1), completed=min(self.reporter.done(), total))


def summary(totals: Totals, wall: float, output: Path, interrupted: bool) -> str:
    cost = f"${totals.cost:.6f}" if totals.cost is not None else "unknown"
    lines = [
        ("interrupted: " if interrupted else "")
        + f"{totals.done} rows this time ({_earlier(totals)}) -> {output}",
        f"  succeeded {totals.succeeded} · partial {totals.partial} · failed {totals.failed} · "
        f"invalid {totals.invalid}",
        f"  calls {totals.calls} · retries {totals.retries} · tokens {totals.tokens} · cost {cost} "
        f"· wall {wall:.1f}s",
    ]
    models = totals.model_rows()
    if models:
        # A quality column only when a judge scored some answer: most workflows have none.
        judged = any(m["judged"] for m in models.values())
        head = "  model            calls  ok%   retries  cached  p50     p95     tokens    cost"
        lines.append(f"{head:<88}quality" if judged else head)
        lines.extend(_model_line(alias, m, judged) for alias, m in models.items())
    if totals.stopped is not None:
        cut = totals.cut_short
        lines.append(f"  stopped: {totals.stopped}")
        if cut:
            rows = f"{cut} row{'s' if cut != 1 else ''} in flight"
            lines.append(f"  {rows} cut short by it, not in the output: --resume runs them")
    if interrupted:
        lines.append("  resume with the same command and --resume")
    return "\n".join(lines)


def _earlier(totals: Totals) -> str:
    text = f"{totals.skipped} already done"
    if totals.skipped_not_ok:
        text += f", {totals.skipped_not_ok} of them failed or invalid"
    return text


def _model_line(alias: str, m: dict[str, Any], judged: bool) -> str:
    rate = f"{m['success_rate'] * 100:.0f}" if m["success_rate"] is not None else "-"
    p50 = f"{m['latency_p50_s']:.2f}s" if m["latency_p50_s"] is not None else "-"
    p95 = f"{m['latency_p95_s']:.2f}s" if m["latency_p95_s"] is not None else "-"
    cost = f"${m['cost']:.6f}" if m["cost"] is not None else "-"
    line = (
        f"  {alias:<16} {m['calls']:>5}  {rate:>3}  {m['retries']:>7}  {m['cached']:>6}  "
        f"{p50:<7} {p95:<7} {m['tokens']:<9} {cost}"
    )
    if not judged:
        return line
    quality = f"{m['quality']:.2f} ({m['judged']})" if m["quality"] is not None else "-"
    return f"{line:<87} {quality}"
