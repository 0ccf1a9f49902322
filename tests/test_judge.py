"""The judge node against a real HTTP server on 127.0.0.1 whose judges reply with scripted scores:
what they are asked, ranking and ties, panels, failures and repairs, quality on the answers."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from flowengine import Engine, RunResult, Workflow
from flowengine.results import CallResult, JudgeResult
from tests.fakeserver import FakeServer, Reply

ENV = {"OPENROUTER_API_KEY": "sk-test-judge-never-print-me"}
ANSWERERS = {"gpt": "openai/gpt-oss-120b", "glm": "z-ai/glm-4.5", "kimi": "moonshotai/kimi-k2"}
JUDGES = {"one": "judge/one", "two": "judge/two"}
WORKFLOW = """
version: 1
name: judged
inputs:
  prompt: {}
models:
  gpt: {id: openai/gpt-oss-120b, weight: 3}
  glm: {id: z-ai/glm-4.5, weight: 2}
  kimi: {id: moonshotai/kimi-k2, weight: 1}
  one: {id: judge/one, weight: 0}
  two: {id: judge/two, weight: 0}
nodes:
  answers:
    type: fanout
    models: [gpt, glm, kimi]
    template: "{{ prompt }}"
  judge:
    type: judge
    needs: [answers]
    target: answers
    criteria:
      - accuracy: every claim is correct
      - clarity
    %s
  report:
    type: llm
    needs: [answers, judge]
    model: gpt
    template: >-
      best={{ judge.best.model }}: {{ judge.best }}
      top={{ judge.candidates[0].scores.accuracy }}
      qualities={{ answers | map(attribute='quality') | join(',') }}
"""


@pytest.fixture
async def server() -> AsyncIterator[FakeServer]:
    async with FakeServer() as srv:
        for alias, model_id in ANSWERERS.items():
            srv.always_for(model_id, Reply.ok(f"the answer of {alias}"))
        yield srv


def load(server: FakeServer, tmp_path: Path, judges: str = "model: one", **more: Any) -> Workflow:
    path = tmp_path / "judged.yaml"
    path.write_text(WORKFLOW % judges, encoding="utf-8")
    settings = {
        "providers.openrouter.base_url": server.base_url,
        "providers.openrouter.retry": {"attempts": 1, "initial": "10ms", "max": "10ms"},
        **more,
    }
    return Workflow.load(path, overrides=settings)


async def run(wf: Workflow) -> RunResult:
    async with Engine(environ=ENV, cache=False, record=False) as engine:
        return await engine.run(wf, prompt="Why is the sky blue?")


def scores(**by_letter: tuple[int, int]) -> Reply:
    """A judge's reply: for each letter, (accuracy, clarity) and a reason naming them."""
    return Reply.ok(
        json.dumps(
            {
                letter: {"reason": f"{letter} is {a}/{c}", "scores": {"accuracy": a, "clarity": c}}
                for letter, (a, c) in by_letter.items()
            }
        )
    )


def judge_requests(server: FakeServer) -> list[dict[str, Any]]:
    return [r for r in server.requests if r["model"] in JUDGES.values()]


def judged(result: RunResult) -> JudgeResult:
    output = result.nodes["judge"].output
    assert isinstance(output, JudgeResult)
    return output


async def test_answers_are_ranked_and_the_best_is_the_winning_result(
    server: FakeServer, tmp_path: Path
) -> None:
    server.script_for("judge/one", scores(A=(6, 8), B=(9, 9), C=(3, 2)))
    result = await run(load(server, tmp_path))
    assert result.status == "succeeded"
    judge = judged(result)
    assert judge.ranking == ["glm", "gpt", "kimi"]
    answers: list[CallResult] = result.nodes["answers"].output
    assert judge.best is answers[1]  # the call result itself, with its model and usage
    assert [(c.letter, c.rank, c.score, c.quality) for c in judge.candidates] == [
        ("B", 1, 9.0, 0.8889),
        ("A", 2, 7.0, 0.6667),
        ("C", 3, 2.5, 0.1667),
    ]
    assert judge.candidates[1].scores == {"accuracy": 6, "clarity": 8}
    assert [(v.judge, v.reason) for v in judge.candidates[1].verdicts] == [("one", "A is 6/8")]
    assert (judge.criteria, judge.scale, judge.judges) == (
        ["accuracy", "clarity"],
        (1, 10),
        ["one"],
    )
    # Each answer's own result carries its quality, where later nodes read it.
    assert [a.quality for a in answers] == [0.6667, 0.8889, 0.1667]
    report = server.requests[-1]["messages"][-1]["content"]
    assert report == ("best=glm: the answer of glm top=9.0 qualities=0.6667,0.8889,0.1667")
    assert result.output["judge"]["best"]["model"] == "glm"


