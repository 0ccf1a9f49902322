"""HTML pages of the server besides the web UI: ``GET /runs/<id>``, the report of a run.

The page is the one ``flowengine report`` writes, so that the UI, which shows it in a frame,
and a report on disk show a run alike. Its graph comes from the run record or, for a record
from before records kept it, from the served workflow if it is the version that ran.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

from aiohttp import web

from flowengine.store.records import RunRecord, graph_of
from flowengine.web.http import HttpError
from flowengine.web.report import run_report
from flowengine.web.state import APP, State, stored_run


async def run_page(request: web.Request) -> web.Response:
    state = request.app[APP]
    run_id = request.match_info["run_id"]
    live = state.runs.get(run_id)
    if live is not None and live.status == "running":
        raise HttpError(409, f"run '{run_id}' is still running", param="run_id", code="run_running")
    if state.engine.store is None:
        raise HttpError(404, "this server keeps no run records", code="no_records")
    record = await stored_run(state, run_id, live is not None)
    if record is None:
        raise HttpError(404, f"no run '{run_id}'", param="run_id", code="run_not_found")
    page = await asyncio.to_thread(run_report, _with_graph(state, record))
    return web.Response(text=page, content_type="text/html", headers={"Cache-Control": "no-store"})


def _with_graph(state: State, record: RunRecord) -> RunRecord:
    served = state.workflows.get(record.result.workflow)
    if record.graph is not None or served is None:
        return record
    if served.content_hash != record.content_hash:
        return record
    return replace(record, graph=graph_of(served.spec.nodes))
