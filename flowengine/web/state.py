"""What every handler of a server shares: the workflows, the runs, the engine; and how a
request names a workflow and starts a run of it."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from flowengine.errors import UsageError, did_you_mean
from flowengine.language.workflow import Workflow
from flowengine.run.engine import Engine
from flowengine.store.db import Store
from flowengine.store.records import RunRecord, load_run
from flowengine.web.http import HttpError
from flowengine.web.runs import LiveRun, Runs


@dataclass(eq=False)
class State:
    workflows: dict[str, Workflow]
    engine: Engine
    runs: Runs
    #: Seconds since the epoch when the server started: the models' ``created``.
    started: int = field(default_factory=lambda: int(time.time()))


APP = web.AppKey("flowengine", State)


def find_workflow(state: State, name: Any, param: str) -> Workflow:
    """The workflow a request names; 404 when there is none by that name."""
    if not isinstance(name, str) or not name:
        raise HttpError(400, f"`{param}` must name a workflow", param=param, code="missing_model")
    found = state.workflows.get(name)
    if found is None:
        hint = did_you_mean(name, state.workflows) or f"served: {', '.join(state.workflows)}"
        raise HttpError(
            404,
            f"no workflow '{name}' is served; {hint}",
            param=param,
            code=f"{param}_not_found",
        )
    return found


def bind_inputs(workflow: Workflow, given: dict[str, Any]) -> dict[str, Any]:
    """The run's inputs, checked as a run checks them; 400 naming what the workflow takes."""
    try:
        return workflow.bind_inputs(given)
    except UsageError as exc:
        takes = ", ".join(workflow.spec.inputs) or "none"
        raise HttpError(
            400,
            f"{exc.message} (inputs of {workflow.name}: {takes}; pass them in `inputs`)",
            param="inputs",
            code="invalid_inputs",
        ) from None


def start(runs: Runs, workflow: Workflow, inputs: dict[str, Any], **options: Any) -> LiveRun:
    """Start a run; 503 once the server is shutting down."""
    if runs.closing:
        raise HttpError(503, "the server is shutting down", type="server_error", code="shutdown")
    return runs.start(workflow, inputs, **options)


async def stored_run(state: State, run_id: str, recent: bool) -> RunRecord | None:
    """The stored record of the run with this whole id; None when there is none. A ``recent``
    run may have ended with its record still queued for the store's writer: then the queue is
    flushed and the record read again."""
    store = state.engine.store
    if store is None:
        return None
    record = await asyncio.to_thread(_load, store, run_id)
    if record is None and recent:
        await asyncio.to_thread(store.flush)
        record = await asyncio.to_thread(_load, store, run_id)
    return record


def _load(store: Store, run_id: str) -> RunRecord | None:
    try:
        record = load_run(store, run_id)
    except UsageError:
        return None
    return record if record.result.run_id == run_id else None  # a prefix is not an id here
