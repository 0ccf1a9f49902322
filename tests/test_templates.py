"""Sandboxed templates: native values, strict names, the sandbox, prompt paths."""

from __future__ import annotations

import os
import traceback
from pathlib import Path

import pytest
from jinja2 import TemplateNotFound, UndefinedError
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from flowengine.language.templates import (
    CompiledTemplate,
    ModelInfo,
    PromptPathError,
    analyse,
    compile_value,
    evaluate_value,
    make_environment,
    prompt_file,
    single_expression,
)
from flowengine.results import CallResult, SelectResult


@pytest.fixture
def env() -> ImmutableSandboxedEnvironment:
    return make_environment(None)


@pytest.mark.parametrize(
    ("source", "context", "value"),
    [
        ("{{ items }}", {"items": [1, 2]}, [1, 2]),
        ("{{ data }}", {"data": {"a": 1}}, {"a": 1}),
        ("{{ n * 2 }}", {"n": 21}, 42),
        ("  {{ [a] + b }}  ", {"a": 1, "b": [2]}, [1, 2]),
        ("{{ flag }}", {"flag": False}, False),
    ],
)
def test_single_expression_keeps_the_native_value(
    env: ImmutableSandboxedEnvironment, source: str, context: dict[str, object], value: object
) -> None:
    template = CompiledTemplate(env, source)
    assert template.is_native
    assert template.evaluate(context) == value
    assert type(template.evaluate(context)) is type(value)


@pytest.mark.parametrize(
    ("source", "rendered"),
    [
        ("n = {{ n }}", "n = 3"),
        ("{{ n }}{{ n }}", "33"),
        ("{% if n %}yes{% endif %}", "yes"),
        ("{{ n }} and {{ n }}", "3 and 3"),
    ],
)
def test_anything_else_renders_to_a_string(
    env: ImmutableSandboxedEnvironment, source: str, rendered: str
) -> None:
    template = CompiledTemplate(env, source)
    assert not template.is_native
    assert template.evaluate({"n": 3}) == rendered


def test_single_expression_detection() -> None:
    assert single_expression("{{ a }}") == "a"
    assert single_expression("{{ a }} {{ b }}") is None
    assert single_expression("x {{ a }}") is None
    assert single_expression("{% if a %}{{ a }}{% endif %}") is None


def test_compile_and_evaluate_nested_values(env: ImmutableSandboxedEnvironment) -> None:
    value = {
        "answer": "{{ primary }}",
        "list": ["{{ n }}", "n={{ n }}", 7, "plain"],
        "count": 3,
    }
    compiled = compile_value(env, value)
    assert compiled["list"][3] == "plain"
    assert evaluate_value(compiled, {"primary": {"content": "hi"}, "n": 2}) == {
        "answer": {"content": "hi"},
        "list": [2, "n=2", 7, "plain"],
        "count": 3,
    }


def test_strict_undefined_raises(env: ImmutableSandboxedEnvironment) -> None:
    with pytest.raises(UndefinedError):
        CompiledTemplate(env, "Hello {{ nobody }}").render({})
    with pytest.raises(UndefinedError):
        CompiledTemplate(env, "{{ nobody.name }}").evaluate({})
    with pytest.raises(UndefinedError, match="'nobody' is undefined"):
        CompiledTemplate(env, "{{ nobody }}").evaluate({})
    with pytest.raises(UndefinedError):
        evaluate_value(compile_value(env, {"a": ["{{ nobody }}"]}), {})


@pytest.mark.parametrize(
    "source",
    [
        "{{ obj.__class__ }}",
        "x {{ obj.__class__.__mro__ }}",
        "{{ obj|attr('__class__') }}",
        "{{ obj.__init__.__globals__ }}",
    ],
)
def test_sandbox_blocks_internals_at_render_time(
    env: ImmutableSandboxedEnvironment, source: str
) -> None:
    with pytest.raises((SecurityError, UndefinedError)):
        CompiledTemplate(env, source).evaluate({"obj": {"content": "x"}})


def test_sandbox_is_immutable(env: ImmutableSandboxedEnvironment) -> None:
    with pytest.raises(SecurityError):
        CompiledTemplate(env, "{{ items.append(1) }}").evaluate({"items": []})


