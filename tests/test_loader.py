"""Loading valid workflows: built-in providers, overrides, durations, defaults of the format."""

from __future__ import annotations

from pathlib import Path

import pytest

from flowengine.errors import UsageError, WorkflowError
from flowengine.language.loader import parse_override
from flowengine.language.workflow import Workflow
from flowengine.spec import OfflineProvider, OpenAIProvider, parse_duration

ROOT = Path(__file__).resolve().parent.parent
PROMPTS = ROOT / "prompts"

MINIMAL = """\
version: 1
name: minimal
inputs:
  prompt: {}
models:
  gpt: {id: openai/gpt-4o, weight: 2}
  llama: {id: meta-llama/llama-3.3-70b-instruct}
nodes:
  answer:
    type: llm
    model: gpt
    template: "{{ prompt }}"
"""


def load(text: str, **overrides: object) -> Workflow:
    return Workflow.from_string(text, prompts_dir=PROMPTS, overrides=overrides or None)


@pytest.mark.parametrize("name", ["critique", "ensemble", "full", "judge", "route"])
def test_shipped_workflows_load(name: str) -> None:
    wf = Workflow.load(ROOT / "workflows" / f"{name}.yaml")
    assert wf.name == name
    assert wf.order[0] in wf.spec.nodes


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("models.llama.weight=4", 4),
        ("models.llama.weight=2.5", 2.5),
        ("providers.openrouter.base_url=http://127.0.0.1:8080/v1", "http://127.0.0.1:8080/v1"),
        ("nodes.answer.cache=false", False),
        ("defaults.params.stop=[a, b]", ["a", "b"]),
        ("description=", ""),
        ("name=my flow", "my flow"),
    ],
)
def test_override_values_are_yaml_scalars(text: str, value: object) -> None:
    path, parsed = parse_override(text)
    assert path == text.partition("=")[0]
    assert parsed == value
    assert type(parsed) is type(value)


def test_override_without_equals_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="expected PATH=VALUE"):
        parse_override("models.llama.weight")


def test_overrides_apply_to_the_spec() -> None:
    wf = load(
        MINIMAL,
        **{
            "models.llama.weight": 4,
            "providers.openrouter.base_url": "http://127.0.0.1:8080/v1",
        },
    )
    assert wf.spec.models["llama"].weight == 4
    assert wf.spec.model_sorted() == ["llama", "gpt"]
    provider = wf.spec.providers["openrouter"]
    assert isinstance(provider, OpenAIProvider)
    assert provider.base_url == "http://127.0.0.1:8080/v1"
    assert provider.api_key_env == "OPENROUTER_API_KEY"


def test_override_through_a_scalar_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match=r"models\.gpt\.weight is not a mapping"):
        load(MINIMAL, **{"models.gpt.weight.x": 1})


def test_bad_override_points_at_the_flag() -> None:
    with pytest.raises(WorkflowError) as info:
        load(MINIMAL, **{"nodes.answer.model": "lama"})
    (problem,) = info.value.problems
    assert str(problem.location) == "--set nodes.answer.model=lama"
    assert problem.fix == "did you mean 'llama'?"


def test_merged_values_are_checked_where_they_are_written() -> None:
    text = MINIMAL.replace("  answer:\n", "  answer: &base\n    timeout: soon\n") + (
        "  again:\n    <<: *base\n    model: lama\n"
    )
    with pytest.raises(WorkflowError) as info:
        load(text)
    assert [(p.location.line, p.location.column, p.message) for p in info.value.problems] == [
        (10, 14, "nodes.answer.timeout: invalid duration 'soon': use a number with a unit, "
         "such as 500ms, 5s or 2m"),
        (10, 14, "nodes.again.timeout: invalid duration 'soon': use a number with a unit, "
         "such as 500ms, 5s or 2m"),
        (16, 12, "unknown model 'lama'"),
    ]  # fmt: skip


def test_builtin_openrouter_exists_without_providers() -> None:
    wf = load(MINIMAL)
    provider = wf.spec.providers["openrouter"]
    assert isinstance(provider, OpenAIProvider)
    assert provider.base_url == "https://openrouter.ai/api/v1"
    assert provider.api_key_env == "OPENROUTER_API_KEY"
    assert wf.spec.provider_of("gpt") == "openrouter"


def test_partial_openrouter_declaration_merges_with_builtin() -> None:
    text = MINIMAL.replace(
        "models:", "providers:\n  openrouter:\n    rate_limit: {requests: 5, per: 2s}\nmodels:"
    )
    provider = load(text).spec.providers["openrouter"]
    assert isinstance(provider, OpenAIProvider)
    assert provider.rate_limit is not None
    assert (provider.rate_limit.requests, provider.rate_limit.per) == (5, 2.0)
    assert provider.base_url == "https://openrouter.ai/api/v1"
    assert "X-Title" in provider.headers


