"""Structured answers against a real HTTP server on 127.0.0.1: what is sent, repairs, failures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from flowengine import Engine, Workflow
from tests.fakeserver import FakeServer, Reply

KEY = "sk-test-structured-never-print-me"
ENV = {"OPENROUTER_API_KEY": KEY}
SCHEMA = {
    "type": "object",
    "properties": {
        "best": {"type": "string", "enum": ["a", "b"]},
        "score": {"type": "integer", "minimum": 1, "maximum": 10},
    },
    "required": ["best", "score"],
    "additionalProperties": False,
}
WORKFLOW = """
version: 1
name: structured
inputs:
  prompt: {}
models:
  gpt: {id: openai/gpt-oss-120b}
  glm: {id: z-ai/glm-4.5}
  kimi: {id: moonshotai/kimi-k2}
nodes:
  judge:
    type: llm
    model: gpt
    system: You judge answers.
    template: "{{ prompt }}"
    schema: %s
output:
  best: "{{ judge.data.best }}"
  score: "{{ judge.data.score }}"
"""
FANOUT = """
version: 1
name: scores
inputs:
  prompt: {}
models:
  gpt: {id: openai/gpt-oss-120b}
  glm: {id: z-ai/glm-4.5}
  kimi: {id: moonshotai/kimi-k2}
nodes:
  critiques:
    type: fanout
    template: "{{ prompt }}"
    min_success: %d
    on_error: continue
    schema: %s
  total:
    type: llm
    needs: [critiques]
    model: gpt
    template: >-
      {%% for c in critiques if c.success %%}{{ c.model }}={{ c.data.score }} {%% endfor %%}
