"""Engine.stream: a run's events and the pieces of its answer, against a real local server."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from pathlib import Path
from typing import Any

import pytest

from flowengine import Engine, Event, RunResult, TokenDelta, Workflow
from flowengine.errors import UsageError
from flowengine.providers.offline import pieces
from flowengine.run.engine import answer_nodes
from tests.fakeserver import DONE, FakeServer, Reply, chunk, sse, usage_chunk

ENV = {"LOCAL_KEY": "sk-test-5e4d3c2b1a00"}

WORKFLOW = """\
version: 1
name: streamed
inputs:
  prompt: {type: string}
providers:
  local:
    type: openai
    base_url: BASE
    api_key_env: LOCAL_KEY
    retry: {attempts: 3, initial: 1ms, max: 5ms}
defaults: {provider: local}
models:
  a: {id: model-a, weight: 2}
  b: {id: model-b}
nodes:
  draft:
    type: llm
    model: a
    template: "{{ prompt }}"
  facts:
    type: llm
    needs: [draft]
    model: a
    template: "Facts about {{ prompt }}"
    schema: {type: object, properties: {n: {type: integer}}, required: [n]}
  answer:
    type: llm
    needs: [draft, facts]
    model: a
    fallbacks: [b]
    template: "Improve: {{ draft }}"
