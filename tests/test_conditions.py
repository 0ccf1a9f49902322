"""Conditions and skipping: `when:` on a node, `skip=[...]`, and what a skipped node looks like.

Runs use the offline provider; broken conditions are data in tests/data/invalid/when_*.yaml.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from flowengine import Engine, Event, Workflow
from flowengine.compare import compare
from flowengine.errors import UsageError, WorkflowError
from flowengine.store.db import Store
from flowengine.store.records import load_run

ROOT = Path(__file__).resolve().parent.parent

# An answer, a review only when `quick` is false, and a final node that reads the review if any.
REVIEWED = """\
version: 1
name: reviewed
inputs:
  prompt: {type: string}
  quick: {type: boolean, default: false}
providers:
  local: {type: offline}
models:
  a: {id: vendor/a, provider: local}
  b: {id: vendor/b, provider: local}
defaults: {provider: local}
nodes:
  answer: {type: llm, model: a, template: "{{ prompt }}"}
  review:
    type: llm
    needs: [answer]
    when: not quick
    model: b
    template: "Review: {{ answer }}"
  final:
    type: llm
    needs: [review]
    model: a
    template: >-
      {% if review %}reviewed{% else %}unreviewed{% endif %}
      none={{ review is none }} best={{ (review or answer).model }}
output:
  final: "{{ final.content }}"
  review: "{{ review }}"
  reviewer: "{{ review.model if review else 'nobody' }}"
"""


def load(text: str, tmp_path: Path, **overrides: Any) -> Workflow:
    path = tmp_path / "wf.yaml"
    path.write_text(text)
    return Workflow.load(path, overrides=overrides)


async def run(wf: Workflow, **kwargs: Any) -> tuple[Any, list[Event]]:
    events: list[Event] = []
    async with Engine(offline=True, cache=False, record=False) as engine:
        result = await engine.run(wf, listeners=[events.append], **kwargs)
    return result, events


# -- when: ---------------------------------------------------------------------------------------


async def test_a_false_condition_skips_the_node_and_the_run_still_succeeds(tmp_path: Path) -> None:
    result, events = await run(load(REVIEWED, tmp_path), prompt="q", quick=True)
    assert result.status == "succeeded" and result.error is None
    review = result.nodes["review"]
    assert (review.status, review.reason) == ("skipped", "condition is false: not quick")
    assert review.output is None and review.error is None and review.started_at is None
    # Downstream runs, and tests the skipped node without a strict-undefined error.
    assert 'You asked: "unreviewed none=True best=a"' in result.output["final"]
    assert result.output["review"] is None and result.output["reviewer"] == "nobody"
    # No calls: two calls in all, and the reviewer's model has no metrics.
    assert result.metadata.calls == 2
    assert set(result.metrics.models) == {"a"}
    kinds = [(e.kind, e.node) for e in events if e.node == "review"]
    assert kinds == [("node_skipped", "review")]
    assert [e.reason for e in events if e.kind == "node_skipped"] == [review.reason]


async def test_a_true_condition_runs_the_node(tmp_path: Path) -> None:
    result, events = await run(load(REVIEWED, tmp_path), prompt="q")
    assert result.status == "succeeded"
    assert result.nodes["review"].status == "succeeded" and result.nodes["review"].reason is None
    assert 'You asked: "reviewed none=False best=b"' in result.output["final"]
    assert result.output["reviewer"] == "b"
    assert result.metadata.calls == 3 and set(result.metrics.models) == {"a", "b"}
    assert "node_skipped" not in [e.kind for e in events]


@pytest.mark.parametrize(
    ("when", "runs"),
    [
        ("answer.content | length > 1000", False),  # reads an upstream output's field
        ("'stand-in' in answer.content or 'placeholder' in answer.content", False),
        ("{{ answer.success and not quick }}", True),  # wrapped in {{ }}
        ("answer.success\n  and prompt == 'q'", True),  # over two lines
        (False, False),  # YAML's boolean
        (True, True),
        ("[]", False),  # Jinja's truth: an empty list is false
    ],
)
async def test_condition_forms(when: Any, runs: bool, tmp_path: Path) -> None:
    wf = load(REVIEWED, tmp_path, **{"nodes.review.when": when})
    result, _ = await run(wf, prompt="q")
    assert result.nodes["review"].status == ("succeeded" if runs else "skipped")
    assert result.status == "succeeded"


async def test_the_reason_names_the_condition_as_written(tmp_path: Path) -> None:
    wf = load(REVIEWED, tmp_path, **{"nodes.review.when": "{{ quick }}"})
    result, _ = await run(wf, prompt="q")
    assert result.nodes["review"].reason == "condition is false: quick"
    wf = load(REVIEWED, tmp_path, **{"nodes.review.when": False})
    result, _ = await run(wf, prompt="q")
    assert result.nodes["review"].reason == "condition is false: false"


async def test_a_condition_that_fails_to_evaluate_fails_its_node(tmp_path: Path) -> None:
    wf = load(REVIEWED, tmp_path, **{"nodes.review.when": "answer.content > 3"})
    result, events = await run(wf, prompt="q")
    assert result.status == "failed"
    review = result.nodes["review"]
    assert review.status == "failed" and review.error is not None
    assert review.error.type == "condition"
    assert review.error.message.startswith("nodes.review.when: ")
    assert "'>' not supported" in review.error.message
    assert result.error == review.error
    assert result.nodes["final"].status == "skipped"
    assert result.nodes["final"].reason == "'review' failed, so the run stopped"
    assert [e.kind for e in events if e.node == "review"] == ["node_failed"]
    assert result.metadata.calls == 1


async def test_on_error_continue_applies_to_a_condition_that_fails(tmp_path: Path) -> None:
    overrides = {"nodes.review.when": "answer.content > 3", "nodes.review.on_error": "continue"}
    result, _ = await run(load(REVIEWED, tmp_path, **overrides), prompt="q")
    assert result.status == "partial"
    assert result.nodes["review"].status == "failed"
    assert 'You asked: "unreviewed none=True best=a"' in result.output["final"]


async def test_a_condition_on_a_select_node_and_a_fanout(tmp_path: Path) -> None:
    text = """\
