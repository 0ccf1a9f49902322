"""Judging with no network: the shipped judge.yaml offline, and quality where results are read:
metrics, compare, text cards, batch summaries, the README's example and the rubric's schema."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from flowengine import CallResult, Engine, JudgeResult, RunResult, Workflow, compare
from flowengine.cli.render import render_comparison, render_text
from flowengine.results import model_metrics
from flowengine.rubric import Criterion, reply_schema
from flowengine.run.nodes.judge import letter
from tests.clirunner import invoke

ROOT = Path(__file__).resolve().parent.parent
JUDGE_YAML = ROOT / "workflows" / "judge.yaml"


async def run_offline(prompt: str = "Why is the sky blue?") -> RunResult:
    async with Engine(offline=True, cache=False, record=False) as engine:
        return await engine.run(Workflow.load(JUDGE_YAML), prompt=prompt)


async def test_the_shipped_judge_workflow_runs_offline() -> None:
    result = await run_offline()
    assert result.status == "succeeded"
    judge = result.nodes["judge"].output
    assert isinstance(judge, JudgeResult)
    assert sorted(judge.ranking) == ["glm-4.5", "gpt-oss", "qwen3"]
    assert judge.judges == ["kimi-k2", "deepseek"]
    verdicts = [v for c in judge.candidates for v in c.verdicts]
    assert len(verdicts) == 6
    assert all(1 <= s <= 10 and isinstance(s, int) for v in verdicts for s in v.scores.values())
    assert len({c.score for c in judge.candidates}) > 1  # scores differ by answer
    assert [c.rank for c in judge.candidates] == [1, 2, 3]
    assert judge.candidates[0].score >= judge.candidates[1].score >= judge.candidates[2].score
    # The best answer's model revises it.
    assert result.nodes["refine"].output.model == judge.best.model == judge.ranking[0]
    assert result.output["ranking"] == judge.ranking
    assert {a["model"]: a["quality"] for a in result.output["answers"]} == {
        c.model: c.quality for c in judge.candidates
    }
    again = (await run_offline()).nodes["judge"].output
    assert again.ranking == judge.ranking and again.candidates == judge.candidates


async def test_quality_in_the_metrics_of_a_run() -> None:
    result = await run_offline()
    judge = result.nodes["judge"].output
    metrics = result.metrics.models
    for candidate in judge.candidates:
        assert metrics[candidate.model].quality == candidate.quality
        assert metrics[candidate.model].judged == 1
    assert (metrics["kimi-k2"].quality, metrics["kimi-k2"].judged) == (None, 0)


def call(model: str, **kw: object) -> CallResult:
    return CallResult(
        model=model, model_id=model, provider="p", success=True, content="an answer", **kw
    )


def test_model_metrics_average_the_quality_of_judged_calls() -> None:
    calls = [
        call("a", attempts=1, quality=0.5),
        call("a", attempts=1),
        call("a", attempts=0, cached=True, quality=1.0),  # a cached answer judged again
        call("b", attempts=1),
    ]
    metrics = model_metrics(calls)
    assert (metrics["a"].quality, metrics["a"].judged) == (0.75, 2)
    assert (metrics["b"].quality, metrics["b"].judged) == (None, 0)


async def test_compare_recommends_the_answer_judged_best() -> None:
    result = await run_offline()
    data = compare(result)
    best = result.nodes["judge"].output.best
    assert data["recommended"]["node"] == "answers"
    assert data["recommended"]["model"] == best.model
    assert data["recommended"]["reason"] == (
        f"highest quality a judge gave ({best.quality:.2f} of 1) of the 3 judged responses"
    )
    qualities = {c["model"]: c["quality"] for c in data["responses"] if c["node"] == "answers"}
    assert qualities == {c.model: c.quality for c in result.nodes["judge"].output.candidates}
    assert next(c for c in data["responses"] if c["node"] == "refine")["quality"] is None
    table = render_comparison(data).splitlines()
    assert table[0].split()[-1] == "quality"
    assert table[2].split()[-1] == f"{qualities[table[2].split()[1]]:.2f}"


def test_quality_wins_over_selector_confidence() -> None:
    sure = call("sure", confidence=0.99)
    judged = call("judged", quality=0.4)
    result = RunResult.model_validate(
        {
            "workflow": "w",
            "run_id": "r",
            "status": "succeeded",
            "inputs": {},
            "nodes": {
                "first": {"status": "succeeded", "output": sure},
                "second": {"status": "succeeded", "output": judged},
            },
            "metadata": {
                "total_time": 1,
                "calls": 2,
                "concurrent_calls": 1,
                "tokens": 0,
                "cost": None,
                "model_selector_confidence": 0.99,
            },
            "metrics": {},
        }
    )
    assert compare(result)["recommended"]["model"] == "judged"


async def test_text_cards_show_the_ranking_and_each_answers_quality() -> None:
    result = await run_offline()
    text = render_text(result)
    judge = result.nodes["judge"].output
    assert re.search(r"^── judge · by kimi-k2, deepseek · scale 1-10 ─+$", text, re.MULTILINE)
    for c in judge.candidates:
        assert f"\n{c.rank}. {c.model} ({c.letter}) · quality {c.quality:.2f} · mean " in text
        assert f"\n   kimi-k2: {c.verdicts[0].reason}\n" in text
        assert re.search(rf"── answers \d/3 · {c.model} \(.*\) · quality {c.quality:.2f} · ", text)


def test_a_batch_summary_shows_quality_per_model(tmp_path: Path) -> None:
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"prompt": "one"}\n{"prompt": "two"}\n', encoding="utf-8")
    out = tmp_path / "out.jsonl"
    code, _, err = invoke("batch", "judge", "--offline", "--input", str(rows), "--output", str(out))
    assert code == 0, err
    lines = err[err.index("  model  ") :].splitlines()
    assert lines[0].endswith(" cost         quality")
    qualities = {line.split()[0]: line.split()[-2:] for line in lines[1:6]}
    assert qualities["kimi-k2"] == ["$0.000000", "-"]
    for model in ("gpt-oss", "glm-4.5", "qwen3"):
        mean, count = qualities[model]
        assert count == "(2)" and 0 <= float(mean) <= 1
        assert lines[0].index("quality") == lines[1 + list(qualities).index(model)].index(mean)


def test_the_judge_in_the_graph() -> None:
    code, out, err = invoke("graph", str(JUDGE_YAML))
    assert code == 0, err
    assert '    n_judge{{"judge<br/>judge · answers · by 2 models"}}' in out.splitlines()


def test_the_readme_example_validates() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("### Judging answers") :]
    example = section[section.index("```yaml\n") + 8 : section.index("```\n")]
    text = (
        "version: 1\nname: readme\ninputs:\n  prompt: {}\nmodels:\n"
        + "".join(
            f"  {alias}: {{id: x/{alias}}}\n"
            for alias in ("gpt-oss", "glm-4.5", "qwen3", "kimi-k2", "deepseek")
        )
        + example
    )
    wf = Workflow.from_string(text, prompts_dir=ROOT / "prompts")
    assert wf.order == ["answers", "judge", "refine"]


def test_the_reply_schema_follows_the_scale() -> None:
    criteria = [Criterion(name="fit")]
    schema = reply_schema(criteria, (0, 1.5), ["A"])
    score = schema["properties"]["A"]["properties"]["scores"]["properties"]["fit"]
    assert score == {"type": "number", "minimum": 0, "maximum": 1.5}
    assert json.dumps(reply_schema(criteria, (1, 5), ["A", "B"])).count('"integer"') == 2


@pytest.mark.parametrize(
    ("index", "name"), [(0, "A"), (1, "B"), (25, "Z"), (26, "AA"), (27, "AB"), (701, "ZZ")]
)
def test_answers_are_named_by_letters(index: int, name: str) -> None:
    assert letter(index) == name


async def test_a_judge_with_a_false_condition_is_skipped() -> None:
    wf = Workflow.load(JUDGE_YAML, overrides={"nodes.judge.when": "answers | length > 3"})
    async with Engine(offline=True, cache=False, record=False) as engine:
        result = await engine.run(wf, prompt="Why?", skip=["refine"])
    # Only judge.yaml's `output:`, which reads the judge's ranking, fails: it needs a judge.
    assert result.error.message == "output: 'None' has no attribute 'ranking'"
    judge = result.nodes["judge"]
    assert (judge.status, judge.reason) == ("skipped", "condition is false: answers | length > 3")
    assert all(a.quality is None for a in result.nodes["answers"].output)
    assert compare(result)["skipped"] == {
        "judge": "condition is false: answers | length > 3",
        "refine": "requested with --skip",
    }


async def test_a_judge_whose_target_was_skipped_says_how_to_skip_it_too() -> None:
    async with Engine(offline=True, cache=False, record=False) as engine:
        result = await engine.run(Workflow.load(JUDGE_YAML), prompt="Why?", skip=["answers"])
    judge = result.nodes["judge"]
    assert judge.status == "failed"
    assert judge.error.message == (
        "node 'answers' has nothing to judge: it was skipped, or failed before its first call; "
        "to judge it only when it answers, give 'judge' `when: answers is not none`"
    )
    wf = Workflow.load(JUDGE_YAML, overrides={"nodes.judge.when": "answers is not none"})
    async with Engine(offline=True, cache=False, record=False) as engine:
        result = await engine.run(wf, prompt="Why?", skip=["answers", "refine"])
    assert result.nodes["judge"].status == "skipped"
    assert result.nodes["judge"].reason == "condition is false: answers is not none"


async def test_compare_shows_quality_and_the_skipped_nodes_together() -> None:
    async with Engine(offline=True, cache=False, record=False) as engine:
        result = await engine.run(Workflow.load(JUDGE_YAML), prompt="Why?", skip=["refine"])
    data = compare(result)
    best = result.nodes["judge"].output.best
    assert (data["recommended"]["model"], data["skipped"]) == (
        best.model,
        {"refine": "requested with --skip"},
    )
    text = render_comparison(data)
    assert text.splitlines()[0].split()[-1] == "quality"
    assert "\nskipped: refine (requested with --skip)\nrecommended: " in text
    assert f"{best.quality:.2f}" in text


OPTIONAL_PROMPT = """
version: 1
name: optional-prompt
inputs:
  prompt: {required: false}
  text: {}
providers:
  local: {type: offline}
models:
  a: {id: vendor/a, provider: local}
  b: {id: vendor/b, provider: local}
defaults: {provider: local}
nodes:
  answers: {type: fanout, models: [a], template: "{{ text }}"}
  judge: {type: judge, needs: [answers], target: answers, criteria: [fit], model: b}
"""


@pytest.mark.parametrize("given", [{}, {"prompt": "What is it?"}])
async def test_an_optional_prompt_not_given_leaves_the_judge_without_a_question(
    given: dict[str, str],
) -> None:
    wf = Workflow.from_string(OPTIONAL_PROMPT)
    async with Engine(offline=True, cache=False, record=False) as engine:
        result = await engine.run(wf, text="tides", **given)
    assert result.nodes["judge"].status == "succeeded", result.nodes["judge"].error
