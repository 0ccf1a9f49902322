"""Jinja's idioms for a name that may be missing, checked statically and rendered as Jinja does.

`is defined`, `default` and (for an optional input) a truth test guard a read; the checks accept
what they guard and still report every other read of a missing name. Each case is also rendered
with the optional input `tone` given and not given: what the checks accept renders, and what
they report fails, so the two cannot drift apart.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from jinja2 import TemplateError, UndefinedError

from flowengine.errors import Problem, WorkflowError
from flowengine.language.inputs import NotGiven, template_inputs
from flowengine.language.templates import CompiledTemplate, ModelInfo, make_environment
from flowengine.language.workflow import Workflow
from flowengine.results import CallResult

WORKFLOW = """\
version: 1
name: idioms
inputs:
  prompt: {}
  tone: {required: false}
  style: {default: plain}
models:
  gpt: {id: openai/gpt-4o}
nodes:
  first:
    type: llm
    model: gpt
    template: "{{ prompt }}"
  other:
    type: llm
    model: gpt
    template: "{{ prompt }}"
  last:
    type: llm
    needs: [first]
    model: gpt
    template: TEMPLATE
"""
LINE = 22  # the line of node `last`'s template


def problems(template: str) -> list[Problem]:
    quoted = "'" + template.replace("'", "''") + "'"
    try:
        Workflow.from_string(WORKFLOW.replace("TEMPLATE", quoted))
    except WorkflowError as exc:
        return exc.problems
    return []


def render(template: str, **given: Any) -> str:
    """``template`` as node `last` renders it, with the inputs ``given`` (prompt is 'q')."""
    wf = Workflow.from_string(WORKFLOW.replace("TEMPLATE", "x"))
    values = wf.bind_inputs({"prompt": "q", **given})
    context = {
        **template_inputs(wf.spec.inputs, values),
        "models": {"gpt": ModelInfo("gpt", "openai/gpt-4o", 1.0, "openrouter")},
        "first": CallResult(
            model="gpt", model_id="openai/gpt-4o", provider="x", content="A", success=True
        ),
    }
    return str(CompiledTemplate(make_environment(None), template).evaluate(context))


# A template; how it renders without `tone`, and with tone='warm'.
VALID = [
    ("{% if tone is defined %}[{{ tone }}]{% endif %}", "", "[warm]"),
    ("{% if tone is not defined %}none{% else %}{{ tone.upper() }}{% endif %}", "none", "WARM"),
    ("{% if prompt == 'x' %}x{% elif tone is defined %}{{ tone }}{% endif %}", "", "warm"),
    ("{% if tone is defined and tone.startswith('w') %}{{ tone }}{% endif %}", "", "warm"),
    ("{% if tone is not defined or tone == '' %}-{% else %}{{ tone }}{% endif %}", "-", "warm"),
    ("{% if not (tone is defined) %}-{% else %}{{ tone }}{% endif %}", "-", "warm"),
    ("{{ tone if tone is defined else 'calm' }}", "calm", "warm"),
    ("{{ 'calm' if tone is not defined else tone }}", "calm", "warm"),
    ("[{{ tone | default('') }}] {{ tone | d('calm') | upper }}", "[] CALM", "[warm] WARM"),
    ("{% if tone %}{{ tone }}{% else %}calm{% endif %}", "calm", "warm"),
    ("{{ tone or 'calm' }} {{ 'no' if not tone else 'yes' }}", "calm no", "warm yes"),
    ("{% if tone and prompt %}{{ tone }}{% endif %}", "", "warm"),
    ("{% if tone is not defined %}{% set tone = 'calm' %}{% endif %}{{ tone }}", "calm", "warm"),
    (
        "{{ inputs.tone | default('calm') }} {{ inputs['tone'] is defined }}",
        "calm False",
        "warm True",
    ),
    ("{% if inputs.tone %}{{ inputs.tone }}{% endif %}{{ 'tone' in inputs }}", "False", "warmTrue"),
    # Names no workflow declares: a prompt shared by workflows or nodes that differ.
    ("{% if audience is defined %}{{ audience.name }}{% endif %}{{ audience | d(1) }}", "1", "1"),
    ("{% if model is defined %}{{ model.id }}{% endif %}", "", ""),
    (
        "{{ extra is defined }} {{ extra is undefined }} {{ inputs.extra | default(0) }}",
        *["False True 0"] * 2,
    ),
    # A field that may be missing, behind its own test.
    ("{% if first.verdict is defined %}{{ first.verdict.score }}{% endif %}", "", ""),
    (
        "{% for t in [1] %}{% if t is defined %}{{ t }}{% endif %}{% endfor %}{{ style }}",
        "1plain",
        "1plain",
    ),
]


@pytest.mark.parametrize(("template", "without", "with_tone"), VALID)
def test_guarded_reads_pass_the_checks_and_render_as_jinja_does(
    template: str, without: str, with_tone: str
) -> None:
    assert problems(template) == []
    assert render(template) == without
    assert render(template, tone="warm") == with_tone


# A template, the code of its one problem and the word it points at.
INVALID = [
    ("{% if audience is defined %}{% endif %}{{ audience }}", "undefined-name", "audience"),
    (
        "{% if audience is defined %}{% else %}{{ audience }}{% endif %}",
        "undefined-name",
        "audience",
    ),
    (
        "{% if audience is defined or prompt %}{{ audience }}{% endif %}",
        "undefined-name",
        "audience",
    ),
    ("{% if audience %}{{ audience }}{% endif %}", "undefined-name", "audience"),
    ("{{ audience.name | default('') }}", "undefined-name", "audience"),
    ("{{ audience if audience is not defined else 'x' }}", "undefined-name", "audience"),
    ("{{ tone }}", "optional-input", "tone"),
    ("{{ tone | upper }}", "optional-input", "tone"),
    ("{% if tone == 'warm' %}w{% endif %}", "optional-input", "tone"),
    ("{{ prompt and tone }}", "optional-input", "tone"),
    ("{{ tone and prompt }}", "optional-input", "tone"),  # `a and b` is a where a is false
    ("{% if tone is defined %}{% endif %}{{ tone }}", "optional-input", "tone"),
    ("{{ inputs.tone }}", "optional-input", "tone"),
    ("{{ inputs['tone'] ~ '' }}", "optional-input", "tone"),
    ("{% if model %}{{ model.id }}{% endif %}", "fanout-only-name", "model"),
    # Whether a node that is not a need has finished would depend on timing: no guard helps.
    ("{% if other is defined %}{{ other }}{% endif %}", "not-a-need", "other"),
    # A guarded name is not a guarded field: the field must exist.
    ("{% if first is defined %}{{ first.contnt }}{% endif %}", "unknown-field", "contnt"),
]


@pytest.mark.parametrize(("template", "code", "word"), INVALID)
def test_reads_no_guard_covers_are_reported(template: str, code: str, word: str) -> None:
    (problem,) = problems(template)
    assert (problem.code, problem.location.line) == (code, LINE)
    # Jinja knows no columns: the caret is at the first such word in a tag of the line.
    column, line = problem.location.column, problem.location.source_line
    assert column is not None and line is not None
    assert line[column - 1 :].startswith(word)
    if code != "not-a-need":
        with pytest.raises((TemplateError, AttributeError)):
            render(template)


def test_a_misspelt_name_outside_its_guard_still_gets_its_close_match() -> None:
    (problem,) = problems("{% if tnoe is defined %}{{ tnoe }}{% endif %}{{ tnoe }}")
    assert (problem.message, problem.fix) == (
        "template uses undefined name 'tnoe'",
        "did you mean 'tone'?",
    )


def test_an_optional_input_read_unguarded_says_how_to_guard_it() -> None:
    (by_name,) = problems("{{ tone }}")
    assert by_name.message == "optional input 'tone' (no default) is read where it may be undefined"
    assert by_name.fix == (
        "test it first (`{% if tone is defined %}`), write `{{ tone | default('') }}`, "
        "or give the input a `default:`"
    )
    (as_field,) = problems("{{ inputs.tone }}")
    assert as_field.message == by_name.message
    assert as_field.fix is not None and "`{% if inputs.tone is defined %}`" in as_field.fix


def test_an_inline_if_with_no_else_keeps_no_value() -> None:
    # Jinja renders a false `x if y` as nothing: alone in a string, it is none.
    template = "{{ tone if tone is defined }}"
    assert problems(template) == []
    assert render(template) == "None" and render(template, tone="warm") == "warm"
    assert render(f"[{template}]") == "[]"


def test_an_input_with_a_default_needs_no_guard() -> None:
    assert problems("{{ style }} {{ inputs.style }} {{ style is defined }}") == []
    assert render("{{ style }}") == "plain"


def test_unguarded_reads_keep_failing_at_run_time() -> None:
    with pytest.raises(UndefinedError, match="input 'tone' was not given"):
        render("{{ tone }}")
    with pytest.raises(UndefinedError, match="'audience' is undefined"):
        render("{{ audience }}")
    with pytest.raises(UndefinedError, match="'audience' is undefined"):
        render("{% if audience %}{% endif %}")  # a truth test spares optional inputs only


def test_an_input_not_given_is_undefined_and_false_but_not_among_the_inputs() -> None:
    wf = Workflow.from_string(WORKFLOW.replace("TEMPLATE", "x"))
    context = template_inputs(wf.spec.inputs, wf.bind_inputs({"prompt": "q"}))
    assert isinstance(context["tone"], NotGiven) and not context["tone"]
    assert dict(context["inputs"]) == {"prompt": "q", "style": "plain"}
    assert context["inputs"]["tone"] is context["tone"]
    with pytest.raises(KeyError):
        context["inputs"]["nothing"]
    assert render("{{ inputs | tojson }} {{ inputs | length }}") == (
        '{"prompt": "q", "style": "plain"} 2'
    )


# -- what the checks accept renders, whatever the idioms are combined into -------------------------

_READS = st.sampled_from(["tone", "audience", "prompt", "inputs.tone", "inputs['tone']"])


def _exprs(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.builds("{} | default('x')".format, inner),
        st.builds("({} is defined)".format, inner),
        st.builds("({} is not defined)".format, inner),
        st.builds("({} and {})".format, inner, inner),
        st.builds("({} or {})".format, inner, inner),
        st.builds("(not {})".format, inner),
        st.builds("({} if {} else {})".format, inner, inner, inner),
        st.builds("({} ~ 'a')".format, inner),
    )


_EXPRS = st.recursive(_READS, _exprs, max_leaves=6)


def _blocks(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.builds("{{% if {} %}}{}{{% else %}}{}{{% endif %}}".format, _EXPRS, inner, inner),
        st.builds(
            "{{% if {} %}}{}{{% elif {} %}}{}{{% endif %}}".format, _EXPRS, inner, _EXPRS, inner
        ),
        st.builds("{{% set audience = {} %}}{}".format, _EXPRS, inner),
        st.builds("{}{}".format, inner, inner),
    )


@given(st.recursive(st.builds("{{{{ {} }}}}".format, _EXPRS), _blocks, max_leaves=4))
def test_a_template_the_checks_accept_renders_with_the_input_given_or_not(template: str) -> None:
    if problems(template) == []:
        render(template)
        render(template, tone="warm")
