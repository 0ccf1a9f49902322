"""Single flight within a process: identical cached calls in flight make one request."""

from __future__ import annotations

import asyncio
from pathlib import Path

from flowengine import Engine, RunResult, Workflow
from tests.fakeserver import FakeServer, Reply

FLOW = """\
version: 1
name: flight
inputs:
  prompt: {{type: string}}
providers:
  local: {{base_url: "{url}", retry: {{attempts: 1}}}}
models:
  m: {{id: model-m, provider: local}}
nodes:
  answer: {{type: llm, model: m, template: "{{{{ prompt }}}}"{extra}}}
"""


async def three_at_once(tmp_path: Path, srv: FakeServer, extra: str = "") -> list[RunResult]:
    path = tmp_path / "flight.yaml"
    path.write_text(FLOW.format(url=srv.base_url, extra=extra))
    wf = Workflow.load(path)
    async with Engine(environ={}, record=False) as engine:
        return list(await asyncio.gather(*(engine.run(wf, prompt="same") for _ in range(3))))


def cached(results: list[RunResult]) -> list[int]:
    return [r.metrics.models["m"].cached for r in results]


async def test_identical_calls_at_once_make_one_request(tmp_path: Path) -> None:
    async with FakeServer(latency=0.2) as srv:
        results = await three_at_once(tmp_path, srv)
    assert srv.count == 1
    assert [r.status for r in results] == ["succeeded"] * 3
    assert sorted(cached(results)) == [0, 1, 1]
    assert len({r.nodes["answer"].output.content for r in results}) == 1


async def test_a_failure_is_not_shared_the_waiting_calls_make_their_own(tmp_path: Path) -> None:
    async with FakeServer(latency=0.2) as srv:
        srv.script(Reply.error(400, "bad request"))
        results = await three_at_once(tmp_path, srv)
    assert srv.count == 3
    assert sorted(r.status for r in results) == ["failed", "succeeded", "succeeded"]
    assert cached(results) == [0, 0, 0]


async def test_calls_that_bypass_the_cache_are_not_joined(tmp_path: Path) -> None:
    async with FakeServer(latency=0.2) as srv:
        results = await three_at_once(tmp_path, srv, ", cache: false")
    assert srv.count == 3
    assert cached(results) == [0, 0, 0]
