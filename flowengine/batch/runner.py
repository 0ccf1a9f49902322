"""Batch runs: one run per row of a JSONL or CSV file, through one Engine, losing nothing.

Rows are read lazily (:mod:`.rows`) and at most ``concurrency`` runs are in flight, so memory
stays flat however many rows there are. Each finished row is appended to the output at once
(:mod:`.output`): after Ctrl-C or ``kill -9`` the file is valid JSONL, and ``resume`` skips the
rows it already holds. Whatever one row holds or raises, it ends as one line in the output and
the batch goes on; only the output failing, or a problem every row shares, stops it.

The batch's own budget (``budget``: caps on the calls and cost of every row together) is one
meter that every row's run shares, besides the run's own ``budget:``. Once it is spent, no row
starts; a row in flight that it cut short is not written, so that ``resume`` runs it again
(its calls that finished come back from the cache).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flowengine.batch.output import Output, check_output
from flowengine.batch.row_run import RowJob, RowOutcome, run_row
from flowengine.batch.rows import Row, read_rows
from flowengine.errors import UsageError, did_you_mean
from flowengine.events import Event
from flowengine.language.workflow import Workflow
from flowengine.results import ModelMetrics, RunResult, percentile
from flowengine.run.budget import BudgetMeter
from flowengine.run.engine import Engine
from flowengine.run.selection import select_nodes
from flowengine.spec import Budget

NOT_OK = frozenset({"failed", "invalid"})  # row statuses that make a batch not all ok
SAMPLE = 10_000  # latencies kept per model for percentiles: bounded, whatever the row count


@dataclass
class ModelTotals:
    calls: int = 0
    succeeded: int = 0
    retries: int = 0
    cached: int = 0
    tokens: int = 0
    cost: float | None = None
    latencies: list[float] = field(default_factory=list)
    seen: int = 0  # latencies offered to the reservoir
    judged: int = 0
    quality_sum: float = 0.0

    def add(self, metrics: ModelMetrics) -> None:
        self.calls += metrics.calls
        self.succeeded += round((metrics.success_rate or 0.0) * metrics.calls)
        self.retries += metrics.retries
        self.cached += metrics.cached
        self.tokens += metrics.tokens
        if metrics.cost is not None:
            self.cost = (self.cost or 0.0) + metrics.cost
        if metrics.quality is not None:
            self.judged += metrics.judged
            self.quality_sum += metrics.quality * metrics.judged

    def sample(self, latency: float) -> None:
        self.seen += 1
        if len(self.latencies) < SAMPLE:
            self.latencies.append(latency)
            return
        # Reservoir sampling keeps a uniform sample in bounded memory.
        slot = random.randrange(self.seen)
        if slot < SAMPLE:
            self.latencies[slot] = latency


def call_latency(event: Event) -> tuple[str, float] | None:
    """(model alias, seconds) of a call that went out; None for any other event."""
    if event.kind == "call_finished" and not event.cached and event.model is not None:
        return event.model, event.duration_s or 0.0
    return None


@dataclass
class Totals:
    """What the summary and the progress bar show; bounded in size."""

    rows: int = 0
    succeeded: int = 0
    partial: int = 0
    failed: int = 0
    invalid: int = 0
    skipped: int = 0  # rows already in the output when resuming
    skipped_not_ok: int = 0  # ... of which failed or were invalid
    calls: int = 0
    retries: int = 0
    tokens: int = 0
    cost: float | None = None
    models: dict[str, ModelTotals] = field(default_factory=dict)
    #: Why the batch's budget stopped it, if it did; and the rows in flight it cut short.
    stopped: str | None = None
    cut_short: int = 0

    @property
    def done(self) -> int:
        return self.succeeded + self.partial + self.failed + self.invalid

    @property
    def all_ok(self) -> bool:
        """No row of the output, this time or before, failed or was invalid, and the budget
        did not stop the batch."""
        return not (self.failed or self.invalid or self.skipped_not_ok or self.stopped)

    def add(self, result: RunResult) -> None:
        """Count a finished run; per-model counts come from every call it made, fallbacks too."""
        setattr(self, result.status, getattr(self, result.status) + 1)
        self.add_spending(result)

    def add_spending(self, result: RunResult) -> None:
        """Count a run's calls, tokens and cost."""
        self.calls += result.metadata.calls
        self.tokens += result.metadata.tokens
        if result.metadata.cost is not None:
            self.cost = (self.cost or 0.0) + result.metadata.cost
        for alias, metrics in result.metrics.models.items():
            self.models.setdefault(alias, ModelTotals()).add(metrics)
            self.retries += metrics.retries

    def on_event(self, event: Event) -> None:
        """Collect call latencies: a run's result keeps only their percentiles."""
        latency = call_latency(event)
        if latency is not None:
            self.sample(*latency)

    def sample(self, model: str, latency: float) -> None:
        self.models.setdefault(model, ModelTotals()).sample(latency)

    def model_rows(self) -> dict[str, dict[str, Any]]:
        return {
            alias: {
                "calls": t.calls,
                "success_rate": t.succeeded / t.calls if t.calls else None,
                "retries": t.retries,
                "cached": t.cached,
                "latency_p50_s": percentile(t.latencies, 50),
                "latency_p95_s": percentile(t.latencies, 95),
                "tokens": t.tokens,
                "cost": t.cost,
                "quality": round(t.quality_sum / t.judged, 4) if t.judged else None,
                "judged": t.judged,
            }
            for alias, t in self.models.items()
            if t.calls  # calls of runs cut short by an interrupt leave only a latency
        }


