"""`messages:` prompts: the turns a real server receives, the cache and the records, offline runs.

Broken `messages:` live as data in tests/data/invalid (messages_*.yaml).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from flowengine import Engine, RunResult, Workflow
from flowengine.spec import WorkflowSpec, json_schema
from flowengine.store.db import Store
from flowengine.store.records import load_run
from tests.fakeserver import FakeServer, Reply

HEAD = """\
version: 1
name: messages
inputs:
  prompt: {{}}
  context: {{default: ""}}
providers:
  local: {{base_url: "{url}", retry: {{attempts: 1}}}}
models:
  a: {{id: model-a, provider: local, weight: 2}}
  b: {{id: model-b, provider: local}}
defaults: {{provider: local}}
nodes:
"""

FEW_SHOT = """\
  label:
    type: llm
    model: a
    vars: {{labels: [positive, negative]}}
    messages:
      - {{role: system, content: "Answer {{{{ labels | join(' or ') }}}}."}}
      - {{role: user, content: I loved it.}}
      - {{role: assistant, content: {first}}}
      - {{role: user, prompt: shot.j2}}
      - {{role: assistant, content: negative}}
      - role: user
        content: |
          Sentence:
          {{{{ prompt }}}}
"""

SENT = [
    {"role": "system", "content": "Answer positive or negative."},
    {"role": "user", "content": "I loved it."},
    {"role": "assistant", "content": "positive"},
    {"role": "user", "content": "It broke after 2 days (negative)."},
    {"role": "assistant", "content": "negative"},
    {"role": "user", "content": "Sentence:\nGreat value."},
]


def load(tmp_path: Path, url: str, nodes: str, name: str = "wf.yaml") -> Workflow:
    prompts = tmp_path / "prompts"
    prompts.mkdir(exist_ok=True)
    (prompts / "shot.j2").write_text("It broke after 2 days ({{ labels[1] }}).")
    path = tmp_path / name
    path.write_text(HEAD.format(url=url) + nodes)
    return Workflow.load(path)


async def run(wf: Workflow, prompt: str = "Great value.", **engine: bool) -> RunResult:
    async with Engine(environ={}, **engine) as eng:
        return await eng.run(wf, prompt=prompt)


async def test_few_shot_turns_reach_the_server_in_order(server: FakeServer, tmp_path: Path) -> None:
    result = await run(load(tmp_path, server.base_url, FEW_SHOT.format(first="positive")))
    assert result.status == "succeeded"
    assert server.requests[0]["messages"] == SENT
    # The run's record keeps the rendered turns, not the templates.
    (call,) = load_run(Store(), result.run_id).timeline
    assert call.messages == SENT


async def test_the_cache_keys_on_every_turn(server: FakeServer, tmp_path: Path) -> None:
    await run(load(tmp_path, server.base_url, FEW_SHOT.format(first="positive")))
    again = await run(load(tmp_path, server.base_url, FEW_SHOT.format(first="positive")))
    assert server.count == 1 and again.output["label"]["cached"] is True
    # Only an example answer differs; the question, the last user turn, is the same.
    await run(load(tmp_path, server.base_url, FEW_SHOT.format(first="Positive!"), "other.yaml"))
    assert server.count == 2
    assert server.requests[1]["messages"][2] == {"role": "assistant", "content": "Positive!"}


MULTI_TURN = """\
  draft: {type: llm, model: a, template: "{{ prompt }}"}
  shorter:
    type: llm
    needs: [draft]
    model: a
    messages:
      - {role: user, content: "{{ prompt }}"}
      - {role: assistant, content: "{{ draft }}"}
      - {role: user, content: "Say it in fewer than {{ draft.content | length }} characters."}
