"""Batches on Ray: the rows go through Ray actors, each holding one Engine that runs many rows.

The driver (this process) reads the rows, sends each to a worker as a slot frees, and writes
each result the moment it arrives, through the same :class:`~flowengine.batch.runner.Batch`
as a local batch: the same output lines, totals, summary and ``resume``. A worker runs a row
with :func:`~flowengine.batch.row_run.run_row`, the function the local runner uses.

A worker that dies (killed, out of memory, its node lost) is restarted by Ray, which runs its
rows again (``max_restarts``, ``max_task_retries``); a row is written only when its result
reaches the driver, so each row is in the output once. A row whose worker died every time it
ran is recorded as failed, and the batch goes on.

Shared and per worker: the output, the totals and the batch's budget are the driver's. The
budget is counted from finished rows, and once it is spent no row is sent; each worker also
holds the whole budget as its own cap, so the rows in flight on the other workers may pass it
by what they spend. Each worker has its own Engine: its own HTTP session, provider rate limits
and concurrency caps (``rate_limit`` holds per worker), response cache and run records.

Ray is an optional extra: this module is imported only when the Ray backend is chosen, and it
imports ray only when a batch starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from flowengine.batch.output import Output
from flowengine.batch.row_run import RowJob, RowOutcome, run_row, unrun_outcome
from flowengine.batch.rows import Row
from flowengine.batch.runner import Batch, Totals, call_latency, first_error
from flowengine.errors import RunError, UsageError
from flowengine.events import Event
from flowengine.language.workflow import Workflow
from flowengine.run.budget import BudgetMeter
from flowengine.run.engine import Engine
from flowengine.spec import Budget
from flowengine.store.db import ENV_PATH, resolve_path

INSTALL = "pip install 'flowengine[ray]'"
OBJECT_STORE_BYTES = 128 * 2**20  # a local Ray's shared memory: rows and results are small
RESTARTS = 3  # times Ray restarts a dead worker, and runs a row again whose worker died
CLOSE_S = 10.0  # how long a worker may take to save its last records at the end
NAME_PREFIX = "flowengine-batch-"  # every worker's actor name starts so (seen in `ray list`)


@dataclass(frozen=True)
class RaySettings:
    """How the rows run on Ray, and the engine each worker builds."""

    workflow_path: Path  # each worker loads the workflow again: a Workflow does not pickle
    overrides: Mapping[str, Any] = field(default_factory=dict)
    offline: bool = False
    cache: bool = True
    record: bool = True
    db: str | None = None
    address: str | None = None  # an existing cluster (``auto``, ``ray://host:10001``)
    workers: int | None = None  # default: the CPUs of the local machine, or of the cluster


@dataclass(frozen=True)
class WorkerSetup:
    """What one worker is started with: no secret among it (keys come from its environment)."""

    workflow_path: str
    overrides: Mapping[str, Any]
    content_hash: str  # the workflow the driver checked: a file changed since is refused
    mapping: Mapping[str, str]
    skip: tuple[str, ...]
    budget: Budget | None
    offline: bool
    cache: bool
    record: bool
    db: str | None


class RowWorker:
    """A Ray actor: one Engine, many rows at once on its event loop (``max_concurrency``)."""

    def __init__(self, setup: WorkerSetup) -> None:
        workflow = Workflow.load(setup.workflow_path, setup.overrides)
        if workflow.content_hash != setup.content_hash:
            raise UsageError(f"{setup.workflow_path} changed since the batch started")
        self.job = RowJob(workflow, setup.mapping, setup.skip)
        self.engine = Engine(
            offline=setup.offline, cache=setup.cache, record=setup.record, db=setup.db
        )
        self.meter = BudgetMeter(setup.budget or Budget(), "batch")

    async def run(self, row: Row) -> RowOutcome:
        latencies: list[tuple[str, float]] = []

        def collect(event: Event) -> None:
            found = call_latency(event)
            if found is not None:
                latencies.append(found)

        outcome = await run_row(
            self.engine, self.job, row, listeners=[collect], shared_budgets=[self.meter]
        )
        # The driver counts the result; its nodes' outputs are in the line already.
        result = outcome.result and outcome.result.model_copy(update={"nodes": {}, "output": None})
        return replace(outcome, result=result, latencies=tuple(latencies))

    async def close(self) -> None:
        await self.engine.aclose()

    def pid(self) -> int:
        return os.getpid()


def import_ray() -> Any:
    """The ray module, or a UsageError that says how to install it."""
    try:
        import ray
    except ImportError as exc:
        raise UsageError(
            "--backend ray needs Ray, an optional extra that is not installed",
            f"install it with {INSTALL}, or leave out --backend ray",
        ) from exc
    return ray


async def run_on_ray(job: Batch, settings: RaySettings) -> Totals:
    """Run every row of ``job`` not already done on Ray workers; return the totals."""
    ray = import_ray()
    check = Engine(offline=settings.offline, cache=False, record=False)
    out, rows = job.start(check)
    started_ray = False
    try:
        started_ray = connect(ray, settings)
        workers = _start_workers(ray, job, settings)
        try:
            await _ready(ray, workers)
            job.started = time.perf_counter()  # rates and ETA count from here, not Ray's start
            async with asyncio.TaskGroup() as group:  # a failing feeder stops the others
                for worker in workers:
                    for _ in range(max(1, job.concurrency)):
                        group.create_task(_feed(ray, job, worker, rows, out))
        except BaseExceptionGroup as group_error:
            raise first_error(group_error) from None
        finally:
            rows.close()
            await _stop(ray, workers)
    finally:
        out.close()
        if started_ray:
            ray.shutdown()
    return job.totals


def connect(ray: Any, settings: RaySettings) -> bool:
    """Join the cluster at ``settings.address``, or start a small local Ray; True if this
    batch started Ray (and so stops it). A Ray already started in this process is used."""
    if ray.is_initialized():
        return False
    quiet = {"log_to_driver": False, "logging_level": logging.ERROR}
    with _own_sigterm():
        if settings.address is not None:
            try:
                ray.init(address=settings.address, **quiet)
            except ConnectionError as exc:
                raise UsageError(
                    f"--address {settings.address}: no Ray cluster there ({exc})",
                    "start one with `ray start --head`, or leave out --address for a local Ray",
                ) from exc
        else:
            ray.init(
                num_cpus=settings.workers or os.cpu_count() or 1,
                object_store_memory=OBJECT_STORE_BYTES,
                include_dashboard=False,
                **quiet,
            )
    return True


@contextlib.contextmanager
def _own_sigterm() -> Iterator[None]:
    """Keep this process's SIGTERM handling: ``ray.init`` takes SIGTERM for itself (a stack
    dump, then an exit), where the batch stops cleanly and still writes its summary."""
    previous = signal.getsignal(signal.SIGTERM)
    try:
        yield
    finally:
        if previous is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, previous)


def _start_workers(ray: Any, job: Batch, settings: RaySettings) -> list[Any]:
    cpus = float(ray.cluster_resources().get("CPU", 1.0))
    count = settings.workers or max(1, int(cpus))
    options: dict[str, Any] = {
        "max_concurrency": max(1, job.concurrency),
        "max_restarts": RESTARTS,
        "max_task_retries": RESTARTS,
        # One CPU each, or a share: more workers than CPUs must not wait for ever.
        "num_cpus": min(1.0, cpus / count),
    }
    if settings.address is not None:
        # A cluster's workers do not share this process's environment: send what they need.
        options["runtime_env"] = {"env_vars": worker_environment(job.workflow)}
    setup = _setup(job, settings)
    actor = ray.remote(RowWorker)
    batch_id = uuid.uuid4().hex[:8]
    return [
        actor.options(name=f"{NAME_PREFIX}{batch_id}-{n}", **options).remote(setup)
        for n in range(count)
    ]


def _setup(job: Batch, settings: RaySettings) -> WorkerSetup:
    local = settings.address is None
    # A local Ray's workers may not share this process's directory: give them whole paths.
    # On a cluster, the paths are the nodes' own (a shared volume, or the same checkout).
    path = settings.workflow_path.resolve() if local else settings.workflow_path
    db = str(resolve_path(settings.db).resolve()) if local else settings.db
    return WorkerSetup(
        workflow_path=str(path),
        overrides=dict(settings.overrides),
        content_hash=job.workflow.content_hash,
        mapping=dict(job.mapping),
        skip=tuple(job.skip),
        budget=job.budget,
        offline=settings.offline,
        cache=settings.cache,
        record=settings.record,
        db=db,
    )


def worker_environment(workflow: Workflow) -> dict[str, str]:
    """The variables a cluster's workers need from this environment: the providers' keys that
    are set, and flowengine's own settings (``FLOWENGINE_*``, such as FLOWENGINE_REDIS_URL)."""
    keys = (getattr(p, "api_key_env", None) for p in workflow.spec.providers.values())
    names = {key for key in keys if isinstance(key, str)}
    names |= {name for name in os.environ if name.startswith("FLOWENGINE_")}
    names.discard(ENV_PATH)  # a path on this machine: the nodes have their own, or --db
    return {name: os.environ[name] for name in sorted(names) if name in os.environ}


