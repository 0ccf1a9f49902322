"""Loops against a real HTTP server on 127.0.0.1: rounds, `until:`, the cap, failures inside a
round, cancellation, and every round in the result, the run record, the metrics and the events.

Broken loops are data in tests/data/invalid/loop_*.yaml; the CLI's views are in test_cli_loops.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from flowengine import Engine, Event, LoopResult, Workflow
from flowengine.compare import compare
from flowengine.errors import UsageError
from flowengine.store.db import Store
from flowengine.store.records import load_run
from tests.fakeserver import FakeServer, Reply

ROOT = Path(__file__).resolve().parent.parent
ENV = {"OPENROUTER_API_KEY": "sk-test-loops-never-print-me"}
WRITER, CRITIC = "openai/gpt-oss-120b", "z-ai/glm-4.5"

# Self-refine: the critic reviews the draft; from round 2 the writer revises the latest answer
# for the critic's issues, and the critic reviews the revision; until the critic says ok.
REFINE = """\
version: 1
name: refine
inputs:
  prompt: {}
models:
  gpt: {id: openai/gpt-oss-120b}
  glm: {id: z-ai/glm-4.5}
nodes:
  draft: {type: llm, model: gpt, template: "Answer: {{ prompt }}"}
  refine:
    type: loop
    needs: [draft]
    max_rounds: 3
    until: critique.data.ok
    nodes:
      revise:
        type: llm
        when: round > 1
        model: gpt
        template: >-
          Round {{ round }}: revise {{ previous.revise or draft }}
          for {{ previous.critique.data.issues | join('; ') }}
      critique:
        type: llm
        needs: [revise]
        model: glm
        template: "Round {{ round }}: review {{ revise or draft }}"
        schema:
          type: object
          properties:
            ok: {type: boolean}
            issues: {type: array, items: {type: string}}
          required: [ok, issues]
          additionalProperties: false
  final:
    type: llm
    needs: [refine]
    model: gpt
    template: "Final: {{ refine.last.revise or draft }} after {{ refine.rounds | length }}"
output:
  answer: "{{ (refine.last.revise or draft).content }}"
  stopped: "{{ refine.stopped }}"
  capped: "{{ refine.capped }}"
  rounds: "{{ refine.rounds | length }}"
"""


def load(srv: FakeServer, tmp_path: Path, text: str = REFINE, **overrides: Any) -> Workflow:
    path = tmp_path / "wf.yaml"
    path.write_text(text, encoding="utf-8")
    settings = {
        "providers.openrouter.base_url": srv.base_url,
        "providers.openrouter.retry": {"attempts": 2, "initial": "10ms", "max": "20ms"},
        **overrides,
    }
    return Workflow.load(path, overrides=settings)


async def run(wf: Workflow, events: list[Event] | None = None, **kwargs: Any) -> Any:
    listeners = [events.append] if events is not None else []
    async with Engine(environ=ENV, cache=False, listeners=listeners) as engine:
        return await engine.run(wf, prompt="Why is the sky blue?", **kwargs)


def verdict(ok: bool, *issues: str, **kw: Any) -> Reply:
    return Reply.ok(json.dumps({"ok": ok, "issues": list(issues)}), **kw)


def sent(srv: FakeServer) -> list[tuple[str, str]]:
    """Each chat request the server got: its model, and the last message's content."""
    return [(r["model"], r["messages"][-1]["content"]) for r in srv.requests]


# -- until: and the cap -----------------------------------------------------------------------