"""


async def test_a_multi_turn_prompt_carries_an_upstream_answer_as_data(
    server: FakeServer, tmp_path: Path
) -> None:
    answer = "Because {{ prompt }} {% raw %} is {{ 7 * 6 }}"
    server.script(Reply.ok(answer))
    wf = load(tmp_path, server.base_url, MULTI_TURN)
    result = await run(wf, "Why?")
    assert result.status == "succeeded"
    # The model's answer goes in as written: never rendered as a template itself.
    assert server.requests[1]["messages"] == [
        {"role": "user", "content": "Why?"},
        {"role": "assistant", "content": answer},
        {"role": "user", "content": f"Say it in fewer than {len(answer)} characters."},
    ]


async def test_a_fanout_renders_its_turns_for_each_model(
    server: FakeServer, tmp_path: Path
) -> None:
    nodes = """\
  ask:
    type: fanout
    messages:
      - {role: system, content: "You are {{ model.id }}."}
      - {role: user, content: "{{ prompt }}"}
"""
    result = await run(load(tmp_path, server.base_url, nodes), "Hi")
    assert result.status == "succeeded"
    sent = sorted((r["model"], r["messages"][0]["content"]) for r in server.requests)
    assert sent == [("model-a", "You are model-a."), ("model-b", "You are model-b.")]
    assert all(r["messages"][1] == {"role": "user", "content": "Hi"} for r in server.requests)


async def test_a_turn_that_renders_empty_is_still_sent(server: FakeServer, tmp_path: Path) -> None:
    nodes = """\
  answer:
    type: llm
    model: a
    messages:
      - {role: system, content: "{% if context %}Context: {{ context }}{% endif %}"}
      - {role: user, content: "{{ prompt }}"}
"""
    await run(load(tmp_path, server.base_url, nodes), "Hi")
    assert server.requests[0]["messages"] == [
        {"role": "system", "content": ""},
        {"role": "user", "content": "Hi"},
    ]


async def test_system_and_template_are_the_same_turns_as_messages(
    server: FakeServer, tmp_path: Path
) -> None:
    plain = """\
  answer: {type: llm, model: a, system: "Be brief.", template: "Q: {{ prompt }}"}
"""
    turns = """\
  answer:
    type: llm
    model: a
    messages:
      - {role: system, content: Be brief.}
      - {role: user, content: "Q: {{ prompt }}"}
"""
    await run(load(tmp_path, server.base_url, plain))
    assert server.requests[0]["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Q: Great value."},
    ]
    second = await run(load(tmp_path, server.base_url, turns, "turns.yaml"))
    assert server.count == 1 and second.output["answer"]["cached"] is True


async def test_offline_runs_answer_the_whole_conversation(tmp_path: Path) -> None:
    answers = []
    for first in ("positive", "Positive!"):
        wf = load(tmp_path, "http://127.0.0.1:9/v1", FEW_SHOT.format(first=first), f"{first}.yaml")
        result = await run(wf, offline=True, cache=False)
        assert result.status == "succeeded"
        answers.append(result.output["label"]["content"])
    # The answer echoes the last user turn, and depends on every turn before it.
    assert all('You asked: "Sentence: Great value."' in a for a in answers)
    assert answers[0] != answers[1]


@pytest.mark.parametrize(
    ("messages", "valid"),
    [
        (
            [{"role": "user", "content": "{{ prompt }}"}, {"role": "assistant", "prompt": "a.j2"}],
            True,
        ),
        ([], False),
        ([{"role": "user"}], False),
        ([{"role": "user", "content": "hi", "prompt": "a.j2"}], False),
        ([{"role": "human", "content": "hi"}], False),
        ([{"role": "user", "content": ""}], False),
    ],
)
def test_the_json_schema_agrees_with_the_spec(messages: list[object], valid: bool) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    node = {"type": "llm", "model": "a", "messages": messages}
    data = {"version": 1, "name": "x", "models": {"a": {"id": "m"}}, "nodes": {"n": node}}
    assert jsonschema.Draft202012Validator(json_schema()).is_valid(data) is valid
    try:
        WorkflowSpec.model_validate(data)
    except ValidationError:
        assert not valid
    else:
        assert valid
