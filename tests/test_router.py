"""The `llm` selector: a router model names the candidate that should answer."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from flowengine import Engine, Workflow
from flowengine.cli import cli
from flowengine.errors import CallError
from flowengine.run.nodes.router import parse_choice
from tests.fakeserver import FakeServer, Reply

CANDIDATES = ["gpt-4o-mini", "gpt-4o", "llama"]


def test_parse_choice_reads_json_even_inside_prose() -> None:
    assert parse_choice('{"model": "llama", "confidence": 0.8}', CANDIDATES) == (
        "llama",
        {"llama": 0.8},
    )
    text = 'I would pick this one:\n```json\n{"model": "gpt-4o", "confidence": 1}\n```'
    assert parse_choice(text, CANDIDATES) == ("gpt-4o", {"gpt-4o": 1.0})
    # A confidence that is not a number from 0 to 1 is dropped, never invented.
    assert parse_choice('{"model": "llama", "confidence": 7}', CANDIDATES) == ("llama", {})
    assert parse_choice('{"model": "llama", "confidence": true}', CANDIDATES) == ("llama", {})


def test_parse_choice_falls_back_to_the_first_named_candidate() -> None:
    assert parse_choice("Use gpt-4o-mini for this.", CANDIDATES) == ("gpt-4o-mini", {})
    assert parse_choice("llama, or else gpt-4o", CANDIDATES) == ("llama", {})
    with pytest.raises(CallError, match="names no candidate"):
        parse_choice("I cannot decide.", CANDIDATES)


WORKFLOW = """
version: 1
name: routed
inputs:
  prompt: {{type: string}}
providers:
  local: {{base_url: "{url}", retry: {{attempts: 1}}}}
selectors:
  router: {{type: llm, model: judge, params: {{temperature: 0}}}}
models:
  judge: {{id: router/model, provider: local, weight: 0}}
  big:   {{id: big/model, provider: local, weight: 3}}
  small: {{id: small/model, provider: local, weight: 1}}
nodes:
  pick: {{type: select, selector: router, candidates: [big, small]}}
  answer: {{type: llm, needs: [pick], model: "{{{{ pick.model }}}}", template: "{{{{ prompt }}}}"}}
"""


def routed(tmp_path: Path, server: FakeServer) -> Workflow:
    path = tmp_path / "routed.yaml"
    path.write_text(WORKFLOW.format(url=server.base_url))
    return Workflow.load(path)


async def test_router_choice_drives_the_run(server: FakeServer, tmp_path: Path) -> None:
    server.script_for("router/model", Reply.ok('{"model": "small", "confidence": 0.7}'))
    async with Engine(cache=False) as engine:
        result = await engine.run(routed(tmp_path, server), prompt="What is 2+2?")
    pick = result.nodes["pick"].output
    assert (pick.model, pick.source, pick.confidence) == ("small", "selector", 0.7)
    assert result.nodes["answer"].output.model == "small"
    assert result.nodes["answer"].output.confidence == 0.7
    assert result.metadata.model_selector_confidence == 0.7
    assert result.metadata.calls == 2  # the router's call is a paid call like any other
    router_prompt = server.requests[0]["messages"][0]["content"]
    assert "What is 2+2?" in router_prompt
    assert "- big: big/model" in router_prompt and "- small: small/model" in router_prompt
    assert "judge" not in router_prompt  # only the candidates are offered
    assert server.requests[0]["temperature"] == 0


async def test_router_naming_no_candidate_falls_back(server: FakeServer, tmp_path: Path) -> None:
    server.script_for("router/model", Reply.ok('{"model": "judge"}'))
    async with Engine(cache=False) as engine:
        result = await engine.run(routed(tmp_path, server), prompt="q")
    pick = result.nodes["pick"].output
    assert (pick.model, pick.source) == ("big", "fallback")
    assert "not a candidate: 'judge'" in (pick.reason or "")


async def test_router_failure_falls_back(server: FakeServer, tmp_path: Path) -> None:
    server.script_for("router/model", Reply.error(500, "down"))
    async with Engine(cache=False) as engine:
        result = await engine.run(routed(tmp_path, server), prompt="q")
    pick = result.nodes["pick"].output
    assert (pick.model, pick.source) == ("big", "fallback")
    assert "router model 'judge' failed" in (pick.reason or "")
    assert result.status == "succeeded"


def test_router_is_validated(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    text = WORKFLOW.format(url="http://127.0.0.1:1/v1").replace("model: judge,", "model: jduge,")
    text = text.replace("params: {temperature: 0}}", 'template: "{{ promt }}"}')
    path.write_text(text)
    result = CliRunner().invoke(cli, ["validate", str(path)])
    assert result.exit_code == 2
    assert "unknown model 'jduge'" in result.stderr and "did you mean 'judge'?" in result.stderr
    assert "undefined name 'promt'" in result.stderr and "did you mean 'prompt'?" in result.stderr
