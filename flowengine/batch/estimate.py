"""`batch --dry-run`: what a batch would take, from stand-in runs of its rows.

Up to :data:`SAMPLE_ROWS` rows, every row is walked. A larger input is sampled evenly (every
k-th row, so that a file sorted by topic is still seen whole) and the figures are multiplied
by rows / walked rows: the dry run's time stays bounded, whatever the input's size. With
``resume``, the rows already in the output are left out, as the batch would leave them.
"""

from __future__ import annotations

import math
from pathlib import Path

from flowengine.batch.output import done_rows
from flowengine.batch.rows import count_rows, inputs_for, read_rows
from flowengine.batch.runner import Batch
from flowengine.errors import UsageError
from flowengine.results import RunResult
from flowengine.run.dry_run import DryEngine, Estimate

#: Rows walked at most; a stand-in run of a shipped workflow takes about a millisecond.
SAMPLE_ROWS = 1000


async def estimate_batch(
    job: Batch, *, offline: bool = False, db: str | Path | None = None
) -> Estimate:
    """The calls, tokens and cost of ``job``'s rows; nothing is sent, run or written."""
    done = done_rows(job.output) if job.resume and job.output is not None else {}
    rows = max(0, count_rows(job.input) - len(done))
    step = max(1, math.ceil(rows / SAMPLE_ROWS))
    engine = DryEngine(offline=offline, db=db)
    runs: list[RunResult] = []
    walked = invalid = 0
    try:
        todo = (row for row in read_rows(job.input) if row.number not in done)
        for index, row in enumerate(todo):
            if index % step:
                continue
            walked += 1
            try:
                if row.problem is not None:
                    raise UsageError(row.problem)
                inputs = inputs_for(job.workflow, row, job.mapping)
                runs.append(await engine.run(job.workflow, inputs, skip=job.skip))
            except UsageError:
                invalid += 1  # it would be an invalid row: no call
        estimate = engine.estimate(job.workflow, runs, scale=rows / walked if walked else 1.0)
    finally:
        await engine.aclose()
    over = batch_over_budget(job, estimate)
    return estimate.model_copy(
        update={
            "rows": rows,
            "invalid_rows": invalid,
            "batch_budget": job.budget,
            "batch_over_budget": over,
        }
    )


def batch_over_budget(job: Batch, estimate: Estimate) -> list[str]:
    """The caps of the batch's budget that the estimate passes."""
    over = []
    budget = job.budget
    if budget is not None and budget.max_calls is not None and estimate.calls > budget.max_calls:
        over.append("max_calls")
    cost = estimate.cost or 0.0
    if budget is not None and budget.max_cost is not None and cost > budget.max_cost:
        over.append("max_cost")
    return over