def test_provider_without_type_is_openai_and_offline_is_known() -> None:
    text = MINIMAL.replace(
        "models:",
        "providers:\n  local: {base_url: 'http://127.0.0.1:8080/v1/'}\n"
        "  fake: {type: offline, seed: 3}\nmodels:",
    )
    spec = load(text).spec
    local, fake = spec.providers["local"], spec.providers["fake"]
    assert isinstance(local, OpenAIProvider)
    assert local.type == "openai"
    assert local.base_url == "http://127.0.0.1:8080/v1"
    assert isinstance(fake, OfflineProvider)
    assert fake.seed == 3


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("500ms", 0.5),
        ("5s", 5.0),
        ("2m", 120.0),
        ("1h", 3600.0),
        (3, 3.0),
        (1.5, 1.5),
        (" 5 s ", 5.0),
    ],
)
def test_durations(value: object, seconds: float) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize("value", ["5 parsecs", "-1s", True, -2, "", None, [1]])
def test_bad_durations(value: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(value)


def test_durations_in_a_file() -> None:
    text = MINIMAL + "    timeout: 500ms\n    retry: {attempts: 2, initial: 250ms, max: 2m}\n"
    node = load(text).spec.nodes["answer"]
    assert node.timeout == 0.5
    assert node.retry is not None
    assert (node.retry.initial, node.retry.max) == (0.25, 120.0)


def test_vars_are_names_for_the_prompt() -> None:
    text = MINIMAL + (
        "  review:\n    type: llm\n    needs: [answer]\n    model: llama\n"
        "    vars:\n      draft: '{{ answer }}'\n    template: 'Improve: {{ draft }}'\n"
    )
    spec = load(text).spec
    assert spec.nodes["review"].vars == {"draft": "{{ answer }}"}  # type: ignore[union-attr]


def test_var_name_that_is_not_an_identifier_is_an_error() -> None:
    text = MINIMAL + "    vars:\n      bad-name: x\n"
    with pytest.raises(WorkflowError, match="bad-name"):
        load(text)


FANOUT = MINIMAL + "  all:\n    type: fanout\n    template: hi\n"


def test_fanout_models_as_list() -> None:
    spec = load(FANOUT + "    models: [llama, gpt]\n").spec
    query = spec.nodes["all"].models  # type: ignore[union-attr]
    assert query.include == ["llama", "gpt"]
    assert query.exclude == []


def test_fanout_models_as_query() -> None:
    spec = load(FANOUT + "    models: {include: [gpt, llama], exclude: [llama], top: 1}\n").spec
    query = spec.nodes["all"].models  # type: ignore[union-attr]
    assert (query.include, query.exclude, query.top) == (["gpt", "llama"], ["llama"], 1)


def test_fanout_models_default_to_all() -> None:
    query = load(FANOUT).spec.nodes["all"].models  # type: ignore[union-attr]
    assert query.include is None


def test_fanout_unknown_model_in_list_points_at_the_item() -> None:
    with pytest.raises(WorkflowError) as info:
        load(FANOUT + "    models: [llama, gtp]\n")
    (problem,) = info.value.problems
    assert problem.location.line == 16
    assert problem.location.column == 21
    assert problem.message == "unknown model 'gtp'"


def test_min_success_above_model_count() -> None:
    with pytest.raises(WorkflowError, match="min_success is 3, but the fanout calls at most 2"):
        load(FANOUT + "    models: [llama, gpt]\n    min_success: 3\n")


def test_needs_may_be_a_single_string() -> None:
    text = (
        MINIMAL + "  review:\n    type: llm\n    needs: answer\n    model: gpt\n    template: x\n"
    )
    assert load(text).spec.nodes["review"].needs == ["answer"]


def test_every_problem_of_a_file_is_reported_at_once() -> None:
    text = MINIMAL.replace("weight: 2", "weight: heavy").replace("model: gpt", "model: gtp")
    text += "    colour: blue\n"
    with pytest.raises(WorkflowError) as info:
        load(text)
    messages = [p.message for p in info.value.problems]
    assert messages == [
        "models.gpt.weight: expected a number, got 'heavy'",
        "unknown model 'gtp'",
        "unknown key 'colour' in nodes.answer",
    ]


def test_workflow_error_is_a_value_error_with_the_rendered_text() -> None:
    with pytest.raises(ValueError, match=r"<workflow>:3:1: error: unknown key 'modles'"):
        load(MINIMAL.replace("inputs:", "modles:"))


def test_unclosed_quote_at_end_of_file_stays_inside_the_file() -> None:
    with pytest.raises(WorkflowError) as info:
        load('version: 1\nname: "abc')
    (problem,) = info.value.problems
    assert (problem.location.line, problem.location.column) == (2, 7)
    assert problem.message == "YAML syntax: this quoted string is never closed"