async def test_the_judge_is_asked_blind_for_json_that_the_rubric_shapes(
    server: FakeServer, tmp_path: Path
) -> None:
    server.always_for("openai/gpt-oss-120b", Reply.ok("{{ prompt }} is data, not a template"))
    server.always_for("z-ai/glm-4.5", Reply.ok("Rayleigh scattering."))
    server.always_for("moonshotai/kimi-k2", Reply.ok("Blue light scatters more."))
    server.script_for("judge/one", scores(A=(5, 5), B=(5, 5), C=(5, 5)))
    await run(load(server, tmp_path))
    [asked] = judge_requests(server)
    prompt = asked["messages"][-1]["content"]
    assert "<task>\nWhy is the sky blue?\n</task>" in prompt
    assert "- accuracy: every claim is correct\n- clarity\n" in prompt
    assert '<candidate id="A">\n{{ prompt }} is data, not a template\n</candidate>' in prompt
    assert '<candidate id="C">\nBlue light scatters more.\n</candidate>' in prompt
    assert not any(name in prompt for name in [*ANSWERERS, *ANSWERERS.values()])  # blind
    score = {"type": "integer", "minimum": 1, "maximum": 10}
    verdict = {
        "type": "object",
        "properties": {
            "reason": {"type": "string"},
            "scores": {
                "type": "object",
                "properties": {
                    "accuracy": {**score, "description": "every claim is correct"},
                    "clarity": score,
                },
                "required": ["accuracy", "clarity"],
                "additionalProperties": False,
            },
        },
        "required": ["reason", "scores"],
        "additionalProperties": False,
    }
    assert asked["response_format"] == {
        "type": "json_schema",
        "json_schema": {
            "name": "judge",
            "schema": {
                "type": "object",
                "properties": {"A": verdict, "B": verdict, "C": verdict},
                "required": ["A", "B", "C"],
                "additionalProperties": False,
            },
            "strict": True,
        },
    }


async def test_ties_go_to_the_answer_listed_first(server: FakeServer, tmp_path: Path) -> None:
    # kimi (C) and glm (B) tie at the top; glm was listed first (higher weight), so it wins.
    server.script_for("judge/one", scores(A=(4, 4), B=(7, 9), C=(9, 7)))
    judge = judged(await run(load(server, tmp_path)))
    assert judge.ranking == ["glm", "kimi", "gpt"]
    assert [c.score for c in judge.candidates] == [8.0, 8.0, 4.0]
    assert judge.best.model == "glm"


async def test_a_panel_averages_its_scores(server: FakeServer, tmp_path: Path) -> None:
    server.script_for("judge/one", scores(A=(8, 6), B=(5, 5), C=(2, 3)))
    server.script_for("judge/two", scores(A=(4, 6), B=(9, 8), C=(3, 3)))
    judge = judged(await run(load(server, tmp_path, "models: [one, two]")))
    assert len(judge_requests(server)) == 2
    assert judge.judges == ["one", "two"] and judge.failed_judges == {}
    by_model = {c.model: c for c in judge.candidates}
    assert by_model["gpt"].scores == {"accuracy": 6.0, "clarity": 6.0}
    assert by_model["glm"].scores == {"accuracy": 7.0, "clarity": 6.5}
    assert by_model["glm"].score == 6.75
    assert [v.judge for v in by_model["glm"].verdicts] == ["one", "two"]
    assert [v.scores for v in by_model["kimi"].verdicts] == [
        {"accuracy": 2, "clarity": 3},
        {"accuracy": 3, "clarity": 3},
    ]
    assert judge.ranking == ["glm", "gpt", "kimi"]


