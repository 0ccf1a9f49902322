"""`flowengine batch`: a workflow over every row of a dataset, with progress and a summary.

The batch runner, the engine and rich are imported inside the command, so that other
commands never load them.
"""

from __future__ import annotations

import functools
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from flowengine.cli.base import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    err,
    format_option,
    handle_errors,
    load,
    overrides_from,
    set_option,
    workflow_argument,
)
from flowengine.cli.budget_flags import budget_options
from flowengine.cli.logs import verbose_option
from flowengine.errors import UsageError

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine

    from flowengine.batch.ray_backend import RaySettings
    from flowengine.batch.runner import Batch
    from flowengine.run.engine import Engine

PLAIN_EVERY_S = 5.0  # without a terminal, a progress line this often


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


@click.command()
@workflow_argument
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
    type=click.Path(dir_okay=False),
    help="Results, one JSON line per row, appended as each row finishes. Required but for "
    "--dry-run.",
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
@click.option(
    "--skip", multiple=True, metavar="NODE", help="Skip this node; the nodes after it see none."
)
@set_option
@click.option("--offline", is_flag=True, help="Use the offline provider: no key, no network.")
@click.option("--no-cache", is_flag=True, help="Neither read nor write the response cache.")
@click.option("--no-record", is_flag=True, help="Do not store each run in the run records.")
@click.option("--db", type=click.Path(dir_okay=False), help="Database for cache and records.")
@budget_options("the batch (all rows together)")
@format_option(help="How --dry-run prints its estimate.")
@click.option(
    "--backend",
    type=click.Choice(["local", "ray"]),
    default="local",
    show_default=True,
    help="Where the rows run: this process, or Ray workers (pip install 'flowengine[ray]').",
)
@click.option(
    "--address",
    metavar="ADDRESS",
    help="With --backend ray: an existing Ray cluster (auto, ray://HOST:10001); else a local "
    "Ray is started.",
)
@click.option(
    "--workers",
    type=int,
    help="With --backend ray: Ray workers, each running --concurrency rows at once "
    "[default: the CPUs].",
)
@verbose_option
@handle_errors
def batch(
    workflow: str,
    input_path: str,
    output_path: str | None,
    concurrency: int,
    resume: bool,
    maps: tuple[str, ...],
    skip: tuple[str, ...],
    sets: tuple[str, ...],
    offline: bool,
    no_cache: bool,
    no_record: bool,
    db: str | None,
    dry_run: bool,
    max_cost: float | None,
    max_calls: int | None,
    fmt: str,
    backend: str,
    address: str | None,
    workers: int | None,
) -> None:
    """Run WORKFLOW once per row of --input; every row ends up in --output."""
    from flowengine.batch.rows import count_rows
    from flowengine.batch.runner import Batch
    from flowengine.cli.batch_report import Reporter, summary
    from flowengine.cli.interrupt import Interrupted, run_interruptibly
    from flowengine.run.engine import Engine
    from flowengine.spec import Budget

    if concurrency < 1:
        raise UsageError("--concurrency must be at least 1")
    _check_backend(backend, address, workers)
    overrides = overrides_from(sets)
    wf = load(workflow, overrides)
    mapping = _mapping(maps)
    output = Path(output_path) if output_path is not None else None
    budget = Budget(max_cost=max_cost, max_calls=max_calls)
    job = Batch(wf, Path(input_path), output, concurrency, resume, mapping, skip, budget)
    job.check()
    if dry_run:
        _print_estimate(job, offline, db, fmt)
        return
    if output is None:
        raise UsageError("batch needs --output FILE, where the results go", "add --output")
    total = count_rows(job.input)
    work: Callable[[], Coroutine[Any, Any, Any]]
    if backend == "ray":
        from flowengine.batch.ray_backend import RaySettings
        from flowengine.cli.starter import resolve_workflow

        settings = RaySettings(
            Path(resolve_workflow(workflow)), overrides, offline, not no_cache, not no_record,
            db, address, workers,
        )  # fmt: skip
        work = functools.partial(_run_on_ray, job, settings)
    else:
        engine = Engine(offline=offline, cache=not no_cache, record=not no_record, db=db)
        work = functools.partial(_run, job, engine)
    interrupted = False
    with Reporter(job, total, PLAIN_EVERY_S) as reporter:
        job.on_row = reporter.row_done
        # Ctrl-C, or SIGTERM (a scheduler, `kill`, a container stopping), stops the batch:
        # rows in flight are dropped, every finished row is already in the output, and the
        # summary still says how to resume.
        try:
            run_interruptibly(work)
        except Interrupted:
            interrupted = True
    totals = job.totals
    err(summary(totals, time.perf_counter() - job.started, output, interrupted))
    if interrupted:
        sys.exit(EXIT_INTERRUPTED)
    if not totals.all_ok:
        sys.exit(EXIT_FAILED)


def _check_backend(backend: str, address: str | None, workers: int | None) -> None:
    """Options of the Ray backend are refused with another; Ray itself is asked for now, so
    that a missing extra is said before anything runs."""
    if backend != "ray":
        for flag, value in (("--address", address), ("--workers", workers)):
            if value is not None:
                raise UsageError(f"{flag} goes with --backend ray", "add --backend ray")
        return
    if workers is not None and workers < 1:
        raise UsageError("--workers must be at least 1")
    from flowengine.batch.ray_backend import import_ray

    import_ray()


def _print_estimate(job: Batch, offline: bool, db: str | None, fmt: str) -> None:
    """`batch --dry-run`: stand-in runs of the rows (or of a sample), and what they would take."""
    import asyncio

    from flowengine.batch.estimate import estimate_batch
    from flowengine.cli.estimate import render_estimate

    estimate = asyncio.run(estimate_batch(job, offline=offline, db=db))
    click.echo(render_estimate(estimate) if fmt == "text" else estimate.model_dump_json(indent=2))


async def _run_on_ray(job: Batch, settings: RaySettings) -> Any:
    from flowengine.batch.ray_backend import run_on_ray

    return await run_on_ray(job, settings)


async def _run(job: Batch, engine: Engine) -> Any:
    from flowengine.run.gc_settings import many_runs_gc

    with many_runs_gc():
        async with engine:
            return await job.run(engine)
