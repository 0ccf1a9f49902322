"""One row's run: the one path a row takes, in the local runner and on a Ray worker alike.

Whatever a row holds or its run raises, it ends as one :class:`RowOutcome`, whose line is what
the output gets; the batch counts it (:meth:`flowengine.batch.runner.Batch.count`) wherever it
ran.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from flowengine.batch.output import encode
from flowengine.batch.rows import Row, inputs_for
from flowengine.errors import FlowEngineError, RunError, UsageError
from flowengine.events import Listener
from flowengine.language.workflow import Workflow
from flowengine.results import RunResult, to_jsonable
from flowengine.run.budget import BudgetMeter
from flowengine.run.engine import Engine


@dataclass(frozen=True)
class RowJob:
    """What every row's run takes besides the engine: the workflow and the batch's options."""

    workflow: Workflow
    mapping: Mapping[str, str] = field(default_factory=dict)
    skip: Sequence[str] = ()


@dataclass(frozen=True)
class RowOutcome:
    """One row run: its output line, its status and error message, and its run's result
    (None for a row that produced no run: invalid, or failed before its run ended)."""

    row: int
    status: str
    error: str | None
    line: bytes
    result: RunResult | None
    #: (model, seconds) of its calls, where the totals did not see its events (another process)
    latencies: tuple[tuple[str, float], ...] = ()


async def run_row(
    engine: Engine,
    job: RowJob,
    row: Row,
    *,
    listeners: Sequence[Listener] = (),
    shared_budgets: Sequence[BudgetMeter] = (),
) -> RowOutcome:
    """Run one row: the one path every backend takes, the local one and a Ray worker alike.

    Whatever the row holds or its run raises, the outcome is one output line; only an error
    every row would share (a ConfigError, say) is raised, to stop the batch.
    """
    try:
        if row.problem is not None:
            raise UsageError(row.problem)
        inputs = inputs_for(job.workflow, row, job.mapping)
        result = await engine.run(
            job.workflow,
            inputs,
            skip=job.skip,
            listeners=listeners,
            shared_budgets=shared_budgets,
        )
        record = _record(row, result)
        line = encode(record)  # here: a result JSON cannot hold fails its row alone
    except UsageError as exc:
        return unrun_outcome(row, "invalid", "invalid_row", f"line {row.line}: {exc}")
    except Exception as exc:
        if isinstance(exc, FlowEngineError) and not isinstance(exc, RunError):
            raise  # a ConfigError, say: every row would fail alike, so the batch stops
        # The run broke, or something no one foresaw did: this row failed, the rest go on.
        return unrun_outcome(row, "failed", type(exc).__name__, str(exc))
    error = result.error.message if result.error is not None else None
    return RowOutcome(row.number, result.status, error, line, result)


def unrun_outcome(row: Row, status: str, kind: str, message: str) -> RowOutcome:
    """The outcome of a row that produced no run result."""
    record = _unrun(row, status, kind, message)
    return RowOutcome(row.number, status, message, encode(record), None)


def _record(row: Row, result: RunResult) -> dict[str, Any]:
    return {
        "row": row.number,
        "line": row.line,
        "inputs": result.inputs,
        "status": result.status,
        "run_id": result.run_id,
        "output": result.output,
        "error": to_jsonable(result.error),
        "metadata": to_jsonable(result.metadata),
        # Which nodes did not run, and why: which branch each row took.
        "skipped": {n: r.reason for n, r in result.nodes.items() if r.status == "skipped"},
        # Each node's state, so that a report can show which node failed in which row.
        "nodes": {n: r.status for n, r in result.nodes.items()},
    }


def _unrun(row: Row, status: str, kind: str, message: str) -> dict[str, Any]:
    """The record of a row that produced no run result."""
    return {
        "row": row.number,
        "line": row.line,
        "inputs": row.values,
        "status": status,
        "output": None,
        "error": {"type": kind, "message": message},
    }
