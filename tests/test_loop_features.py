"""Loops with the other features: a judge inside a round, optional inputs in a round and in
`until:`, `answer:` and streaming, a budget spent inside a round, and a dry run's rounds."""

from __future__ import annotations

import pytest

from flowengine import Engine, JudgeResult, LoopResult, Workflow
from flowengine.errors import UsageError, WorkflowError
from flowengine.run.dry_run import dry_run

# Each round two models answer, a third judges them; `until:` reads the judge's best answer.
# `tone` is optional with no default: a round and `until:` read it only where it is guarded.
JUDGED = """\
version: 1
name: judged
inputs:
  prompt: {}
  tone: {required: false}
providers:
  local: {type: offline}
models:
  a: {id: vendor/a, provider: local}
  b: {id: vendor/b, provider: local}
  c: {id: vendor/c, provider: local}
defaults: {provider: local}
nodes:
  rounds:
    type: loop
    max_rounds: 2
    until: "best.success and tone is defined and round > 5"
    nodes:
      answers:
        type: fanout
        models: [a, b]
        template: >-
          {{ prompt }} {{ tone | default('plain') }} {{ previous.best if previous else '' }}
      judge:
        type: judge
        needs: [answers]
        target: answers
        criteria: [accuracy]
        scale: [1, 5]
        model: c
      best:
        type: llm
        needs: [judge]
        model: "{{ judge.best.model }}"
        template: "{% if tone %}{{ tone }}: {% endif %}improve {{ judge.best }}"
output:
  ranking: "{{ rounds.last.judge.ranking }}"
  rounds: "{{ rounds.rounds | length }}"
"""


async def test_a_judge_inside_a_round_judges_that_rounds_answers() -> None:
    wf = Workflow.from_string(JUDGED)
    async with Engine(offline=True, cache=False, record=False) as engine:
        result = await engine.run(wf, prompt="Why?")
    assert result.status == "succeeded", result.error
    loop = result.nodes["rounds"].output
    assert isinstance(loop, LoopResult)
    assert (loop.stopped, len(loop.rounds)) == ("cap", 2)
    for number in (1, 2):
        judge = result.nodes[f"rounds[{number}].judge"].output
        assert isinstance(judge, JudgeResult)
        assert sorted(judge.ranking) == ["a", "b"]
        answers = result.nodes[f"rounds[{number}].answers"].output
        assert all(call.quality is not None for call in answers)
    assert result.output["rounds"] == 2


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            (
                "  rounds:\n",
                "  top: {type: judge, needs: [rounds], target: answers, "
                "criteria: [x], model: c}\n  rounds:\n",
            ),
            "node 'top' judges node 'answers', a node inside loop 'rounds'",
        ),
        (
            ("  rounds:\n", "  first: {type: llm, model: a, template: hi}\n  rounds:\n"),
            None,
        ),
    ],
)
def test_a_judge_and_its_target_on_either_side_of_a_loop(
    edit: tuple[str, str], message: str | None
) -> None:
    text = JUDGED.replace(*edit)
    if message is None:  # a judge inside the loop that judges a top-level node
        text = text.replace("    max_rounds: 2\n", "    needs: [first]\n    max_rounds: 2\n")
        text = text.replace("target: answers", "target: first")
        message = (
            "node 'judge' in loop 'rounds' judges node 'first', which is in the top level: a "
            "judge inside a loop judges a node of its own round"
        )
    with pytest.raises(WorkflowError) as info:
        Workflow.from_string(text)
    found = [p for p in info.value.problems if p.code == "judge-across-loop"]
    assert [p.message for p in found] == [message]


def test_an_unguarded_optional_input_in_a_round_or_until_is_reported() -> None:
    text = JUDGED.replace("tone is defined and ", "tone == 'x' and ")
    text = text.replace("{{ tone | default('plain') }}", "{{ tone }}")
    with pytest.raises(WorkflowError) as info:
        Workflow.from_string(text)
    found = [(p.location.line, p.code) for p in info.value.problems]
    assert found == [(17, "optional-input"), (23, "optional-input")]  # until:, the fanout


def test_answer_cannot_name_a_node_inside_a_loop() -> None:
    with pytest.raises(WorkflowError) as info:
        Workflow.from_string(JUDGED.replace("nodes:\n  rounds:", "answer: best\nnodes:\n  rounds:"))
    [problem] = info.value.problems
    assert problem.code == "answer"
    assert problem.message == (
        "answer: 'best' is inside loop 'rounds', which runs it every round; the answer streamed "
        "by `run --stream` is one reply"
    )
    assert problem.location.line == 13


async def test_streaming_a_node_inside_a_loop_is_refused() -> None:
    wf = Workflow.from_string(JUDGED)
    async with Engine(offline=True, cache=False, record=False) as engine:
        with pytest.raises(UsageError, match="inside loop 'rounds'"):
            async for _ in engine.stream(wf, nodes=["best"], prompt="Why?"):
                pass


async def test_a_budget_spent_inside_a_round_stops_the_loop_and_the_run() -> None:
    wf = Workflow.from_string(
        JUDGED.replace("nodes:\n  rounds:", "budget: {max_calls: 5}\nnodes:\n  rounds:")
    )
    async with Engine(offline=True, cache=False, record=False) as engine:
        result = await engine.run(wf, prompt="Why?")
    assert result.status == "failed"
    assert result.error is not None and result.error.type == "budget"
    assert result.metadata.calls == 5
    loop = result.nodes["rounds"]
    assert loop.status == "failed"
    assert loop.output.stopped == "failure" and len(loop.output.rounds) == 2
    assert result.nodes["rounds[2].best"].reason == "the budget stopped the run"


async def test_a_dry_run_walks_rounds_and_says_how_the_loop_stopped() -> None:
    estimate = await dry_run(Workflow.from_string(JUDGED), {"prompt": "Why?"}, offline=True)
    assert estimate.calls == 8  # two rounds of two answers, a judge and the best
    walk = estimate.loops["rounds"]
    assert (walk.rounds, walk.max_rounds, walk.stopped, walk.runs) == (2, 2, "cap", 1)
