"""Response schemas: where they are read from, and the bounds on reading; strict mode; fromjson.

The messages of broken schemas are cases of ``tests/data/invalid`` (schema_*.yaml); special and
linked files are made here, since a repository cannot hold them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from jinja2 import TemplateRuntimeError

from flowengine import Workflow
from flowengine.errors import WorkflowError
from flowengine.language.json_text import JsonTextError, parse_json_text
from flowengine.language.response_schemas import ResponseSchema, strict_ready
from flowengine.language.schema_files import MAX_SCHEMA_BYTES
from flowengine.language.templates import CompiledTemplate, make_environment
from flowengine.results import CallResult

SCHEMA = {"type": "object", "properties": {"score": {"type": "integer"}}, "required": ["score"]}
WORKFLOW = """\
version: 1
name: schemas
inputs:
  prompt: {}
models:
  gpt: {id: openai/gpt-4o}
nodes:
  judge:
    type: llm
    model: gpt
    template: "{{ prompt }}"
    schema: %s
  after:
    type: llm
    needs: [judge]
    model: gpt
    template: "{{ judge.data.score }}"
"""


def project(tmp_path: Path, schema: str) -> Path:
    """A project with prompts/ and workflows/wf.yaml whose judge has ``schema: <schema>``."""
    (tmp_path / "prompts").mkdir()
    (tmp_path / "workflows").mkdir()
    path = tmp_path / "workflows" / "wf.yaml"
    path.write_text(WORKFLOW % schema, encoding="utf-8")
    return path


def problems(path: Path) -> list[tuple[str, str]]:
    with pytest.raises(WorkflowError) as caught:
        Workflow.load(path)
    return [(p.code, p.message) for p in caught.value.problems]


def test_a_schema_file_in_the_project_is_read_once(tmp_path: Path) -> None:
    path = project(tmp_path, "../schemas/judge.json")
    (tmp_path / "schemas").mkdir()
    (tmp_path / "schemas" / "judge.json").write_text(json.dumps(SCHEMA), encoding="utf-8")
    wf = Workflow.load(path)
    (tmp_path / "schemas" / "judge.json").write_text("changed", encoding="utf-8")
    assert wf.schemas == {"judge": SCHEMA}
    assert wf.plan.nodes["judge"].response == ResponseSchema.of("judge", SCHEMA)


def test_a_yaml_schema_file_is_plain_data(tmp_path: Path) -> None:
    path = project(tmp_path, "judge.yaml")
    text = "type: object\nproperties:\n  score: {type: integer, maximum: 1.5}\n"
    (path.parent / "judge.yaml").write_text(text, encoding="utf-8")
    schema = Workflow.load(path).schemas["judge"]
    assert schema == {
        "type": "object",
        "properties": {"score": {"type": "integer", "maximum": 1.5}},
    }
    assert type(schema["properties"]["score"]["maximum"]) is float


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symlinks")
def test_a_link_out_of_the_project_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.json").write_text(json.dumps(SCHEMA), encoding="utf-8")
    inside = tmp_path / "project"
    inside.mkdir()
    path = project(inside, "judge.json")
    (path.parent / "judge.json").symlink_to(outside / "secret.json")
    assert problems(path) == [
        ("schema-path", "schema file 'judge.json' leads outside the project through a link")
    ]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    path = project(tmp_path, "pipe.json")
    os.mkfifo(path.parent / "pipe.json")
    [(code, message)] = problems(path)
    assert code == "schema-unreadable"
    assert message == "schema file 'pipe.json' is a FIFO (named pipe), not a regular file"


def test_a_huge_file_is_refused_unread(tmp_path: Path) -> None:
    path = project(tmp_path, "huge.json")
    with open(path.parent / "huge.json", "wb") as file:
        file.truncate(MAX_SCHEMA_BYTES + 1)
    [(code, message)] = problems(path)
    assert code == "schema-unreadable"
    assert "is larger than 1 MB" in message


def test_schema_problems_come_with_every_other_problem(tmp_path: Path) -> None:
    path = project(tmp_path, "missing.json")
    path.write_text(path.read_text().replace("model: gpt", "model: gtp", 1), encoding="utf-8")
    codes = sorted(code for code, _ in problems(path))
    assert codes == ["schema-not-found", "unknown-model"]


def test_a_workflow_given_as_text_takes_inline_schemas_only() -> None:
    wf = Workflow.from_string(WORKFLOW % json.dumps(SCHEMA))
    assert wf.schemas["judge"] == SCHEMA
    with pytest.raises(WorkflowError) as caught:
        Workflow.from_string(WORKFLOW % "judge.json")
    assert caught.value.problems[0].code == "schema-path"


@pytest.mark.parametrize(
    ("schema", "strict"),
    [
        (SCHEMA, False),  # additionalProperties not false
        ({**SCHEMA, "additionalProperties": False}, True),
        ({"type": "object", "properties": {"a": {}}, "additionalProperties": False}, False),
        (
            {
                "type": "object",
                "properties": {"a": {"type": "object", "properties": {"b": {}}}},
                "required": ["a"],
                "additionalProperties": False,
            },
            False,  # the inner object is open
        ),
        ({"type": "object", "additionalProperties": False}, True),
    ],
)
def test_strict_only_when_strict_mode_takes_the_schema_as_written(
    schema: dict[str, Any], strict: bool
) -> None:
    assert strict_ready(schema) is strict
    assert ResponseSchema.of("n", schema).response_format()["json_schema"]["strict"] is strict


def test_validation_errors_name_their_json_path() -> None:
    schema = {
        "type": "object",
        "properties": {"items": {"type": "array", "items": {"type": "integer", "maximum": 3}}},
    }
    response = ResponseSchema.of("n", schema)
    assert response.errors({"items": [1, 5, "x"]}) == [
        "at $.items[1]: 5 is greater than the maximum of 3",
        "at $.items[2]: 'x' is not of type 'integer'",
    ]


def test_a_reference_is_never_fetched() -> None:
    # Checks refuse it statically; the validator itself has no way to fetch either.
    response = ResponseSchema.of("n", {"$ref": "http://127.0.0.1:9/never.json"})
    with pytest.raises(Exception, match="Unresolvable"):
        response.errors({})


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ('{"a": 1}', {"a": 1}),
        ('  ```json\n{"a": [1, 2]}\n```  ', {"a": [1, 2]}),
        ('```\n{"a": null}```', {"a": None}),
        ("[1, 2]", [1, 2]),
    ],
)
def test_json_text_takes_one_fence(text: str, value: Any) -> None:
    assert parse_json_text(text) == value


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ('{"a": 1', "Expecting ',' delimiter at line 1, column 8 (character 8)"),
        ('Sure! {"a": 1}', "Expecting value at line 1, column 1 (character 1)"),
        ('```json\n```json\n{"a": 1}\n```\n```', "Expecting value at line 1, column 1"),
        ('{"a": NaN}', "NaN is not a JSON value: write a number, or null"),
        ("[" * 200 + "]" * 200, "arrays and objects nest deeper than 100 levels"),
        ("", "the text is empty, not JSON"),
        (" " * 1_000_001, "the text is longer than 1,000,000 characters"),
    ],
)
def test_json_text_errors_say_what_and_where(text: str, error: str) -> None:
    with pytest.raises(JsonTextError) as caught:
        parse_json_text(text)
    assert str(caught.value).startswith(error)


def test_fromjson_parses_strings_and_answers() -> None:
    env = make_environment(None)
    template = CompiledTemplate(env, "{{ (reply | fromjson).scores | sum }}")
    answer = CallResult(
        model="m", model_id="m/x", provider="p", success=True, content='{"scores": [1, 2]}'
    )
    assert template.evaluate({"reply": answer}) == 3
    assert template.evaluate({"reply": '```json\n{"scores": [4]}\n```'}) == 4


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ("{oops}", "fromjson: not JSON: Expecting property name enclosed in double quotes"),
        (5, "fromjson reads a string, not int"),
    ],
)
def test_fromjson_errors_are_render_errors(value: Any, error: str) -> None:
    template = CompiledTemplate(make_environment(None), "{{ value | fromjson }}")
    with pytest.raises(TemplateRuntimeError, match=error):
        template.evaluate({"value": value})


def test_fromjson_is_a_known_filter_when_checking() -> None:
    wf = Workflow.from_string(WORKFLOW.replace("judge.data.score", "prompt | fromjson") % "{}")
    assert wf.schemas == {"judge": {}}
