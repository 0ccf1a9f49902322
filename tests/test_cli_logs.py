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
from tests.fakeserver import Reply, ThreadedServer

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


def test_a_failing_run_says_each_thing_once_without_v(tmp_path: Path) -> None:
    path = tmp_path / "failing.yaml"
    path.write_text(FLAKY.replace("failure_rate: 0.5", "failure_rate: 1"), encoding="utf-8")
    code, _, err = invoke("run", str(path), "--prompt", "q")
    assert code == 1
    assert "✗ answers/a: simulated failure" in err  # the progress line
    assert not [line for line in err.splitlines() if line.startswith("flowengine: warning")]


def test_v_never_shows_the_api_key(threaded_server: ThreadedServer, tmp_path: Path) -> None:
    key = "sk-or-v1-LOGTEST-5b7e1d9c2a"
    threaded_server.server.script(
        Reply.error(500, f"upstream said: Authorization: Bearer {key}"),
        Reply.error(401, f"Incorrect API key provided: {key}"),
    )
    path = tmp_path / "wf.yaml"
    path.write_text(
        "version: 1\nname: keyed\nmodels:\n  a: {id: model-a}\n"
        f"providers:\n  openrouter: {{base_url: '{threaded_server.base_url}',"
        " retry: {attempts: 3, initial: 1ms, max: 1ms}}\n"
        "nodes:\n  answer: {type: llm, model: a, template: q}\n",
        encoding="utf-8",
    )
    code, out, err = invoke("run", str(path), "-vv", "--no-cache", env={"OPENROUTER_API_KEY": key})
    assert code == 1
    assert "flowengine: info:" in err and "retrying" in err  # the 500 was logged, then retried
    assert "401" in err
    assert "LOGTEST" not in err and "LOGTEST" not in out
