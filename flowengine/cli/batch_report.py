"""A batch's progress on stderr while it runs, and its summary when it ends."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeRemainingColumn
from rich.text import Text

from flowengine.batch.rows import Row
from flowengine.batch.runner import Batch, Totals
from flowengine.cli.base import err


class Reporter:
    """Progress on stderr: a rich bar on a terminal, else a plain line every ``every_s``."""

    def __init__(self, batch: Batch, total: int, every_s: float) -> None:
        self.batch = batch
        self.total = total
        self.every_s = every_s
        self.console = Console(stderr=True)
        self.live = self.console.is_terminal
        self.last_line = 0.0
        self.progress: Progress | None = None
        self.task: TaskID | None = None

    def __enter__(self) -> Reporter:
        if self.live:
            self.progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                TextColumn("{task.completed}/{task.total} rows"),
                TextColumn("{task.fields[stats]}"),
                TimeRemainingColumn(),
                console=self.console,
            )
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.update()
            self.progress.stop()

    def row_done(self, row: Row, status: str, error: str | None) -> None:
        if status == "invalid":
            notice = Text(f"{self.batch.input}: skipped row {row.number}, {error}", "yellow")
            self.console.print(notice, soft_wrap=True)  # soft: a log line is never re-wrapped
        self.update()

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
        done = self.batch.totals.done + self.batch.totals.skipped
        if self.progress is not None:
            if self.task is None:
                # Created at the first row, starting from the rows already done, so that the
                # ETA measures this session's pace, not a jump over the skipped rows.
                self.task = self.progress.add_task(
                    self.batch.workflow.name,
                    total=self.total,
                    completed=self.batch.totals.skipped,
                    stats="",
                )
            self.progress.update(self.task, completed=done, stats=self.stats())
            return
        now = time.perf_counter()
        if now - self.last_line >= self.every_s or done == self.total:
            self.last_line = now
            counts = f"{done}/{self.total} rows"
            err(f"{self.batch.workflow.name}: {counts} · {self.stats()} · {self.eta()}")


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