async def test_a_panel_member_that_fails_is_left_out(server: FakeServer, tmp_path: Path) -> None:
    server.script_for("judge/one", scores(A=(8, 6), B=(5, 5), C=(2, 3)))
    server.always_for("judge/two", Reply.error(500, "judge two is down"))
    result = await run(load(server, tmp_path, "models: [one, two]"))
    # The node succeeds on the judges that answered; the run says that one did not, as it
    # does for a fanout with a failed call.
    assert result.nodes["judge"].status == "succeeded"
    assert result.status == "partial"
    judge = judged(result)
    assert judge.judges == ["one"]
    [(model, error)] = judge.failed_judges.items()
    assert (model, error.type, error.status) == ("two", "http", 500)
    assert "judge two is down" in error.message
    assert [(c.model, c.scores) for c in judge.candidates] == [
        ("gpt", {"accuracy": 8, "clarity": 6}),
        ("glm", {"accuracy": 5, "clarity": 5}),
        ("kimi", {"accuracy": 2, "clarity": 3}),
    ]
    assert result.output["judge"]["failed_judges"]["two"]["status"] == 500


async def test_every_judge_failing_fails_the_node(server: FakeServer, tmp_path: Path) -> None:
    server.always_for("judge/one", Reply.error(500, "down"))
    server.script_for("judge/two", Reply.ok("I like B."), Reply.ok("B, definitely."))
    result = await run(load(server, tmp_path, "models: [one, two]"))
    assert result.status == "failed"
    node = result.nodes["judge"]
    assert node.status == "failed" and node.error.type == "judge"
    assert node.error.message.startswith("every judge failed (one: ")
    assert "two: nodes.judge: the answer of model 'two' is not JSON" in node.error.message
    assert [c.model for c in node.output] == ["one", "two"]  # what was paid for is kept
    assert all(a.quality is None for a in result.nodes["answers"].output)
    assert result.nodes["report"].status == "skipped"


async def test_a_bad_reply_is_repaired(server: FakeServer, tmp_path: Path) -> None:
    server.script_for(
        "judge/one", scores(A=(11, 5), B=(5, 5)), scores(A=(10, 5), B=(5, 5), C=(1, 1))
    )
    judge = judged(await run(load(server, tmp_path)))
    first, repair = judge_requests(server)
    assert repair["messages"][-1]["content"] == (
        "Your reply does not match the required JSON Schema: at $: 'C' is a required property; "
        "at $.A.scores.accuracy: 11 is greater than the maximum of 10.\n"
        "Reply again with the corrected JSON only, and no other text."
    )
    assert repair["messages"][:-2] == first["messages"]
    assert judge.ranking == ["gpt", "glm", "kimi"]
    assert judge.candidates[0].scores == {"accuracy": 10, "clarity": 5}


async def test_failed_answers_are_not_judged(server: FakeServer, tmp_path: Path) -> None:
    server.always_for("z-ai/glm-4.5", Reply.error(400, "bad request"))
    server.script_for("judge/one", scores(A=(3, 3), B=(7, 7)))
    result = await run(load(server, tmp_path))
    judge = judged(result)
    [asked] = judge_requests(server)
    assert asked["response_format"]["json_schema"]["schema"]["required"] == ["A", "B"]
    assert "the answer of kimi" in asked["messages"][-1]["content"]
    assert [(c.letter, c.model) for c in judge.candidates] == [("B", "kimi"), ("A", "gpt")]
    assert [a.quality for a in result.nodes["answers"].output] == [0.2222, None, 0.6667]


async def test_nothing_to_judge_fails_the_node_before_any_judge_call(
    server: FakeServer, tmp_path: Path
) -> None:
    for model_id in ANSWERERS.values():
        server.always_for(model_id, Reply.error(400, "bad request"))
    result = await run(load(server, tmp_path, **{"nodes.answers.min_success": 0}))
    node = result.nodes["judge"]
    assert node.status == "failed"
    assert (
        node.error.message == "node 'answers' has no answer to judge: none of its calls succeeded"
    )
    assert judge_requests(server) == []


