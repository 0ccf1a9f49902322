"""The shipped JSON Schema is current, and the shipped workflows point editors at it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from flowengine.spec import json_schema

# The canonical files, shipped in the package; the repository's root links to them.
STARTER = Path(__file__).resolve().parent.parent / "flowengine" / "starter"
WORKFLOWS = sorted((STARTER / "workflows").glob("*.yaml"))
SCHEMA_COMMENT = "# yaml-language-server: $schema=../flowengine.schema.json"


def test_schema_file_is_current() -> None:
    expected = json.dumps(json_schema(), indent=2) + "\n"
    actual = (STARTER / "flowengine.schema.json").read_text(encoding="utf-8")
    assert actual == expected, (
        "flowengine/starter/flowengine.schema.json is stale; regenerate it with "
        "`flowengine schema > flowengine/starter/flowengine.schema.json`"
    )


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_the_schema_comment_leads_to_the_schema(path: Path) -> None:
    target = SCHEMA_COMMENT.partition("$schema=")[2]
    assert (path.parent / target).resolve() == STARTER / "flowengine.schema.json"


def test_schema_command_prints_the_schema() -> None:
    from click.testing import CliRunner

    from flowengine.cli import cli

    result = CliRunner().invoke(cli, ["schema"])
    assert result.exit_code == 0
    assert json.loads(result.stdout) == json_schema()


def test_there_are_shipped_workflows() -> None:
    assert {p.stem for p in WORKFLOWS} >= {"critique", "ensemble", "full"}


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_names_the_schema_on_its_first_line(path: Path) -> None:
    first = path.read_text(encoding="utf-8").splitlines()[0]
    assert first == SCHEMA_COMMENT


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_matches_the_schema(path: Path) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    data = json.loads(json.dumps(YAML(typ="safe").load(path.read_text(encoding="utf-8"))))
    jsonschema.validate(data, json_schema())