async def test_the_loop_stops_on_its_condition_and_every_round_is_kept(
    server: FakeServer, tmp_path: Path
) -> None:
    server.script_for(WRITER, Reply.ok("a draft"), Reply.ok("a revision"), Reply.ok("the end"))
    server.script_for(CRITIC, verdict(False, "too short", "no example"), verdict(True))
    events: list[Event] = []
    result = await run(load(server, tmp_path), events)
    assert result.status == "succeeded"
    expected = {"answer": "a revision", "stopped": "condition", "capped": False, "rounds": 2}
    assert result.output == expected
    # `round` and `previous` in the templates: each round reads the round before.
    assert sent(server) == [
        (WRITER, "Answer: Why is the sky blue?"),
        (CRITIC, "Round 1: review a draft"),
        (WRITER, "Round 2: revise a draft for too short; no example"),
        (CRITIC, "Round 2: review a revision"),
        (WRITER, "Final: a revision after 2"),
    ]
    loop = result.nodes["refine"].output
    assert isinstance(loop, LoopResult) and (loop.stopped, loop.capped) == ("condition", False)
    assert [list(r) for r in loop.rounds] == [["revise", "critique"], ["revise", "critique"]]
    assert loop.rounds[0]["revise"] is None  # skipped in round 1
    assert [r["critique"].data["ok"] for r in loop.rounds] == [False, True]
    assert loop.last is loop.rounds[-1]
    # Each node of each round has its own entry, named by its round.
    assert list(result.nodes) == [
        "draft",
        "refine[1].revise",
        "refine[1].critique",
        "refine[2].revise",
        "refine[2].critique",
        "refine",
        "final",
    ]
    skipped = result.nodes["refine[1].revise"]
    assert (skipped.status, skipped.reason) == ("skipped", "condition is false: round > 1")
    assert result.nodes["refine[2].critique"].output is loop.rounds[1]["critique"]
    # Events name each node by its round.
    started = [e.node for e in events if e.kind == "node_started"]
    assert started == [
        "draft",
        "refine",
        "refine[1].critique",
        "refine[2].revise",
        "refine[2].critique",
        "final",
    ]
    calls = [e.node for e in events if e.kind == "call_finished"]
    assert calls == [
        "draft",
        "refine[1].critique",
        "refine[2].revise",
        "refine[2].critique",
        "final",
    ]


@pytest.mark.parametrize("on_cap", ["succeed", "fail"])
async def test_reaching_the_cap(on_cap: str, server: FakeServer, tmp_path: Path) -> None:
    server.always_for(CRITIC, verdict(False, "still wrong"))
    wf = load(server, tmp_path, **{"nodes.refine.on_cap": on_cap})
    result = await run(wf)
    loop = result.nodes["refine"].output
    assert (len(loop.rounds), loop.stopped, loop.capped) == (3, "cap", True)
    assert [c for c, _ in sent(server)].count(CRITIC) == 3
    if on_cap == "succeed":
        assert result.status == "succeeded"
        assert result.output["capped"] is True and result.output["stopped"] == "cap"
        assert result.nodes["final"].status == "succeeded"
        return
    assert result.status == "failed"
    node = result.nodes["refine"]
    assert node.status == "failed" and node.error is not None
    assert (node.error.type, node.error.message) == (
        "cap",
        "loop reached max_rounds (3) before `until: critique.data.ok` held",
    )
    assert result.error == node.error
    assert result.nodes["final"].reason == "'refine' failed, so the run stopped"
    assert len(server.requests) == 1 + 3 + 2  # the draft, three reviews, two revisions


async def test_without_until_the_loop_runs_every_round(server: FakeServer, tmp_path: Path) -> None:
    text = REFINE.replace("    until: critique.data.ok\n", "")
    server.always_for(CRITIC, verdict(True))
    result = await run(load(server, tmp_path, text))
    assert result.status == "succeeded"
    assert (result.output["rounds"], result.output["stopped"]) == (3, "cap")


# -- failures --------------------------------------------------------------------------------


async def test_a_failed_node_fails_its_round_and_the_loop(
    server: FakeServer, tmp_path: Path
) -> None:
    server.script_for(CRITIC, verdict(False, "vague"), Reply.error(400, "bad request"))
    result = await run(load(server, tmp_path))
    assert result.status == "failed"
    node = result.nodes["refine"]
    assert node.status == "failed" and node.error is not None
    assert node.error.message.startswith("round 2 of 3 failed: ")
    assert "bad request" in node.error.message
    # What was done is kept: round 1, and round 2 up to its failure.
    loop = node.output
    assert (len(loop.rounds), loop.stopped, loop.capped) == (2, "failure", False)
    assert loop.rounds[1]["revise"].success is True
    assert loop.rounds[1]["critique"].success is False
    assert result.nodes["refine[2].critique"].status == "failed"
    assert result.nodes["final"].status == "skipped"
    assert result.metadata.calls == 4