"""


def workflow(tmp_path: Path, server: FakeServer, text: str = WORKFLOW) -> Workflow:
    path = tmp_path / "wf.yaml"
    path.write_text(text.replace("BASE", server.base_url))
    return Workflow.load(path)


async def collect(
    engine: Engine, wf: Workflow, **kw: Any
) -> tuple[list[Event], list[TokenDelta], RunResult]:
    events: list[Event] = []
    deltas: list[TokenDelta] = []
    async with contextlib.aclosing(engine.stream(wf, prompt="cats", **kw)) as items:
        async for item in items:
            if isinstance(item, Event):
                events.append(item)
            elif isinstance(item, TokenDelta):
                deltas.append(item)
            else:
                return events, deltas, item
    raise AssertionError("no result")


def stream_of(*words: str) -> Reply:
    return Reply.stream(*(chunk(w) for w in words), chunk(finish="stop"), usage_chunk(), DONE)


async def test_only_the_answer_streams_between_its_events_and_the_result_comes_last(
    server: FakeServer, tmp_path: Path
) -> None:
    server.script_for("model-a", Reply.ok("a draft"), Reply.ok('{"n": 3}'))
    server.script_for("model-a", stream_of("Better ", "answer"))
    async with Engine(environ=ENV, cache=False, record=False) as engine:
        events, deltas, result = await collect(engine, workflow(tmp_path, server))
    assert [(d.node, d.model, d.text) for d in deltas] == [
        ("answer", "a", "Better "),
        ("answer", "a", "answer"),
    ]
    assert [r.get("stream") for r in server.requests] == [None, None, True]
    assert "response_format" in server.requests[1]  # the structured node, not streamed
    call = result.nodes["answer"].output
    assert call.content == "Better answer" and call.ttft_s is not None
    assert call.usage.total_tokens == 15 and call.usage.cost == 0.000015
    assert result.nodes["draft"].output.ttft_s is None
    assert result.metadata.tokens > 15
    assert events[0].kind == "run_started" and events[-1].kind == "run_finished"


async def test_nodes_chooses_what_streams_and_a_fanout_names_each_model(
    server: FakeServer, tmp_path: Path
) -> None:
    text = WORKFLOW.replace(
        "  answer:\n    type: llm\n", "  answer:\n    type: fanout\n    models: [a, b]\n"
    ).replace("    model: a\n    fallbacks: [b]\n", "")
    async with Engine(environ=ENV, cache=False, record=False) as engine:
        wf = workflow(tmp_path, server, text)
        server.script_for("model-a", Reply.ok("a draft"), Reply.ok('{"n": 3}'))
        _, deltas, result = await collect(engine, wf, nodes=["draft", "answer"])
        assert {d.node for d in deltas} == {"draft", "answer"}
        for call in result.nodes["answer"].output:
            said = "".join(d.text for d in deltas if d.node == "answer" and d.model == call.model)
            assert said == call.content
        with pytest.raises(UsageError, match="stream: unknown node 'answr'; did you mean"):
            await collect(engine, wf, nodes=["answr"])


async def test_a_broken_off_answer_fails_the_run_and_no_fallback_follows(
    server: FakeServer, tmp_path: Path
) -> None:
    broken = Reply.stream(chunk("Half an "), sse({"error": {"code": 502, "message": "cut"}}))
    server.script_for("model-a", Reply.ok("a draft"), Reply.ok('{"n": 3}'), broken)
    async with Engine(environ=ENV, cache=False, record=False) as engine:
        _, deltas, result = await collect(engine, workflow(tmp_path, server))
    assert "".join(d.text for d in deltas) == "Half an "
    assert result.status == "failed" and server.count == 3  # model b was never asked
    assert result.error is not None and "cut (the answer broke off after 8 characters" in (
        result.error.message
    )
    assert result.nodes["answer"].output.success is False


async def test_stopping_early_cancels_the_run_at_once(server: FakeServer, tmp_path: Path) -> None:
    slow = Reply.stream(chunk("Start "), 30.0, chunk("end", finish="stop"), DONE)
    server.script_for("model-a", Reply.ok("a draft"), Reply.ok('{"n": 3}'), slow)
    async with Engine(environ=ENV, cache=False, record=True) as engine:
        started = time.monotonic()
        wf = workflow(tmp_path, server)
        async with contextlib.aclosing(engine.stream(wf, prompt="cats")) as items:
            async for item in items:
                if isinstance(item, TokenDelta):
                    break
        assert time.monotonic() - started < 5
        await asyncio.sleep(0.1)
        assert server.in_flight == 0  # the request was dropped, not left running
        assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []


async def test_a_dropped_iterator_cancels_the_run_too(server: FakeServer, tmp_path: Path) -> None:
    slow = Reply.stream(chunk("Start "), 30.0, chunk("end", finish="stop"), DONE)
    server.script_for("model-a", Reply.ok("a draft"), Reply.ok('{"n": 3}'), slow)
    async with Engine(environ=ENV, cache=False, record=False) as engine:
        async for item in engine.stream(workflow(tmp_path, server), prompt="cats"):
            if isinstance(item, TokenDelta):
                break
        gc.collect()
        for _ in range(50):  # the loop closes a dropped generator on a later turn
            await asyncio.sleep(0.02)
            if server.in_flight == 0:
                break
        assert server.in_flight == 0


async def test_bad_inputs_raise_from_the_iterator_before_any_call(
    server: FakeServer, tmp_path: Path
) -> None:
    async with Engine(environ=ENV, cache=False, record=False) as engine:
        with pytest.raises(UsageError, match="missing input 'prompt'"):
            async for _ in engine.stream(workflow(tmp_path, server)):
                pass
    assert server.count == 0


async def test_offline_answers_stream_in_the_same_pieces_every_time(tmp_path: Path) -> None:
    wf = Workflow.load(Path(__file__).resolve().parent.parent / "workflows" / "critique.yaml")
    runs = []
    for _ in range(2):
        async with Engine(offline=True, cache=False, record=False) as engine:
            runs.append(await collect(engine, wf))
    (_, first, result), (_, second, _) = runs
    assert [d.text for d in first] == [d.text for d in second]
    assert {d.node for d in first} == {"primary"} and len(first) == 4
    content = result.nodes["primary"].output.content
    assert "".join(d.text for d in first) == content
    assert pieces(content) == [d.text for d in first]


def test_the_answer_is_the_last_plain_llm_node_unless_the_workflow_names_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "wf.yaml"
    path.write_text(WORKFLOW.replace("BASE", "http://127.0.0.1:9/v1"))
    wf = Workflow.load(path)
    assert answer_nodes(wf) == ["answer"]
    assert answer_nodes(wf, ["draft", "facts"]) == ["draft"]  # facts has a schema
    path.write_text(path.read_text() + "answer: draft\n")
    assert answer_nodes(Workflow.load(path)) == ["draft"]