version: 1
name: branches
inputs:
  prompt: {type: string}
  many: {type: boolean, default: false}
providers:
  local: {type: offline}
models:
  a: {id: vendor/a, provider: local, weight: 2}
  b: {id: vendor/b, provider: local}
defaults: {provider: local}
nodes:
  pick: {type: select, when: not many}
  one: {type: llm, needs: [pick], when: pick, model: "{{ pick.model }}", template: x}
  all: {type: fanout, when: many, template: x}
  merge:
    type: llm
    needs: [one, all]
    model: a
    template: "{% for r in all or [one] %}{{ r.model }};{% endfor %}"
output:
  answer: "{{ one or all }}"
  merged: "{{ merge.content }}"
"""
    wf = load(text, tmp_path)
    single, _ = await run(wf, prompt="q")
    assert {n: r.status for n, r in single.nodes.items()} == {
        "pick": "succeeded",
        "one": "succeeded",
        "all": "skipped",
        "merge": "succeeded",
    }
    assert single.output["answer"]["model"] == "a" and 'asked: "a;"' in single.output["merged"]
    fanned, _ = await run(wf, prompt="q", many=True)
    assert {n: r.status for n, r in fanned.nodes.items() if r.status == "skipped"} == {
        "pick": "skipped",
        "one": "skipped",  # `pick` is none, so its condition is false
    }
    assert [r["model"] for r in fanned.output["answer"]] == ["a", "b"]
    assert 'asked: "a;b;"' in fanned.output["merged"]
    assert fanned.status == "succeeded"


def test_conditions_are_checked_with_the_names_templates_see(tmp_path: Path) -> None:
    wf = REVIEWED.replace("when: not quick", "when: not quik and final.success")
    with pytest.raises(WorkflowError) as caught:
        load(wf, tmp_path)
    found = {(p.code, p.message) for p in caught.value.problems}
    assert found == {
        ("undefined-name", "condition uses undefined name 'quik'"),
        (
            "not-a-need",
            "condition uses node 'final', which is not among the needs of node 'review'",
        ),
    }
    fixes = {p.code: p.fix for p in caught.value.problems}
    assert fixes["undefined-name"] == "did you mean 'quick'?"


def test_hostile_conditions_are_refused_without_running_them(tmp_path: Path) -> None:
    deep = "(" * 300 + "prompt" + ")" * 300
    wf = (
        REVIEWED.replace("when: not quick", "when: \"'a' * 3000000000\"")
        .replace("needs: [review]", f'needs: [review]\n    when: "{deep}"')
        .replace("{type: llm, model: a,", "{type: llm, when: prompt.__class__, model: a,")
    )
    with pytest.raises(WorkflowError) as caught:
        load(wf, tmp_path)
    assert [(p.code, p.message) for p in caught.value.problems] == [
        ("template", "template reads '__class__': names starting with '_' are not accessible"),
        ("template", "template: '*' would make 3,000,000,000 items; the most is 1,000,000"),
        ("condition-syntax", "condition nested too deeply"),
    ]


# -- skip=[...] and only=[...] -------------------------------------------------------------------


async def test_skip_from_the_api_skips_a_node_that_would_run(tmp_path: Path) -> None:
    wf = load(REVIEWED, tmp_path)
    result, events = await run(wf, prompt="q", skip=["review"])
    assert result.status == "succeeded"
    review = result.nodes["review"]
    assert (review.status, review.reason) == ("skipped", "requested with --skip")
    # `final` reads `answer` through the skipped `review`: a skipped node waits for its needs.
    assert 'You asked: "unreviewed none=True best=a"' in result.output["final"]
    assert [(e.kind, e.node) for e in events if e.kind.startswith("node_")] == [
        ("node_started", "answer"),
        ("node_finished", "answer"),
        ("node_skipped", "review"),
        ("node_started", "final"),
        ("node_finished", "final"),
    ]


async def test_workflow_run_takes_skip_and_only(tmp_path: Path) -> None:
    wf = load(REVIEWED, tmp_path)
    result = await wf.run(prompt="q", offline=True, skip=["review"], only=["final"])
    assert {n: r.status for n, r in result.nodes.items()} == {
        "review": "skipped",
        "answer": "succeeded",  # an ancestor of `final`: a node may read beyond a skipped need
        "final": "succeeded",
    }
    result = await wf.run(prompt="q", offline=True, skip=["final"], only=["answer"])
    assert set(result.nodes) == {"answer"}  # skipping what --only leaves out changes nothing


async def test_skip_and_only_name_known_nodes_and_do_not_contradict(tmp_path: Path) -> None:
    wf = load(REVIEWED, tmp_path)
    with pytest.raises(UsageError) as caught:
        await run(wf, prompt="q", skip=["reviw"])
    assert str(caught.value) == "--skip: unknown node 'reviw'; did you mean 'review'?"
    with pytest.raises(UsageError, match="--only: unknown node 'x'; nodes: answer, review, final"):
        await run(wf, prompt="q", only=["x"])
    with pytest.raises(UsageError) as caught:
        await run(wf, prompt="q", only=["review"], skip=["review"])
    assert str(caught.value) == (
        "--only review and --skip review: a node cannot be both run and skipped; "
        "give it to one of them"
    )


async def test_skipping_the_first_node_still_runs_the_rest(tmp_path: Path) -> None:
    result, _ = await run(load(REVIEWED, tmp_path), prompt="q", skip=["answer"])
    assert result.status == "succeeded"
    assert result.nodes["answer"].status == "skipped"
    # none prints as nothing in the prompt of the node after it
    assert 'You asked: "Review:"' in result.output["review"]["content"]


async def test_default_output_shows_a_skipped_node_as_none(tmp_path: Path) -> None:
    text = REVIEWED[: REVIEWED.index("output:")]
    result, _ = await run(load(text, tmp_path), prompt="q", quick=True)
    assert list(result.output) == ["answer", "review", "final"]
    assert result.output["review"] is None


# -- records and comparison ----------------------------------------------------------------------


async def test_a_skipped_node_is_recorded_and_compared(tmp_path: Path) -> None:
    wf = load(REVIEWED, tmp_path)
    async with Engine(offline=True) as engine:
        result = await engine.run(wf, prompt="q", quick=True)
    stored = load_run(Store(), result.run_id)
    node = stored.result.nodes["review"]
    assert (node.status, node.reason) == ("skipped", "condition is false: not quick")
    assert stored.result.status == "succeeded"
    assert [c.node for c in stored.timeline] == ["answer", "final"]
    data = compare(stored.result)
    assert data["skipped"] == {"review": "condition is false: not quick"}
    assert [c["node"] for c in data["responses"]] == ["answer", "final"]
    assert data["recommended"]["node"] == "final"


# -- the shipped ensemble ------------------------------------------------------------------------


async def test_ensemble_runs_only_its_initial_and_synthesis_stages_with_skip_meta() -> None:
    wf = Workflow.load(ROOT / "workflows" / "ensemble.yaml")
    async with Engine(offline=True) as engine:
        result = await engine.run(wf, prompt="Why is the sky blue?", skip=["meta"])
    assert result.status == "succeeded"
    assert result.nodes["meta"].status == "skipped"
    assert result.output["meta_responses"] is None
    assert result.output["final_synthesis"]["success"] is True
    calls = load_run(Store(), result.run_id).timeline
    assert {c.node for c in calls} == {"answers", "scores", "synthesis"}
    [synthesis] = [c for c in calls if c.node == "synthesis"]
    prompt = synthesis.messages[-1]["content"]
    assert prompt.startswith(
        "You are writing the final answer to a question, drawing on several models' responses.\n"
    )
    assert prompt.count("<response id=") == 4
    assert "analys" not in prompt and "None" not in prompt
    assert "- Compare the responses: keep the claims" in prompt


async def test_the_ensemble_metrics_carry_each_answering_models_quality() -> None:
    wf = Workflow.load(ROOT / "workflows" / "ensemble.yaml")
    async with Engine(offline=True, cache=False, record=False) as engine:
        result = await engine.run(wf, prompt="Why is the sky blue?")
    assert result.status == "succeeded"
    answered = [call.model for call in result.nodes["answers"].output]
    assert len(answered) == 4
    for model in answered:
        metrics = result.metrics.models[model]
        assert metrics.judged == 1
        assert metrics.quality is not None and 0.0 <= metrics.quality <= 1.0
    qualities = [result.metrics.models[m].quality for m in result.output["ranking"]]
    assert qualities == sorted(qualities, reverse=True)  # the ranking follows the scores