async def test_on_error_continue_inside_the_round(server: FakeServer, tmp_path: Path) -> None:
    # The failed review does not stop the round; `until` sees it, and the loop goes on.
    text = REFINE.replace("until: critique.data.ok", "until: critique.success and critique.data.ok")
    issues = "(previous.critique.data.issues if previous.critique.success else [])"
    text = text.replace("previous.critique.data.issues", issues)
    text = text.replace(
        "        needs: [revise]\n", "        needs: [revise]\n        on_error: continue\n"
    )
    server.script_for(CRITIC, Reply.error(400, "bad request"), verdict(True))
    result = await run(load(server, tmp_path, text))
    assert result.status == "partial"
    assert result.nodes["refine"].status == "succeeded"
    assert result.nodes["refine[1].critique"].status == "failed"
    assert (result.output["rounds"], result.output["stopped"]) == (2, "condition")
    # Round 2 revises the draft with no issues: the failed review has no data.
    text = "Round 2: revise answer from openai/gpt-oss-120b: Answer: Why is the sky blue? for "
    assert sent(server)[2] == (WRITER, text)


async def test_a_condition_that_fails_to_evaluate_fails_the_loop_with_its_rounds(
    server: FakeServer, tmp_path: Path
) -> None:
    text = REFINE.replace("until: critique.data.ok", "until: critique.data.ok > 'x'")
    server.always_for(CRITIC, verdict(False))
    result = await run(load(server, tmp_path, text))
    node = result.nodes["refine"]
    assert node.status == "failed" and node.error is not None
    assert node.error.type == "condition"
    assert node.error.message.startswith("nodes.refine.until: ")
    assert (len(node.output.rounds), node.output.stopped) == (1, "failure")


async def test_a_timeout_keeps_the_rounds_that_finished(server: FakeServer, tmp_path: Path) -> None:
    server.script_for(CRITIC, verdict(False, "vague"), verdict(True, delay=5))
    result = await run(load(server, tmp_path, **{"nodes.refine.timeout": "1s"}))
    node = result.nodes["refine"]
    assert node.status == "failed" and node.error is not None
    assert node.error.type == "timeout"
    assert len(node.output.rounds) == 1 and node.output.stopped is None
    assert result.nodes["refine[2].critique"].status == "cancelled"


async def test_cancelling_mid_round_keeps_the_finished_rounds(
    server: FakeServer, tmp_path: Path
) -> None:
    server.script_for(CRITIC, verdict(False, "vague"), verdict(True, delay=5))
    wf = load(server, tmp_path)
    round_two = asyncio.Event()

    def listen(event: Event) -> None:
        if event.kind == "node_started" and event.node == "refine[2].critique":
            round_two.set()

    async with Engine(environ=ENV, cache=False, listeners=[listen]) as engine:
        task = asyncio.create_task(engine.run(wf, prompt="q"))
        await round_two.wait()
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    [summary] = Store().use(lambda db: db.execute("SELECT run_id FROM runs").fetchall()) or []
    stored = load_run(Store(), summary[0]).result
    assert stored.status == "failed" and stored.error is not None
    assert stored.error.type == "cancelled"
    node = stored.nodes["refine"]
    assert node.status == "cancelled"
    assert len(node.output["rounds"]) == 1 and node.output["stopped"] is None
    assert node.output["rounds"][0]["critique"]["data"] == {"ok": False, "issues": ["vague"]}
    assert stored.nodes["refine[2].revise"].status == "succeeded"
    assert stored.nodes["refine[2].critique"].status == "cancelled"
    assert stored.nodes["final"].reason == "the run was cancelled"


# -- the record, the metrics, the comparison ---------------------------------------------------


async def test_records_metrics_and_comparison_hold_every_round(
    server: FakeServer, tmp_path: Path
) -> None:
    server.script_for(CRITIC, verdict(False, "vague"), verdict(False, "still"), verdict(True))
    result = await run(load(server, tmp_path))
    assert result.output["rounds"] == 3
    assert result.metadata.calls == 1 + 3 + 2 + 1
    assert {m: (s.calls, s.success_rate) for m, s in result.metrics.models.items()} == {
        "gpt": (4, 1.0),
        "glm": (3, 1.0),
    }
    stored = load_run(Store(), result.run_id)
    assert [c.node for c in stored.timeline] == [
        "draft",
        "refine[1].critique",
        "refine[2].revise",
        "refine[2].critique",
        "refine[3].revise",
        "refine[3].critique",
        "final",
    ]
    third = stored.timeline[4].messages[-1]["content"]
    assert third.startswith("Round 3: revise answer from openai/gpt-oss-120b: Round 2: revise")
    assert third.endswith(" for still")
    loop = stored.result.nodes["refine"].output
    assert [r["critique"]["data"]["ok"] for r in loop["rounds"]] == [False, False, True]
    assert loop["last"] == loop["rounds"][-1] and loop["stopped"] == "condition"
    cards = compare(stored.result)["responses"]
    assert [c["node"] for c in cards] == [c.node for c in stored.timeline]
    assert compare(stored.result)["skipped"] == {
        "refine[1].revise": "condition is false: round > 1"
    }


