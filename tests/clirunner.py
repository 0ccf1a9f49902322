"""The CLI as the tests call it: in process, with its exit code and both output streams."""

from __future__ import annotations

from click.testing import CliRunner

from flowengine.cli import cli


def invoke(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr
