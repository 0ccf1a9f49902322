"""`flowengine validate` on valid files, with overrides, and on several files at once."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from flowengine.cli import cli

SHIPPED = [
    "workflows/critique.yaml",
    "workflows/ensemble.yaml",
    "workflows/full.yaml",
    "workflows/judge.yaml",
    "workflows/refine.yaml",
    "workflows/route.yaml",
    "workflows/staged.yaml",
]


def test_shipped_workflows_validate(in_repo_root: Path) -> None:
    result = CliRunner().invoke(cli, ["validate", *SHIPPED])
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "workflows/critique.yaml: ok (3 nodes: select -> primary -> critiques)",
        "workflows/ensemble.yaml: ok (5 nodes: answers -> meta -> lead -> scores -> synthesis)",
        "workflows/full.yaml: ok (5 nodes: select -> primary -> critiques -> meta -> synthesis)",
        "workflows/judge.yaml: ok (3 nodes: answers -> judge -> refine)",
        "workflows/refine.yaml: ok (2 nodes: draft -> refine)",
        "workflows/route.yaml: ok (3 nodes: classify -> code -> general)",
        "workflows/staged.yaml: ok (5 nodes: initial -> meta -> lead -> scores -> synthesis)",
    ]


def test_valid_overrides(in_repo_root: Path) -> None:
    args = [
        "validate",
        "workflows/critique.yaml",
        "--set",
        "models.llama.weight=4",
        "--set",
        "providers.openrouter.base_url=http://127.0.0.1:8080/v1",
    ]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.stderr


def test_every_file_is_checked_and_errors_are_reported(in_repo_root: Path) -> None:
    args = ["validate", "workflows/full.yaml", "tests/data/invalid/cycle.yaml"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2
    assert result.stderr.startswith("workflows/full.yaml: ok")
    assert "tests/data/invalid/cycle.yaml:8:5: error: cycle in needs" in result.stderr


def test_malformed_override_is_a_usage_error(in_repo_root: Path) -> None:
    result = CliRunner().invoke(cli, ["validate", "workflows/full.yaml", "--set", "nothing"])
    assert result.exit_code == 2
    assert result.stderr.startswith("flowengine: error: --set nothing: expected PATH=VALUE")
    assert "for example --set models.llama.weight=4" in result.stderr
    assert "Traceback" not in result.stderr


def test_override_through_a_value_is_a_usage_error(in_repo_root: Path) -> None:
    args = ["validate", "workflows/full.yaml", "--set", "models.llama.weight.x=1"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2
    assert result.stderr == (
        "flowengine: error: --set models.llama.weight.x: models.llama.weight is not a mapping\n"
    )


def test_a_directory_is_not_a_workflow(in_repo_root: Path) -> None:
    result = CliRunner().invoke(cli, ["validate", "workflows"])
    assert result.exit_code == 2
    assert result.stderr == (
        "workflows: error: is a directory, not a workflow file\n"
        "      = fix: name a .yaml file\n"
        "1 error in workflows\n"
    )