def test_model_answer_is_data_not_a_template(env: ImmutableSandboxedEnvironment) -> None:
    answer = "The answer is {{ 7*7 }} {% raw %}"
    text = CompiledTemplate(env, "Review: {{ primary }}").render({"primary": answer})
    assert text == f"Review: {answer}"
    assert CompiledTemplate(env, "{{ primary }}").evaluate({"primary": answer}) == answer


def test_static_analysis_finds_names_and_unsafe_reads(env: ImmutableSandboxedEnvironment) -> None:
    uses, issues = analyse(env, "{% for r in responses %}{{ r }}{% endfor %}\n{{ prompt }}")
    assert [(u.name, u.line) for u in uses] == [("responses", 1), ("prompt", 2)]
    assert issues == []
    _, issues = analyse(env, "ok\n{{ primary['__dict__'] }}")
    assert [(i.line, i.word) for i in issues] == [(2, "__dict__")]


def test_static_analysis_reports_syntax_errors(env: ImmutableSandboxedEnvironment) -> None:
    uses, issues = analyse(env, "a\n{{ x }")
    assert uses == []
    assert issues[0].line == 2
    assert issues[0].message.startswith("template syntax:")


def test_prompt_file_inside_prompts(tmp_path: Path) -> None:
    prompts = tmp_path / "prompts"
    (prompts / "sub").mkdir(parents=True)
    assert prompt_file(prompts, "sub/a.j2") == (prompts / "sub" / "a.j2").resolve()
    assert prompt_file(prompts, "sub/../a.j2") == (prompts / "a.j2").resolve()


@pytest.mark.parametrize(
    "name", ["../secret.txt", "sub/../../secret.txt", "/etc/passwd", "a\\b.j2"]
)
def test_prompt_file_refuses_escapes(tmp_path: Path, name: str) -> None:
    (tmp_path / "prompts" / "sub").mkdir(parents=True)
    with pytest.raises(PromptPathError):
        prompt_file(tmp_path / "prompts", name)


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symlinks")
def test_prompt_file_refuses_a_symlink_out_of_prompts(tmp_path: Path) -> None:
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    (tmp_path / "secret.txt").write_text("do not read")
    (prompts / "innocent.j2").symlink_to(tmp_path / "secret.txt")
    (prompts / "linked").symlink_to(tmp_path)
    with pytest.raises(PromptPathError, match="leads outside prompts/"):
        prompt_file(prompts, "innocent.j2")
    with pytest.raises(PromptPathError):
        prompt_file(prompts, "linked/secret.txt")


def test_prompt_file_loads_through_the_environment(tmp_path: Path) -> None:
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    (prompts / "hello.j2").write_text("Hello {{ name }}\n")
    env = make_environment(prompts)
    assert CompiledTemplate.from_file(env, "hello.j2").render({"name": "Ada"}) == "Hello Ada"


# -- data the run passes in: results and models, read through the sandbox -------------------------

_CALL = CallResult(
    model="glm", model_id="z-ai/glm", provider="p", content="An answer.\n", success=True
)
_CRITIC = CallResult(model="kimi", model_id="k/kimi", provider="p", content="Nope.", success=True)
_MODELS = {
    "llama": ModelInfo("llama", "meta/llama", 4.0, "openrouter"),
    "glm": ModelInfo("glm", "z-ai/glm", 1.0, "openrouter"),
}
_VALUES: dict[str, object] = {
    "prompt": "Explain {{ 7*7 }} {% raw %}\n",  # data, never a template
    "n": 3,
    "primary": _CALL,
    "select": SelectResult(model="glm", confidence=0.5, source="selector"),
    "critiques": [_CALL, _CRITIC],
    "models": _MODELS,
    "model": _MODELS["llama"],
}


@pytest.mark.parametrize(
    ("source", "value"),
    [
        ("{{ primary.model }}", "glm"),
        ("{{ select.model }}", "glm"),
        ("{{ select.confidence }}", 0.5),
        ("{{ models.llama.weight }}", 4.0),
        ("{{ model.id }}", "meta/llama"),
        ("{{ model }}", _MODELS["llama"]),
        ("{{ primary.usage.total_tokens }}", None),
        ("{{ critiques | map(attribute='content') | list }}", ["An answer.\n", "Nope."]),
    ],
)
def test_templates_read_the_fields_of_results_and_models(
    env: ImmutableSandboxedEnvironment, source: str, value: object
) -> None:
    assert CompiledTemplate(env, source).evaluate(_VALUES) == value


