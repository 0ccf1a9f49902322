"""`flowengine batch`: a workflow over every row of a dataset, with progress and a summary."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeRemainingColumn
from rich.text import Text

from flowengine.batch.runner import Batch, Row, Totals, batch_gc, count_rows
from flowengine.cli.base import EXIT_FAILED, cli, err, handle_errors, overrides_from, set_option
from flowengine.errors import UsageError
from flowengine.language.workflow import Workflow
from flowengine.run.engine import Engine

PLAIN_EVERY_S = 5.0


def _mapping(items: tuple[str, ...]) -> dict[str, str]:
    mapping = {}
    for item in items:
        name, sep, column = item.partition("=")
        if not sep or not name.strip() or not column.strip():
            raise UsageError(
                f"--map {item}: expected INPUT=COLUMN", "for example --map prompt=question"
            )
        mapping[name.strip()] = column.strip()
    return mapping


class Reporter:
    """Progress on stderr: a rich bar on a terminal, a plain line every few seconds otherwise."""

    def __init__(self, batch: Batch, total: int) -> None:
        self.batch = batch
        self.total = total
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
        if now - self.last_line >= PLAIN_EVERY_S or done == self.total:
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
        lines.append(
            "  model            calls  ok%   retries  cached  p50     p95     tokens    cost"
        )
        lines.extend(_model_line(alias, m) for alias, m in models.items())
    if interrupted:
        lines.append("  resume with the same command and --resume")
    return "\n".join(lines)


def _earlier(totals: Totals) -> str:
    text = f"{totals.skipped} already done"
    if totals.skipped_not_ok:
        text += f", {totals.skipped_not_ok} of them failed or invalid"
    return text


def _model_line(alias: str, m: dict[str, Any]) -> str:
    rate = f"{m['success_rate'] * 100:.0f}" if m["success_rate"] is not None else "-"
    p50 = f"{m['latency_p50_s']:.2f}s" if m["latency_p50_s"] is not None else "-"
    p95 = f"{m['latency_p95_s']:.2f}s" if m["latency_p95_s"] is not None else "-"
    cost = f"${m['cost']:.6f}" if m["cost"] is not None else "-"
    return (
        f"  {alias:<16} {m['calls']:>5}  {rate:>3}  {m['retries']:>7}  {m['cached']:>6}  "
        f"{p50:<7} {p95:<7} {m['tokens']:<9} {cost}"
    )


@cli.command()
@click.argument("workflow", type=click.Path(dir_okay=True))
@click.option(
    "--input",
    "input_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="Rows: a .jsonl file (one object a line) or a .csv file with a header.",
)
@click.option(
    "--output",
    "output_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="Results, one JSON line per row, appended as each row finishes.",
)
@click.option("--concurrency", default=8, show_default=True, help="Rows in flight at once.")
@click.option("--resume", is_flag=True, help="Skip the rows already in --output.")
@click.option(
    "--map",
    "maps",
    multiple=True,
    metavar="INPUT=COLUMN",
    help="Read an input from a differently named column, e.g. prompt=question.",
)
@set_option
@click.option("--offline", is_flag=True, help="Use the offline provider: no key, no network.")
@click.option("--no-cache", is_flag=True, help="Neither read nor write the response cache.")
@click.option("--no-record", is_flag=True, help="Do not store each run in the run records.")
@click.option("--db", type=click.Path(dir_okay=False), help="Database for cache and records.")
@handle_errors
def batch(
    workflow: str,
    input_path: str,
    output_path: str,
    concurrency: int,
    resume: bool,
    maps: tuple[str, ...],
    sets: tuple[str, ...],
    offline: bool,
    no_cache: bool,
    no_record: bool,
    db: str | None,
) -> None:
    """Run WORKFLOW once per row of --input; every row ends up in --output."""
    if concurrency < 1:
        raise UsageError("--concurrency must be at least 1")
    wf = Workflow.load(workflow, overrides_from(sets))
    job = Batch(wf, Path(input_path), Path(output_path), concurrency, resume, _mapping(maps))
    job.check()
    total = count_rows(job.input)
    engine = Engine(offline=offline, cache=not no_cache, record=not no_record, db=db)
    interrupted = False
    with Reporter(job, total) as reporter:
        job.on_row = reporter.row_done
        try:
            asyncio.run(_run(job, engine))
        except (KeyboardInterrupt, asyncio.CancelledError):  # Ctrl-C, or SIGTERM below
            interrupted = True
    totals = job.totals
    err(summary(totals, time.perf_counter() - job.started, job.output, interrupted))
    if interrupted:
        sys.exit(130)
    if not totals.all_ok:
        sys.exit(EXIT_FAILED)


async def _run(job: Batch, engine: Engine) -> Any:
    # SIGTERM (a scheduler, `kill`, a container stopping) stops the batch as Ctrl-C does:
    # rows in flight are dropped, every finished row is already in the output, and the
    # summary still says how to resume.
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    if task is not None and hasattr(signal, "SIGTERM"):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGTERM, task.cancel)
    with batch_gc():
        async with engine:
            return await job.run(engine)
