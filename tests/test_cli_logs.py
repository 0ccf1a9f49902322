"""-v and -vv: the library's log records on stderr, before or after the command."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import click
import pytest

from flowengine.cli import cli
from flowengine.cli.logs import log_to_stderr
from tests.clirunner import invoke

# Half of all attempts fail, with 1 ms between attempts: retries are certain, failures are not.
FLAKY = """\
version: 1
name: flaky
inputs:
  prompt: {type: string}
providers:
  flaky: {type: offline, failure_rate: 0.5, retry: {attempts: 20, initial: 1ms, max: 1ms}}
models:
  a: {id: model-a, provider: flaky}
  b: {id: model-b, provider: flaky}
  c: {id: model-c, provider: flaky}
  d: {id: model-d, provider: flaky}
nodes:
  answers: {type: fanout, template: "{{ prompt }}"}
output: {answers: "{{ answers }}"}
"""


@pytest.fixture(autouse=True)
def quiet_afterwards() -> Iterator[None]:
    yield
    log_to_stderr(0)  # the logger is global: leave it as a run without -v does


@pytest.fixture
def flaky(tmp_path: Path) -> str:
    path = tmp_path / "flaky.yaml"
    path.write_text(FLAKY, encoding="utf-8")
    return str(path)


def info_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("flowengine: info: ")]


def test_without_v_retries_are_not_logged(flaky: str) -> None:
    code, _, err = invoke("run", flaky, "--prompt", "q", "-q")
    assert code == 0, err
    assert info_lines(err) == []


@pytest.mark.parametrize("where", ["before", "after"])
def test_v_logs_retries_with_their_reason_and_wait(flaky: str, where: str) -> None:
    args = ["run", flaky, "--prompt", "q", "-q"]
    code, _, err = invoke(*(["-v", *args] if where == "before" else [*args, "-v"]))
    assert code == 0, err
    retries = [line for line in info_lines(err) if "retrying in" in line]
    assert retries, err
    assert "failure_rate" in retries[0]  # the reason
    assert "flowengine: debug: " not in err


def test_vv_adds_debug_and_the_two_places_add_up(flaky: str) -> None:
    code, _, err = invoke("-v", "run", flaky, "--prompt", "q", "-q", "-v")
    assert code == 0, err
    assert "flowengine: debug: " in err


def test_every_command_takes_v() -> None:
    def leaves(group: click.Group, ctx: click.Context) -> list[click.Command]:
        found: list[click.Command] = []
        for name in group.list_commands(ctx):
            command = group.get_command(ctx, name)
            assert command is not None, name
            found += leaves(command, ctx) if isinstance(command, click.Group) else [command]
        return found

    with click.Context(cli) as ctx:
        commands = leaves(cli, ctx)
    assert len(commands) >= 12
    for command in commands:
        assert any("-v" in p.opts for p in command.params), f"{command.name} lacks -v"


def test_records_of_any_flowengine_logger_show_at_their_level(
    capsys: pytest.CaptureFixture[str],
) -> None:
    log_to_stderr(0)
    logging.getLogger("flowengine.store").info("hidden")
    logging.getLogger("flowengine.store").warning("shown")
    log_to_stderr(1)
    logging.getLogger("flowengine.providers").info("now shown")
    logging.getLogger("flowengine.providers").debug("still hidden")
    assert capsys.readouterr().err == ("flowengine: warning: shown\nflowengine: info: now shown\n")