"""


def load(text: str, srv: FakeServer, tmp_path: Path, **overrides: Any) -> Workflow:
    path = tmp_path / "wf.yaml"
    path.write_text(text, encoding="utf-8")
    settings = {
        "providers.openrouter.base_url": srv.base_url,
        "providers.openrouter.retry": {"attempts": 2, "initial": "10ms", "max": "20ms"},
        **overrides,
    }
    return Workflow.load(path, overrides=settings)


async def run(wf: Workflow, **kw: Any) -> Any:
    async with Engine(environ=ENV, cache=kw.pop("cache", False), record=False) as engine:
        return await engine.run(wf, prompt="Which is better?")


def reply(data: Any) -> Reply:
    return Reply.ok(json.dumps(data))


async def test_json_schema_is_sent_and_the_data_is_on_the_result(
    server: FakeServer, tmp_path: Path
) -> None:
    server.script(Reply.ok('```json\n{"best": "b", "score": 7}\n```'))
    result = await run(load(WORKFLOW % json.dumps(SCHEMA), server, tmp_path))
    assert result.status == "succeeded"
    assert result.output == {"best": "b", "score": 7}
    assert result.nodes["judge"].output.data == {"best": "b", "score": 7}
    sent = server.requests[0]
    assert sent["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "judge", "schema": SCHEMA, "strict": True},
    }
    assert sent["messages"][0] == {"role": "system", "content": "You judge answers."}


async def test_a_schema_strict_mode_would_reject_is_sent_as_written_not_strict(
    server: FakeServer, tmp_path: Path
) -> None:
    loose = {"type": "object", "properties": {"best": {"type": "string"}}}
    server.script(reply({"best": "a"}))
    await run(
        load(WORKFLOW.replace('score: "{{ judge.data.score }}"', "") % loose, server, tmp_path)
    )
    sent = server.requests[0]["response_format"]["json_schema"]
    assert sent == {"name": "judge", "schema": loose, "strict": False}


async def test_json_object_setting_states_the_schema_in_the_system_message(
    server: FakeServer, tmp_path: Path
) -> None:
    server.script(reply({"best": "a", "score": 3}))
    wf = load(
        WORKFLOW % json.dumps(SCHEMA),
        server,
        tmp_path,
        **{"providers.openrouter.structured": "json_object"},
    )
    result = await run(wf)
    assert result.output == {"best": "a", "score": 3}
    sent = server.requests[0]
    assert sent["response_format"] == {"type": "json_object"}
    system = sent["messages"][0]
    assert system["role"] == "system"
    assert system["content"].startswith("You judge answers.\n\nReply with one JSON object")
    stated = system["content"].split("JSON Schema:\n", 1)[1]
    assert json.loads(stated) == SCHEMA
    assert sent["messages"][1] == {"role": "user", "content": "Which is better?"}


async def test_bad_json_then_good_is_repaired_through_the_call_path(
    server: FakeServer, tmp_path: Path
) -> None:
    server.script(Reply.ok('{"best": "a" "score": 3}'), reply({"best": "a", "score": 3}))
    result = await run(load(WORKFLOW % json.dumps(SCHEMA), server, tmp_path))
    assert result.status == "succeeded"
    assert result.output == {"best": "a", "score": 3}
    assert server.count == 2
    repair = server.requests[1]
    assert repair["response_format"] == server.requests[0]["response_format"]
    assert repair["messages"][:3] == [
        {"role": "system", "content": "You judge answers."},
        {"role": "user", "content": "Which is better?"},
        {"role": "assistant", "content": '{"best": "a" "score": 3}'},
    ]
    assert repair["messages"][3] == {
        "role": "user",
        "content": "Your reply is not valid JSON: Expecting ',' delimiter at line 1, column 14 "
        "(character 14).\nReply again with the corrected JSON only, and no other text.",
    }
    # The repair is a call like any other: counted, priced, in the model's metrics.
    assert result.metadata.calls == 2
    assert result.metrics.models["gpt"].calls == 2
    assert result.metadata.cost == pytest.approx(2 * 0.000001 * (12 + 6))


async def test_a_schema_mismatch_is_stated_with_its_json_path(
    server: FakeServer, tmp_path: Path
) -> None:
    server.script(reply({"best": "c", "score": 11}), reply({"best": "b", "score": 10}))
    result = await run(load(WORKFLOW % json.dumps(SCHEMA), server, tmp_path))
    assert result.output == {"best": "b", "score": 10}
    asked = server.requests[1]["messages"][-1]["content"]
    assert asked == (
        "Your reply does not match the required JSON Schema: at $.best: 'c' is not one of "
        "['a', 'b']; at $.score: 11 is greater than the maximum of 10.\n"
        "Reply again with the corrected JSON only, and no other text."
    )


async def test_still_bad_after_the_repair_fails_the_node_clearly(
    server: FakeServer, tmp_path: Path
) -> None:
    server.script(Reply.ok("I think b is better."), reply({"best": "b"}))
    result = await run(load(WORKFLOW % json.dumps(SCHEMA), server, tmp_path))
    assert result.status == "failed"
    assert server.count == 2  # one repair, no more
    node = result.nodes["judge"]
    assert node.status == "failed"
    assert node.error.type == "schema"
    assert node.error.message == (
        "nodes.judge: the answer of model 'gpt' does not match the schema, also after a "
        "repair request: at $: 'score' is a required property (tried: gpt)"
    )
    assert node.output.content == '{"best": "b"}' and node.output.data is None
    assert result.metadata.calls == 2


async def test_not_json_twice_names_the_json_error(server: FakeServer, tmp_path: Path) -> None:
    server.script(Reply.ok("no"), Reply.ok("still no"))
    result = await run(load(WORKFLOW % json.dumps(SCHEMA), server, tmp_path))
    error = result.nodes["judge"].error
    assert error.type == "json"
    assert error.message.startswith("nodes.judge: the answer of model 'gpt' is not JSON, also ")
    assert "Expecting value at line 1, column 1" in error.message


async def test_a_failed_call_is_not_repaired(server: FakeServer, tmp_path: Path) -> None:
    server.script(Reply.error(400, "response_format is not supported"))
    result = await run(load(WORKFLOW % json.dumps(SCHEMA), server, tmp_path))
    assert server.count == 1
    assert result.nodes["judge"].error.type == "http"


async def test_an_invalid_answer_is_not_cached(server: FakeServer, tmp_path: Path) -> None:
    wf = load(WORKFLOW % json.dumps(SCHEMA), server, tmp_path)
    server.script(Reply.ok("no"), reply({"best": "a", "score": 2}))
    first = await run(wf, cache=True)
    assert first.output == {"best": "a", "score": 2}
    server.script(reply({"best": "b", "score": 9}))
    again = await run(wf, cache=True)
    # The first answer was not kept, so the same question is asked again, and answered anew.
    assert server.count == 3
    assert again.output == {"best": "b", "score": 9}


async def test_fanout_failed_model_counts_against_min_success(
    server: FakeServer, tmp_path: Path
) -> None:
    schema = {"type": "object", "properties": {"score": {"type": "integer"}}, "required": ["score"]}
    server.script_for("z-ai/glm-4.5", Reply.ok("bad"), Reply.ok("worse"))
    server.always_for("openai/gpt-oss-120b", reply({"score": 4}))
    server.always_for("moonshotai/kimi-k2", reply({"score": 6}))
    result = await run(load(FANOUT % (3, json.dumps(schema)), server, tmp_path))
    node = result.nodes["critiques"]
    assert node.status == "failed"
    assert node.error.type == "min_success"
    assert "glm: nodes.critiques: the answer of model 'glm' is not JSON" in node.error.message
    outputs = {c.model: (c.success, c.data) for c in node.output}
    assert outputs == {
        "gpt": (True, {"score": 4}),
        "glm": (False, None),
        "kimi": (True, {"score": 6}),
    }
    # on_error: continue: the next node reads the data of each model that succeeded.
    total = result.nodes["total"].output
    assert server.requests[-1]["messages"][0]["content"] == "gpt=4 kimi=6 "
    assert total.success


async def test_offline_fanout_scores_match_the_schema_and_differ(tmp_path: Path) -> None:
    schema = {
        "type": "object",
        "properties": {"score": {"type": "integer", "minimum": 1, "maximum": 10}},
        "required": ["score"],
        "additionalProperties": False,
    }
    path = tmp_path / "wf.yaml"
    path.write_text(FANOUT % (3, json.dumps(schema)), encoding="utf-8")
    async with Engine(offline=True, cache=False, record=False) as engine:
        result = await engine.run(Workflow.load(path), prompt="Which is better?")
    scores = [c.data["score"] for c in result.nodes["critiques"].output]
    assert all(1 <= s <= 10 for s in scores)
    assert len(set(scores)) > 1
    assert result.metadata.calls == 4  # no repair was needed