# -- any node kind in a round ------------------------------------------------------------------

KINDS = """\
version: 1
name: kinds
providers:
  local: {type: offline}
models:
  a: {id: vendor/a, provider: local, weight: 2}
  b: {id: vendor/b, provider: local}
defaults: {provider: local}
nodes:
  seed: {type: python, function: "tests.functions:shout", args: {text: go}}
  grow:
    type: loop
    needs: [seed]
    max_rounds: 4
    until: round == 3
    nodes:
      pick: {type: select}
      echo:
        type: python
        function: "tests.functions:shout"
        args: {text: "{{ previous.echo if previous else seed }}", times: "{{ round }}"}
      all:
        type: fanout
        needs: [pick, echo]
        template: "{{ model }} {{ pick.model }} {{ echo }}"
output:
  echoes: "{{ grow.rounds | map(attribute='echo') | list }}"
  last: "{{ grow.last.all | map(attribute='model') | list }}"
  text: "Last round: {{ grow }}"
"""


async def test_a_round_runs_any_node_kind() -> None:
    wf = Workflow.from_string(KINDS)
    async with Engine(offline=True, cache=False, record=False) as engine:
        result = await engine.run(wf)
    assert result.status == "succeeded"
    assert result.output["echoes"] == ["GO", "GO GO", "GO GO GO GO GO GO"]
    assert result.output["last"] == ["a", "b"]
    # In text, a loop is its last round: a line per node that has an output.
    text = result.output["text"].splitlines()
    assert [line.split(": ")[0] for line in text] == ["Last round", "echo", "all"]
    assert text[0] == "Last round: pick: a" and text[1] == "echo: GO GO GO GO GO GO"
    assert 'You asked: "b a GO GO GO GO GO GO"' in result.nodes["grow[3].all"].output[1].content


# -- --only and --skip name top-level nodes ------------------------------------------------------


async def test_skip_and_only_name_the_loop_not_its_nodes(
    server: FakeServer, tmp_path: Path
) -> None:
    wf = load(server, tmp_path)
    for flag in ("skip", "only"):
        with pytest.raises(UsageError) as caught:
            await run(wf, **{flag: ["critique"]})
        assert str(caught.value) == (
            f"--{flag}: node 'critique' is inside loop 'refine', which runs it every round; "
            "name the loop, 'refine', or give 'critique' a `when:`"
        )
    result = await run(wf, skip=["refine"], only=["draft"])
    assert list(result.nodes) == ["draft"]


# -- the shipped self-refine workflow, offline --------------------------------------------------


@pytest.mark.parametrize("prompt", ["Why is the sky blue?", "What is a monad?", "x"])
async def test_the_shipped_refine_stops_on_the_critics_ok_offline(prompt: str) -> None:
    wf = Workflow.load(ROOT / "workflows" / "refine.yaml")
    async with Engine(offline=True, cache=False, record=False) as engine:
        result = await engine.run(wf, prompt=prompt)
    assert result.status == "succeeded"
    loop = result.output["refine"]
    # The offline critic rejects the draft and accepts its revision: always two rounds.
    assert [r["critique"]["data"]["ok"] for r in loop["rounds"]] == [False, True]
    assert (loop["stopped"], loop["capped"]) == ("condition", False)
    assert result.output["answer"] == loop["rounds"][1]["revise"]
    assert ", after " in result.output["answer"]["content"]


async def test_the_shipped_refine_shows_the_cap_offline() -> None:
    wf = Workflow.load(ROOT / "workflows" / "refine.yaml", {"nodes.refine.max_rounds": 1})
    async with Engine(offline=True, cache=False, record=False) as engine:
        result = await engine.run(wf, prompt="Why is the sky blue?")
    assert result.status == "succeeded"
    loop = result.output["refine"]
    assert (len(loop["rounds"]), loop["stopped"], loop["capped"]) == (1, "cap", True)
    assert result.output["answer"]["content"] == result.nodes["draft"].output.content