def test_text_templates_read_the_same_fields(env: ImmutableSandboxedEnvironment) -> None:
    template = CompiledTemplate(
        env,
        "Q: {{ prompt }}\nBy {{ primary.model }} ({{ model }}, {{ model.provider }}):\n"
        "{{ primary.content }}{% for c in critiques %}- {{ c.model }}: {{ c.content }}\n"
        "{% endfor %}",
    )
    assert template.render(_VALUES) == (
        "Q: Explain {{ 7*7 }} {% raw %}\n\nBy glm (llama, openrouter):\nAn answer.\n"
        "- glm: An answer.\n\n- kimi: Nope.\n"
    )


@pytest.mark.parametrize(
    "source",
    [
        "{{ primary.__class__ }}",
        "a {{ primary.__class__ }} b",
        "{{ model.__class__.__mro__ }}",
        "{{ primary.usage.__slots__ }}",
        "{{ primary | attr('__class__') }}",
        "{{ critiques | map(attribute='__class__') | join }}",
    ],
)
def test_results_do_not_open_the_sandbox(env: ImmutableSandboxedEnvironment, source: str) -> None:
    with pytest.raises((SecurityError, UndefinedError)):
        CompiledTemplate(env, source).evaluate(_VALUES)


def test_text_template_errors_are_jinja_errors(env: ImmutableSandboxedEnvironment) -> None:
    with pytest.raises(UndefinedError, match="'absent' is undefined"):
        CompiledTemplate(env, "a {{ absent }} b").render(_VALUES)
    with pytest.raises(UndefinedError, match="has no attribute 'absent'"):
        CompiledTemplate(env, "a {{ primary.absent }} b").render(_VALUES)
    with pytest.raises(UndefinedError, match="has no attribute 'absent'"):
        CompiledTemplate(env, "{{ primary.absent }}").evaluate(_VALUES)


def test_prompt_files_include_others_and_report_their_own_lines(tmp_path: Path) -> None:
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    (prompts / "hello.j2").write_text("Hello {{ name }}\n")
    (prompts / "outer.j2").write_text("{% include 'hello.j2' %}, {{ name | upper }}!\n")
    (prompts / "broken.j2").write_text("line one\nHello {{ nobody }}\n")
    (prompts / "native.j2").write_text("{{ items }}")
    env = make_environment(prompts)
    outer = CompiledTemplate.from_file(env, "outer.j2")
    assert outer.render({"name": "Ada"}) == "Hello Ada, ADA!"
    native = CompiledTemplate.from_file(env, "native.j2")
    assert not native.is_native
    assert native.evaluate({"items": [1, 2]}) == "[1, 2]"
    with pytest.raises(UndefinedError, match="'nobody' is undefined") as raised:
        CompiledTemplate.from_file(env, "broken.j2").render({})
    frames = traceback.extract_tb(raised.value.__traceback__)
    assert any(f.filename.endswith("broken.j2") and f.lineno == 2 for f in frames)


def test_a_prompt_file_needs_a_prompts_folder(env: ImmutableSandboxedEnvironment) -> None:
    with pytest.raises(TemplateNotFound):
        CompiledTemplate.from_file(env, "hello.j2")


def test_a_plain_mapping_is_the_context_and_globals_still_apply(
    env: ImmutableSandboxedEnvironment,
) -> None:
    assert CompiledTemplate(env, "{{ range(n) | list }}").evaluate({"n": 3}) == [0, 1, 2]
    text = CompiledTemplate(env, "{% for i in range(n) %}{{ i }}{% endfor %}").render({"n": 3})
    assert text == "012"


def test_none_prints_as_nothing_but_stays_none_as_a_value(
    env: ImmutableSandboxedEnvironment,
) -> None:
    # A skipped node is none to the nodes after it: a prompt that prints it must not say "None".
    context = {"review": None, "answer": "42"}
    assert CompiledTemplate(env, "Review: {{ review }}.").render(context) == "Review: ."
    assert CompiledTemplate(env, "{{ review }}").render(context) == ""
    assert CompiledTemplate(env, "{{ review }}").evaluate(context) is None
    assert CompiledTemplate(env, "{{ review or answer }}!").render(context) == "42!"
    assert CompiledTemplate(env, "{{ [review] }}").render(context) == "[None]"