CUSTOM = """
version: 1
name: custom
inputs:
  topic: {}
models:
  gpt: {id: openai/gpt-oss-120b}
  one: {id: judge/one}
nodes:
  essay: {type: llm, model: gpt, template: "Write about {{ topic }}."}
  grade:
    type: judge
    needs: [essay]
    target: essay
    criteria: [fit]
    scale: [0, 1.0]
    model: "{{ models.one }}"
    question: An essay on {{ topic }}
    system: You grade essays on {{ topic }}.
    template: >-
      {{ question }} ({{ scale.low }} to {{ scale.high }} on
      {{ criteria | map(attribute='name') | join }}):
      {% for c in candidates %}{{ c.letter }}={{ c }}{% endfor %}
"""


async def test_one_llm_answer_judged_with_its_own_prompt(
    server: FakeServer, tmp_path: Path
) -> None:
    path = tmp_path / "custom.yaml"
    path.write_text(CUSTOM, encoding="utf-8")
    wf = Workflow.load(path, overrides={"providers.openrouter.base_url": server.base_url})
    reply = {"A": {"reason": "on topic", "scores": {"fit": 0.75}}}
    server.script_for("judge/one", Reply.ok(json.dumps(reply)))
    async with Engine(environ=ENV, cache=False, record=False) as engine:
        result = await engine.run(wf, topic="tides")
    [asked] = judge_requests(server)
    assert asked["messages"] == [
        {"role": "system", "content": "You grade essays on tides."},
        {"role": "user", "content": "An essay on tides (0 to 1.0 on fit): A=the answer of gpt"},
    ]
    score = asked["response_format"]["json_schema"]["schema"]["properties"]["A"]
    assert score["properties"]["scores"]["properties"]["fit"]["type"] == "number"
    grade = result.nodes["grade"].output
    assert grade.best is result.nodes["essay"].output
    assert (grade.ranking, grade.candidates[0].quality, grade.best.quality) == (["gpt"], 0.75, 0.75)


FEW_SHOT = """
version: 1
name: few-shot
inputs:
  prompt: {}
models:
  gpt: {id: openai/gpt-oss-120b}
  glm: {id: z-ai/glm-4.5}
  one: {id: judge/one}
nodes:
  answers: {type: fanout, models: [gpt, glm], template: "{{ prompt }}"}
  judge:
    type: judge
    needs: [answers]
    target: answers
    criteria: [accuracy]
    scale: [1, 5]
    model: one
    vars: {tone: strict}
    messages:
      - {role: system, content: "A {{ tone }} judge, from {{ scale.low }} to {{ scale.high }}."}
      - {role: user, content: "X: 2 + 2 = 5"}
      - {role: assistant, content: "X is wrong: accuracy 1"}
      - role: user
        content: >-
          {{ question }}:{% for c in candidates %} {{ c.letter }}={{ c }};{% endfor %}
"""


async def test_a_judge_prompt_as_messages_sends_its_turns_in_order(
    server: FakeServer, tmp_path: Path
) -> None:
    path = tmp_path / "few-shot.yaml"
    path.write_text(FEW_SHOT, encoding="utf-8")
    wf = Workflow.load(path, overrides={"providers.openrouter.base_url": server.base_url})
    server.script_for("judge/one", scores_of(A=2, B=4))
    result = await run(wf)
    [asked] = judge_requests(server)
    assert asked["messages"] == [
        {"role": "system", "content": "A strict judge, from 1 to 5."},
        {"role": "user", "content": "X: 2 + 2 = 5"},
        {"role": "assistant", "content": "X is wrong: accuracy 1"},
        {
            "role": "user",
            "content": "Why is the sky blue?: A=the answer of gpt; B=the answer of glm;",
        },
    ]
    assert judged(result).ranking == ["glm", "gpt"]


def scores_of(**accuracy: int) -> Reply:
    """A one-criterion judge's reply: each letter's accuracy."""
    verdicts = {k: {"reason": "why", "scores": {"accuracy": v}} for k, v in accuracy.items()}
    return Reply.ok(json.dumps(verdicts))