@dataclass
class Batch:
    """One batch: its workflow, files, options, and running totals."""

    workflow: Workflow
    input: Path
    output: Path | None  # None: a dry run, which writes nothing
    concurrency: int = 8
    resume: bool = False
    mapping: Mapping[str, str] = field(default_factory=dict)
    skip: Sequence[str] = ()  # nodes every row's run skips
    budget: Budget | None = None  # caps on the calls and cost of all rows together
    on_row: Callable[[Row, str, str | None], None] | None = None  # (row, status, error)
    totals: Totals = field(default_factory=Totals)
    started: float = field(default_factory=time.perf_counter)
    meter: BudgetMeter = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.meter = BudgetMeter(self.budget or Budget(), "batch")

    def check(self) -> None:
        """Raise UsageError for files and options that cannot work, before anything runs."""
        if not self.input.is_file():
            raise UsageError(f"{self.input}: no such file", "give a .jsonl or .csv file of rows")
        if self.output is not None:
            check_output(self.output, self.resume)
        inputs = self.workflow.spec.inputs
        for name in self.mapping:
            if name not in inputs:
                fix = did_you_mean(name, inputs) or f"inputs of {self.workflow.name}: " + (
                    ", ".join(inputs) or "none"
                )
                raise UsageError(f"--map {name}=...: unknown input '{name}'", fix)
        select_nodes(self.workflow, skip=self.skip)

    async def run(self, engine: Engine) -> Totals:
        """Run every row not already done; return the totals."""
        out, rows = self.start(engine)
        try:
            async with asyncio.TaskGroup() as group:  # a failing worker stops the others
                for _ in range(max(1, self.concurrency)):
                    group.create_task(self._worker(engine, rows, out))
        except BaseExceptionGroup as group_error:
            raise first_error(group_error) from None
        finally:
            rows.close()
            out.close()
        return self.totals

    def start(self, engine: Engine) -> tuple[Output, Generator[Row]]:
        """Check everything, take the output (locked until closed: one batch per output), and
        return it with the rows it does not hold yet, read as they are taken."""
        self.check()
        # A missing API key fails every row alike: say it once, before the first row.
        engine.check_credentials(self.workflow, self.workflow.plan.by_weight)
        if self.output is None:
            raise UsageError("a batch needs an output file", "give `output`, or make a dry run")
        out = Output(self.output, self.resume)
        skip = out.done
        self.totals.skipped = len(skip)
        self.totals.skipped_not_ok = sum(s in NOT_OK for s in skip.values())
        self.started = time.perf_counter()
        return out, (r for r in read_rows(self.input) if r.number not in skip)

    async def _worker(self, engine: Engine, rows: Iterator[Row], out: Output) -> None:
        # Workers share one iterator, so rows are read only as fast as runs finish.
        for row in rows:
            if self.spent():
                return
            self.totals.rows += 1
            done = await self._one(engine, row)
            if done is not None:  # None: cut short by the batch's budget; resume runs it
                self.write(out, row, done)

    def write(self, out: Output, row: Row, done: RowOutcome) -> None:
        """Append a counted row to the output, and tell ``on_row``."""
        out.write(done.line)
        if self.on_row is not None:
            self.on_row(row, done.status, done.error)

    def _cut_short(self, result: RunResult) -> bool:
        """Count a run the batch's budget stopped as spending only."""
        error = result.error
        if error is None or error.type != "budget" or not self.spent():
            return False
        self.totals.rows -= 1
        self.totals.cut_short += 1
        self.totals.add_spending(result)
        return True

    def spent(self) -> bool:
        """The batch's budget is spent (and said so in the totals): no row may start."""
        refusal = self.meter.refusal()
        if refusal is not None:
            self.totals.stopped = refusal.message
        return refusal is not None

    async def _one(self, engine: Engine, row: Row) -> RowOutcome | None:
        """The row's outcome, counted in the totals; None for a row that the batch's budget
        cut short (its calls are counted, the row is not)."""
        outcome = await run_row(
            engine,
            RowJob(self.workflow, self.mapping, self.skip),
            row,
            listeners=[self.totals.on_event],
            shared_budgets=[self.meter],
        )
        return self.count(outcome)

    def count(self, outcome: RowOutcome) -> RowOutcome | None:
        """Count a finished row in the totals; None for a row that the batch's budget cut
        short, which is then not to be written."""
        for latency in outcome.latencies:
            self.totals.sample(*latency)
        if outcome.result is None:
            setattr(self.totals, outcome.status, getattr(self.totals, outcome.status) + 1)
            return outcome
        if self._cut_short(outcome.result):
            return None
        self.totals.add(outcome.result)
        return outcome


def first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The error that stopped the workers, as it was raised (not wrapped in a group)."""
    error: BaseException = group
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error
