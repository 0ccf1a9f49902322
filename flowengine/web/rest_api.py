"""The REST API for applications, under ``/api/``: workflows, runs, their events, statistics.

Runs started here go on in the server: ``POST /api/runs`` answers at once with the run's id,
and ``GET /api/runs/<id>`` and its event stream follow it. Finished runs are read from the run
records (the engine writes them), runs in flight from memory.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from typing import Any

from aiohttp import web

from flowengine.compare import compare, response_calls
from flowengine.results import model_metrics, to_jsonable
from flowengine.store.records import list_runs, recent_results
from flowengine.web.events import EventLog, stream_events
from flowengine.web.http import HttpError, json_response, query_int, read_json, text_param
from flowengine.web.runs import LiveRun
from flowengine.web.state import APP, bind_inputs, find_workflow, start, stored_run
from flowengine.web.workflows import describe

#: The most runs one request lists, or computes statistics over.
MOST_RUNS = 1000


async def list_workflows(request: web.Request) -> web.Response:
    workflows = request.app[APP].workflows.values()
    return json_response({"workflows": [describe(w) for w in workflows]})


async def start_run(request: web.Request) -> web.Response:
    state = request.app[APP]
    body = await read_json(request)
    workflow = find_workflow(state, body.get("workflow"), "workflow")
    given = body.get("inputs", {})
    if not isinstance(given, dict):
        raise HttpError(400, "`inputs` must be an object of input values", param="inputs")
    live = start(state.runs, workflow, bind_inputs(workflow, given))
    where = f"/api/runs/{live.run_id}"
    return json_response(
        {"run_id": live.run_id, "status": "running", "events": f"{where}/events"},
        status=202,
        headers={"Location": where},
    )


async def show_run(request: web.Request) -> web.Response:
    state = request.app[APP]
    run_id = request.match_info["run_id"]
    live = state.runs.get(run_id)
    if live is not None and live.status == "running":
        return json_response(_running(live))
    record = await stored_run(state, run_id, live is not None)
    if record is None:
        if live is None:
            raise _no_run(run_id)
        return json_response(_unrecorded(live))  # it could not run, or the store is off
    result = record.result
    return json_response(
        {
            "run_id": result.run_id,
            "workflow": result.workflow,
            "status": result.status,
            "result": result.model_dump(mode="json"),
            "compare": compare(result),
            "timeline": [call.as_dict() for call in record.timeline],
            "nodes": {n: _node(r) for n, r in result.nodes.items()},
        }
    )


def _running(live: LiveRun) -> dict[str, Any]:
    return {
        "run_id": live.run_id,
        "workflow": live.workflow.name,
        "status": live.status,
        "result": None,
        "compare": None,
        "timeline": [],
        "nodes": live.nodes,
    }


def _unrecorded(live: LiveRun) -> dict[str, Any]:
    result = live.result
    return {
        **_running(live),
        "result": result.model_dump(mode="json") if result else None,
        "compare": compare(result) if result else None,
        "error": asdict(live.error) if live.error else None,
    }


def _node(result: Any) -> dict[str, Any]:
    return {
        "status": result.status,
        "duration_s": result.duration_s,
        "error": to_jsonable(result.error),
        "reason": result.reason,
    }


def _no_run(run_id: str) -> HttpError:
    return HttpError(404, f"no run '{run_id}'", param="run_id", code="run_not_found")


async def list_recent(request: web.Request) -> web.Response:
    """The newest runs first, those in flight included."""
    state = request.app[APP]
    limit = query_int(request, "limit", 20, MOST_RUNS)
    workflow = text_param(request, "workflow")
    runs: dict[str, dict[str, Any]] = {}
    for live in state.runs.in_memory():
        if live.status == "running" and workflow in (None, live.workflow.name):
            runs[live.run_id] = _summary(live)
    store = state.engine.store
    if store is not None:
        stored = await asyncio.to_thread(list_runs, store, limit, workflow)
        runs.update({s.run_id: asdict(s) for s in stored if s.run_id not in runs})
    newest = sorted(runs.values(), key=lambda s: s["started_at"], reverse=True)
    return json_response({"runs": newest[:limit]})


def _summary(live: LiveRun) -> dict[str, Any]:
    return {
        "run_id": live.run_id,
        "workflow": live.workflow.name,
        "status": live.status,
        "started_at": live.started_at,
        "total_time": None,
        "calls": None,
        "cost": None,
    }


async def stats(request: web.Request) -> web.Response:
    """Per-model statistics over the calls of the newest stored runs."""
    state = request.app[APP]
    limit = query_int(request, "limit", 100, MOST_RUNS)
    workflow = text_param(request, "workflow")
    store = state.engine.store
    results = (
        [] if store is None else await asyncio.to_thread(recent_results, store, limit, workflow)
    )
    calls = [call for result in results for call in response_calls(result)]
    models = {alias: to_jsonable(m) for alias, m in model_metrics(calls).items()}
    return json_response({"runs": len(results), "models": models})


async def run_events(request: web.Request) -> web.StreamResponse:
    state = request.app[APP]
    run_id = request.match_info["run_id"]
    live = state.runs.get(run_id)
    if live is not None:
        return await stream_events(request, live.events)
    record = await stored_run(state, run_id, False)
    if record is None:
        raise _no_run(run_id)
    # A run from before this server's memory: its events are gone, its end is known.
    ended = EventLog()
    ended.end(record.result.status, run_id, to_jsonable(record.result.error))
    return await stream_events(request, ended)
