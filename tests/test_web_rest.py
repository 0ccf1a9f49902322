"""The REST API of `flowengine serve`: workflows, runs, their events, statistics, auth, errors."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from flowengine import Workflow
from flowengine.store.db import Store
from flowengine.store.records import load_run
from flowengine.web.http import MAX_BODY
from flowengine.web.state import APP
from tests.fakeserver import FakeServer, Reply
from tests.serving import client, load, parse_events, write_workflow

Client = TestClient[web.Request, web.Application]


@pytest.fixture
def steps(tmp_path: Path) -> dict[str, Workflow]:
    return load(write_workflow(tmp_path))


async def start(api: Client, workflow: str = "steps", **inputs: Any) -> str:
    response = await api.post("/api/runs", json={"workflow": workflow, "inputs": inputs})
    assert response.status == 202, await response.text()
    body = await response.json()
    assert body["status"] == "running"
    assert body["events"] == f"/api/runs/{body['run_id']}/events"
    assert response.headers["Location"] == f"/api/runs/{body['run_id']}"
    return str(body["run_id"])


async def events(api: Client, run_id: str, after: int | None = None) -> list[dict[str, Any]]:
    headers = {"Last-Event-ID": str(after)} if after is not None else {}
    response = await api.get(f"/api/runs/{run_id}/events", headers=headers)
    assert response.status == 200
    assert response.headers["Content-Type"] == "text/event-stream"
    return parse_events(await response.text())


async def test_workflows_say_their_inputs_and_nodes(steps: dict[str, Workflow]) -> None:
    async with client(steps) as api:
        body = await (await api.get("/api/workflows")).json()
    [workflow] = body["workflows"]
    assert workflow["name"] == "steps"
    assert workflow["file"].endswith("steps.yaml")
    assert workflow["description"] == "Answers, then polishes the answer."
    assert workflow["inputs"] == [
        {
            "name": "prompt",
            "type": "string",
            "required": True,
            "default": None,
            "description": "The question",
        },
        {
            "name": "tone",
            "type": "string",
            "required": False,
            "default": "plain",
            "description": None,
        },
    ]
    assert workflow["nodes"] == [
        {"id": "draft", "type": "llm", "needs": []},
        {"id": "polish", "type": "llm", "needs": ["draft"]},
    ]


async def test_a_run_goes_on_in_the_server_and_is_followed_to_its_end(
    steps: dict[str, Workflow], private_database: Path
) -> None:
    async with client(steps) as api:
        run_id = await start(api, prompt="Why is the sky blue?", tone="short")
        stream = await events(api, run_id)
        shown = await (await api.get(f"/api/runs/{run_id}")).json()
        listed = await (await api.get("/api/runs?limit=5")).json()
    kinds = [e["event"] for e in stream]
    assert kinds[0] == "run_started" and kinds[-1] == "end"
    assert [e["id"] for e in stream] == [str(n) for n in range(1, len(stream) + 1)]
    assert stream[-1]["data"] == {"run_id": run_id, "status": "succeeded", "error": None}
    nodes = [(e["event"], e["data"].get("node")) for e in stream if e["event"].startswith("node_")]
    assert nodes == [
        ("node_started", "draft"),
        ("node_finished", "draft"),
        ("node_started", "polish"),
        ("node_finished", "polish"),
    ]
    # The answer node streams: its pieces, joined, are its answer.
    text = "".join(e["data"]["text"] for e in stream if e["event"] == "token")
    assert shown["status"] == "succeeded" and shown["workflow"] == "steps"
    assert text == shown["result"]["nodes"]["polish"]["output"]["content"]
    assert shown["result"]["inputs"] == {"prompt": "Why is the sky blue?", "tone": "short"}
    assert [c["node"] for c in shown["compare"]["responses"]] == ["draft", "polish"]
    assert [(c["node"], c["model"], c["status"]) for c in shown["timeline"]] == [
        ("draft", "first", "succeeded"),
        ("polish", "second", "succeeded"),
    ]
    assert "Why is the sky blue? (short)" in shown["timeline"][0]["messages"][0]["content"]
    assert shown["nodes"]["polish"]["status"] == "succeeded"
    assert [r["run_id"] for r in listed["runs"]] == [run_id]
    assert listed["runs"][0]["status"] == "succeeded" and listed["runs"][0]["calls"] == 2
    # The run record is the engine's, in the database every command reads.
    assert load_run(Store(private_database), run_id).result.status == "succeeded"


async def test_a_running_run_shows_the_nodes_finished_so_far(
    tmp_path: Path, server: FakeServer
) -> None:
    server.script_for("model-second", Reply.ok("late", delay=0.5))
    workflows = load(write_workflow(tmp_path, url=server.base_url))
    async with client(workflows, offline=False) as api:
        run_id = await start(api, prompt="q")
        while server.count < 2:
            await asyncio.sleep(0.01)
        shown = await (await api.get(f"/api/runs/{run_id}")).json()
        listed = await (await api.get("/api/runs?workflow=steps")).json()
        other = await (await api.get("/api/runs?workflow=other")).json()
        await events(api, run_id)  # to its end
    assert shown["status"] == "running"
    assert (shown["result"], shown["compare"], shown["timeline"]) == (None, None, [])
    assert shown["nodes"]["draft"]["status"] == "succeeded"
    assert shown["nodes"]["polish"]["status"] == "running"
    assert [(r["run_id"], r["status"]) for r in listed["runs"]] == [(run_id, "running")]
    assert other["runs"] == []


async def test_events_resume_after_the_last_event_id(steps: dict[str, Workflow]) -> None:
    async with client(steps) as api:
        run_id = await start(api, prompt="q")
        every = await events(api, run_id)
        resumed = await events(api, run_id, after=3)
        last = int(every[-1]["id"])
        at_end = await api.get(f"/api/runs/{run_id}/events", headers={"Last-Event-ID": str(last)})
    assert resumed == every[3:]
    # A client that saw the end is told there is nothing more: EventSource stops reconnecting.
    assert at_end.status == 204


async def test_a_live_stream_follows_the_run_as_it_goes(tmp_path: Path, server: FakeServer) -> None:
    server.script_for("model-second", Reply.ok("late", delay=0.3))
    workflows = load(write_workflow(tmp_path, url=server.base_url))
    async with client(workflows, offline=False) as api:
        run_id = await start(api, prompt="q")
        response = await api.get(f"/api/runs/{run_id}/events")
        first = await response.content.readuntil(b"\n\n")
        assert first.startswith(b"id: 1\nevent: run_started\n")
        rest = parse_events((await response.content.read()).decode())
    assert rest[-1]["event"] == "end" and rest[-1]["data"]["status"] == "succeeded"


async def test_stats_are_the_run_metrics_across_stored_runs(steps: dict[str, Workflow]) -> None:
    async with client(steps) as api:
        for prompt in ("a", "b", "c"):
            run_id = await start(api, prompt=prompt)
            await events(api, run_id)
        store = api.app[APP].engine.store
        assert store is not None
        await asyncio.to_thread(store.flush)  # the records the runs queued
        every = await (await api.get("/api/stats")).json()
        two = await (await api.get("/api/stats?limit=2&workflow=steps")).json()
        none = await (await api.get("/api/stats?workflow=other")).json()
        bad = await error_of(await api.get("/api/stats?limit=0"), 400)
    assert every["runs"] == 3 and set(every["models"]) == {"first", "second"}
    first = every["models"]["first"]
    assert first["calls"] == 3 and first["success_rate"] == 1.0
    assert first["latency_p50_s"] is not None and first["tokens"] > 0
    assert two["runs"] == 2 and two["models"]["second"]["calls"] == 2
    assert none == {"runs": 0, "models": {}}
    assert bad["param"] == "limit"


async def error_of(response: Any, status: int) -> dict[str, Any]:
    assert response.status == status, await response.text()
    body = await response.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return dict(body["error"])


async def test_errors_are_json_in_openais_shape(steps: dict[str, Workflow]) -> None:
    async with client(steps) as api:
        unknown = await error_of(await api.post("/api/runs", json={"workflow": "stpes"}), 404)
        missing = await error_of(await api.post("/api/runs", json={"workflow": "steps"}), 400)
        wrong = await error_of(
            await api.post("/api/runs", json={"workflow": "steps", "inputs": {"prompt": 3}}), 400
        )
        extra = await error_of(
            await api.post("/api/runs", json={"workflow": "steps", "inputs": {"x": "1"}}), 400
        )
        not_json = await error_of(await api.post("/api/runs", data=b"{nope"), 400)
        not_object = await error_of(await api.post("/api/runs", json=[1]), 400)
        huge = await error_of(
            await api.post("/api/runs", data=io.BytesIO(b" " * (MAX_BODY + 1))), 400
        )
        no_run = await error_of(await api.get("/api/runs/0123456789abcdef"), 404)
        no_events = await error_of(await api.get("/api/runs/0123456789abcdef/events"), 404)
        no_route = await error_of(await api.get("/api/nothing"), 404)
        bad_limit = await error_of(await api.get("/api/runs?limit=x"), 400)
    assert unknown["message"] == "no workflow 'stpes' is served; did you mean 'steps'?"
    assert unknown["code"] == "workflow_not_found"
    assert missing["message"].startswith("missing input 'prompt' (inputs of steps: prompt, tone")
    assert wrong["message"].startswith("input 'prompt' should be string, got int")
    assert extra["message"].startswith("unknown input 'x'")
    assert not_json["code"] == "invalid_json" and not_object["code"] == "invalid_json"
    assert huge["code"] == "body_too_large"
    assert no_run["code"] == no_events["code"] == "run_not_found"
    assert no_route["code"] == "not_found"
    assert bad_limit["param"] == "limit"


async def test_a_key_is_needed_for_everything_but_the_page(steps: dict[str, Workflow]) -> None:
    key = "sk-serve-3c1f9e0d-never-print-me"
    async with client(steps, api_key=key) as api:
        none = await api.get("/api/workflows")
        wrong = await api.get("/api/workflows", headers={"Authorization": "Bearer sk-serve-3c1f"})
        basic = await api.get("/v1/models", headers={"Authorization": key})
        right = await api.get("/api/workflows", headers={"Authorization": f"Bearer {key}"})
        page = await api.get("/")
        texts = [await r.text() for r in (none, wrong, basic)]
    assert (await error_of(none, 401))["code"] == "missing_api_key"
    assert (await error_of(wrong, 401))["code"] == "invalid_api_key"
    assert (await error_of(basic, 401))["code"] == "invalid_api_key"
    assert none.headers["WWW-Authenticate"] == "Bearer"
    assert right.status == 200 and page.status == 200
    assert not any(key[5:15] in text for text in texts)


async def test_the_page_and_its_scripts_put_data_in_as_text(steps: dict[str, Workflow]) -> None:
    async with client(steps) as api:
        page = await api.get("/")
        text = await page.text()
        scripts = [
            await (await api.get(f"/static/{name}")).text() for name in ("app.js", "graph.js")
        ]
    assert page.headers["Content-Type"].startswith("text/html")
    assert "script-src 'self';" in text and "<script>" not in text  # no inline script runs
    assert "fetch(path" in scripts[0] and '"/api/workflows"' in scripts[0]
    assert all("textContent" in js and "innerHTML" not in js for js in scripts)


async def test_shutdown_lets_quick_runs_finish_and_records_the_cut_off_ones(
    tmp_path: Path, server: FakeServer, private_database: Path
) -> None:
    server.script_for("model-second", Reply.ok("too late", delay=5))
    slow = load(write_workflow(tmp_path, url=server.base_url))
    async with client(slow, offline=False, grace=0.2) as api:
        run_id = await start(api, prompt="q")
        while server.count < 2:
            await asyncio.sleep(0.01)
        stream = await api.get(f"/api/runs/{run_id}/events")
        reading = asyncio.create_task(stream.content.read())
        await api.app.shutdown()  # as the server does when it stops, with a run in flight
        tail = parse_events((await reading).decode())
    assert tail[-1]["event"] == "end"
    assert tail[-1]["data"]["status"] == "cancelled"
    record = load_run(Store(private_database), run_id)
    assert record.result.status == "failed"
    assert record.result.error is not None and record.result.error.type == "cancelled"
    assert record.result.nodes["draft"].status == "succeeded"
    assert record.result.nodes["polish"].status == "cancelled"
    assert [c.node for c in record.timeline] == ["draft"]


async def test_shutdown_waits_for_runs_within_the_grace_period(
    tmp_path: Path, server: FakeServer, private_database: Path
) -> None:
    server.script_for("model-second", Reply.ok("in time", delay=0.2))
    workflows = load(write_workflow(tmp_path, url=server.base_url))
    async with client(workflows, offline=False, grace=5) as api:
        run_id = await start(api, prompt="q")
        while server.count < 2:
            await asyncio.sleep(0.01)
    record = load_run(Store(private_database), run_id)
    assert record.result.status == "succeeded"
    assert record.result.nodes["polish"].output["content"] == "in time"


async def test_the_newest_finished_runs_stay_in_memory(steps: dict[str, Workflow]) -> None:
    async with client(steps) as api:
        runs = api.app[APP].runs
        runs.keep = 2
        started = [await start(api, prompt=p) for p in "abc"]
        for run_id in started:
            live = runs.get(run_id)
            if live is not None:
                await live.done()
        assert [r.run_id for r in runs.in_memory()] == started[:0:-1]
        # The one forgotten is read from the run records: its stream is its end.
        await asyncio.to_thread(runs.engine.store.flush)  # type: ignore[union-attr]
        stream = await events(api, started[0])
    assert [e["event"] for e in stream] == ["end"]
    assert stream[0]["data"]["status"] == "succeeded"