async def _feed(ray: Any, job: Batch, worker: Any, rows: Iterator[Row], out: Output) -> None:
    """One slot of a worker: send it a row, count and write the result, and again."""
    for row in rows:
        if job.spent():
            return
        job.totals.rows += 1
        outcome = await _outcome(ray, worker, row)
        _charge(job.meter, outcome)
        done = job.count(outcome)
        if done is not None:  # None: cut short by the batch's budget; resume runs it
            job.write(out, row, done)


async def _outcome(ray: Any, worker: Any, row: Row) -> RowOutcome:
    try:
        outcome: RowOutcome = await worker.run.remote(row)
    except ray.exceptions.RayTaskError as exc:
        raise exc.cause from None  # an error every row would share: the batch stops
    except ray.exceptions.RayActorError as exc:
        if exc.actor_init_failed:
            raise _not_started(exc) from None
        message = f"the Ray worker running this row died {RESTARTS + 1} times ({exc})"
        return unrun_outcome(row, "failed", "WorkerDied", message.splitlines()[0])
    return outcome


async def _ready(ray: Any, workers: list[Any]) -> None:
    """Wait for every worker to start: one that cannot (the workflow file changed, a package
    missing on a node) stops the batch before any row is sent."""
    try:
        await asyncio.gather(*(worker.pid.remote() for worker in workers))
    except ray.exceptions.RayActorError as exc:
        if not exc.actor_init_failed:
            raise
        raise _not_started(exc) from None


def _not_started(exc: Exception) -> RunError:
    """The error that kept a worker from starting, without Ray's traceback around it."""
    text = str(exc)
    found = list(re.finditer(r"^[\w.]*(Error|Exception): ", text, re.MULTILINE))
    why = text[found[-1].end() :].strip() if found else text.splitlines()[0]
    return RunError(f"a Ray worker could not start: {why}")


def _charge(meter: BudgetMeter, outcome: RowOutcome) -> None:
    """Count a row's calls and cost in the driver's meter of the batch's budget."""
    if outcome.result is None:
        return
    models = outcome.result.metrics.models.values()
    meter.calls += sum(m.calls - m.cached for m in models)  # cache hits are free
    meter.spent += outcome.result.metadata.cost or 0.0


async def _stop(ray: Any, workers: list[Any]) -> None:
    """Let each worker save its last records, then end it."""
    closing = [worker.close.remote() for worker in workers]
    try:
        await asyncio.wait_for(asyncio.gather(*closing, return_exceptions=True), CLOSE_S)
    except TimeoutError:
        pass  # a worker that does not answer is ended all the same
    finally:
        for worker in workers:
            ray.kill(worker, no_restart=True)
