"""The cross-checks: problem codes, fields of results, templates beside cycles and broken parts."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from jinja2 import Environment, TemplateError

from flowengine.errors import Problem, WorkflowError
from flowengine.language.ancestry import ancestry
from flowengine.language.fields import CALLS, field_issues
from flowengine.language.graph import Graph
from flowengine.language.loader import parse_override
from flowengine.language.source import Source
from flowengine.language.templates import ModelInfo, make_environment
from flowengine.language.workflow import Workflow
from flowengine.results import CallResult, ErrorInfo, SelectResult, Usage

ROOT = Path(__file__).resolve().parent.parent
INVALID = ROOT / "tests" / "data" / "invalid"

BASE = """\
version: 1
name: fields
inputs:
  prompt: {}
models:
  gpt: {id: openai/gpt-4o, weight: 2}
  llama: {id: meta-llama/llama-3.3-70b-instruct}
nodes:
  select:
    type: select
  first:
    type: llm
    needs: [select]
    model: gpt
    template: "{{ prompt }}"
  critiques:
    type: fanout
    needs: [first]
    template: "{{ first }}"
  last:
    type: llm
    needs: [critiques]
    model: gpt
    template: TEMPLATE
"""


def problems(text: str, prompts_dir: Path | None = None) -> list[Problem]:
    try:
        Workflow.from_string(text, prompts_dir=prompts_dir)
    except WorkflowError as exc:
        return exc.problems
    return []


def in_last(template: str) -> list[Problem]:
    """The problems of ``template`` as the prompt of node `last` (line 25), which needs all."""
    return problems(BASE.replace("TEMPLATE", "|\n      " + template))


# -- codes -------------------------------------------------------------------------------------


def load_case(name: str) -> list[Problem]:
    args = INVALID / f"{name}.args"
    flags = re.findall(r"--set (\S+)", args.read_text()) if args.exists() else []
    overrides = dict(parse_override(flag) for flag in flags) or None
    with pytest.raises(WorkflowError) as info:
        Workflow.load(INVALID / f"{name}.yaml", overrides=overrides)
    return info.value.problems


@pytest.mark.parametrize(
    ("name", "codes"),
    [
        ("cycle", ["cycle"]),
        (
            "many_problems",
            ["invalid-value", "unknown-model", "unknown-need", "undefined-name", "unknown-key"],
        ),
        ("problem_codes_not_text", ["unknown-model", "undefined-name"]),
        ("override_model_alias", ["no-such-entry"]),
        ("template_non_ancestor", ["not-a-need"]),
        ("node_without_type", ["missing-type"]),
        ("unknown_node_type", ["unknown-type"]),
        ("prompt_missing", ["prompt-not-found"]),
        ("unknown_field_fanout", ["unknown-model", *["unknown-field"] * 4]),
        ("guard_outside", [*["undefined-name"] * 4, "not-a-need"]),
        ("optional_input_unguarded", ["optional-input"] * 3),
    ],
)
def test_problems_carry_codes(name: str, codes: list[str], in_repo_root: Path) -> None:
    assert [p.code for p in load_case(name)] == codes


def test_a_name_that_contains_cycle_hides_no_other_problem() -> None:
    # The checks once decided "is there a cycle?" by searching the messages for "cycle".
    text = BASE.replace("TEMPLATE", '"{{ undefined_thing }}"').replace("model: gpt", "model: x")
    text = text.replace("first", "bicycle").replace("  llama:", "  motorcycle:")
    found = problems(text.replace("model: x", "model: recycled"))
    assert [p.code for p in found] == ["unknown-model", "unknown-model", "undefined-name"]
    assert "cycle" in found[0].message


# -- fields of results -----------------------------------------------------------------------


def _call(model: str, content: str) -> CallResult:
    return CallResult(
        model=model,
        model_id=f"x/{model}",
        provider="offline",
        content=content,
        success=True,
        usage=Usage(prompt_tokens=1, completion_tokens=2, total_tokens=3, cost=0.5),
        error=ErrorInfo(type="http", status=500, message="boom"),
    )


# What node `last` sees when it runs: the static check must agree with a real render.
RUNTIME: dict[str, Any] = {
    "prompt": "q",
    "inputs": {"prompt": "q"},
    "models": {
        "gpt": ModelInfo("gpt", "openai/gpt-4o", 2.0, "openrouter"),
        "llama": ModelInfo("llama", "meta-llama/llama-3.3-70b-instruct", 1.0, "openrouter"),
    },
    "select": SelectResult(model="gpt", source="weight"),
    "first": _call("gpt", "answer"),
    "critiques": [_call("gpt", "a"), _call("llama", "b")],
}

VALID = [
    "{{ first.content }} {{ first.usage.total_tokens }} {{ first.error.message }}",
    "{{ first['model_id'] }} {{ select.model }} {{ select.scores }} {{ select.source }}",
    "{{ critiques[0].model }} {{ critiques[-1].usage.cost }} {{ critiques | length }}",
    "{{ critiques.count(1) }} {{ critiques[1:][0].content }} {{ (critiques | first).content }}",
    "{% for c in critiques if c.success %}{{ c.usage.cost }}{{ loop.index }}{% endfor %}",
    "{% for c in critiques | selectattr('success') %}{{ c.model_id }}{% endfor %}",
    "{{ critiques | map(attribute='usage.total_tokens') | sum }}",
    "{{ critiques | sum(attribute='usage.cost') }} {{ critiques | rejectattr('cached') | list }}",
    "{{ models.gpt.weight }} {{ models['llama'].id }} {{ models.items() | list }}",
    "{% for m in models.values() %}{{ m.provider }}{% endfor %} {{ inputs.prompt }}",
    "{% set first = critiques %}{{ first.count(1) }}",
    "{% macro show(first) %}{{ first.upper() }}{% endmacro %}{{ show('x') }}",
    "{% for first in critiques %}{{ first.content }}{% endfor %}",
]


@pytest.mark.parametrize("template", VALID)
def test_fields_that_exist_pass_and_render(template: str) -> None:
    assert in_last(template) == []
    make_environment(None).from_string(template).render(RUNTIME)


INVALID_FIELDS = [
    ("{{ first.contnt }}", "node 'first' has no field 'contnt'", "did you mean 'content'?"),
    ("{{ select.modle }}", "node 'select' has no field 'modle'", "did you mean 'model'?"),
    (
        "{{ critiques[0].sucess }}",
        "'critiques[0]' has no field 'sucess'",
        "did you mean 'success'?",
    ),
    (
        "{{ first.usage.total_tokns }}",
        "'first.usage' has no field 'total_tokns'",
        "did you mean 'total_tokens'?",
    ),
    (
        "{% for c in critiques %}{{ c.contnt }}{% endfor %}",
        "'c' has no field 'contnt'",
        "did you mean 'content'?",
    ),
    (
        "{{ critiques.content }}",
        "node 'critiques' has no field 'content'",
        "critiques is a list of call results: loop over it (`{% for r in critiques %}"
        "{{ r.content }}{% endfor %}`) or take one (`critiques[0].content`)",
    ),
    (
        "{{ critiques | map(attribute='contnt') | join }}",
        "each item of node 'critiques' has no field 'contnt'",
        "did you mean 'content'?",
    ),
    ("{{ models.gpt.wieght }}", "model 'gpt' has no field 'wieght'", "did you mean 'weight'?"),
    ("{{ models.gtp.id }}", "unknown model 'gtp'", "did you mean 'gpt'?"),
    ("{{ inputs.prmpt }}", "unknown input 'prmpt'", "did you mean 'prompt'?"),
    (
        "{{ select.xyz }}",
        "node 'select' has no field 'xyz'",
        "fields of a select result: model, confidence, scores, source, reason",
    ),
]


@pytest.mark.parametrize(("template", "message", "fix"), INVALID_FIELDS)
def test_fields_that_do_not_exist_are_errors_before_any_call(
    template: str, message: str, fix: str
) -> None:
    (problem,) = in_last(template)
    assert (problem.message, problem.fix, problem.location.line) == (message, fix, 25)
    assert problem.code in ("unknown-field", "unknown-model", "unknown-input")
    with pytest.raises((TemplateError, AttributeError)):
        make_environment(None).from_string(template).render(RUNTIME)


def test_a_fanout_template_reads_the_fields_of_model() -> None:
    text = BASE.replace('template: "{{ first }}"', 'template: "{{ model.id }} {{ model.idd }}"')
    (problem,) = problems(text.replace("TEMPLATE", "x"))
    assert (problem.message, problem.fix) == ("'model' has no field 'idd'", "did you mean 'id'?")
    assert str(problem.location) == "<workflow>:19:40"


def test_output_fields_and_metadata_are_checked() -> None:
    text = BASE.replace("TEMPLATE", "x") + (
        "output:\n"
        '  ok: "{{ metadata.total_time }} {{ metadata.items() | list }} {{ critiques }}"\n'
        '  time: "{{ metadata.total_tim }}"\n'
    )
    (problem,) = problems(text)
    assert problem.message == "'metadata' has no field 'total_tim'"
    assert problem.fix == "did you mean 'total_time'?"


def test_a_deep_chain_does_not_recurse() -> None:
    # Far deeper than Python's recursion limit: the walk keeps a stack of its own. (Jinja's own
    # environment: flowengine's refuses trees this deep before anything walks them.)
    env = Environment()
    shapes = {"critiques": CALLS}
    for template in ("{{ critiques" + "[:]" * 5000 + ".x }}", "{{ critiques" + ".a" * 5000 + " }}"):
        (issue,) = field_issues(env.parse(template), shapes.get)
        assert issue.message.endswith("has no field 'x'" if "[:]" in template else "field 'a'")


# -- templates beside cycles and structural errors -------------------------------------------


def test_ancestors_are_defined_when_needs_form_cycles() -> None:
    # b and c need each other, and d through c: every node they reach is an ancestor.
    graph = Graph({"a": [], "b": ["a", "c"], "c": ["b"], "d": ["c"], "e": []})
    upstream = ancestry(graph, graph.cycles())
    assert list(upstream("d")) == ["a", "b", "c"]
    assert list(upstream("b")) == ["a", "c"]
    assert "b" not in upstream("b") and len(upstream("c")) == 2
    assert list(upstream("e")) == []


def test_templates_are_checked_when_needs_form_a_cycle() -> None:
    text = BASE.replace("needs: [select]", "needs: [select, last]").replace(
        "TEMPLATE", '"{{ first.contnt }} {{ select }}"'
    )
    text += '  other:\n    type: llm\n    model: gpt\n    template: "{{ first }} {{ undefind }}"\n'
    found = [(p.code, p.message) for p in problems(text)]
    assert found == [
        ("cycle", "cycle in needs: first -> critiques -> last -> first"),
        ("unknown-field", "node 'first' has no field 'contnt'"),
        ("not-a-need", "template uses node 'first', which is not among the needs of node 'other'"),
        ("undefined-name", "template uses undefined name 'undefind'"),
    ]


def test_prompt_files_are_checked_beside_structural_errors(tmp_path: Path) -> None:
    (tmp_path / "review.j2").write_text("{{ first.contnt }} {{ promt }}\n", encoding="utf-8")
    text = BASE.replace("TEMPLATE", "x").replace('template: "{{ first }}"', "prompt: review.j2")
    found = problems(text.replace("weight: 2", "weight: heavy"), prompts_dir=tmp_path)
    assert [(str(p.location).rsplit("/", 1)[-1], p.code) for p in found] == [
        ("review.j2:1:10", "unknown-field"),
        ("review.j2:1:23", "undefined-name"),
        ("<workflow>:6:36", "invalid-value"),
    ]


def test_needs_that_could_not_be_read_make_no_false_problems() -> None:
    text = BASE.replace("needs: [critiques]", "needs: {critiques: true}")
    found = problems(text.replace("TEMPLATE", '"{{ critiques[0].content }} {{ first }}"'))
    assert [p.message for p in found] == ["nodes.last.needs: expected a list, got a mapping"]


def test_the_most_specific_override_is_blamed() -> None:
    source = Source("w.yaml", "")
    source.overrides = {
        ("models", "x"): "models.x.id=a",
        ("models", "x", "id"): "models.x.id=a",
        ("models", "x", "weight"): "models.x.weight=heavy",
    }
    assert str(source.locate(("models", "x", "weight"))) == "--set models.x.weight=heavy"
    assert str(source.locate(("models", "x", "provider"))) == "--set models.x.id=a"
