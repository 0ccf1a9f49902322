"""GET /runs/<id>: the report of a run the server recorded, as `flowengine report` writes it."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from flowengine import Workflow
from tests.htmltree import Element, parse
from tests.serving import client, load, write_workflow

SLOW = """\
version: 1
name: slow
inputs: {prompt: {type: string}}
providers: {lazy: {type: offline, latency: 5s}}
models: {m: {id: model-m, provider: lazy}}
nodes: {only: {type: llm, model: m, template: "{{ prompt }}"}}
"""


def edges(page: Element) -> set[str]:
    graph = page.find("section", id="graph")
    return {path.find("title").text for path in graph.find_all("path", "edge")}


async def test_a_finished_run_is_shown_by_its_report(tmp_path: Path) -> None:
    async with client(load(write_workflow(tmp_path))) as api:
        started = await api.post(
            "/api/runs", json={"workflow": "steps", "inputs": {"prompt": "<b>hi"}}
        )
        run_id = (await started.json())["run_id"]
        await (await api.get(f"/api/runs/{run_id}/events")).read()  # to its end
        response = await api.get(f"/runs/{run_id}")
        assert response.status == 200
        assert response.content_type == "text/html"
        text = await response.text()
    assert text.startswith("<!doctype html>")
    page = parse(text)
    assert page.find("header", id="summary").find("code").text == run_id
    assert edges(page) == {"polish needs draft"}
    assert len(page.find_all("article", "card")) == 2
    assert '"prompt": "<b>hi"' in page.find("header", id="summary").find("pre").text


async def test_an_old_record_takes_its_graph_from_the_served_workflow(tmp_path: Path) -> None:
    path = write_workflow(tmp_path)
    async with client(load(path)) as api:
        started = await api.post("/api/runs", json={"workflow": "steps", "inputs": {"prompt": "x"}})
        run_id = (await started.json())["run_id"]
        await (await api.get(f"/api/runs/{run_id}/events")).read()
        await api.get(f"/runs/{run_id}")  # the record is written by now
        with sqlite3.connect(os.environ["FLOWENGINE_DB"]) as db:
            db.execute("DELETE FROM graphs")
        path.unlink()  # not read: the served workflow is the version that ran
        page = parse(await (await api.get(f"/runs/{run_id}")).text())
    assert edges(page) == {"polish needs draft"}


async def test_a_running_run_and_an_unknown_one_have_no_page(tmp_path: Path) -> None:
    (tmp_path / "slow.yaml").write_text(SLOW)
    async with client({"slow": Workflow.load(tmp_path / "slow.yaml")}, grace=0.05) as api:
        started = await api.post("/api/runs", json={"workflow": "slow", "inputs": {"prompt": "x"}})
        run_id = (await started.json())["run_id"]
        running = await api.get(f"/runs/{run_id}")
        assert running.status == 409
        assert (await running.json())["error"]["message"] == f"run '{run_id}' is still running"
        unknown = await api.get("/runs/0123456789abcdef")
        assert unknown.status == 404
        assert (await unknown.json())["error"]["code"] == "run_not_found"


async def test_with_a_key_the_report_needs_it_but_the_web_page_does_not(tmp_path: Path) -> None:
    async with client(load(write_workflow(tmp_path)), api_key="sesame") as api:
        assert (await api.get("/runs/0123456789abcdef")).status == 401
        assert (await api.get("/")).status == 200
        assert (await api.get("/static/app.js")).status == 200
        assert (await api.get("/static/report.css")).status == 200
        given = {"Authorization": "Bearer sesame"}
        assert (await api.get("/runs/0123456789abcdef", headers=given)).status == 404
